"""Zoom frames → an MP4, with the ffmpeg that the imageio-ffmpeg wheel ships (no system ffmpeg needed)."""
import json
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

MARKER = b'classicdream-recipe:'


def write_mp4(frames, out, fps=25, recipe=None):
    """Encode image files `frames` (all one size) as H.264 in `out`, written beside it and renamed into
    place once complete. Odd sizes lose their last row or column: yuv420p needs even ones. The recipe
    goes into the file's comment, which is how ``is_ours`` recognises a file it may replace."""
    import imageio_ffmpeg
    out = Path(out)
    first = Image.open(frames[0])
    w, h = first.size[0] // 2 * 2, first.size[1] // 2 * 2
    tmp = out.with_name(f'.{out.name}.partial.mp4')
    comment = (MARKER + json.dumps(recipe or {}).encode()).decode()
    writer = imageio_ffmpeg.write_frames(str(tmp), (w, h), fps=fps, codec='libx264', pix_fmt_out='yuv420p',
                                         macro_block_size=1, quality=8, ffmpeg_log_level='error',
                                         output_params=['-metadata', f'comment={comment}'])
    try:
        with warnings.catch_warnings():     # JAX warns at any fork; ffmpeg is fork+exec, which is safe
            warnings.filterwarnings('ignore', 'os.fork', RuntimeWarning)
            writer.send(None)
        for path in frames:
            with Image.open(path) as im:
                if im.size != first.size:
                    raise ValueError(f'{path}: frame is {im.size[0]}x{im.size[1]}, the first was '
                                     f'{first.size[0]}x{first.size[1]}')
                writer.send(np.ascontiguousarray(np.asarray(im.convert('RGB'))[:h, :w]))
        writer.close()
        os.replace(tmp, out)
    finally:
        writer.close()
        tmp.unlink(missing_ok=True)
    return out


def is_ours(path):
    """Whether an existing file is a video that classicdream wrote (so it may be replaced).

    ffmpeg writes the metadata in the index at the file's end; the start is read too, for safety."""
    with open(path, 'rb') as f:
        head = f.read(1 << 20)
        f.seek(max(0, os.fstat(f.fileno()).st_size - (1 << 20)))
        return MARKER in head or MARKER in f.read()
