"""ONNX's elementwise operators: activations, arithmetic, comparisons and casts.

Each reads every position alone, so it runs in whatever layout its inputs are held (operators.py's
'pointwise'), inside a padded bucket as it is, and in numpy when its inputs are known while tracing
(shape arithmetic: ``Shape → Cast → Mul → Floor``). Gradients are JAX's own.
"""
import jax
import jax.numpy as jnp
import numpy as np
import scipy.special
from onnx import helper

from .operators import attr, attr_or_input, register, same_size, xp

POINTWISE = dict(layout='pointwise', border=None, spatial=same_size)


def unary(*names, static=()):
    """Register `fn(xp, node, x, *static inputs)` for the unary operators `names`."""
    def add(fn):
        register(*names, static=static, **POINTWISE)(lambda node, x, *rest: fn(xp(x), node, x, *rest))
        return fn
    return add


def _gelu(m, node, x):
    if attr(node, 'approximate', 'none') == 'tanh':
        return 0.5 * x * (1 + m.tanh(np.float32(np.sqrt(2 / np.pi)) * (x + np.float32(0.044715) * x ** 3)))
    return 0.5 * x * (1 + _erf(m, x / np.float32(np.sqrt(2))))


def _erf(m, x):
    return scipy.special.erf(x) if m is np else jax.scipy.special.erf(x)


def _softplus(m, x):
    return np.logaddexp(x, 0) if m is np else jax.nn.softplus(x)


def _sigmoid(m, x):
    return scipy.special.expit(x) if m is np else jax.nn.sigmoid(x)


UNARY = {
    'Relu': lambda m, node, x: m.maximum(x, 0) if m is np else jax.nn.relu(x),  # gradient 0 at 0, Caffe's mask
    'LeakyRelu': lambda m, node, x: m.where(x > 0, x, attr(node, 'alpha', 0.01) * x),
    'Elu': lambda m, node, x: m.where(x > 0, x, attr(node, 'alpha', 1.0) * m.expm1(m.minimum(x, 0))),
    'Selu': lambda m, node, x: attr(node, 'gamma', 1.0507009873554805) * m.where(
        x > 0, x, attr(node, 'alpha', 1.6732632423543772) * m.expm1(m.minimum(x, 0))),
    'Celu': lambda m, node, x: m.maximum(x, 0) + m.minimum(0, attr(node, 'alpha', 1.0) * m.expm1(
        m.minimum(x, 0) / attr(node, 'alpha', 1.0))),
    'ThresholdedRelu': lambda m, node, x: m.where(x > attr(node, 'alpha', 1.0), x, 0),
    'Sigmoid': lambda m, node, x: _sigmoid(m, x),
    'HardSigmoid': lambda m, node, x: m.clip(attr(node, 'alpha', 0.2) * x + attr(node, 'beta', 0.5), 0, 1),
    'HardSwish': lambda m, node, x: x * m.clip(x / 6 + 0.5, 0, 1),
    'Tanh': lambda m, node, x: m.tanh(x),
    'Softplus': lambda m, node, x: _softplus(m, x),
    'Softsign': lambda m, node, x: x / (1 + m.abs(x)),
    'Mish': lambda m, node, x: x * m.tanh(_softplus(m, x)),
    'Gelu': _gelu,
    'Erf': lambda m, node, x: _erf(m, x),
    'Exp': lambda m, node, x: m.exp(x),
    'Log': lambda m, node, x: m.log(x),
    'Sqrt': lambda m, node, x: m.sqrt(x),
    'Reciprocal': lambda m, node, x: 1 / x,
    'Neg': lambda m, node, x: -x,
    'Abs': lambda m, node, x: m.abs(x),
    'Floor': lambda m, node, x: m.floor(x),
    'Ceil': lambda m, node, x: m.ceil(x),
    'Round': lambda m, node, x: m.round(x),            # half to even, as ONNX says
    'Sign': lambda m, node, x: m.sign(x),
    'Sin': lambda m, node, x: m.sin(x),
    'Cos': lambda m, node, x: m.cos(x),
    'Not': lambda m, node, x: m.logical_not(x),
    'Identity': lambda m, node, x: x,
    'Dropout': lambda m, node, x, *rest: x,             # inference: the identity (its mask is not computed)
}
for _name, _fn in UNARY.items():
    unary(_name, static=(1, 2) if _name == 'Dropout' else ())(_fn)


