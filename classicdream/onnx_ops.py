"""The rest of ONNX's CNN operators: what torch.onnx, tf2onnx and the ONNX model zoo write for ResNets,
VGGs, Inceptions, MobileNets, SqueezeNets and DenseNets, beyond the Caffe operators of ops.py.

Each is ``fn(node, *inputs)`` on the graph's layout: a 4-D activation is NHWC (ops.to_nhwc), any other
in ONNX's own layout. Their gradients are JAX's own. Inputs that are constants (shapes, axes, pads, clip
bounds) are read into the node's attributes when the graph is read (``fold``), so each operator sees
them as Python values; a constant operand of Add, Mul, ... is laid out like the activation it meets.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np

from .ops import HIGHEST, attr, to_nchw, to_nhwc

# Operators whose extra inputs must be constants, and the attribute each such input becomes (in order).
FOLDED = {
    'Reshape': ('shape',),
    'Unsqueeze': ('axes',),
    'Squeeze': ('axes',),
    'Slice': ('starts', 'ends', 'axes', 'steps'),
    'Pad': ('pads', 'value'),
    'Clip': ('min', 'max'),
    'ReduceMean': ('axes',),
}
BROADCAST = ('Add', 'Sub', 'Mul', 'Div', 'Max', 'Min', 'PRelu')


def onnx_layout(x):
    return to_nchw(x) if x.ndim == 4 else x


def graph_layout(x):
    return to_nhwc(x) if x.ndim == 4 else x


def in_onnx_layout(fn):
    """An operator written for ONNX's layout, wrapped to take and give the graph's."""
    return lambda node, *xs: graph_layout(fn(node, *map(onnx_layout, xs)))


def _operand(x, constant, other_ndim):
    """A constant broadcast against a 4-D activation, laid out as NHWC like it (ONNX broadcasts from the
    right, against NCHW): (C, 1, 1) becomes (1, 1, 1, C)."""
    if not constant or other_ndim != 4 or x.ndim == 0:
        return x
    return to_nhwc(jnp.reshape(x, (1,) * (4 - x.ndim) + x.shape))


def _binary(fn):
    def op(node, a, b):
        constant = attr(node, 'constant_inputs', (False, False))
        if a.ndim != b.ndim and not any(constant) and 4 in (a.ndim, b.ndim):     # mixed layouts: ONNX's own
            return graph_layout(fn(onnx_layout(a), onnx_layout(b)))
        return fn(_operand(a, constant[0], b.ndim), _operand(b, constant[1], a.ndim))
    return op


def _batch_norm(node, x, scale, bias, mean, var):
    """Inference batch normalisation over the channel axis: last in NHWC and in (N, C), 1 in (N, C, L)."""
    shape = (-1,) if x.ndim in (2, 4) else (-1,) + (1,) * (x.ndim - 2)
    factor = (scale / jnp.sqrt(var + attr(node, 'epsilon', 1e-5))).reshape(shape)
    return (x - mean.reshape(shape)) * factor + bias.reshape(shape)


def _clip(node, x):
    low, high = attr(node, 'min', -np.inf), attr(node, 'max', np.inf)
    return jnp.clip(x, low, high)


def _pad(node, x):
    pads = attr(node, 'pads')
    n = len(pads) // 2
    widths = [(pads[i], pads[i + n]) for i in range(n)]
    mode = attr(node, 'mode', 'constant')
    if min(pads) < 0:
        raise ValueError(f'Pad {node.output}: negative pads are not supported')
    if mode == 'constant':
        return jnp.pad(x, widths, constant_values=attr(node, 'value', 0.0))
    return jnp.pad(x, widths, mode={'reflect': 'reflect', 'edge': 'edge'}[mode])


def _reshape(node, x):
    shape = list(attr(node, 'shape'))
    if not attr(node, 'allowzero', 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return jnp.reshape(x, shape)


def _axes(node, x, default=None):
    axes = attr(node, 'axes', default)
    return None if axes is None else tuple(a % x.ndim for a in axes)


def _unsqueeze(node, x):
    out_rank = x.ndim + len(attr(node, 'axes'))
    for axis in sorted(a % out_rank for a in attr(node, 'axes')):
        x = jnp.expand_dims(x, axis)
    return x


def _slice(node, x):
    starts, ends = attr(node, 'starts'), attr(node, 'ends')
    axes = attr(node, 'axes', tuple(range(len(starts))))
    steps = attr(node, 'steps', (1,) * len(starts))
    index = [slice(None)] * x.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps):
        size = x.shape[axis]
        clamp = lambda v: max(-size - 1, min(size, v))                              # noqa: E731 -- INT_MAX ends
        index[axis % x.ndim] = slice(clamp(start), clamp(end), step)
    return x[tuple(index)]


def _reduce_mean(node, x):
    return jnp.mean(x, axis=_axes(node, x), keepdims=bool(attr(node, 'keepdims', 1)))


def _matmul(node, a, b):
    return jnp.matmul(a, b, precision=HIGHEST)


def _hard_sigmoid(node, x):
    return jnp.clip(attr(node, 'alpha', 0.2) * x + attr(node, 'beta', 0.5), 0, 1)


OPS = {
    'Add': _binary(jnp.add),
    'Sub': _binary(jnp.subtract),
    'Mul': _binary(jnp.multiply),
    'Div': _binary(jnp.divide),
    'Max': _binary(jnp.maximum),
    'Min': _binary(jnp.minimum),
    'PRelu': _binary(lambda x, slope: jnp.where(x > 0, x, slope * x)),
    'BatchNormalization': _batch_norm,
    'Clip': _clip,
    'Sigmoid': lambda node, x: jax.nn.sigmoid(x),
    'Tanh': lambda node, x: jnp.tanh(x),
    'HardSigmoid': _hard_sigmoid,
    'HardSwish': lambda node, x: x * jnp.clip(x / 6 + 0.5, 0, 1),
    'Elu': lambda node, x: jnp.where(x > 0, x, attr(node, 'alpha', 1.0) * jnp.expm1(jnp.minimum(x, 0))),
    'Pad': in_onnx_layout(_pad),
    'Reshape': in_onnx_layout(_reshape),
    'Transpose': in_onnx_layout(lambda node, x: jnp.transpose(x, attr(node, 'perm', None))),
    'Squeeze': in_onnx_layout(lambda node, x: jnp.squeeze(x, _axes(node, x))),
    'Unsqueeze': in_onnx_layout(_unsqueeze),
    'Slice': in_onnx_layout(_slice),
    'ReduceMean': in_onnx_layout(_reduce_mean),
    'MatMul': in_onnx_layout(_matmul),
}

# Operators that read each position alone (with constants that do not vary over the image): they can run
# inside a padded bucket as they are.
POINTWISE = frozenset({'Add', 'Sub', 'Mul', 'Div', 'Max', 'Min', 'PRelu', 'BatchNormalization', 'Clip', 'Sigmoid',
                       'Tanh', 'HardSigmoid', 'HardSwish', 'Elu'})


def fold(op, inputs, attrs, constants):
    """A node's (inputs, attrs) with the inputs FOLDED names moved into attrs as Python values.

    `constants` maps initializer names to numpy arrays. Raises ValueError naming an input that is
    computed (a Shape-derived shape, say), which classicdream cannot evaluate ahead of the data."""
    attrs = dict(attrs)
    if op in BROADCAST:
        attrs['constant_inputs'] = tuple(i in constants for i in inputs)
        spatial = [constants[i] for i in inputs if i in constants and np.ndim(constants[i]) >= 2
                   and math.prod(np.shape(constants[i])[-2:]) > 1]
        if spatial:
            attrs['spatial_constant'] = 1
    if op not in FOLDED:
        return tuple(inputs), attrs
    data, extra = inputs[:1], inputs[1:]
    for name, value in zip(FOLDED[op], extra):
        if value == '':                                     # an optional input left out
            continue
        if value not in constants:
            raise ValueError(f'its input {value!r} ({name}) is computed, not a constant')
        array = np.asarray(constants[value])
        attrs[name] = array.item() if array.ndim == 0 else tuple(array.tolist())
    if op == 'Clip' and 'min' in attrs and isinstance(attrs['min'], tuple):
        attrs['min'], attrs['max'] = attrs['min'][0], attrs.get('max', (np.inf,))[0]
    return tuple(data), attrs


def border_fill(node):
    """What lies beyond the true extent for these operators inside a padded bucket, as ops.border_fill:
    None where each position is read alone, the value of a constant Pad of the image's axes; ValueError
    where the true size matters (reshaping, slicing, reducing, constants that vary over the image)."""
    if node.op in POINTWISE and not attr(node, 'spatial_constant', 0):
        return None
    if node.op == 'Pad' and attr(node, 'mode', 'constant') == 'constant' and len(attr(node, 'pads')) == 8:
        pads = attr(node, 'pads')
        if not any(pads[i] for i in (0, 1, 4, 5)):
            return attr(node, 'value', 0.0)
    raise ValueError(f'{node.op} cannot run in a padded bucket')


def spatial_out(node, size, axis):
    """Output extent along one spatial axis (0 = height, 1 = width); after a reshape, one position."""
    if node.op == 'Pad' and len(attr(node, 'pads')) == 8:
        return size + attr(node, 'pads')[2 + axis] + attr(node, 'pads')[6 + axis]
    if node.op in ('Reshape', 'MatMul', 'Squeeze', 'ReduceMean'):
        return 1
    return size
