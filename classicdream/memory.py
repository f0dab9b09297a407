"""How much memory a dream needs, known before it is spent, and the largest tile that makes it fit.

A dream's peak is the process itself (Python, JAX, XLA, the net's parameters), a compiled program
per octave size or tile size, the gradient's buffers for the largest piece of image the net sees at
once (every activation of the forward pass to `end` is kept for the backward pass), the octaves'
images, and, where an octave is tiled, a few full-size copies that the tiled step makes:

    peak = base + per_program x (compiled sizes - 1) + activations x (activations of the largest piece)
           + (bytes of all octaves' images) + tiled_copies x (bytes of the largest tiled octave)

The activation bytes come from the net's own shapes (jax.eval_shape); the coefficients are fitted to
peaks measured on this port (README, "Memory"). The budget is what the machine can still give:
available RAM (within the cgroup's limit) on a CPU, free device memory on a GPU, or
``$CLASSICDREAM_MEMORY`` where set.
"""
import math
import os
import re
from dataclasses import astuple, dataclass
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp

from .dream import octave_shapes, octave_sizes, tile_slices
from .graph import evaluate, needed_nodes


@dataclass(frozen=True)
class Model:
    base: float            # bytes
    per_program: float     # bytes per compiled step (one per octave size or tile size)
    activations: float     # per byte of activations of the largest piece
    tiled_copies: float    # per byte of the largest tiled octave's image


# Fitted by bench/memory.py to the maximum resident set size of 14 dreams on the CPU (README, "Memory").
CPU = Model(base=389e6, per_program=53.6e6, activations=1.07, tiled_copies=6.51)
# On a GPU the device holds the activations and the current octave; what it already holds (the
# parameters) is left out of the budget instead. Not yet measured on a GPU: the CPU's coefficient.
GPU = Model(base=0.0, per_program=0.0, activations=1.07, tiled_copies=0.0)

IMAGE = 3 * 4          # bytes per pixel of a float32 RGB image
_PER_PIXEL = {}


def backend_model():
    return CPU if jax.default_backend() == 'cpu' else GPU


def activation_bytes(net, end, height, width):
    """Bytes of every tensor a forward pass to `end` computes for one height x width input.

    Exact at 448x448 (from jax.eval_shape, no computation) and scaled by the pixel count elsewhere:
    only the rounding of strided layers differs, well under 1%.
    """
    tensor = net.tensor(end)
    key = (net.nodes, tensor)
    if key not in _PER_PIXEL:
        _PER_PIXEL[key] = _bytes(net, tensor, 448, 448) / 448 ** 2 if net.fits((448, 448), end) else None
    if _PER_PIXEL[key] is None:           # a layer past an exporter's fixed shapes: at its own size only
        return _bytes(net, tensor, height, width)
    return _PER_PIXEL[key] * height * width


def _bytes(net, tensor, height, width):
    outputs = tuple(o for node in needed_nodes(net.nodes, tensor)[1:] for o in node.outputs
                    if o in net.dynamic)
    data = jax.ShapeDtypeStruct((1, 3, height, width), jnp.float32)
    shapes = jax.eval_shape(partial(evaluate, net.nodes, end=outputs), net.params, data)
    return sum(math.prod(s.shape) * s.dtype.itemsize for s in shapes)


def compiled_shapes(net, end, shape, octave_n, octave_scale, tile=None):
    """The input sizes the net's step is compiled for: each untiled octave at the shape deepdream runs it
    at (dream.octave_shapes), and each tile size of the tiled ones (tile_slices cuts an axis into pieces
    of at most two sizes)."""
    sizes, shapes, tiled, _ = octave_shapes(net, shape, octave_n, octave_scale, end, tile)
    compiled = set()
    for (h, w), run_at, in_tiles in zip(sizes, shapes, tiled):
        compiled |= {(a, b) for a in _piece_sizes(h, tile) for b in _piece_sizes(w, tile)} if in_tiles else {run_at}
    return compiled


def _piece_sizes(length, tile):
    return {piece.stop - piece.start for piece in tile_slices(length, tile)}


