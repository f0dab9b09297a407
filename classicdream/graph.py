"""Evaluate an ONNX graph (as written by convert.py) in JAX, with pycaffe's semantics.

Parameters are a flat pytree ``{initializer name: jnp.ndarray}``; evaluation is a pure function of
``(params, data)`` built for one end tensor, computing only the nodes that tensor depends on. All
arithmetic is float32 with ``Precision.HIGHEST``: TF32 on a GPU would break parity with Caffe.
Activations are NHWC inside evaluation (XLA:CPU's fast convolution layout) and NCHW at its edges.

``forward(end=X)`` follows pycaffe: it stops at the *layer* named X. For a convolution whose ReLU runs
in place, Caffe's blob then still holds the pre-ReLU values, and that is what the dream objective sees.
"""
import difflib
import functools
import json
import math
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import onnx
from jax import lax
from onnx import numpy_helper

HIGHEST = lax.Precision.HIGHEST


@dataclass(frozen=True)
class Node:
    op: str
    inputs: tuple
    output: str
    attrs: tuple          # sorted (name, value) pairs, hashable so a Node can key a jit cache


def _attr(node, name, default=None):
    return dict(node.attrs).get(name, default)


def read_graph(model):
    """ONNX ModelProto → (nodes in order, params pytree, Caffe layer table [layer, tensor, blob])."""
    nodes = []
    for n in model.graph.node:
        attrs = tuple(sorted((a.name, _hashable(onnx.helper.get_attribute_value(a))) for a in n.attribute))
        nodes.append(Node(n.op_type, tuple(n.input), n.output[0], attrs))
    params = {t.name: jnp.asarray(numpy_helper.to_array(t), jnp.float32) for t in model.graph.initializer}
    props = {p.key: p.value for p in model.metadata_props}
    if 'caffe_layers' in props:
        layers = [tuple(x) for x in json.loads(props['caffe_layers'])]
    else:                                   # a plain ONNX model: every tensor is its own layer and blob
        first_input = model.graph.input[0].name
        layers = [(first_input,) * 3] + [(n.output, n.output, n.output) for n in nodes]
    return tuple(nodes), params, layers


def _hashable(v):
    return tuple(v) if isinstance(v, list) else v.decode() if isinstance(v, bytes) else v


# ---------------------------------------------------------------- the operators, with Caffe's semantics
#
# The graph is NCHW, as Caffe and ONNX write it, but the operators below work on NHWC activations with
# HWIO kernels: that is the form XLA:CPU hands to its convolution library (YNNPACK in jaxlib 0.10), and
# inside a loop (one octave's steps are a lax.scan) XLA does not rewrite other layouts into it.
# `evaluate` transposes at the edges.

NHWC = ('NHWC', 'HWIO', 'NHWC')


def _axis(x, axis):
    """Where an NCHW axis of the graph lives in an NHWC activation (2-D tensors keep their axes)."""
    return (0, 3, 1, 2)[axis % 4] if x.ndim == 4 else axis


def to_nhwc(x):
    return jnp.transpose(x, (0, 2, 3, 1)) if x.ndim == 4 else x


def to_nchw(x):
    return jnp.transpose(x, (0, 3, 1, 2)) if x.ndim == 4 else x


