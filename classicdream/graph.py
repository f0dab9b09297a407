"""Evaluate an ONNX graph (as written by convert.py) in JAX, with pycaffe's semantics.

Parameters are a flat pytree ``{initializer name: jnp.ndarray}``; evaluation is a pure function of
``(params, data)`` built for one end tensor, computing only the nodes that tensor depends on. The
operators are ops.py's (float32, ``Precision.HIGHEST``); activations are NHWC inside evaluation
(XLA:CPU's fast convolution layout) and NCHW at its edges.

``forward(end=X)`` follows pycaffe: it stops at the *layer* named X. For a convolution whose ReLU runs
in place, Caffe's blob then still holds the pre-ReLU values, and that is what the dream objective sees.
"""
import difflib
import json
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import onnx
from onnx import numpy_helper

from . import onnx_ops, ops
from .onnx_ops import fold
from .ops import Node, to_nchw, to_nhwc
from .programs import program

OPS = {**ops.OPS, **onnx_ops.OPS}


def read_graph(model):
    """ONNX ModelProto → (nodes in order, params pytree, Caffe layer table [layer, tensor, blob], and what
    cannot be evaluated: {tensor: why}).

    Constant nodes become parameters, and constant inputs that say how to reshape, slice, pad or clip
    become attributes (onnx_ops.fold), so every node keeps only the tensors it computes with."""
    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    nodes, unsupported = [], {}
    for n in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type == 'Constant':
            constants[n.output[0]] = _constant(n, attrs)
            continue
        inputs = tuple(n.input)
        try:
            inputs, attrs = fold(n.op_type, inputs, attrs, constants)
        except ValueError as e:
            unsupported[n.output[0]] = f'{n.op_type} node {n.name or n.output[0]!r}: {e}'
        if n.op_type not in OPS:
            unsupported[n.output[0]] = f'operator {n.op_type} (node {n.name or n.output[0]!r}) is not supported'
        nodes.append(Node(n.op_type, inputs, n.output[0], tuple(sorted((k, _hashable(v)) for k, v in attrs.items()))))
    used = {i for node in nodes for i in node.inputs}
    params = {name: jnp.asarray(value, jnp.float32) for name, value in constants.items() if name in used}
    props = {p.key: p.value for p in model.metadata_props}
    if 'caffe_layers' in props:
        layers = [tuple(x) for x in json.loads(props['caffe_layers'])]
    else:                                   # a plain ONNX model: every tensor is its own layer and blob
        first_input = next(i.name for i in model.graph.input if i.name not in constants)
        layers = [(first_input,) * 3] + [(n.output, n.output, n.output) for n in nodes]
    return tuple(nodes), params, layers, unsupported


def _constant(node, attrs):
    """A Constant node's value, whichever of its attributes holds it."""
    for key, value in attrs.items():
        return numpy_helper.to_array(value) if isinstance(value, onnx.TensorProto) else np.asarray(value)
    raise ValueError(f'Constant node {node.name or node.output[0]!r} holds no value')


def _hashable(v):
    if isinstance(v, onnx.TensorProto):
        return tuple(numpy_helper.to_array(v).ravel().tolist())
    return tuple(v) if isinstance(v, list) else v.decode() if isinstance(v, bytes) else v


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


def evaluate(nodes, params, data, end, extent=None):
    """Pure evaluation of tensor `end` for input `data`: only the nodes it depends on run.

    `end` may be a tuple of tensors (several layers dreamed at once); the result is then a tuple too.
    `extent` (height, width), when given, is the true size of an image padded up to a bucket: every
    operator that reads neighbouring positions then sees beyond each tensor's true extent what Caffe's
    border gives it (ops.border_fill), and the ends are zero there, so the true positions get what the
    unpadded image gives and no gradient comes back from the padding. Every value stays finite, so the
    padding's cotangents stay exactly zero on the way back. 1x1 convolutions of one tensor run as one
    matrix product (channel_product_groups).
    """
    values = dict(params)
    name = _input_name(nodes, params)
    values[name] = to_nhwc(data)
    extents = {name: extent}
    needed = needed_nodes(nodes, end)
    siblings = channel_product_groups(needed, params)
    for node in needed:
        if node.output in values:                       # computed with its siblings
            continue
        inputs = [values[i] for i in node.inputs]
        if node.output in siblings:                     # pointwise: no border, the input's extent
            group = siblings[node.output]
            outputs = ops.channel_products(inputs[0], [params[n.inputs[1]] for n in group],
                                           [params[n.inputs[2]] if len(n.inputs) > 2 else None for n in group])
            values.update((n.output, y) for n, y in zip(group, outputs))
            if extent is not None:
                extents.update((n.output, extents[node.inputs[0]]) for n in group)
            continue
        if extent is not None:
            size = extents[node.inputs[0]]
            fill = border_fill(node)
            if fill is not None:
                inputs[0] = _outside(inputs[0], size, fill)
            extents[node.output] = tuple(spatial_out(node, size[axis], axis) for axis in (0, 1))
        values[node.output] = OPS[node.op](node, *inputs)
        if extent is not None and fill == -jnp.inf:     # windows wholly in the padding: -inf, and in the
            values[node.output] = _outside(values[node.output], extents[node.output], 0.0)  # pullback 0·inf
    ends = tuple(values[e] if extent is None else _outside(values[e], extents[e], 0.0) for e in _as_tuple(end))
    return tuple(map(to_nchw, ends)) if isinstance(end, tuple) else to_nchw(ends[0])


