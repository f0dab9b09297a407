"""Dreaming a video clip frame by frame, as graphific/DeepDreamVideo did, resumable and spread over workers.

Each frame is dreamed with its own options (the command line's, or its keyframes': keyframes.frame_plan)
and the same seed, so a frame's dream does not depend on where a run started. With ``blend`` a frame
starts from ``blend * previous dream + (1 - blend) * frame`` (the previous dream as saved, so a resumed
run blends exactly what an uninterrupted one did), which keeps the patterns from flickering; with
``flow`` the previous dream is first moved along the optical flow between the two input frames
(OpenCV's Farnebäck), so the patterns travel with the scene.

Blending makes each frame depend on the one before. To run such a clip on several workers it is cut into
consecutive parts; a part that cannot continue from a frame already on disk starts ``WARMUP`` frames
early from the plain frame, and those warm-up dreams are thrown away. After a few frames the blend has
forgotten where it started (the start's weight is blend**k), so the seams are hard to see, but the frames
just after a seam are not the bits a sequential run gives.
"""
import math
from functools import partial

import numpy as np

from .dreamer import UserError, number
from .images import decode_image, holds_recipe, recipe_or_none, write_encoded
from .video import read_clip

WARMUP = 5


def check_blend(blend):
    blend = number('blend', blend, float, 0, allow_equal=True)
    if blend >= 1:
        raise UserError(f'--blend must be below 1, got {blend}')
    return blend


def frame_path(folder, i):
    return folder / f'{i:05d}.jpg'


def warp(image, before, after):
    """`image`, which lines up with input frame `before`, moved to line up with frame `after`: each pixel
    of `after` takes the image's value where the (Farnebäck) optical flow says it came from."""
    try:
        import cv2
    except ImportError:
        raise ValueError("--flow needs OpenCV: pip install 'classicdream[flow]'") from None
    grey = [cv2.cvtColor(np.uint8(np.clip(f, 0, 255)), cv2.COLOR_RGB2GRAY) for f in (after, before)]
    flow = cv2.calcOpticalFlowFarneback(grey[0], grey[1], None, 0.5, 3, 15, 3, 5, 1.2, 0)
    h, w = flow.shape[:2]
    x, y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(np.float32(image), x + flow[..., 0], y + flow[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def blended(previous, frame, blend):
    """Where a frame's dream starts: ``blend * previous dream + (1 - blend) * frame``; the frame alone
    where there is no previous dream (or no blend)."""
    if previous is None or not blend:
        return frame
    return np.float32(blend) * previous + np.float32(1 - blend) * frame


def dream_frame(tool, previous, frame, before, recipe, dreamer, blend, flow=False):
    """One frame's dream with the options of `dreamer`, as an encoded JPEG carrying `recipe`; `previous` is
    the frame before's (encoded), `before` that frame's input (for the flow). Runs where the `tool` is, with
    its net: here or on a worker."""
    dreamt = None
    if previous is not None and blend:
        dreamt = decode_image(previous)
        if flow:
            dreamt = warp(dreamt, before, frame)
    start = blended(dreamt, frame, blend)
    return dreamer.using(tool.net).encoded(start, recipe, source=frame)


def _frame_lane(clip, warm, first, stop, args):
    """Frames warm..stop-1 as (key, args) items: key None for warm-up frames, whose dreams are not kept."""
    before = None
    for i, frame in enumerate(read_clip(clip)):
        if i >= stop:
            return
        if i >= warm:
            yield (i if i >= first else None), (frame, before, *args(i))
        before = frame


def parts(missing, done, pieces, warmup=WARMUP):
    """Consecutive runs of the `missing` frames cut into at most ~`pieces` parts, as (warm, first, stop):
    frames first..stop-1 to keep, dreamed from warm (warm < first: warm-up) or from the frame before on
    disk (warm == first, where first - 1 is done, or first == 0)."""
    size = max(1, math.ceil(len(missing) / pieces))
    runs, out = [], []
    for i in missing:
        if runs and runs[-1][1] == i:
            runs[-1][1] = i + 1
        else:
            runs.append([i, i + 1])
    for a, b in runs:
        for first in range(a, b, size):
            warm = first if first == 0 or first - 1 in done else max(0, first - warmup)
            out.append((warm, first, min(first + size, b)))
    return out


def dream_clip(plan, clip, folder, options, runner, flow=False, pieces=1, progress=None):
    """Dream the clip's frames missing from `folder` (frames already there with their recipe are kept).

    `plan[i]` is frame i's Frame (keyframes.frame_plan: its Dreamer and its recipe's blend); `options`, what
    every frame's recipe holds besides; `runner` runs the work (cluster.runner); `pieces`, how many parts a
    blended clip is cut into (one per worker); `progress(i)` is called as frame i is written. Returns the
    paths of all the clip's frames and the (frame, exception) of each that failed."""
    paths = [frame_path(folder, i) for i in range(clip.frames)]
    for i, path in enumerate(paths):
        if path.exists() and recipe_or_none(path) is None:
            raise ValueError(f'{path}: exists and is not a classicdream frame; not overwriting it')

    def recipe(i):
        return plan[i].dreamer.recipe(frame=i, **options, **plan[i].extras)

    def args(i):
        return recipe(i), plan[i].dreamer, plan[i].extras['blend']
    done = {i for i, path in enumerate(paths) if holds_recipe(path, recipe(i))}
    missing = [i for i in range(clip.frames) if i not in done]
    if any(frame.extras['blend'] for frame in plan):
        lanes = ((paths[first - 1].read_bytes() if warm == first and first else None,
                  _frame_lane(clip, warm, first, stop, args))
                 for warm, first, stop in parts(missing, done, pieces))
    else:
        lanes = ((None, [(i, (frame, None, *args(i)))]) for i, frame in enumerate(read_clip(clip))
                 if i not in done)
    failed = []
    for key, result in runner.run(partial(dream_frame, flow=flow), lanes):
        if key is None:
            continue
        if isinstance(result, Exception):
            failed.append((key, result))
            continue
        write_encoded(paths[key], result)
        if progress:
            progress(key)
    return paths, failed
