"""The dreaming options, checked once, and the net they dream with: what every front end shares.

The command line, the page (serve.py) and the cluster workers each hold a ``Dreamer``: options parsed
and refused in one line (``UserError``), the net loaded once, a tile chosen where memory would not
hold the dream, the recipe that goes into every result, and the progress of a dream as it runs.
"""
import copy
import math
import os
import re
import sys
from pathlib import Path

from . import __version__, memory
from .colors import CHOICES, recolored
from .dream import CAFFE, DEFAULT_END, PREPROCESSINGS, check_octaves, check_tile, deepdream, for_display, random_state
from .images import encode_image
from .mask import Mask, load_mask
from .objectives import check_channels, objective_channel, objective_weighted


class UserError(Exception):
    """Bad input from the user: printed as one line (exit status 2 on the command line), no traceback."""


def number(name, value, kind, minimum, allow_equal=False):
    """A parameter as int or float, refusing text, NaN, infinities and values at or below `minimum`."""
    if isinstance(value, bool):
        raise UserError(f'--{name} must be a number, got {value}')
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise UserError(f'--{name} must be a number, got {value!r}') from None
    if not math.isfinite(result):
        raise UserError(f'--{name} must be a finite number, got {value!r}')
    if kind is int:
        if result != int(result):
            raise UserError(f'--{name} must be a whole number, got {value!r}')
        result = int(result)
    if result < minimum or (result == minimum and not allow_equal):
        bound = f'at least {minimum}' if allow_equal else f'greater than {minimum}'
        raise UserError(f'--{name} must be {bound}, got {value!r}')
    return result


# The options a keyframe may change along a zoom or a video, as (kind, minimum, minimum allowed) for `number`
NUMBERS = dict(step_size=(float, 0.0, False), iter_n=(int, 1, True), octave_n=(int, 1, True), jitter=(int, 0, True))


def seed_of(seed):
    """An int seed for np.random.RandomState, or 'random' for one drawn from the OS (and reported)."""
    if str(seed).strip().lower() == 'random':
        return int.from_bytes(os.urandom(4), 'little')
    seed = number('seed', seed, int, 0, allow_equal=True)
    if seed >= 2 ** 32:
        raise UserError(f'--seed must be below 2**32, got {seed}')
    return seed


def flag(name, value):
    if isinstance(value, bool):
        return value
    if str(value).lower() in ('true', 'false'):
        return str(value).lower() == 'true'
    raise UserError(f'--{name} must be True or False, got {value!r}')


def parse_end(spec, names=None):
    """--end as (layer, None), or for 'layer:weight,layer:weight' (several layers) (layers, weights).

    Tensor names may hold ':' and ',' (tf2onnx names every tensor 'Relu_30:0'): where the net is known
    (`names`), a name it has is taken whole, so an existing name wins; a weight is what follows a part's
    last ':' ('Relu_30:0:0.5' weighs Relu_30:0 by 0.5)."""
    if isinstance(spec, (tuple, list)):
        spec = ','.join(map(str, spec))
    spec = str(spec).strip()
    if names is not None and spec in names:
        return spec, None
    parts = [p.strip() for p in spec.split(',') if p.strip()]
    if not parts:
        raise UserError('--end must name a layer')
    layers, weights = [], []
    for part in parts:
        layer, colon, weight = ('', '', '') if names is not None and part in names else part.rpartition(':')
        layer = layer.strip() if colon else part
        layers.append(layer)
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


def parse_channels(value):
    """--channel=42 or --channel=42,43 (fire reads the latter as a tuple) as a tuple of ints, or None."""
    if value is None:
        return None
    items = value if isinstance(value, (tuple, list)) else str(value).split(',')
    return tuple(number('channel', c, int, 0, allow_equal=True) for c in items)


def parse_size(name, value):
    """WxH (or N for a square) as (height, width)."""
    w, x, h = str(value).lower().partition('x')
    return (number(name, h or w, int, 1, allow_equal=True), number(name, w, int, 1, allow_equal=True))


# What no file name may hold: path separators, control characters, what Windows refuses, and the lone
# surrogates that stand for undecodable bytes in a POSIX file name.
REFUSED = re.compile(r'[/\\\x00-\x1f\x7f-\x9f<>:"|?*\ud800-\udfff]+')


def slug(text, limit=120):
    """`text` as part of a file name: letters and digits of every script kept, each run of refused
    characters one '-', and at most `limit` bytes, so a long input name still makes a valid output name."""
    text = REFUSED.sub('-', str(text)).strip('-. ')
    while len(text.encode()) > limit:
        text = text[:-1]
    return text.rstrip('-. ')


def say_assumed_preprocessing(net, model):
    """One line on stderr where a net's metadata names no preprocessing: which one is assumed, and how to
    change it."""
    if net.preprocess_given is None:
        p = PREPROCESSINGS[net.preprocessing]
        print(f'classicdream: {Path(str(model)).name} names no preprocessing in its metadata; assuming '
              f'{p.name} ({p.description}), as {net.producer or "its exporter"} exports usually want: '
              f'--preprocess=caffe|torch|tf to change it', file=sys.stderr)


