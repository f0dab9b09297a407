"""ONNX's shape arithmetic and tensor movement: Shape, Reshape, Slice, Gather, Concat, Split, Pad, ...

Exporters compute shapes inside the graph (torch's ``x.view(x.size(0), -1)`` is Shape → Gather →
Unsqueeze → Concat → Reshape). Under jit every shape is static, so ``Shape`` gives a numpy array and every
operator here computes in numpy when its inputs are numpy: the shapes are exact for whatever size is being
dreamed. On activations the same functions run in jax.numpy; those marked 'axes' take the layout the
activation is held in (``perm``) and map their axes through it rather than move the data.
"""
import math

import numpy as np
from onnx import numpy_helper

from .operators import Laid, attr, attr_or_input, axis_of, is_static, register, xp


def _onnx_shape(x, perm):
    shape = np.shape(x)
    return shape if perm is None else tuple(shape[perm.index(i)] for i in range(len(shape)))


@register('Shape', layout='axes')
def _shape(node, x, perm=None):
    shape = np.asarray(_onnx_shape(x, perm), np.int64)
    return Laid(shape[slice(attr(node, 'start', 0), attr(node, 'end', None))])


@register('Size', layout='axes')
def _size(node, x, perm=None):
    return Laid(np.asarray(math.prod(np.shape(x)), np.int64))


@register('Reshape', static=(1,))
def _reshape(node, x, shape):
    shape = [int(s) for s in np.asarray(shape)]
    if not attr(node, 'allowzero', 0):
        shape = [np.shape(x)[i] if s == 0 else s for i, s in enumerate(shape)]
    return xp(x).reshape(x, shape)


@register('Flatten', spatial=lambda node, size, axis: None)
def _flatten(node, x):
    axis = attr(node, 'axis', 1) % max(np.ndim(x), 1) if attr(node, 'axis', 1) < 0 else attr(node, 'axis', 1)
    return xp(x).reshape(x, (math.prod(np.shape(x)[:axis]), -1))


@register('Squeeze', static=(1,))
def _squeeze(node, x, axes=None):
    axes = attr_or_input(node, (x, axes), 1, 'axes')
    axes = None if axes is None else tuple(a % np.ndim(x) for a in np.atleast_1d(axes))
    return xp(x).squeeze(x, axes)


@register('Unsqueeze', static=(1,))
def _unsqueeze(node, x, axes=None):
    axes = np.atleast_1d(attr_or_input(node, (x, axes), 1, 'axes'))
    rank = np.ndim(x) + len(axes)
    for axis in sorted(int(a) % rank for a in axes):
        x = xp(x).expand_dims(x, axis)
    return x


@register('Expand', static=(1,))
def _expand(node, x, shape):
    return xp(x).broadcast_to(x, np.broadcast_shapes(np.shape(x), tuple(int(s) for s in shape)))


@register('Tile', static=(1,))
def _tile(node, x, repeats):
    return xp(x).tile(x, tuple(int(r) for r in repeats))


@register('ConstantOfShape', static=(0,))
def _constant_of_shape(node, shape):
    value = attr(node, 'value')
    value = np.zeros(1, np.float32) if value is None else np.asarray(getattr(value, 'array', value))
    return np.full(tuple(int(s) for s in shape), value.reshape(-1)[0], value.dtype)


@register('Range', static=(0, 1, 2))
def _range(node, start, limit, delta):
    return np.arange(start, limit, delta, dtype=np.asarray(start).dtype)


@register('Gather')
def _gather(node, x, indices):
    return xp(x, indices).take(x, indices, axis=attr(node, 'axis', 0) % np.ndim(x))


@register('GatherElements')
def _gather_elements(node, x, indices):
    m = xp(x, indices)
    axis = attr(node, 'axis', 0) % np.ndim(x)
    return m.take_along_axis(x, m.where(indices < 0, indices + np.shape(x)[axis], indices), axis=axis)


# ---------------------------------------------------------------- movement along axes, in any layout

def _channel_rule(axis_of_node):
    """The static size rule of an operator along one axis: sizes pass where it is NCHW's channel axis."""
    def rule(node, size, axis):
        if axis_of_node(node) != 1:
            raise NotImplementedError
        return size
    return rule


@register('Concat', layout='axes', border=lambda node, spatial: None if attr(node, 'axis') % 4 not in spatial
          else 'exact', spatial=_channel_rule(lambda node: attr(node, 'axis')))
def _concat(node, *xs, perm=None):
    xs = [x for x in xs if x is not None]
    ndim = np.ndim(xs[0])
    return xp(*xs).concatenate(xs, axis=axis_of(attr(node, 'axis'), perm, ndim))


