"""Keyframes: options that change along a zoom's or a video's frames, so a dream can travel between layers.

A keyframes file is a JSON list such as
``[{"frame": 0, "end": "inception_3b/output"}, {"frame": 40, "end": "inception_4c/output", "step_size": 2}]``.
Each keyframe sets some of end, step_size, iter_n, octave_n, jitter, and scale (zoom) or blend (video);
what it leaves out is the command line's. Between two keyframes the numbers go linearly (whole numbers
rounded, halves up) and the objective cross-fades: a frame a fraction t of the way from end A to end B
dreams ``--end=A:(1-t),B:t`` (each layer of a weighted end so mixed), so the dream turns from one layer's
patterns into the next's instead of jumping. Before the first keyframe and after the last the nearest
one holds. A frame is then an ordinary dream of the options its recipe records, cross-fade weights
included (as the recipe writes them), and the keyframes' digest in every recipe tells a resumed run
whether its frames were made with the same keyframes.
"""
import hashlib
import json
import math
from collections import namedtuple

from .clip import check_blend
from .dream import check_octaves
from .dreamer import NUMBERS, UserError, number, parse_end
from .zoom import check_scale


def _layer_spec(value):
    if not isinstance(value, str) or not value.strip():
        raise UserError(f'--end must name a layer (text, such as "inception_4c/output"), got {json.dumps(value)}')
    return value.strip()


OWN = {'zoom': 'scale', 'video': 'blend'}         # the option only that command's keyframes may change
CHECKS = dict({name: lambda value, name=name: number(name, value, *NUMBERS[name]) for name in NUMBERS},
              end=_layer_spec, scale=check_scale, blend=check_blend)      # each field's: the command line's

Frame = namedtuple('Frame', 'dreamer extras')     # a frame's options, and its recipe's own fields (scale or blend)


class Keyframes:
    """Checked keyframes from `source` (a file's name, or the page's table), for `command` (zoom or video):
    `keys` is [(frame, {field: value})] in frame order."""

    def __init__(self, items, command, source):
        self.source = source
        fields = ['end', *NUMBERS, OWN[command]]
        if not isinstance(items, list) or not items:
            raise UserError(f'{source}: keyframes are a list of objects such as '
                            f'[{{"frame": 0, "end": "inception_3b/output"}}, {{"frame": 40, "step_size": 2}}]')
        self.keys = []
        for i, item in enumerate(items):
            where = f'keyframe {i + 1}'
            if not isinstance(item, dict):
                raise UserError(f'{source}: {where} is not an object of fields such as {{"frame": 0, "end": ...}}: '
                                f'{json.dumps(item)[:60]}')
            if 'frame' not in item:
                raise UserError(f'{source}: {where} says no frame (each keyframe has one: {{"frame": 40, ...}})')
            frame = self._checked(where, 'frame', item['frame'], lambda v: number('frame', v, int, 0, True))
            where = f'{where} (frame {frame})'
            if self.keys and frame <= self.keys[-1][0]:
                raise UserError(f'{source}: {where}: frames must increase from keyframe to keyframe, and keyframe '
                                f'{i} is at frame {self.keys[-1][0]}')
            values = {}
            for field, value in item.items():
                if field == 'frame':
                    continue
                if field not in fields:
                    other = next((c for c, own in OWN.items() if own == field and c != command), None)
                    why = f'{field} is for {other} keyframes' if other else f'unknown field {field!r}'
                    raise UserError(f'{source}: {where}: {why}; a {command} keyframe may set frame, '
                                    f'{", ".join(fields)}')
                values[field] = self._checked(where, field, value, CHECKS[field])
            self.keys.append((frame, values))
        self.sha256 = hashlib.sha256(json.dumps(self.keys, sort_keys=True).encode()).hexdigest()

    def _checked(self, where, field, value, check):
        try:
            return check(value)
        except UserError as e:
            raise UserError(f'{self.source}: {where}: {str(e).replace(f"--{field}", field, 1)}') from None


