"""Video files in and out, with the ffmpeg that the imageio-ffmpeg wheel ships (no system ffmpeg needed):
a clip's frames decoded as the dream's float arrays, and image files encoded as H.264, with a source's
audio kept, or as a looping GIF."""
import contextlib
import json
import os
import re
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

MARKER = b'classicdream-recipe:'


class VideoError(ValueError):
    """A file that is not a video ffmpeg can read, or a cut of it that holds no frames: one line."""


@dataclass(frozen=True)
class Clip:
    """The part of a video file that is dreamed: from `start` seconds, `duration` seconds (None: to the
    end), resampled to `fps` when `resample`; `frames` decoded frames of `size` (w, h)."""
    path: str
    start: float
    duration: float | None
    fps: float
    resample: bool
    size: tuple
    frames: int
    audio: bool

    def decode_params(self):
        """ffmpeg's input and output options that cut and resample; every read of the clip uses them."""
        before = ['-ss', repr(self.start)] if self.start else []
        after = (['-t', repr(self.duration)] if self.duration is not None else []) + \
            (['-vf', f'fps={self.fps!r}'] if self.resample else [])
        return before, after


def _ffmpeg():
    import imageio_ffmpeg
    return imageio_ffmpeg.get_ffmpeg_exe()


@contextlib.contextmanager
def _ffmpeg_starts():
    """JAX warns at any fork; starting ffmpeg is fork+exec, which is safe."""
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', 'os.fork', RuntimeWarning)
        yield


def open_clip(path, start=0.0, stop=None, fps=None):
    """Probe `path` and count the frames that `start`..`stop` seconds at `fps` (default: the file's) hold.

    Counting decodes the clip once (ffmpeg's null output), so the count is exactly what reading gives."""
    import imageio_ffmpeg
    name = os.fsdecode(path)
    if not os.path.isfile(path):
        raise VideoError(f'{name}: no such file')
    try:
        with _ffmpeg_starts():
            reader = imageio_ffmpeg.read_frames(name)
            meta = next(reader)
        reader.close()
    except (OSError, RuntimeError, StopIteration):
        raise VideoError(f'{name}: not a video that ffmpeg can read') from None
    if stop is not None and stop <= start:
        raise VideoError(f'--stop={stop:g} must be after --start={start:g}')
    clip = Clip(name, float(start), None if stop is None else float(stop - start), float(fps or meta['fps']),
                fps is not None, tuple(meta['size']), 0, 'audio_codec' in meta)
    before, after = clip.decode_params()
    with _ffmpeg_starts():
        done = subprocess.run([_ffmpeg(), '-nostdin', *before, '-i', name, *after, '-map', '0:v:0', '-f', 'null', '-'],
                              capture_output=True, text=True, errors='replace')
    counts = re.findall(r'frame=\s*(\d+)', done.stderr)
    frames = int(counts[-1]) if done.returncode == 0 and counts else 0
    cut = start or stop is not None
    if frames == 0 and cut:
        raise VideoError(f'{name}: no frames between --start and --stop')
    if frames < 2 and not cut:                    # ffmpeg reads a picture as a video of one frame
        raise VideoError(f'{name}: {"one picture" if frames else "no frames"}, not a video')
    return Clip(**{**clip.__dict__, 'frames': frames})


def read_clip(clip):
    """The clip's frames, in order, as float32 (H, W, 3) RGB arrays on 0..255: load_image's contract."""
    import imageio_ffmpeg
    before, after = clip.decode_params()
    w, h = clip.size
    with _ffmpeg_starts():
        reader = imageio_ffmpeg.read_frames(clip.path, input_params=before, output_params=after)
        next(reader)
    try:
        for raw in reader:
            yield np.frombuffer(raw, np.uint8).reshape(h, w, 3).astype(np.float32)
    finally:
        reader.close()


def write_mp4(frames, out, fps=25, recipe=None, audio=None):
    """Encode image files `frames` (all one size) as H.264 in `out`, written beside it and renamed into
    place once complete. Odd sizes lose their last row or column: yuv420p needs even ones. The recipe
    goes into the file's comment, which is how ``is_ours`` recognises a file it may replace. `audio`, a
    Clip, adds that clip's sound (AAC), cut as its frames were; the video's length decides."""
    import imageio_ffmpeg
    out = Path(out)
    first = Image.open(frames[0])
    w, h = first.size[0] // 2 * 2, first.size[1] // 2 * 2
    tmp = out.with_name(f'.{out.name}.partial.mp4')
    muxed = out.with_name(f'.{out.name}.audio.mp4')
    comment = ['-metadata', f'comment={(MARKER + json.dumps(recipe or {}).encode()).decode()}']
    writer = imageio_ffmpeg.write_frames(str(tmp), (w, h), fps=fps, codec='libx264', pix_fmt_out='yuv420p',
                                         macro_block_size=1, quality=8, ffmpeg_log_level='error',
                                         output_params=comment)
    try:
        with _ffmpeg_starts():
            writer.send(None)
        for path in frames:
            with Image.open(path) as im:
                _check_size(path, im, first)
                writer.send(np.ascontiguousarray(np.asarray(im.convert('RGB'))[:h, :w]))
        writer.close()
        if audio is not None and audio.audio:
            before, _ = audio.decode_params()
            with _ffmpeg_starts():
                subprocess.run([_ffmpeg(), '-nostdin', '-y', '-loglevel', 'error', '-i', str(tmp), *before,
                                '-i', audio.path, '-map', '0:v:0', '-map', '1:a:0', '-c:v', 'copy', '-c:a', 'aac',
                                '-shortest', *comment, str(muxed)], check=True, capture_output=True)
            os.replace(muxed, out)
        else:
            os.replace(tmp, out)
    finally:
        writer.close()
        tmp.unlink(missing_ok=True)
        muxed.unlink(missing_ok=True)
    return out


def write_gif(frames, out, fps=25, recipe=None):
    """Image files `frames` as a looping GIF in `out` at `fps` (GIF counts in hundredths of a second, so
    25 fps is exact, 30 fps nearly), written atomically. Each frame gets its own 256-colour palette; the
    recipe goes into the GIF's comment, as into the mp4's, so ``is_ours`` knows the file."""
    from .files import atomic_write
    images = [Image.open(path).convert('RGB') for path in frames]
    for path, im in zip(frames, images):
        _check_size(path, im, images[0])
    comment = MARKER + json.dumps(recipe or {}).encode()
    atomic_write(out, lambda f: images[0].save(f, format='GIF', save_all=True, append_images=images[1:], loop=0,
                                               duration=round(1000 / fps), comment=comment, optimize=False))
    return Path(out)


def _check_size(path, frame, first):
    """A video's frames are all one size: refuse one that is not the first's."""
    if frame.size != first.size:
        raise ValueError(f'{path}: frame is {frame.size[0]}x{frame.size[1]}, the first was '
                         f'{first.size[0]}x{first.size[1]}')


def is_ours(path):
    """Whether an existing file is a video that classicdream wrote (so it may be replaced).

    ffmpeg writes the metadata in the index at the file's end; the start is read too, for safety."""
    with open(path, 'rb') as f:
        head = f.read(1 << 20)
        f.seek(max(0, os.fstat(f.fileno()).st_size - (1 << 20)))
        return MARKER in head or MARKER in f.read()
