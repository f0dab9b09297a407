"""The command line (python-fire): dream, guide, zoom, layers, models, convert.

Every user mistake (a bad file, a bad parameter, an unknown layer, an output path that cannot be
written) ends as one line on stderr and exit status 2: no traceback, and no file of the user's is
overwritten: an output path is written only if it is new or holds an earlier classicdream result.
"""
import math
import os
import re
import sys
from pathlib import Path

import fire
import numpy as np

from . import __version__
from .dream import DEFAULT_END, check_octaves, deepdream, for_display, objective_guide, random_state, \
    skip_dreams, zoom_frame
from .files import atomic_write
from .images import ImageError, check_writable, load_image, read_recipe, same_file, save_image


class UserError(Exception):
    """Bad input from the user: printed as one line, exit status 2, no traceback."""


def _number(name, value, kind, minimum, allow_equal=False):
    """A parameter as int or float, refusing text, NaN, infinities and values at or below `minimum`."""
    if isinstance(value, bool):
        raise UserError(f'--{name} must be a number, got {value}')
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f'--{name} must be a number, got {value!r}') from None
    if not math.isfinite(number):
        raise UserError(f'--{name} must be a finite number, got {value!r}')
    if kind is int:
        if number != int(number):
            raise UserError(f'--{name} must be a whole number, got {value!r}')
        number = int(number)
    if number < minimum or (number == minimum and not allow_equal):
        bound = f'at least {minimum}' if allow_equal else f'greater than {minimum}'
        raise UserError(f'--{name} must be {bound}, got {value!r}')
    return number


def _seed(seed):
    """An int seed for np.random.RandomState, or 'random' for one drawn from the OS (and reported)."""
    if str(seed).lower() == 'random':
        return int.from_bytes(os.urandom(4), 'little')
    seed = _number('seed', seed, int, 0, allow_equal=True)
    if seed >= 2 ** 32:
        raise UserError(f'--seed must be below 2**32, got {seed}')
    return seed


def _flag(name, value):
    if isinstance(value, bool):
        return value
    if str(value).lower() in ('true', 'false'):
        return str(value).lower() == 'true'
    raise UserError(f'--{name} must be True or False, got {value!r}')


def _slug(text):
    return re.sub(r'[^A-Za-z0-9_.-]+', '-', str(text)).strip('-')


def _check_output(out, inputs):
    """Refuse, before any work, an output that would replace an input or a file that is not ours."""
    check_writable(out)
    for path in inputs:
        if same_file(out, path):
            raise UserError(f'{out}: the output would overwrite the input {path}; choose another --out')
    if os.path.exists(out):
        try:
            ours = read_recipe(out) is not None
        except ImageError:
            ours = False
        if not ours:
            raise UserError(f'{out}: exists and is not a classicdream result; not overwriting it')


class Dreamer:
    """Shared option handling for the commands that dream; holds the net once it is loaded."""

    def __init__(self, end, iter_n, octave_n, octave_scale, step_size, jitter, clip, seed, quiet):
        self.end = str(end)
        self.iter_n = _number('iter_n', iter_n, int, 1, allow_equal=True)
        self.octave_n = _number('octave_n', octave_n, int, 1, allow_equal=True)
        self.octave_scale = _number('octave_scale', octave_scale, float, 1.0, allow_equal=True)
        self.step_size = _number('step_size', step_size, float, 0.0)
        self.jitter = _number('jitter', jitter, int, 0, allow_equal=True)
        self.clip = _flag('clip', clip)
        self.seed = _seed(seed)
        self.quiet = bool(quiet)
        self._net = None

    @property
    def net(self):
        if self._net is None:
            from . import load_net
            self._net = load_net()
            self._net.tensor(self.end)                    # unknown layer: fail now, with suggestions
        return self._net

    def recipe(self, **extra):
        return dict(classicdream=__version__, end=self.end, iter_n=self.iter_n, octave_n=self.octave_n,
                    octave_scale=self.octave_scale, step_size=self.step_size, jitter=self.jitter,
                    clip=self.clip, seed=self.seed, model_sha256=self.net.sha256, **extra)

    def dream(self, img, rng, objective=None, label=''):
        # deepdream checks this too; checking first keeps the error to one line, before a progress bar opens
        check_octaves(self.net, img.shape, self.octave_n, self.octave_scale, self.end)
        bar = None
        if not self.quiet:
            from tqdm import tqdm
            bar = tqdm(total=self.octave_n * self.iter_n, unit='step', file=sys.stderr, desc=label or 'dream')

        def progress(octave, size):
            bar.set_postfix_str(f'octave {octave + 1}/{self.octave_n} {size[1]}x{size[0]} {self.end}')
            bar.update(self.iter_n)
        extra = {} if objective is None else {'objective': objective}
        try:
            return deepdream(self.net, img, iter_n=self.iter_n, octave_n=self.octave_n,
                             octave_scale=self.octave_scale, end=self.end, clip=self.clip, seed=rng,
                             step_size=self.step_size, jitter=self.jitter,
                             progress=progress if bar else None, **extra)
        finally:
            if bar:
                bar.close()