def _pool_geometry(size, kernel, stride, pad, ceil_mode):
    """Caffe's pooled size (ceil, minus a last window starting in the padding) and the high-side padding."""
    if ceil_mode:
        out = -(-(size + 2 * pad - kernel) // stride) + 1
        if pad and (out - 1) * stride >= size + pad:
            out -= 1
    else:
        out = (size + 2 * pad - kernel) // stride + 1
    return out, max((out - 1) * stride + kernel - size - pad, 0)


def _window(node, x):
    """A pooling node's kernel, strides, (low, high) padding of H and W, and Caffe's output size."""
    (kh, kw), (sh, sw) = _attr(node, 'kernel_shape'), _attr(node, 'strides', (1, 1))
    pt, pl, _, _ = _attr(node, 'pads', (0, 0, 0, 0))
    ceil_mode = _attr(node, 'ceil_mode', 0)
    (oh, hi_h), (ow, hi_w) = (_pool_geometry(x.shape[1], kh, sh, pt, ceil_mode),
                              _pool_geometry(x.shape[2], kw, sw, pl, ceil_mode))
    return (kh, kw), (sh, sw), ((pt, hi_h), (pl, hi_w)), (oh, ow)


def _pool(x, init, op, kernel, strides, padding, out):
    y = lax.reduce_window(x, init, op, (1, *kernel, 1), (1, *strides, 1), ((0, 0), *padding, (0, 0)))
    return y[:, :out[0], :out[1]]


def _caffe_avg_divisor(size, out, kernel, stride, pad):
    """Caffe's AVE divisor along one axis: the window clipped to the padded input, padding counted."""
    start = np.arange(out) * stride - pad
    return np.minimum(start + kernel, size + pad) - start


def _max_pool(node, x):
    return max_pool_nhwc(x, *_window(node, x))


@partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def max_pool_nhwc(x, kernel, strides, padding, out):
    """Caffe's MAX pooling: -inf padding, so a window's maximum is over its part inside the input."""
    return _pool(x, -jnp.inf, lax.max, kernel, strides, padding, out)


def _max_pool_fwd(x, kernel, strides, padding, out):
    y = max_pool_nhwc(x, kernel, strides, padding, out)
    return y, (x, y)


def _max_pool_bwd(kernel, strides, padding, out, residuals, g):
    """Each window's gradient goes to its first maximum in row-major order, Caffe's tie rule.

    Written as one masked, strided add per kernel offset rather than JAX's select-and-scatter, which
    XLA:CPU expands into an indexed scatter: pooling's gradient took ~370 ms of a 575x1024 step that
    way and ~250 ms this way (XLA's per-op profile).
    """
    x, y = residuals
    padded = jnp.pad(x, ((0, 0), *padding, (0, 0)), constant_values=-jnp.inf)
    span = [(o - 1) * s + 1 for o, s in zip(out, strides)]       # extent of one offset's strided slice
    offsets = [(i, j) for i in range(kernel[0]) for j in range(kernel[1])]
    first = jnp.full(y.shape, len(offsets), jnp.int32)              # each window's first maximum
    for k, (i, j) in reversed(list(enumerate(offsets))):
        at = lax.slice(padded, (0, i, j, 0), (y.shape[0], i + span[0], j + span[1], y.shape[3]), (1, *strides, 1))
        first = jnp.where(at == y, k, first)
    dx = sum(lax.pad(jnp.where(first == k, g, 0.0), 0.0,
                     ((0, 0, 0), (i, padded.shape[1] - i - span[0], strides[0] - 1),
                      (j, padded.shape[2] - j - span[1], strides[1] - 1), (0, 0, 0)))
             for k, (i, j) in enumerate(offsets))
    (top, _), (left, _) = padding
    return (dx[:, top:top + x.shape[1], left:left + x.shape[2]],)


max_pool_nhwc.defvjp(_max_pool_fwd, _max_pool_bwd)


def _average_pool(node, x):
    kernel, strides, padding, (oh, ow) = _window(node, x)
    total = _pool(x, 0.0, lax.add, kernel, strides, padding, (oh, ow))
    (kh, kw), (sh, sw), ((pt, _), (pl, _)) = kernel, strides, padding
    div = np.outer(_caffe_avg_divisor(x.shape[1], oh, kh, sh, pt), _caffe_avg_divisor(x.shape[2], ow, kw, sw, pl))
    return total / jnp.asarray(div[:, :, None], jnp.float32)


def _conv(node, x, w, b=None):
    pt, pl, pb, pr = _attr(node, 'pads', (0, 0, 0, 0))
    geometry = (tuple(_attr(node, 'strides', (1, 1))), ((pt, pb), (pl, pr)), tuple(_attr(node, 'dilations', (1, 1))))
    w = jnp.transpose(w, (2, 3, 1, 0))                                   # ONNX's OIHW → HWIO
    group = _attr(node, 'group', 1)
    # grouped: JAX's own gradient, which XLA:CPU runs slowly inside a loop
    y = conv_nhwc(x, w, *geometry) if group == 1 else _lax_conv(x, w, *geometry, group)
    return y if b is None else y + b


def _lax_conv(x, w, strides, padding, dilation, group=1):
    return lax.conv_general_dilated(x, w, strides, padding, rhs_dilation=dilation, dimension_numbers=NHWC,
                                    feature_group_count=group, precision=HIGHEST)


@partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv_nhwc(x, w, strides, padding, dilation):
    """An ungrouped NHWC/HWIO convolution whose input gradient is one in the same form.

    JAX's own gradient is a convolution with swapped kernel dimensions, which XLA:CPU runs ~30x slower
    inside a loop; written as the usual transposed convolution (flipped kernel, in and out swapped,
    stride as input dilation) it takes the fast kernel too.
    """
    return _lax_conv(x, w, strides, padding, dilation)


def _conv_nhwc_fwd(x, w, strides, padding, dilation):
    return conv_nhwc(x, w, strides, padding, dilation), (x, w)


def _conv_nhwc_bwd(strides, padding, dilation, residuals, g):
    x, w = residuals
    pads = [_input_gradient_padding(x.shape[1 + a], w.shape[a], strides[a], dilation[a], padding[a][0],
                                    g.shape[1 + a]) for a in (0, 1)]
    flipped = jnp.swapaxes(lax.rev(w, (0, 1)), 2, 3)
    dx = lax.conv_general_dilated(g, flipped, (1, 1), pads, lhs_dilation=strides, rhs_dilation=dilation,
                                  dimension_numbers=NHWC, precision=HIGHEST)
    dw = jax.vjp(lambda w: _lax_conv(x, w, strides, padding, dilation), w)[1](g)[0]
    return dx, dw


def _input_gradient_padding(size, kernel, stride, dilation, pad_before, out):
    """Padding of the stride-dilated output gradient so that the flipped kernel maps it back onto the input."""
    reach = dilation * (kernel - 1)
    before = reach - pad_before
    return before, size + reach - (out - 1) * stride - 1 - before


conv_nhwc.defvjp(_conv_nhwc_fwd, _conv_nhwc_bwd)


def _lrn(node, x):
    """Across-channel LRN: x / (k + α/n · Σ x²)^β over n channels centred on each (Caffe's and ONNX's α/n)."""
    n = _attr(node, 'size')
    sq = lax.reduce_window(x * x, 0.0, lax.add, (1, 1, 1, n), (1, 1, 1, 1),
                           ((0, 0), (0, 0), (0, 0), ((n - 1) // 2, n // 2)))
    return x * (_attr(node, 'bias', 1.0) + _attr(node, 'alpha', 1e-4) / n * sq) ** -_attr(node, 'beta', 0.75)


def _gemm(node, x, w, b=None):
    w = w.T if _attr(node, 'transB', 0) else w
    y = jnp.dot(x, w, precision=HIGHEST)
    return y if b is None else y + b


def _flatten(node, x):
    x = to_nchw(x)                                          # Caffe's order of the flattened features
    return x.reshape(math.prod(x.shape[:_attr(node, 'axis', 1)]), -1)


OPS = {
    'Conv': _conv,
    'Relu': lambda node, x: jax.nn.relu(x),      # gradient 0 at 0, like Caffe's (x > 0) mask
    'LeakyRelu': lambda node, x: jnp.where(x > 0, x, _attr(node, 'alpha', 0.01) * x),
    'MaxPool': _max_pool,
    'AveragePool': _average_pool,
    'GlobalAveragePool': lambda node, x: jnp.mean(x, axis=(1, 2), keepdims=True),
    'GlobalMaxPool': lambda node, x: jnp.max(x, axis=(1, 2), keepdims=True),
    'LRN': _lrn,
    'Concat': lambda node, *xs: jnp.concatenate(xs, axis=_axis(xs[0], _attr(node, 'axis', 1))),
    'Identity': lambda node, x: x,
    'Dropout': lambda node, x: x,
    'Flatten': _flatten,
    'Gemm': _gemm,
    'Softmax': lambda node, x: jax.nn.softmax(x, axis=_axis(x, _attr(node, 'axis', -1))),
}


def _as_tuple(end):
    return end if isinstance(end, tuple) else (end,)


def needed_nodes(nodes, end):
    """The nodes that `end` (a tensor, or a tuple of them) depends on, in graph order."""
    want, keep = set(_as_tuple(end)), []
    for node in reversed(nodes):
        if node.output in want:
            keep.append(node)
            want.update(node.inputs)
    return tuple(reversed(keep))


def evaluate(nodes, params, data, end):
    """Pure evaluation of tensor `end` for input `data`: only the nodes it depends on run.

    `end` may be a tuple of tensors (several layers dreamed at once); the result is then a tuple too.
    """
    values = dict(params)
    values[_input_name(nodes, params)] = to_nhwc(data)
    for node in needed_nodes(nodes, end):
        values[node.output] = OPS[node.op](node, *(values[i] for i in node.inputs))
    return tuple(to_nchw(values[e]) for e in end) if isinstance(end, tuple) else to_nchw(values[end])


def _input_name(nodes, params):
    produced = {n.output for n in nodes}
    return next(i for n in nodes for i in n.inputs if i not in produced and i not in params)


def objective_L2(dst):
    """The notebook's objective: dst.diff = dst.data, i.e. the gradient of ½‖dst‖²."""
    return dst


def backward(nodes, params, data, end, objective=objective_L2):
    """Caffe's forward(end) + objective(dst) + backward(start=end): the diff that reaches `data`.

    `objective` maps the activations at `end` to the diff placed on them (the notebook's objectives
    write ``dst.diff``); the result is the vector-Jacobian product of that diff back to the input.
    This is what a *fresh* Caffe net computes; Caffe also keeps stale diffs between calls
    (shared/reference fact 5), which the notebook never relied on and this port does not reproduce.
    """
    dst, pullback = jax.vjp(lambda x: evaluate(nodes, params, x, end), data)
    return pullback(objective(dst))[0]


def as_objective(objective):
    """Objectives travel through jit as pytrees: a jax.tree_util.Partial keeps arrays it closes over
    (the guide's features) as arguments instead of constants baked into every compilation."""
    return objective if isinstance(objective, jax.tree_util.Partial) else jax.tree_util.Partial(objective)


# XLA:CPU's older fusion emitters compile this net's step in ~80% of the time (3.75 vs 4.46 s for one
# 575x1024 octave, interleaved runs on 2 cores) and run it as fast, within the machine's noise.
# Other backends ignore xla_cpu_* options; a jaxlib that no longer has the option gets XLA's defaults.
XLA_OPTIONS = {'xla_cpu_use_fusion_emitters': False}


@functools.cache
def xla_options():
    """XLA_OPTIONS, where this jaxlib knows them (XLA refuses an unknown option at compile time)."""
    try:
        jax.jit(lambda x: x, compiler_options=XLA_OPTIONS).lower(np.float32(0)).compile()
    except Exception:           # the error's class has moved between jax versions
        return {}
    return XLA_OPTIONS


def jit(**jit_kwargs):
    """jax.jit with xla_options(), settled at the first call: asking XLA starts a backend, and importing
    classicdream must not (JAX_PLATFORMS may still be set after it). `.lower` is jax.jit's, for the bench."""
    def decorate(fun):
        @functools.cache
        def jitted():
            return jax.jit(fun, compiler_options=xla_options(), **jit_kwargs)

        @functools.wraps(fun)
        def call(*args, **kwargs):
            return jitted()(*args, **kwargs)
        call.lower = lambda *args, **kwargs: jitted().lower(*args, **kwargs)
        return call
    return decorate


@jit(static_argnames=('nodes', 'end'))
def forward_fn(params, data, *, nodes, end):
    return evaluate(nodes, params, data, end)


@jit(static_argnames=('nodes', 'end'))
def gradient_fn(params, data, objective, *, nodes, end):
    return backward(nodes, params, data, end, objective)


# ---------------------------------------------------------------- sizes the network accepts

def _spatial_out(node, size, axis):
    """Output extent along one spatial axis (0 = height, 1 = width) of a node, in integers."""
    if node.op == 'Conv':
        k, s, d = (_attr(node, a, (1, 1))[axis] for a in ('kernel_shape', 'strides', 'dilations'))
        pads = _attr(node, 'pads', (0, 0, 0, 0))
        return (size + pads[axis] + pads[axis + 2] - d * (k - 1) - 1) // s + 1
    if node.op in ('MaxPool', 'AveragePool'):
        return _pool_geometry(size, _attr(node, 'kernel_shape')[axis], _attr(node, 'strides', (1, 1))[axis],
                              _attr(node, 'pads', (0, 0, 0, 0))[axis], _attr(node, 'ceil_mode', 0))[0]
    return size


def smallest_input(nodes, end, axis):
    """The smallest input extent along `axis` for which every layer up to `end` has a non-empty output."""
    path = needed_nodes(nodes, end)

    def fits(size):
        sizes = {}
        for node in path:
            ins = [sizes.get(i, size) for i in node.inputs]
            sizes[node.output] = _spatial_out(node, min(ins), axis) if node.op not in ('Flatten', 'Gemm') else 1
            if sizes[node.output] < 1:
                return False
        return True

    lo, hi = 1, 1
    while not fits(hi):
        lo, hi = hi + 1, hi * 2
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(mid) else (mid + 1, hi)
    return lo


class Net:
    """The notebook's net, in JAX: blobs in network order, forward(end=...) and the L2 gradient.

    It holds the graph, the parameter pytree and Caffe's layer table; arrays go in and come out as
    numpy so it can stand where the notebook's pycaffe net stood.
    """

    def __init__(self, model, sha256=None):
        model = onnx.load(model) if not isinstance(model, onnx.ModelProto) else model
        self.nodes, self.params, self.layers = read_graph(model)
        self.sha256 = sha256
        self.blobs = list(dict.fromkeys(blob for _, _, blob in self.layers))
        self._tensor = {layer: tensor for layer, tensor, _ in self.layers}

    def tensor(self, end):
        """The tensor holding what Caffe's forward(end=END) leaves in blob END (END names a layer).

        A tuple or list of layers gives a tuple of tensors: the objective then sees all of them."""
        if isinstance(end, (tuple, list)):
            return tuple(self.tensor(e) for e in end)
        if end in self._tensor:
            return self._tensor[end]
        close = difflib.get_close_matches(end, list(self._tensor), n=3, cutoff=0.5)
        hint = f'; did you mean {", ".join(close)}?' if close else '; `classicdream layers` lists them'
        raise ValueError(f'unknown layer {end!r}{hint}')

    def min_size(self, end):
        """(height, width) of the smallest input that reaches `end` (every layer of it, for a tuple)."""
        tensor = self.tensor(end)
        return smallest_input(self.nodes, tensor, 0), smallest_input(self.nodes, tensor, 1)

    def check_size(self, shape, end):
        mh, mw = self.min_size(end)
        h, w = shape[-2:]
        if h < mh or w < mw:
            raise ValueError(f'an input of {w}x{h} pixels is too small for layer {end!r}: '
                             f'it needs at least {mw}x{mh} (width x height)')

    def _checked(self, data, end):
        data = np.asarray(data, np.float32)
        if data.ndim != 4:
            raise ValueError(f'data must have shape (N, 3, H, W), got {data.shape}')
        self.check_size(data.shape, end)
        return data

    def forward(self, data, end):
        """What pycaffe's net.forward(end=end) leaves in blob `end`, for data of shape (N, 3, H, W)."""
        data = self._checked(data, end)
        return np.asarray(forward_fn(self.params, data, nodes=self.nodes, end=self.tensor(end)))

    def gradient(self, data, end, objective=objective_L2):
        """d(½‖forward(data, end)‖²)/d data, or the diff of another notebook-style objective."""
        data = self._checked(data, end)
        return np.asarray(gradient_fn(self.params, data, as_objective(objective),
                                      nodes=self.nodes, end=self.tensor(end)))

    def shape(self, end, height=224, width=224):
        """Shape of layer `end`'s output for one input of the given size (abstract evaluation, no compute)."""
        data = jax.ShapeDtypeStruct((1, 3, height, width), jnp.float32)
        return jax.eval_shape(partial(evaluate, self.nodes, end=self.tensor(end)), self.params, data).shape

    def shapes(self, height=224, width=224):
        """Shape of every layer's output for one input of the given size; None where it is too small."""
        out = {self.layers[0][0]: (1, 3, height, width)}
        for layer, _, _ in self.layers[1:]:
            try:
                out[layer] = self.shape(layer, height, width)
            except (TypeError, ValueError):
                out[layer] = None
        return out
