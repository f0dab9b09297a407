"""The notebook's zoom loop (its last cells): dream a frame, zoom in by `scale` about the centre, dream again.

Frames are written as 0000.jpg, 0001.jpg, ... with their recipe. The loop resumes after the frames
already in the folder, from the float frame it kept (a JPEG would drift), with the random stream
replayed past the dreams done, so an interrupted run ends with the frames of an uninterrupted one; a
folder whose last frame another recipe made is refused, rather than continued with other options.
Each frame has its own options (keyframes.frame_plan), its scale being the zoom that leads into it.
"""
from pathlib import Path

import numpy as np

from .dream import random_state, skip_dreams, zoom_frame
from .dreamer import UserError, number
from .files import atomic_write
from .images import load_image, recipe_or_none, save_image
from .outputs import output_folder

STATE = '.zoom-state.npz'


def zoom_options(frames, scale, fps):
    """--frames, --scale and --fps, checked: a zoom needs a frame, and a scale below 1."""
    return number('frames', frames, int, 1, allow_equal=True), check_scale(scale), number('fps', fps, float, 0.0)


def check_scale(scale):
    scale = number('scale', scale, float, 0.0)
    if scale >= 1:
        raise UserError(f'--scale must be below 1, got {scale}')
    return scale


def frame_paths(outdir, frames):
    return [Path(outdir) / f'{i:04d}.jpg' for i in range(frames)]


def frame_recipe(plan, name, i):
    frame = plan[i]
    return frame.dreamer.recipe(command='zoom', input=name, frame=i, **frame.extras)


def zoom_recipe(plan, name, fps):
    """The recipe of the video of the frames: the first frame's options, with the count and frame rate."""
    return plan[0].dreamer.recipe(command='zoom', input=name, frames=len(plan), fps=fps, **plan[0].extras)


def zoom(plan, img, name, outdir, on_frame=None, say=None, on_octave=None):
    """Dream a frame from the image `img` (its file's `name` goes into each recipe) for each Frame of `plan`
    (keyframes.frame_plan: its Dreamer and its recipe's scale) into `outdir`.

    `on_frame(i, path)` is called as frame i is written, `say(line)` when resuming, `on_octave` as for
    Dreamer.dream. Returns the paths of all the frames."""
    outdir = Path(outdir)
    output_folder(outdir)
    done = sorted(int(p.stem) for p in outdir.glob('[0-9][0-9][0-9][0-9].jpg'))
    start = done[-1] + 1 if done else 0
    state = outdir / STATE
    rng = random_state(plan[0].dreamer.seed)
    frame = img
    if start:
        check_resumable(outdir, plan, name, min(start, len(plan)) - 1)
        # Resume after the last frame written, replaying the random stream past the frames done.
        saved = np.load(state) if state.exists() else None
        if saved is not None and int(saved['frame']) == start - 1:
            frame = saved['image']
        else:
            frame = load_image(outdir / f'{start - 1:04d}.jpg')
        for done_frame in plan[:start]:
            d = done_frame.dreamer
            skip_dreams(rng, 1, d.iter_n, d.octave_n, d.jitter)
        if say and start < len(plan):
            say(f'resuming at frame {start}')
    paths = frame_paths(outdir, len(plan))
    for frame_i in range(start, len(plan)):
        d = plan[frame_i].dreamer
        if frame_i:
            frame = zoom_frame(frame, plan[frame_i].extras['scale'])
        frame = d.dream(frame, rng, label=f'frame {frame_i:04d}', on_octave=on_octave)
        save_image(paths[frame_i], d.finished(frame, img), frame_recipe(plan, name, frame_i))
        atomic_write(state, lambda f: np.savez(f, frame=frame_i, image=frame))
        if on_frame:
            on_frame(frame_i, paths[frame_i])
    return paths


def check_resumable(outdir, plan, name, last):
    """Refuse to continue frames that other options (or other keyframes) made: frame `last` on disk must hold
    the recipe this run gives it."""
    held, wanted = recipe_or_none(outdir / f'{last:04d}.jpg') or {}, frame_recipe(plan, name, last)
    differ = sorted(key for key in held.keys() | wanted.keys() if held.get(key) != wanted.get(key))
    if differ:
        raise UserError(f'{outdir}: frame {last:04d} was dreamed with another {", ".join(differ)}; give the '
                        f'options it was made with to continue, or another --outdir')