def _dream_options(doc):
    return doc + '''

Options (the notebook's defaults):
  --end=inception_4c/output  the layer whose activations are amplified (see `classicdream layers`)
  --iter_n=10 --octave_n=4 --octave_scale=1.4 --step_size=1.5 --jitter=32 --clip=True
  --seed=0      the notebook's np.random.seed; --seed=random picks one and records it in the output
  --quiet       no progress bar'''


class Commands:
    """classicdream: Google's 2015 DeepDream notebook, faithfully, in JAX (bvlc_googlenet via ONNX).

    classicdream dream IMG [--out=PATH] [options]      dream on an image
    classicdream guide IMG GUIDE [--out=PATH]          dream guided by another image's features
    classicdream zoom IMG --frames=N [--outdir=DIR]    the notebook's zooming frames
    classicdream layers                                every layer you can dream on, with its shape
    classicdream models                                build models/bvlc_googlenet.onnx
    classicdream convert DEPLOY WEIGHTS OUT            convert any Caffe net to ONNX
    """

    def dream(self, img, out=None, end=DEFAULT_END, iter_n=10, octave_n=4, octave_scale=1.4, step_size=1.5,
              jitter=32, clip=True, seed=0, quiet=False):
        d = Dreamer(end, iter_n, octave_n, octave_scale, step_size, jitter, clip, seed, quiet)
        base = load_image(img)
        out = _output(out, f'{_slug(Path(str(img)).stem)}_{_slug(d.end.replace("/", "-"))}_s{d.seed}.jpg', [img])
        result = d.dream(base, random_state(d.seed), label=Path(str(img)).name)
        save_image(out, for_display(result, d.clip), d.recipe(command='dream', input=Path(str(img)).name))
        print(out)

    def guide(self, img, guide, out=None, end='inception_3b/output', iter_n=10, octave_n=4, octave_scale=1.4,
              step_size=1.5, jitter=32, clip=True, seed=0, quiet=False):
        d = Dreamer(end, iter_n, octave_n, octave_scale, step_size, jitter, clip, seed, quiet)
        base, guide_img = load_image(img), load_image(guide)
        out = _output(out, f'{_slug(Path(str(img)).stem)}_guide-{_slug(Path(str(guide)).stem)}_'
                           f'{_slug(d.end.replace("/", "-"))}_s{d.seed}.jpg', [img, guide])
        check_octaves(d.net, guide_img.shape, 1, 1.0, d.end)
        objective = objective_guide(d.net, guide_img, d.end)
        result = d.dream(base, random_state(d.seed), objective, label=Path(str(img)).name)
        save_image(out, for_display(result, d.clip),
                   d.recipe(command='guide', input=Path(str(img)).name, guide=Path(str(guide)).name))
        print(out)

    def zoom(self, img, frames, scale=0.05, outdir=None, end=DEFAULT_END, iter_n=10, octave_n=4,
             octave_scale=1.4, step_size=1.5, jitter=32, clip=True, seed=0, quiet=False):
        d = Dreamer(end, iter_n, octave_n, octave_scale, step_size, jitter, clip, seed, quiet)
        frames = _number('frames', frames, int, 1, allow_equal=True)
        scale = _number('scale', scale, float, 0.0)
        if scale >= 1:
            raise UserError(f'--scale must be below 1, got {scale}')
        outdir = Path(outdir or f'frames/{_slug(Path(str(img)).stem)}')
        frame = load_image(img)
        if outdir.exists() and not outdir.is_dir():
            raise UserError(f'{outdir}: exists and is not a folder')
        outdir.mkdir(parents=True, exist_ok=True)
        done = sorted(int(p.stem) for p in outdir.glob('[0-9][0-9][0-9][0-9].jpg'))
        start = done[-1] + 1 if done else 0
        state = outdir / '.zoom-state.npz'          # the float frame: resuming from a JPEG would drift
        rng = random_state(d.seed)
        if start:
            # Resume after the last frame written, replaying the random stream past the frames done.
            saved = np.load(state) if state.exists() else None
            if saved is not None and int(saved['frame']) == start - 1:
                frame = saved['image']
            else:
                frame = load_image(outdir / f'{start - 1:04d}.jpg')
            frame = zoom_frame(frame, scale)
            skip_dreams(rng, start, d.iter_n, d.octave_n, d.jitter)
            if not d.quiet:
                print(f'resuming at frame {start}', file=sys.stderr)
        for frame_i in range(start, frames):
            frame = d.dream(frame, rng, label=f'frame {frame_i:04d}')
            path = outdir / f'{frame_i:04d}.jpg'
            save_image(path, for_display(frame, d.clip),
                       d.recipe(command='zoom', input=Path(str(img)).name, frame=frame_i, scale=scale))
            atomic_write(state, lambda f: np.savez(f, frame=frame_i, image=frame))
            print(path)
            frame = zoom_frame(frame, scale)

    def layers(self, height=224, width=224):
        """Every layer you can dream on (--end), in network order, with its output shape for one input.

        In-place ReLUs are listed after their convolution: --end=conv gives the pre-ReLU values, as
        pycaffe's forward(end=...) did in the notebook; --end=its ReLU the values after it."""
        from . import load_net
        net = load_net()
        shapes = net.shapes(_number('height', height, int, 1, True), _number('width', width, int, 1, True))
        for layer, tensor, blob in net.layers[1:]:
            note = f'  (in place on {blob})' if layer != blob else ''
            shape = 'x'.join(map(str, shapes[layer])) if shapes[layer] else 'too small'
            print(f'{layer:40s} {shape}{note}')

    def models(self, force=False):
        """Build models/bvlc_googlenet.onnx from the first source present (your caffemodel, the local
        mirror, or a hash-checked download) and say which one was used."""
        from .models import build
        print(build(force=_flag('force', force)))

    def convert(self, deploy, weights, out):
        """Convert a Caffe net to ONNX: DEPLOY.prototxt WEIGHTS.caffemodel (or Caffe-layout .npz) OUT.onnx.
        Tensor names are Caffe's blob names; works for other Caffe GoogLeNets (Places205/365) too."""
        from .convert import convert
        print(f'{out} (sha256 {convert(deploy, weights, out)})')