class Dreamer:
    """The options of the commands that dream, checked; holds the net once it is loaded."""

    def __init__(self, end, iter_n, octave_n, octave_scale, step_size, jitter, clip, seed, quiet, channel=None,
                 tile=None, colors=None, lapnorm=0, model=None, preprocess=None, mask=None):
        self.channels = parse_channels(channel)
        self._end_given, self._end = end, None
        if model is None:             # the notebook's net: its layers' names hold neither ':' nor ','
            self._set_end(*parse_end(DEFAULT_END if end is None else end))
        self.iter_n = number('iter_n', iter_n, *NUMBERS['iter_n'])
        self.octave_n = number('octave_n', octave_n, *NUMBERS['octave_n'])
        self.octave_scale = number('octave_scale', octave_scale, float, 1.0, allow_equal=True)
        self.step_size = number('step_size', step_size, *NUMBERS['step_size'])
        self.jitter = number('jitter', jitter, *NUMBERS['jitter'])
        self.clip = flag('clip', clip)
        self.seed = seed_of(seed)
        self.tile = None if tile is None else number('tile', tile, int, 0, allow_equal=True)   # 0: never
        self.quiet = bool(quiet)
        if colors is not None and str(colors) not in CHOICES:
            raise UserError(f'--colors must be {" or ".join(CHOICES)}, got {colors!r}')
        self.colors = None if colors is None else str(colors)
        self.lapnorm = number('lapnorm', lapnorm, int, 0, allow_equal=True)
        if self.lapnorm > 12:
            raise UserError(f'--lapnorm must be at most 12 levels, got {lapnorm!r}')
        self.model = None if model is None else str(model)
        if preprocess is not None and str(preprocess) not in PREPROCESSINGS:
            raise UserError(f'--preprocess must be {", ".join(PREPROCESSINGS)}, got {preprocess!r}')
        self.preprocess = None if preprocess is None else str(preprocess)
        self.mask = mask if mask is None or isinstance(mask, Mask) else load_mask(str(mask))   # read once, here
        self._net = None

    def __getstate__(self):
        """A copy for a cluster worker, which loads the net itself (once) rather than receive it."""
        return dict(self.__dict__, _net=None)

    def __copy__(self):
        """A copy here shares the net (copy.copy would go through __getstate__ and load it again)."""
        other = object.__new__(type(self))
        other.__dict__.update(self.__dict__)
        return other

    def _set_end(self, end, weights):
        if self.channels and weights:
            raise UserError('--channel goes with one --end layer, not several')
        self._end, self._weights = end, weights
        self._end_spec = ','.join(f'{e}:{w:g}' for e, w in zip(end, weights)) if weights else end

    @property
    def end(self):
        """The layer (or layers) dreamed: --end, else the net's own default layer (Net.default_end)."""
        if self._end is None:
            self.net
        return self._end

    @property
    def weights(self):
        return self.end and self._weights

    @property
    def end_spec(self):
        return self.end and self._end_spec

    @property
    def net(self):
        if self._net is None:
            from . import load_net
            net = load_net(self.model)
            self._resolve(net)
            self._net = net
            self.check()
        return self._net

    def _resolve(self, net):
        """--end read against the net's own tensor names; the preprocessing it wants, said where assumed."""
        if self._end is None:
            names = {layer for layer, _, _ in net.layers}
            self._set_end(*parse_end(net.default_end if self._end_given is None else self._end_given, names))
        if self.preprocess is None and not self.quiet:
            say_assumed_preprocessing(net, self.model)

    def using(self, net):
        """These options on a net already loaded (the page holds one for every visitor), checked."""
        other = copy.copy(self)
        other._resolve(net)
        other._net = net
        other.check()
        return other

    def check(self):
        """Unknown layers, channels and too-small tiles fail now, in one line, before any dreaming."""
        self.net.tensor(self.end)
        if self.channels:
            check_channels(self.net, self.end, self.channels)
        check_tile(self.net, self.tile or None, self.end)

    def at(self, end):
        """The same options, dreaming at another layer."""
        other = copy.copy(self)
        other._set_end(end, None)
        other.check()
        return other

    def varied(self, end, **numbers):
        """These options with a keyframe's `end` (a layer or a weighted 'a:w,b:v', read against the net's
        names) and NUMBERS, checked as the command line checks them."""
        other = copy.copy(self)
        other._set_end(*parse_end(end, {layer for layer, _, _ in self.net.layers}))
        for name, value in numbers.items():
            setattr(other, name, number(name, value, *NUMBERS[name]))
        other.check()
        return other

    def fitted(self, shape, say=None):
        """These options, with a tile where an image of `shape` would not fit in memory untiled.

        Without --tile the largest tile that fits is chosen and said (on stderr, or to `say`; the recipe
        records it); a --tile the user gave (--tile=0: never tile) that would not fit is refused, naming
        one that does.
        """
        if self.mask:
            self.mask.fitted(shape)              # a mask of another aspect ratio fails now, before any dreaming
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
        (say or (lambda line: print(f'classicdream: {line}', file=sys.stderr)))(
            f'{what}: dreaming in tiles of {tile}x{tile} (--tile={tile})')
        return self.tiled(tile)

    @property
    def prep(self):
        """The net's input: --preprocess, else what the model's metadata says, else the notebook's Caffe mean."""
        return PREPROCESSINGS[self.preprocess or self.net.preprocessing]

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
        if self.colors:
            options['colors'] = self.colors
        if self.lapnorm:
            options['lapnorm'] = self.lapnorm
        if self.model:
            options['model'] = Path(self.model).name
        if self.prep is not CAFFE:
            options['preprocess'] = self.prep.name
        if self.mask:
            options.update(self.mask.recipe())
        return dict(classicdream=__version__, end=self.end_spec, iter_n=self.iter_n, octave_n=self.octave_n,
                    octave_scale=self.octave_scale, step_size=self.step_size, jitter=self.jitter,
                    clip=self.clip, seed=self.seed, model_sha256=self.net.sha256, **options, **extra)

    def name(self):
        """The layer part of a default output name: dreams/sky_inception_4c-output_c42_s0.jpg."""
        channels = f'_c{"-".join(map(str, self.channels))}' if self.channels else ''
        return slug(self.end_spec.replace('/', '-')) + channels

    def default_name(self, image, guide=None, ext='jpg'):
        """A result's file name from its input's: sky_inception_4c-output_s0.jpg, sky_guide-flowers_..."""
        guided = f'_guide-{slug(Path(str(guide)).stem)}' if guide is not None else ''
        masked = f'_mask-{slug(Path(self.mask.name).stem)}' if self.mask else ''
        return f'{slug(Path(str(image)).stem)}{guided}_{self.name()}{masked}_s{self.seed}.{ext}'

    def dream(self, img, rng, objective=None, label='', on_octave=None):
        """deepdream with these options: a progress bar on stderr unless quiet, and `on_octave(octave,
        size, image)` after each octave (`image()` gives it, as the page's live view shows it), which
        may raise to stop the dream there. Running out of memory is a UserError."""
        # deepdream checks these too; checking first keeps the error to one line, before a progress bar opens
        mask = self.mask.fitted(img.shape) if self.mask else None
        check_octaves(self.net, img.shape, self.octave_n, self.octave_scale, self.end)
        bar = None
        if not self.quiet:
            from tqdm import tqdm
            bar = tqdm(total=self.octave_n * self.iter_n, unit='step', file=sys.stderr, desc=label or 'dream')

        def progress(octave, size, image):
            if bar:
                bar.set_postfix_str(f'octave {octave + 1}/{self.octave_n} {size[1]}x{size[0]} {self.end_spec}')
                bar.update(self.iter_n)
            if on_octave:
                on_octave(octave, size, lambda: for_display(image(), self.clip))
        objective = objective if objective is not None else self.objective()
        extra = {} if objective is None else {'objective': objective}
        try:
            return deepdream(self.net, img, iter_n=self.iter_n, octave_n=self.octave_n,
                             octave_scale=self.octave_scale, end=self.end, clip=self.clip, seed=rng,
                             step_size=self.step_size, jitter=self.jitter, tile=self.tile or None, lapnorm=self.lapnorm,
                             preprocessing=self.prep, mask=mask,
                             progress=progress if bar or on_octave else None, **extra)
        except Exception as e:          # noqa: BLE001 -- XLA's error class has moved between jax versions
            if not memory.is_exhaustion(e):
                raise
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f'out of memory dreaming {img.shape[1]}x{img.shape[0]} at {self.end_spec} ({reason}): '
                            f'try a smaller --tile or a smaller image') from None
        finally:
            if bar:
                bar.close()

    def finished(self, dream, source):
        """A dream as it is saved: scaled for display if unclipped, with --colors taken from `source`."""
        return recolored(for_display(dream, self.clip), source, self.colors)

    def encoded(self, img, recipe, label='', fmt='JPEG', objective=None, on_octave=None, source=None):
        """The dream of `img` (seed `self.seed`) as the bytes of a JPEG (or PNG) carrying `recipe`: what a
        worker returns, and what the page offers for download. --colors come from `source` (default img)."""
        dream = self.dream(img, random_state(self.seed), objective, label, on_octave)
        return encode_image(self.finished(dream, img if source is None else source), fmt, recipe)

    def tiled(self, tile):
        """These options with the tile that `fitted` chose where the command runs (workers share one net)."""
        if tile == self.tile:
            return self
        other = copy.copy(self)
        other.tile = tile
        return other
