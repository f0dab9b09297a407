"""The command line (python-fire): dream, guide, visualize, zoom, atlas, layers, models, convert.

Every user mistake (a bad file, a bad parameter, an unknown layer, an output path that cannot be
written) ends as one line on stderr and exit status 2: no traceback, and no file of the user's is
overwritten: an output path is written only if it is new or holds an earlier classicdream result.
"""
import copy
import math
import os
import re
import sys
from collections import Counter
from pathlib import Path

import fire
import numpy as np

from . import __version__, memory
from .dream import DEFAULT_END, check_octaves, check_tile, deepdream, for_display, objective_guide, random_state, \
    skip_dreams, zoom_frame
from .files import atomic_write
from .images import check_writable, contact_sheet, decode_image, encode_image, holds_recipe, load_image, \
    recipe_or_none, same_file, save_image, write_encoded
from .objectives import CLASS_END, check_channels, find_class, noise_image, objective_channel, objective_class, \
    objective_weighted, synset_words


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


# What no file name may hold: path separators, control characters, what Windows refuses, and the lone
# surrogates that stand for undecodable bytes in a POSIX file name.
REFUSED = re.compile(r'[/\\\x00-\x1f\x7f-\x9f<>:"|?*\ud800-\udfff]+')


def _slug(text, limit=120):
    """`text` as part of a file name: letters and digits of every script kept, each run of refused
    characters one '-', and at most `limit` bytes, so a long input name still makes a valid output name."""
    text = REFUSED.sub('-', str(text)).strip('-. ')
    while len(text.encode()) > limit:
        text = text[:-1]
    return text.rstrip('-. ')


def _parse_end(spec):
    """--end as (layer, None), or for 'layer:weight,layer:weight' (several layers) (layers, weights)."""
    if isinstance(spec, (tuple, list)):
        spec = ','.join(map(str, spec))
    parts = [p.strip() for p in str(spec).split(',') if p.strip()]
    if not parts:
        raise UserError('--end must name a layer')
    layers, weights = [], []
    for part in parts:
        layer, colon, weight = part.partition(':')
        layers.append(layer.strip())
        try:
            weights.append(float(weight) if colon else 1.0)
        except ValueError:
            raise UserError(f'--end: the weight of {layer} must be a number, got {weight!r}') from None
        if not math.isfinite(weights[-1]):
            raise UserError(f'--end: the weight of {layer} must be finite, got {weight!r}')
    if len(set(layers)) != len(layers):
        raise UserError(f'--end names a layer twice: {spec}')
    if len(layers) == 1:
        return layers[0], None
    if not any(weights):
        raise UserError('--end: at least one weight must be non-zero')
    return tuple(layers), tuple(weights)


def _channels(value):
    """--channel=42 or --channel=42,43 (fire reads the latter as a tuple) as a tuple of ints, or None."""
    if value is None:
        return None
    items = value if isinstance(value, (tuple, list)) else str(value).split(',')
    return tuple(_number('channel', c, int, 0, allow_equal=True) for c in items)


def _size(name, value):
    """WxH (or N for a square) as (height, width)."""
    w, x, h = str(value).lower().partition('x')
    return (_number(name, h or w, int, 1, allow_equal=True), _number(name, w, int, 1, allow_equal=True))


def _image_files(folder):
    """The files in `folder` that PIL can name as images, sorted; hidden files are left out."""
    from PIL import Image
    extensions = Image.registered_extensions()
    return sorted(p for p in Path(folder).iterdir()
                  if p.is_file() and not p.name.startswith('.') and p.suffix.lower() in extensions)