def terms(net, shape, octave_n, octave_scale, end, tile=None):
    """What the estimate weighs, in Model's order: (1, compiled sizes - 1, activation bytes of the largest
    compiled size, bytes of the largest tiled octave); and the bytes of all octaves' images, counted once."""
    octaves = octave_sizes(shape, octave_n, octave_scale)
    compiled = compiled_shapes(net, end, shape, octave_n, octave_scale, tile)
    tiled = [h * w for h, w in octaves if tile and (h > tile or w > tile)]
    return ((1.0, len(compiled) - 1, max(activation_bytes(net, end, h, w) for h, w in compiled),
             IMAGE * max(tiled, default=0)), IMAGE * sum(h * w for h, w in octaves))


def estimate(net, shape, octave_n, octave_scale, end, tile=None, model=None):
    """Predicted peak bytes of a dream of an image of `shape` (H, W, ...), on this backend by default."""
    weighed, images = terms(net, shape, octave_n, octave_scale, end, tile)
    return images + sum(c * t for c, t in zip(astuple(model or backend_model()), weighed))


def largest_tile(net, shape, octave_n, octave_scale, end, budget, model=None):
    """The largest tile whose dream fits in `budget` bytes, as the image's longer side cut into n equal
    pieces for the smallest n that fits; None if not even the smallest tile the layer accepts fits."""
    longest, smallest = max(shape[0], shape[1]), 2 * max(net.min_size(end))
    for n in range(1, longest // smallest + 1):
        tile = -(-longest // n)
        if estimate(net, shape, octave_n, octave_scale, end, tile, model) <= budget:
            return tile
    return None


UNITS = {'': 1, 'K': 2 ** 10, 'M': 2 ** 20, 'G': 2 ** 30, 'T': 2 ** 40}


def parse_bytes(text):
    """'4G', '512M', '2.5GiB' or a plain number of bytes, as bytes (K, M, G, T are powers of 1024)."""
    match = re.fullmatch(r'\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(i?B)?\s*', str(text), re.IGNORECASE)
    if not match:
        raise ValueError(f'$CLASSICDREAM_MEMORY must be a size such as 4G or 512M, got {text!r}')
    return float(match[1]) * UNITS[match[2].upper()]


def budget():
    """Bytes a dream may use: $CLASSICDREAM_MEMORY where set; else on a GPU the device's free memory, on
    a CPU what this process holds plus what the machine (and its cgroup) can still give it. None where
    that cannot be known."""
    if os.environ.get('CLASSICDREAM_MEMORY'):
        return parse_bytes(os.environ['CLASSICDREAM_MEMORY'])
    if jax.default_backend() != 'cpu':
        stats = jax.devices()[0].memory_stats() or {}
        return stats['bytes_limit'] - stats.get('bytes_in_use', 0) if 'bytes_limit' in stats else None
    try:
        meminfo = dict(line.split(':', 1) for line in Path('/proc/meminfo').read_text().splitlines())
        available = int(meminfo['MemAvailable'].split()[0]) * 1024
        resident = int(Path('/proc/self/statm').read_text().split()[1]) * os.sysconf('SC_PAGE_SIZE')
    except (OSError, KeyError, ValueError):
        return None
    return resident + min(available, _cgroup_headroom())


def _cgroup_headroom():
    """Bytes this process's cgroup still allows (v2 or v1); infinity where it sets no limit."""
    try:
        lines = Path('/proc/self/cgroup').read_text().splitlines()
    except OSError:
        return math.inf
    for line in lines:
        _, controllers, path = line.split(':', 2)
        if controllers == '':
            root, files = Path('/sys/fs/cgroup'), ('memory.max', 'memory.current')
        elif 'memory' in controllers.split(','):
            root, files = Path('/sys/fs/cgroup/memory'), ('memory.limit_in_bytes', 'memory.usage_in_bytes')
        else:
            continue
        for folder in (root / path.lstrip('/'), root):        # in a container the path may not be mounted
            try:
                limit, usage = ((folder / f).read_text().strip() for f in files)
            except OSError:
                continue
            if limit.isdigit() and int(limit) < 2 ** 60:
                return int(limit) - int(usage)
            break
    return math.inf


def is_exhaustion(error):
    """Whether an exception is the machine running out of memory (numpy's, or XLA's RESOURCE_EXHAUSTED)."""
    return isinstance(error, MemoryError) or 'RESOURCE_EXHAUSTED' in str(error)


def gigabytes(n):
    return f'{n / 1e9:.1f} GB'
