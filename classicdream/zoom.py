"""The notebook's zoom loop (its last cells): dream a frame, zoom in by `scale` about the centre, dream again.

Frames are written as 0000.jpg, 0001.jpg, ... with their recipe. The loop resumes after the frames
already in the folder, from the float frame it kept (a JPEG would drift), with the random stream
replayed past the dreams done, so an interrupted run ends with the frames of an uninterrupted one.
"""
from pathlib import Path

import numpy as np

from .dream import random_state, skip_dreams, zoom_frame
from .dreamer import UserError, number
from .files import atomic_write
from .images import load_image, save_image
from .outputs import output_folder

STATE = '.zoom-state.npz'


def zoom_options(frames, scale, fps):
    """--frames, --scale and --fps, checked: a zoom needs a frame, and a scale below 1."""
    frames = number('frames', frames, int, 1, allow_equal=True)
    scale = number('scale', scale, float, 0.0)
    if scale >= 1:
        raise UserError(f'--scale must be below 1, got {scale}')
    return frames, scale, number('fps', fps, float, 0.0)


def frame_paths(outdir, frames):
    return [Path(outdir) / f'{i:04d}.jpg' for i in range(frames)]


def zoom(d, img, name, frames, scale, outdir, on_frame=None, say=None, on_octave=None):
    """Dream `frames` frames from the image `img` (its file's `name` goes into each recipe) into `outdir`.

    `on_frame(i, path)` is called as frame i is written, `say(line)` when resuming, `on_octave` as for
    Dreamer.dream. Returns the paths of all the frames."""
    outdir = Path(outdir)
    output_folder(outdir)
    done = sorted(int(p.stem) for p in outdir.glob('[0-9][0-9][0-9][0-9].jpg'))
    start = done[-1] + 1 if done else 0
    state = outdir / STATE
    rng = random_state(d.seed)
    frame = img
    if start:
        # Resume after the last frame written, replaying the random stream past the frames done.
        saved = np.load(state) if state.exists() else None
        if saved is not None and int(saved['frame']) == start - 1:
            frame = saved['image']
        else:
            frame = load_image(outdir / f'{start - 1:04d}.jpg')
        frame = zoom_frame(frame, scale)
        skip_dreams(rng, start, d.iter_n, d.octave_n, d.jitter)
        if say and start < frames:
            say(f'resuming at frame {start}')
    paths = frame_paths(outdir, frames)
    for frame_i in range(start, frames):
        frame = d.dream(frame, rng, label=f'frame {frame_i:04d}', on_octave=on_octave)
        save_image(paths[frame_i], d.finished(frame, img),
                   d.recipe(command='zoom', input=name, frame=frame_i, scale=scale))
        atomic_write(state, lambda f: np.savez(f, frame=frame_i, image=frame))
        if on_frame:
            on_frame(frame_i, paths[frame_i])
        frame = zoom_frame(frame, scale)
    return paths