def _output_folder(folder):
    """Create an output folder (and its parents), refusing a path that is a file."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f'{folder}: exists and is not a folder')
    folder.mkdir(parents=True, exist_ok=True)


def _check_output(out, inputs):
    """Refuse, before any work, an output that would replace an input or a file that is not ours."""
    check_writable(out)
    for path in inputs:
        if same_file(out, path):
            raise UserError(f'{out}: the output would overwrite the input {path}; choose another --out')
    if os.path.exists(out) and recipe_or_none(out) is None:
        raise UserError(f'{out}: exists and is not a classicdream result; not overwriting it')


def _paths(*names):
    """Fire reads arguments as Python literals (1e3 becomes 1000.0, None None); file names stay as typed."""
    return fire.decorators.SetParseFns(**dict.fromkeys(names, str))


class Dreamer:
    """Shared option handling for the commands that dream; holds the net once it is loaded."""

    def __init__(self, end, iter_n, octave_n, octave_scale, step_size, jitter, clip, seed, quiet, channel=None,
                 tile=None):
        self.end, self.weights = _parse_end(end)
        self.end_spec = ','.join(f'{e}:{w:g}' for e, w in zip(self.end, self.weights)) if self.weights \
            else self.end
        self.channels = _channels(channel)
        if self.channels and self.weights:
            raise UserError('--channel goes with one --end layer, not several')
        self.iter_n = _number('iter_n', iter_n, int, 1, allow_equal=True)
        self.octave_n = _number('octave_n', octave_n, int, 1, allow_equal=True)
        self.octave_scale = _number('octave_scale', octave_scale, float, 1.0, allow_equal=True)
        self.step_size = _number('step_size', step_size, float, 0.0)
        self.jitter = _number('jitter', jitter, int, 0, allow_equal=True)
        self.clip = _flag('clip', clip)
        self.seed = _seed(seed)
        self.tile = None if tile is None else _number('tile', tile, int, 0, allow_equal=True)   # 0: never
        self.quiet = bool(quiet)
        self._net = None

    def __getstate__(self):
        """A copy for a cluster worker, which loads the net itself (once) rather than receive it."""
        return dict(self.__dict__, _net=None)

    @property
    def net(self):
        if self._net is None:
            from . import load_net
            self._net = load_net()
            self.check()
        return self._net

    def check(self):
        """Unknown layers, channels and too-small tiles fail now, in one line, before any dreaming."""
        self.net.tensor(self.end)
        if self.channels:
            check_channels(self.net, self.end, self.channels)
        check_tile(self.net, self.tile or None, self.end)

    def at(self, end):
        """The same options, dreaming at another layer."""
        other = copy.copy(self)
        other.end = other.end_spec = end
        other.check()
        return other

    def fitted(self, shape):
        """These options, with a tile where an image of `shape` would not fit in memory untiled.

        Without --tile the largest tile that fits is chosen and said on stderr (the recipe records it);
        a --tile the user gave (--tile=0: never tile) that would not fit is refused, naming one that does.
        """
        budget = memory.budget()
        need = memory.estimate(self.net, shape, self.octave_n, self.octave_scale, self.end, self.tile or None)
        if budget is None or need <= budget:
            return self
        tile = memory.largest_tile(self.net, shape, self.octave_n, self.octave_scale, self.end, budget)
        what = (f'{shape[1]}x{shape[0]} at {self.end_spec} needs about {memory.gigabytes(need)} '
                f'{"with --tile=" + str(self.tile) if self.tile else "untiled"}, and '
                f'{memory.gigabytes(budget)} is available')
        if tile is None:
            raise UserError(f'{what}; even the smallest tile would not fit: use a smaller image')
        if self.tile is not None:
            raise UserError(f'{what}: use --tile={tile} (the largest that fits) or a smaller image')
        print(f'classicdream: {what}: dreaming in tiles of {tile}x{tile} (--tile={tile})', file=sys.stderr)
        other = copy.copy(self)
        other.tile = tile
        return other

    def objective(self):
        if self.channels:
            return objective_channel(self.channels)
        if self.weights:
            return objective_weighted(self.weights)
        return None

    def recipe(self, **extra):
        options = dict(channel=list(self.channels)) if self.channels else {}
        if self.tile:
            options['tile'] = self.tile
        return dict(classicdream=__version__, end=self.end_spec, iter_n=self.iter_n, octave_n=self.octave_n,
                    octave_scale=self.octave_scale, step_size=self.step_size, jitter=self.jitter,
                    clip=self.clip, seed=self.seed, model_sha256=self.net.sha256, **options, **extra)

    def name(self):
        """The layer part of a default output name: dreams/sky_inception_4c-output_c42_s0.jpg."""
        channels = f'_c{"-".join(map(str, self.channels))}' if self.channels else ''
        return _slug(self.end_spec.replace('/', '-')) + channels

    def dream(self, img, rng, objective=None, label=''):
        # deepdream checks this too; checking first keeps the error to one line, before a progress bar opens
        check_octaves(self.net, img.shape, self.octave_n, self.octave_scale, self.end)
        bar = None
        if not self.quiet:
            from tqdm import tqdm
            bar = tqdm(total=self.octave_n * self.iter_n, unit='step', file=sys.stderr, desc=label or 'dream')

        def progress(octave, size):
            bar.set_postfix_str(f'octave {octave + 1}/{self.octave_n} {size[1]}x{size[0]} {self.end_spec}')
            bar.update(self.iter_n)
        objective = objective if objective is not None else self.objective()
        extra = {} if objective is None else {'objective': objective}
        try:
            return deepdream(self.net, img, iter_n=self.iter_n, octave_n=self.octave_n,
                             octave_scale=self.octave_scale, end=self.end, clip=self.clip, seed=rng,
                             step_size=self.step_size, jitter=self.jitter, tile=self.tile or None,
                             progress=progress if bar else None, **extra)
        except Exception as e:          # noqa: BLE001 -- XLA's error class has moved between jax versions
            if not memory.is_exhaustion(e):
                raise
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f'out of memory dreaming {img.shape[1]}x{img.shape[0]} at {self.end_spec} ({reason}): '
                            f'try a smaller --tile or a smaller image') from None
        finally:
            if bar:
                bar.close()

    def encoded(self, img, recipe, label=''):
        """The dream of `img` (seed `self.seed`) as JPEG bytes carrying `recipe`: what a worker returns."""
        return encode_image(for_display(self.dream(img, random_state(self.seed), label=label), self.clip),
                            'JPEG', recipe)


def _dream_file(d, previous, img, recipe, label, tile):
    """One image of a folder: a task for cluster.runner."""
    return _tiled(d, tile).encoded(img, recipe, label)


def _dream_layer(d, previous, layer, img, recipe, tile):
    """One layer of an atlas: a task for cluster.runner."""
    return _tiled(d.at(layer), tile).encoded(img, recipe, layer)


def _tiled(d, tile):
    """`d` with the tile that `fitted` chose where the command runs (workers share their tool: one net)."""
    if tile == d.tile:
        return d
    other = copy.copy(d)
    other.tile = tile
    return other


def _cluster_options(cluster, workers):
    """--cluster and --workers, checked; --workers alone makes no sense."""
    if workers is not None:
        if cluster is None:
            raise UserError('--workers goes with --cluster')
        workers = _number('workers', workers, int, 1, allow_equal=True)
    if cluster is not None and not (str(cluster) in ('local', 'auto') or str(cluster).startswith('ray://')):
        raise UserError(f'--cluster must be local, auto or ray://HOST:PORT, got {cluster!r}')
    return cluster, workers


def _dream_options(doc):
    return doc + '''

Options (the notebook's defaults):
  --end=inception_4c/output  the layer whose activations are amplified (see `classicdream layers`);
                several at once, weighted: --end=inception_4c/output:1,inception_3b/output:0.5
  --iter_n=10 --octave_n=4 --octave_scale=1.4 --step_size=1.5 --jitter=32 --clip=True
  --seed=0      the notebook's np.random.seed; --seed=random picks one and records it in the output
  --quiet       no progress bar'''


class Commands:
    """classicdream: Google's 2015 DeepDream notebook, faithfully, in JAX (bvlc_googlenet via ONNX).

    classicdream dream IMG [--out=PATH] [options]      dream on an image
    classicdream dream DIR [--outdir=OUT]              dream on every image in a folder (resumable)
    classicdream dream --noise=WxH [options]           dream on seeded noise
    classicdream guide IMG GUIDE [--out=PATH]          dream guided by another image's features
    classicdream visualize --class=NAME [--out=PATH]   what the net thinks a class looks like
    classicdream zoom IMG --frames=N [--mp4=PATH]      the notebook's zooming frames, and a video
    classicdream video SRC [--out=PATH] [--blend=0.5]  dream every frame of a video, keep its sound
    classicdream atlas IMG [--layers=A,B,...]          the same image dreamed at every layer, on one sheet
    classicdream layers                                every layer you can dream on, with its shape
    classicdream models                                build models/bvlc_googlenet.onnx
    classicdream convert DEPLOY WEIGHTS OUT            convert any Caffe net to ONNX
    """

    @_paths('img', 'out', 'outdir')
    def dream(self, img=None, out=None, outdir=None, end=DEFAULT_END, channel=None, noise=None, tile=None,
              cluster=None, workers=None, iter_n=10, octave_n=4, octave_scale=1.4, step_size=1.5, jitter=32,
              clip=True, seed=0, quiet=False):
        d = Dreamer(end, iter_n, octave_n, octave_scale, step_size, jitter, clip, seed, quiet, channel, tile)
        cluster, workers = _cluster_options(cluster, workers)
        if noise is not None and img is not None:
            raise UserError('give an image or --noise=WxH, not both')
        if noise is None and img is None:
            raise UserError('give an image, a folder of images, or --noise=WxH')
        if img is not None and os.path.isdir(str(img)):
            if out is not None:
                raise UserError(f'{img} is a folder: give --outdir for its dreams, not --out')
            return _dream_folder(d, Path(str(img)), Path(str(outdir)) if outdir else None, cluster, workers)
        if cluster is not None:
            raise UserError('--cluster is for a folder of images (or an atlas, or a video), not one image')
        if outdir is not None:
            raise UserError('--outdir is for a folder of images; give --out for one image')
        rng = random_state(d.seed)
        if noise is not None:
            h, w = _size('noise', noise)
            name, inputs, base = f'noise{w}x{h}', [], noise_image(h, w, rng)
        else:
            name, inputs, base = Path(str(img)).name, [img], load_image(img)
        out = _output(out, f'{_slug(Path(name).stem)}_{d.name()}_s{d.seed}.jpg', inputs)
        d = d.fitted(base.shape)
        result = d.dream(base, rng, label=name)
        save_image(out, for_display(result, d.clip), d.recipe(command='dream', input=name))
        print(out)

    @_paths('img', 'guide', 'out')
    def guide(self, img, guide, out=None, end='inception_3b/output', tile=None, iter_n=10, octave_n=4,
              octave_scale=1.4, step_size=1.5, jitter=32, clip=True, seed=0, quiet=False):
        d = Dreamer(end, iter_n, octave_n, octave_scale, step_size, jitter, clip, seed, quiet, tile=tile)
        if d.weights:
            raise UserError('guide dreams at one --end layer')
        base, guide_img = load_image(img), load_image(guide)
        out = _output(out, f'{_slug(Path(str(img)).stem)}_guide-{_slug(Path(str(guide)).stem)}_'
                           f'{d.name()}_s{d.seed}.jpg', [img, guide])
        check_octaves(d.net, guide_img.shape, 1, 1.0, d.end)
        objective = objective_guide(d.net, guide_img, d.end)
        d = d.fitted(base.shape)
        result = d.dream(base, random_state(d.seed), objective, label=Path(str(img)).name)
        save_image(out, for_display(result, d.clip),
                   d.recipe(command='guide', input=Path(str(img)).name, guide=Path(str(guide)).name))
        print(out)

    @_paths('out', 'img')
    def visualize(self, out=None, img=None, size=224, iter_n=20, octave_n=4, octave_scale=1.4, step_size=1.5,
                  jitter=32, clip=True, seed=0, quiet=False, **options):
        if options.pop('help', False):          # fire hands --help to a command that takes **options
            print('usage: classicdream visualize --class=NAME [--out=PATH] [--img=PATH] [options]\n')
            print(Commands.visualize.__doc__)
            return
        klass = options.pop('class', None)
        if options:
            raise UserError(f'unknown option --{next(iter(options))}; see classicdream visualize --help')
        if klass is None:
            raise UserError('say which class: --class=NAME or --class=INDEX (e.g. --class=ladybug)')
        synsets = synset_words()
        index = find_class(klass, synsets)
        label = synsets[index][1][0]
        d = Dreamer(CLASS_END, iter_n, octave_n, octave_scale, step_size, jitter, clip, seed, quiet)
        rng = random_state(d.seed)
        if img is not None:
            name, inputs, base = Path(str(img)).name, [img], load_image(img)
        else:
            h, w = _size('size', size)
            name, inputs, base = f'noise{w}x{h}', [], noise_image(h, w, rng)
        out = _output(out, f'class{index}_{_slug(label)}_s{d.seed}.jpg', inputs)
        d = d.fitted(base.shape)
        result = d.dream(base, rng, objective_class(d.net, index), label=label)
        save_image(out, for_display(result, d.clip),
                   d.recipe(command='visualize', input=name, class_index=index, class_name=label))
        print(out)

    @_paths('img', 'outdir', 'mp4')
    def zoom(self, img, frames, scale=0.05, outdir=None, mp4=None, fps=25, end=DEFAULT_END, iter_n=10,
             octave_n=4, octave_scale=1.4, step_size=1.5, jitter=32, clip=True, seed=0, quiet=False):
        d = Dreamer(end, iter_n, octave_n, octave_scale, step_size, jitter, clip, seed, quiet)
        frames = _number('frames', frames, int, 1, allow_equal=True)
        scale = _number('scale', scale, float, 0.0)
        if scale >= 1:
            raise UserError(f'--scale must be below 1, got {scale}')
        fps = _number('fps', fps, float, 0.0)
        if mp4 is not None:
            _check_video_output(str(mp4))
        outdir = Path(outdir or f'frames/{_slug(Path(str(img)).stem)}')
        frame = load_image(img)
        d = d.fitted(frame.shape)
        _output_folder(outdir)
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
            if not d.quiet and start < frames:
                print(f'resuming at frame {start}', file=sys.stderr)
        for frame_i in range(start, frames):
            frame = d.dream(frame, rng, label=f'frame {frame_i:04d}')
            path = outdir / f'{frame_i:04d}.jpg'
            save_image(path, for_display(frame, d.clip),
                       d.recipe(command='zoom', input=Path(str(img)).name, frame=frame_i, scale=scale))
            atomic_write(state, lambda f: np.savez(f, frame=frame_i, image=frame))
            print(path)
            frame = zoom_frame(frame, scale)
        if mp4 is not None:
            from .video import write_mp4
            paths = [outdir / f'{i:04d}.jpg' for i in range(frames)]
            print(write_mp4(paths, mp4, fps, d.recipe(command='zoom', input=Path(str(img)).name, frames=frames,
                                                      scale=scale, fps=fps)))

    @_paths('src', 'out', 'outdir')
    def video(self, src, out=None, outdir=None, blend=0.0, flow=False, start=0, stop=None, fps=None, cluster=None,
              workers=None, end=DEFAULT_END, channel=None, tile=None, iter_n=10, octave_n=4, octave_scale=1.4,
              step_size=1.5, jitter=32, clip=True, seed=0, quiet=False):
        from .clip import dream_clip
        from .cluster import runner
        from .video import open_clip, write_mp4
        d = Dreamer(end, iter_n, octave_n, octave_scale, step_size, jitter, clip, seed, quiet, channel, tile)
        cluster, workers = _cluster_options(cluster, workers)
        blend = _number('blend', blend, float, 0, allow_equal=True)
        if blend >= 1:
            raise UserError(f'--blend must be below 1, got {blend}')
        flow = _flag('flow', flow)
        if flow and not blend:
            raise UserError('--flow moves the previous dream before blending: give --blend too')
        start = _number('start', start, float, 0, allow_equal=True)
        stop = None if stop is None else _number('stop', stop, float, 0)
        fps = None if fps is None else _number('fps', fps, float, 0)
        name = Path(str(src)).name
        if out is None:
            os.makedirs('dreams', exist_ok=True)
        out = str(out or Path('dreams') / f'{_slug(Path(name).stem)}_{d.name()}_s{d.seed}.mp4')
        _check_video_output(out, '--out')
        if same_file(out, str(src)):
            raise UserError(f'{out}: the output would overwrite the input; choose another --out')
        source = open_clip(str(src), start, stop, fps)
        check_octaves(d.net, source.size[::-1], d.octave_n, d.octave_scale, d.end)
        d = d.fitted((*source.size[::-1], 3))
        outdir = Path(outdir or f'frames/{_slug(Path(out).stem)}')
        _output_folder(outdir)
        options = dict(command='video', input=name, start=start, stop=stop, fps=source.fps, blend=blend, flow=flow)
        bar = None
        if not d.quiet:
            from tqdm import tqdm
            bar = tqdm(total=source.frames, unit='frame', file=sys.stderr, desc=name)
        tool = copy.copy(d)
        tool.quiet = True                               # one bar, of frames, rather than one per dream
        try:
            with runner(cluster, tool, workers) as pool:
                paths, failed = dream_clip(tool, source, outdir, lambda i: d.recipe(frame=i, **options), pool,
                                           blend, flow, pool.size, bar and (lambda i: bar.update()))
        finally:
            if bar:
                bar.close()
        if failed:
            raise UserError(f'{len(failed)} of {source.frames} frames failed, the first: frame {failed[0][0]}: '
                            f'{failed[0][1]}')
        print(write_mp4(paths, out, source.fps, d.recipe(frames=source.frames, **options), audio=source))

    @_paths('img', 'outdir')
    def atlas(self, img, layers=None, outdir=None, thumb=256, cluster=None, workers=None, iter_n=10, octave_n=4,
              octave_scale=1.4, step_size=1.5, jitter=32, clip=True, seed=0, quiet=False):
        from .cluster import runner
        cluster, workers = _cluster_options(cluster, workers)
        d = Dreamer(DEFAULT_END, iter_n, octave_n, octave_scale, step_size, jitter, clip, seed, quiet)
        thumb = _number('thumb', thumb, int, 16, allow_equal=True)
        base, name = load_image(img), Path(str(img)).name
        layers = _layer_list(layers) if layers is not None else atlas_layers(d.net)
        dreamers = [d.at(layer).fitted(base.shape) for layer in layers]
        for each in dreamers:
            check_octaves(d.net, base.shape, each.octave_n, each.octave_scale, each.end)
        outdir = Path(outdir or f'atlas/{_slug(Path(name).stem)}')
        _output_folder(outdir)
        sheet = str(outdir / 'atlas.jpg')
        _check_output(sheet, [img])
        dreams, paths, lanes = {}, {}, []
        for i, each in enumerate(dreamers):
            paths[i], recipe = str(outdir / f'{i:02d}_{each.name()}.jpg'), each.recipe(command='atlas', input=name)
            if holds_recipe(paths[i], recipe):               # done in an earlier, interrupted run
                dreams[i] = load_image(paths[i])
                continue
            _check_output(paths[i], [img])
            lanes.append((None, [(i, (each.end, base, recipe, each.tile))]))
        with runner(cluster, d, workers) as pool:
            for i, result in pool.run(_dream_layer, lanes):
                if isinstance(result, Exception):
                    raise UserError(f'{layers[i]}: {result}')
                write_encoded(paths[i], result)
                dreams[i] = decode_image(result, paths[i])
                print(paths[i])
        save_image(sheet, contact_sheet([dreams[i] for i in range(len(layers))], layers, thumb),
                   dict(d.recipe(command='atlas', input=name), end=None, layers=list(layers)))
        print(sheet)

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
recipe (parameters, seed, model sha256, version) as a JPEG comment or PNG text chunk.
  --channel=42       amplify one channel of --end (or several: --channel=42,43), not the whole layer
  --noise=WxH        start from seeded noise (mid-grey 100 + uniform [0,1)) instead of an image
  --tile=512         compute octaves larger than 512x512 in tiles, to bound memory on big images;
                     without it a dream too big for memory is tiled automatically, --tile=0 never tiles
  IMG a folder:      dream every image in it into --outdir (default dreams/<folder>/); images
                     already done with the same recipe are skipped, failures reported per file
  --cluster=local|auto|ray://HOST:PORT   with a folder: one Ray task per image, on workers that keep the
                     net loaded (needs classicdream[cluster]); --workers=N (default: one per GPU)''')
Commands.guide.__doc__ = _dream_options('''Dream on IMG guided by GUIDE (the notebook's objective_guide).

At each position the dream follows the guide's feature that matches best, at --end (default
inception_3b/output, as in the notebook).''')
Commands.visualize.__doc__ = _dream_options('''Ask the net what an ImageNet class looks like: from seeded noise (or
--img), maximise the class's pre-softmax score (loss3/classifier) with the dream's jitter and octaves.

  --class=ladybug    a name from ImageNet's synset_words.txt, its wnid, or an index 0..999
  --size=224         noise size, WxH or N; --img=PATH starts from an image instead
The default output is dreams/class<index>_<name>_s<seed>.jpg; --iter_n defaults to 20 here.''')
Commands.zoom.__doc__ = _dream_options('''The notebook's zoom loop: dream, save frame, zoom in by --scale, repeat.

Frames are written as OUTDIR/0000.jpg, 0001.jpg, ... (default frames/<image>/). Resumable: run the
same command again and it continues after the last frame, with the same random stream.
  --frames=N   number of frames     --scale=0.05   zoom per frame (the notebook's s)
  --mp4=PATH   then encode frames 0..N-1 as an H.264 video (--fps=25)''')
Commands.video.__doc__ = _dream_options('''Dream every frame of a video SRC (any file ffmpeg reads), keeping its sound.

The dreams are encoded as H.264 at SRC's frame rate and size in --out=PATH.mp4 (default
dreams/<video>_<layer>_s<seed>.mp4); the frames go to --outdir (default frames/<out name>/) with
their recipe. Resumable: run the same command again and it continues.
  --blend=0.5        start each frame from 0.5 * the previous dream + 0.5 * the frame (less flicker)
  --flow             move the previous dream along the optical flow first (classicdream[flow])
  --start=S --stop=S seconds of SRC to dream (--end stays the layer); --fps=N resamples
  --cluster=local|auto|ray://HOST:PORT   dream on Ray workers (classicdream[cluster]); --workers=N
  --channel=42 --tile=512   as for dream''')
Commands.atlas.__doc__ = _dream_options('''The layer tour: dream IMG at each layer and lay the dreams out on one
labelled contact sheet, OUTDIR/atlas.jpg (default atlas/<image>/), beside the single dreams.

  --layers=A,B,...   the layers (default: every ReLU and concat output from conv1 to inception_5b)
  --thumb=256        width of each picture on the sheet
  --cluster=local|auto|ray://HOST:PORT   one Ray task per layer (classicdream[cluster]); --workers=N
Resumable: dreams already in OUTDIR with the same recipe are not dreamed again.''')


def atlas_layers(net):
    """Every ReLU and concat output in network order: each stage of how the net sees, conv1 to inception_5b."""
    ops = {node.output: node.op for node in net.nodes}
    return [layer for layer, tensor, _ in net.layers if ops.get(tensor) in ('Relu', 'Concat')]


def _layer_list(value):
    layers = value if isinstance(value, (tuple, list)) else str(value).split(',')
    layers = [str(layer).strip() for layer in layers if str(layer).strip()]
    if not layers:
        raise UserError('--layers must name at least one layer')
    return layers


def _dream_folder(d, folder, outdir, cluster=None, workers=None):
    """Dream every image in `folder` into `outdir`, here or on a cluster: skip those already done with
    this recipe, report a failure per file and go on, and fail (one line, exit 2) at the end if any did."""
    from .cluster import runner
    images = _image_files(folder)
    if not images:
        raise UserError(f'{folder}: no images in this folder')
    outdir = outdir or Path('dreams') / _slug(folder.resolve().name)
    _output_folder(outdir)
    d.check()                                         # a bad --end fails once, not once per image
    stems = Counter(p.stem for p in images)
    outs, skipped, failed = {}, 0, []

    def fail(path, e):
        failed.append(path.name)
        print(f'classicdream: {path}: {e}', file=sys.stderr)

    def lanes():                                      # images are read as workers become free
        nonlocal skipped
        for path in images:
            out = outs[path] = outdir / f'{path.stem if stems[path.stem] == 1 else path.name}.jpg'
            recipe = d.recipe(command='dream', input=path.name)
            if holds_recipe(out, recipe):
                skipped += 1
                continue
            try:
                _check_output(str(out), [str(path)])
                img = load_image(path)
                each = d.fitted(img.shape)
            except (UserError, ValueError) as e:
                fail(path, e)
                continue
            yield None, [(path, (img, each.recipe(command='dream', input=path.name), path.name, each.tile))]
    dreamed = 0
    with runner(cluster, d, workers) as pool:
        for path, result in pool.run(_dream_file, lanes()):
            if isinstance(result, Exception):           # one bad file must not stop the others
                fail(path, result)
                continue
            write_encoded(outs[path], result)
            dreamed += 1
            print(outs[path])
    summary = f'{dreamed} dreamed, {skipped} already done, {len(failed)} failed'
    if failed:
        raise UserError(f'{summary}: {", ".join(failed)}')
    print(summary, file=sys.stderr)


def _check_video_output(out, option='--mp4'):
    if not out.lower().endswith('.mp4'):
        raise UserError(f'{out}: {option} must name a .mp4 file')
    folder = os.path.dirname(out) or '.'
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise UserError(f'{out}: folder {folder!r} does not exist or is not writable')
    from .video import is_ours
    if os.path.isdir(out) or (os.path.exists(out) and not is_ours(out)):
        raise UserError(f'{out}: exists and is not a classicdream video; not overwriting it')


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