Commands.dream.__doc__ = _dream_options('''Dream on IMG with the notebook's deepdream() and write the result.

The default output is dreams/<image>_<layer>_s<seed>.jpg (never the input); the file carries its
recipe (parameters, seed, model sha256, version) as a JPEG comment or PNG text chunk.''')
Commands.guide.__doc__ = _dream_options('''Dream on IMG guided by GUIDE (the notebook's objective_guide).

At each position the dream follows the guide's feature that matches best, at --end (default
inception_3b/output, as in the notebook).''')
Commands.zoom.__doc__ = _dream_options('''The notebook's zoom loop: dream, save frame, zoom in by --scale, repeat.

Frames are written as OUTDIR/0000.jpg, 0001.jpg, ... (default frames/<image>/). Resumable: run the
same command again and it continues after the last frame, with the same random stream.
  --frames=N   number of frames     --scale=0.05   zoom per frame (the notebook's s)''')


def _output(out, default_name, inputs):
    """The output path: --out as given, or dreams/DEFAULT_NAME (that folder is ours to create); checked."""
    if out is None:
        os.makedirs('dreams', exist_ok=True)
        out = os.path.join('dreams', default_name)
    _check_output(str(out), [str(p) for p in inputs])
    return str(out)


def main(argv=None):
    from .caffe import CaffeFormatError
    from .models import ModelError
    try:
        fire.Fire(Commands, command=argv, name='classicdream')
    except (UserError, CaffeFormatError, ModelError, ValueError, OSError) as e:
        print(f'classicdream: error: {e}', file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print('classicdream: interrupted', file=sys.stderr)
        sys.exit(130)