@register('Split', layout='axes', static=(1,), outputs=None,
          border=lambda node, spatial: None if attr(node, 'axis', 0) % 4 not in spatial else 'exact',
          spatial=_channel_rule(lambda node: attr(node, 'axis', 0)))
def _split(node, x, split=None, perm=None):
    n = len(node.outputs)
    axis = axis_of(attr(node, 'axis', 0), perm, np.ndim(x))
    sizes = attr_or_input(node, (x, split), 1, 'split')
    length = np.shape(x)[axis]
    if sizes is None:
        step = -(-length // n)                       # the last part smaller, as ONNX's num_outputs says
        sizes = [min(step, length - i * step) for i in range(n)]
    edges = np.cumsum(np.atleast_1d(sizes))[:-1].tolist()
    return tuple(xp(x).split(x, edges, axis=axis))


@register('Slice', layout='axes', static=(1, 2, 3, 4))
def _slice(node, x, starts=None, ends=None, axes=None, steps=None, perm=None):
    starts = np.atleast_1d(attr_or_input(node, (x, starts), 1, 'starts'))
    ends = np.atleast_1d(attr_or_input(node, (x, starts, ends), 2, 'ends'))
    axes = attr_or_input(node, (x, starts, ends, axes), 3, 'axes')
    axes = np.arange(len(starts)) if axes is None else np.atleast_1d(axes)
    steps = np.ones(len(starts), np.int64) if steps is None else np.atleast_1d(steps)
    index = [slice(None)] * np.ndim(x)
    for start, end, axis, step in zip(starts.tolist(), ends.tolist(), axes.tolist(), steps.tolist()):
        at = axis_of(axis, perm, np.ndim(x))
        size = np.shape(x)[at]
        clamp = lambda v: max(-size - 1, min(size, v))                      # noqa: E731 -- INT_MAX, INT_MIN ends
        start, end = clamp(start), clamp(end)
        if step < 0 and end < -size:                                         # through the first element
            end = None
        index[at] = slice(start, end, step)
    return x[tuple(index)]


def const_input(node, position, name=None):
    """A node's operand known when the graph is read: a constant input, else attribute `name`, else None."""
    value = node.inputs[position] if len(node.inputs) > position else None
    if hasattr(value, 'array'):
        return value.array
    return None if name is None else attr(node, name)


def pad_border(node, spatial):
    """A constant Pad of an NCHW image's height and width reads its value beyond the true extent."""
    pads, value = const_input(node, 1, 'pads'), const_input(node, 2, 'value')
    if attr(node, 'mode', 'constant') != 'constant' or spatial != (2, 3) or pads is None or len(pads) != 8 \
            or const_input(node, 3) is not None:
        return 'exact'
    return 0.0 if value is None or np.size(value) == 0 else float(np.asarray(value).reshape(-1)[0])


def pad_size(node, size, axis):
    pads = const_input(node, 1, 'pads')
    if pads is None or len(pads) != 8 or const_input(node, 3) is not None:
        raise NotImplementedError
    return size + int(pads[2 + axis]) + int(pads[6 + axis])


@register('Pad', layout='axes', static=(1, 2, 3), border=pad_border, spatial=pad_size)
def _pad(node, x, pads=None, value=None, axes=None, perm=None):
    pads = list(attr_or_input(node, (x, pads), 1, 'pads'))
    value = attr_or_input(node, (x, pads, value), 2, 'value', 0.0)
    value = 0.0 if value is None or value == () else value
    ndim = np.ndim(x)
    axes = list(range(ndim)) if axes is None else [int(a) % ndim for a in np.atleast_1d(axes)]
    widths = [(0, 0)] * ndim
    for i, axis in enumerate(axes):
        widths[axis_of(axis, perm, ndim)] = (pads[i], pads[i + len(axes)])
    if min(pads) < 0:                                        # negative pads crop
        x = x[tuple(slice(-lo if lo < 0 else None, hi if hi < 0 else None) for lo, hi in widths)]
        widths = [(max(lo, 0), max(hi, 0)) for lo, hi in widths]
    mode = attr(node, 'mode', 'constant')
    if mode == 'constant':
        return xp(x).pad(x, widths, constant_values=np.asarray(value, np.asarray(x).dtype if is_static(x)
                                                                  else np.float32))
    return xp(x).pad(x, widths, mode={'reflect': 'reflect', 'edge': 'edge', 'wrap': 'wrap'}[mode])


@register('Transpose', layout='transpose', border=None, spatial=lambda node, size, axis: _unknown())
def _transpose(node, x):
    """Static values only: graph.py lays out an activation's transpose without moving it (operators.compose)."""
    return np.transpose(x, attr(node, 'perm', None))


def _unknown():
    raise NotImplementedError