@unary('Cast')
def _cast(m, node, x):
    dtype = helper.tensor_dtype_to_np_dtype(attr(node, 'to'))
    if m is not np and dtype.kind == 'f' and x.dtype.kind == 'f':
        return x                                   # an activation keeps its precision (float32 in a dream)
    return x.astype(dtype)


@unary('CastLike', static=(1,))
def _cast_like(m, node, x, like):
    return x.astype(like.dtype) if m is np or like.dtype.kind != 'f' else x


@unary('Clip', static=(1, 2))
def _clip(m, node, x, low=None, high=None):
    low = attr_or_input(node, (x, low), 1, 'min', None)
    high = attr_or_input(node, (x, low, high), 2, 'max', None)
    if low is not None:
        x = m.maximum(x, np.asarray(low, x.dtype) if m is np else low)
    if high is not None:
        x = m.minimum(x, np.asarray(high, x.dtype) if m is np else high)
    return x


def nary(*names):
    """Register `fn(xp, node, *inputs)` for broadcasting operators of two or more inputs."""
    def add(fn):
        register(*names, **POINTWISE)(lambda node, *xs: fn(xp(*xs), node, *xs))
        return fn
    return add


def _integer_divide(m, a, b):
    """ONNX's integer Div truncates toward zero, as C does."""
    q = m.abs(a) // m.abs(b)
    return m.where((a < 0) != (b < 0), -q, q).astype(a.dtype)


def _integers(*xs):
    return all(np.dtype(x.dtype).kind in 'iu' for x in xs)


def _fold(fn):
    return lambda m, node, *xs: _reduce(fn, m, xs)


def _reduce(fn, m, xs):
    out = xs[0]
    for x in xs[1:]:
        out = fn(m, out, x)
    return out


NARY = {
    'Add': lambda m, node, a, b: a + b,
    'Sub': lambda m, node, a, b: a - b,
    'Mul': lambda m, node, a, b: a * b,
    'Div': lambda m, node, a, b: _integer_divide(m, a, b) if _integers(a, b) else a / b,
    'Pow': lambda m, node, a, b: (a ** b).astype(a.dtype) if _integers(a) else a ** b,   # the base's type
    'Mod': lambda m, node, a, b: m.fmod(a, b) if attr(node, 'fmod', 0) else m.mod(a, b),
    'PRelu': lambda m, node, x, slope: m.where(x > 0, x, slope * x),
    'Max': _fold(lambda m, a, b: m.maximum(a, b)),
    'Min': _fold(lambda m, a, b: m.minimum(a, b)),
    'Sum': _fold(lambda m, a, b: a + b),
    'Mean': lambda m, node, *xs: _reduce(lambda m, a, b: a + b, m, xs) / len(xs),
    'Equal': lambda m, node, a, b: a == b,
    'Less': lambda m, node, a, b: a < b,
    'LessOrEqual': lambda m, node, a, b: a <= b,
    'Greater': lambda m, node, a, b: a > b,
    'GreaterOrEqual': lambda m, node, a, b: a >= b,
    'And': lambda m, node, a, b: m.logical_and(a, b),
    'Or': lambda m, node, a, b: m.logical_or(a, b),
    'Xor': lambda m, node, a, b: m.logical_xor(a, b),
    'Where': lambda m, node, c, a, b: m.where(c, a, b),
}
for _name, _fn in NARY.items():
    nary(_name)(_fn)