def read_keyframes(path, command):
    """The keyframes file at `path` for `command` (zoom or video), checked: a bad one is a UserError naming
    the keyframe and the field."""
    with open(path, 'rb') as f:
        text = f.read()
    try:
        items = json.loads(text)
    except ValueError as e:
        raise UserError(f'{path}: not a JSON file of keyframes ({" ".join(str(e).split())})') from None
    return Keyframes(items, command, str(path))


def table_keyframes(rows, columns, command):
    """The page's keyframe table (rows of text cells under `columns`; a blank cell is the options'), as
    Keyframes, or None where every row is blank."""
    items = [{c: cell.strip() if isinstance(cell, str) else cell for c, cell in zip(columns, row)
              if cell is not None and str(cell).strip() != ''} for row in rows or []]
    items = [item for item in items if item]
    return Keyframes(items, command, 'keyframes') if items else None


def options_at(keys, frame, names):
    """The fields of `frame` from keyframes `keys` ([(frame, fields)], each filled in from the command
    line's options): a keyframe's at it, the nearest one's before the first and after the last, else those
    of the keyframes either side mixed a fraction t of the way. `names`: the net's, to read weighted ends."""
    after = next((i for i, (f, _) in enumerate(keys) if f > frame), len(keys))
    if after in (0, len(keys)) or keys[after - 1][0] == frame:
        return keys[max(after - 1, 0)][1]
    (f0, a), (f1, b) = keys[after - 1], keys[after]
    t = (frame - f0) / (f1 - f0)
    return {field: crossfade(a[field], b[field], t, names) if field == 'end' else mixed(field, a[field], b[field], t)
            for field in a}


def mixed(field, a, b, t):
    """A number a fraction t of the way from a to b; a whole number's rounded, halves up."""
    value = a + t * (b - a)
    return math.floor(value + 0.5) if NUMBERS.get(field, (float,))[0] is int else value


def crossfade(a, b, t, names):
    """The --end a fraction t of the way from end `a` to end `b`: each layer weighted (1 - t)·its weight in
    a + t·its weight in b, written as the recipe writes weights, so the recipe's end is the frame's."""
    if a == b:
        return a
    weights = {}
    for spec, share in ((a, 1 - t), (b, t)):
        end, ws = parse_end(spec, names)
        for layer, w in (zip(end, ws) if ws else [(end, 1.0)]):
            weights[layer] = weights.get(layer, 0.0) + share * w
    return ','.join(f'{layer}:{w:g}' for layer, w in weights.items())


def frame_plan(d, keyframes, count, shape, say=None, **extras):
    """Each of `count` frames' Frame: its Dreamer, checked against the net and the octaves of an image of
    `shape` and fitted to memory (`say`, as for Dreamer.fitted), and its recipe's `extras` (scale= or
    blend=), with the keyframes' digest. Frames of the same options share one Dreamer. Without keyframes
    every frame has `d`'s options."""
    if keyframes is None:
        check_octaves(d.net, shape, d.octave_n, d.octave_scale, d.end)
        return [Frame(d.fitted(shape, say), extras)] * count
    defaults = dict(end=d.end_spec, **{name: getattr(d, name) for name in NUMBERS}, **extras)
    keys = [(f, dict(defaults, **values)) for f, values in keyframes.keys]
    names = {layer for layer, _, _ in d.net.layers}
    made = {}

    def frame_of(values, where):
        key = tuple(sorted(values.items()))
        if key not in made:
            try:
                options = d.varied(**{field: values[field] for field in ('end', *NUMBERS)})
                check_octaves(options.net, shape, options.octave_n, options.octave_scale, options.end)
                made[key] = Frame(options.fitted(shape, say), dict(
                    {field: values[field] for field in extras}, keyframes_sha256=keyframes.sha256))
            except (UserError, ValueError) as e:
                raise UserError(f'{keyframes.source}: {where}: {e}') from None
        return made[key]
    for i, (f, values) in enumerate(keys):
        frame_of(values, f'keyframe {i + 1} (frame {f})')
    return [frame_of(options_at(keys, i, names), f'frame {i}') for i in range(count)]