def channel_product_groups(nodes, params):
    """Convolutions that are matrix products (ops.is_matrix_product) with constant kernels and read one
    tensor, keyed by the first one's output, where there are two or more: each group runs as one product."""
    groups = {}
    for node in nodes:
        constant = all(i in params for i in node.inputs[1:])
        if node.op == 'Conv' and constant and ops.is_matrix_product(node, params[node.inputs[1]]):
            groups.setdefault(node.inputs[0], []).append(node)
    return {group[0].output: group for group in groups.values() if len(group) > 1}


def border_fill(node):
    """ops.border_fill for the Caffe operators, onnx_ops.border_fill for the others."""
    return (onnx_ops if node.op in onnx_ops.OPS else ops).border_fill(node)


def spatial_out(node, size, axis):
    return (onnx_ops if node.op in onnx_ops.OPS else ops).spatial_out(node, size, axis)


def _outside(x, extent, fill):
    """NHWC `x` with `fill` at every position beyond the true (height, width) `extent`."""
    inside = (jnp.arange(x.shape[1])[:, None] < extent[0]) & (jnp.arange(x.shape[2])[None, :] < extent[1])
    return jnp.where(inside[None, :, :, None], x, fill)


def bucketable(nodes, end):
    """Whether `end` can be evaluated inside a padded bucket (ops.border_fill knows all its operators)."""
    try:
        for node in needed_nodes(nodes, end):
            border_fill(node)
    except ValueError:
        return False
    return True


def _input_name(nodes, params):
    produced = {n.output for n in nodes}
    return next(i for n in nodes for i in n.inputs if i not in produced and i not in params)


def objective_L2(dst):
    """The notebook's objective: dst.diff = dst.data, i.e. the gradient of ½‖dst‖²."""
    return dst


def backward(nodes, params, data, end, objective=objective_L2, extent=None):
    """Caffe's forward(end) + objective(dst) + backward(start=end): the diff that reaches `data`.

    `objective` maps the activations at `end` to the diff placed on them (the notebook's objectives
    write ``dst.diff``); the result is the vector-Jacobian product of that diff back to the input.
    This is what a *fresh* Caffe net computes; Caffe also keeps stale diffs between calls
    (shared/reference fact 5), which the notebook never relied on and this port does not reproduce.
    """
    dst, pullback = jax.vjp(lambda x: evaluate(nodes, params, x, end, extent), data)
    return pullback(objective(dst))[0]


def as_objective(objective):
    """Objectives travel through jit as pytrees: a jax.tree_util.Partial keeps arrays it closes over
    (the guide's features) as arguments instead of constants baked into every compilation."""
    return objective if isinstance(objective, jax.tree_util.Partial) else jax.tree_util.Partial(objective)


@program(static_argnames=('nodes', 'end'))
def forward_fn(params, data, *, nodes, end):
    return evaluate(nodes, params, data, end)


@program(static_argnames=('nodes', 'end'))
def gradient_fn(params, data, objective, *, nodes, end):
    return backward(nodes, params, data, end, objective)


# ---------------------------------------------------------------- sizes the network accepts

def smallest_input(nodes, end, axis):
    """The smallest input extent along `axis` for which every layer up to `end` has a non-empty output."""
    path = needed_nodes(nodes, end)

    def fits(size):
        sizes = {}
        for node in path:
            ins = [sizes.get(i, size) for i in node.inputs]
            sizes[node.output] = spatial_out(node, min(ins), axis) if node.op not in ('Flatten', 'Gemm') else 1
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
        self.nodes, self.params, self.layers, self.unsupported = read_graph(model)
        props = {p.key: p.value for p in model.metadata_props}
        self.preprocessing = props.get('classicdream_preprocess', 'caffe')   # the input this net was trained on
        self.sha256 = sha256
        self.blobs = list(dict.fromkeys(blob for _, _, blob in self.layers))
        self._tensor = {layer: tensor for layer, tensor, _ in self.layers}

    def tensor(self, end):
        """The tensor holding what Caffe's forward(end=END) leaves in blob END (END names a layer).

        A tuple or list of layers gives a tuple of tensors: the objective then sees all of them."""
        if isinstance(end, (tuple, list)):
            return tuple(self.tensor(e) for e in end)
        if end in self._tensor:
            tensor = self._tensor[end]
            for node in needed_nodes(self.nodes, tensor) if self.unsupported else ():
                if node.output in self.unsupported:
                    raise ValueError(f'layer {end!r} needs {self.unsupported[node.output]}')
            return tensor
        close = difflib.get_close_matches(end, list(self._tensor), n=3, cutoff=0.5)
        hint = f'; did you mean {", ".join(close)}?' if close else \
            '; `classicdream layers` (with the same --model) lists them'
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
