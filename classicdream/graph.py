"""Evaluate an ONNX graph (read by onnx_graph.py) in JAX, with pycaffe's semantics for Caffe's operators.

Parameters are a flat pytree ``{name: jnp.ndarray}``; evaluation is a pure function of ``(params, data)``
built for one end tensor, computing only the nodes that tensor depends on. Values are held as
operators.Laid: an activation is NHWC inside (XLA:CPU's fast convolution layout) whatever the graph's
layout, and each operator gets it as it needs it (operators.py); shape arithmetic is numpy while tracing.
Data comes in as (N, C, H, W) and ends go out in the graph's own (ONNX) layout.

``forward(end=X)`` follows pycaffe: it stops at the *layer* named X. For a convolution whose ReLU runs
in place, Caffe's blob then still holds the pre-ReLU values, and that is what the dream objective sees.
"""
import difflib
import functools
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import onnx

from . import ops
from .onnx_graph import read_graph, read_nodes
from .operators import (NHWC, REGISTRY, Laid, NotBucketable, Unsupported, apply, attr, laid_as, materialize)
from .ops import to_nchw, to_nhwc
from .programs import program

ACTIVATIONS = frozenset({'Relu', 'LeakyRelu', 'PRelu', 'Clip', 'HardSwish', 'Gelu', 'Elu', 'Selu', 'Celu',
                         'Mish', 'Concat'})


FLATTENING = frozenset({'Flatten', 'Gemm', 'MatMul'})


def needed_nodes(nodes, end):
    """The nodes that `end` (a tensor, or a tuple of them) depends on, in graph order."""
    want, keep = set(_as_tuple(end)), []
    for node in reversed(nodes):
        if want.intersection(node.outputs):
            keep.append(node)
            want.update(i for i in node.inputs if isinstance(i, str))
    return tuple(reversed(keep))


def _as_tuple(end):
    return end if isinstance(end, tuple) else (end,)


def _input(node, data):
    """The graph's input from (N, C, H, W) data: held NHWC, which is an NHWC graph's own layout. A
    one-channel net sees the intensity (R+G+B)/3, so its dream changes the three channels alike."""
    if attr(node, 'channels') == 1 and data.shape[1] != 1:
        data = jnp.mean(data, axis=1, keepdims=True)
    return Laid(to_nhwc(data), NHWC if attr(node, 'layout') == 'NCHW' else None, True)


def evaluate(nodes, params, data, end, extent=None):
    """Pure evaluation of tensor `end` for input `data`: only the nodes it depends on run.

    `end` may be a tuple of tensors (several layers dreamed at once); the result is then a tuple too.
    `extent` (height, width), when given, is the true size of an image padded up to a bucket: every
    operator that reads neighbouring positions then sees beyond each tensor's true extent what Caffe's
    border gives it (ops.conv_border, ...), and the ends are zero there, so the true positions get what
    the unpadded image gives and no gradient comes back from the padding. Every value stays finite, so the
    padding's cotangents stay exactly zero on the way back. An operator whose result would differ inside a
    bucket raises NotBucketable (graph.bucketable asks first). 1x1 convolutions of one tensor run as one
    matrix product (channel_product_groups).
    """
    values = {name: Laid(p) for name, p in params.items()}
    values[nodes[0].output] = _input(nodes[0], data)
    extents = {nodes[0].output: extent}
    needed = needed_nodes(nodes, end)
    siblings = channel_product_groups(needed, params)
    for node in needed:
        if node.output in values:                       # the input, or computed with its siblings
            continue
        inputs = operands(node, values)
        if node.output in siblings:                     # pointwise: no border, the input's extent
            group = siblings[node.output]
            x = laid_as(inputs[0], NHWC, extent is not None)
            outputs = ops.channel_products(x, [params[n.inputs[1]] for n in group],
                                           [_bias(n, params) for n in group])
            for n, y in zip(group, outputs):
                values[n.output] = Laid(y, NHWC, inputs[0].image)
                extents[n.output] = extents.get(node.inputs[0])
            continue
        if extent is None:
            outs = apply(node, inputs)
        else:
            outs = _in_bucket(node, inputs, extents)
        values.update(zip(node.outputs, outs))
    ends = []
    for e in _as_tuple(end):
        value = values[e]
        if extent is not None and value.image:
            value = value._replace(array=_outside(value.array, extents[e], 0.0))
        ends.append(materialize(value))
    return tuple(ends) if isinstance(end, tuple) else ends[0]


def operands(node, values):
    """A node's inputs as Laid values: its Consts, the values computed so far, None for absent ones."""
    return [None if i is None else Laid(i.array) if isinstance(i, ops.Const) else values[i] for i in node.inputs]


def _bias(node, params):
    b = node.inputs[2] if len(node.inputs) > 2 else None
    return None if b is None else b.array if isinstance(b, ops.Const) else params[b]


def _in_bucket(node, inputs, extents):
    """apply(node, inputs) inside a padded bucket: fill beyond the true extent what the operator's border
    reads there (Operator.border), and carry each output's true extent (Operator.spatial)."""
    op = REGISTRY.get(node.op)
    names = [i if isinstance(i, str) else None for i in node.inputs]
    data = [i for i, v in enumerate(inputs) if v is not None and (op is None or i not in op.static)]
    images = [i for i in data if inputs[i].image]
    if not images:
        outs = apply(node, inputs)
        return tuple(o._replace(image=False) for o in outs)
    if op is None:
        return apply(node, inputs)                      # raises Unsupported
    first = inputs[images[0]]
    spatial = (1, 2) if first.perm is None else (first.perm[1], first.perm[2])   # the image's ONNX axes
    border = op.border(node, spatial) if callable(op.border) else op.border
    if isinstance(border, str):
        raise NotBucketable(f'{node} runs at the exact size')
    for i in data if op.layout == 'pointwise' else ():      # operands broadcast against the image
        if not inputs[i].image and _varies_over(inputs[i], spatial):
            raise NotBucketable(f'{node}: an operand varies over the image')
    extent = extents[names[images[0]]]
    if border is not None:
        for i in images:
            inputs[i] = inputs[i]._replace(array=_outside(inputs[i].array, extent, border))
    outs = apply(node, inputs, keep_images=True, extent=extent)
    if op.layout == 'transpose' or op.spatial is None:
        size = extent
    else:
        try:
            size = op.spatial(node, extent[0], 0), op.spatial(node, extent[1], 1)
        except NotImplementedError:
            if border is not None:
                raise NotBucketable(f'{node}: its output size is not known ahead') from None
            size = extent
    if any(s is None for s in size):                    # global pooling: no longer an image
        return tuple(o._replace(image=False) for o in outs)
    result = []
    for name, out in zip(node.outputs, outs):
        if border == -jnp.inf:                          # windows wholly in the padding: -inf, and in the
            out = out._replace(array=_outside(out.array, size, 0.0))            # pullback 0·inf
        extents[name] = size
        result.append(out._replace(image=np.ndim(out.array) == 4))
    return tuple(result)


def _varies_over(value, spatial):
    """Whether a value that is not the image varies along the image's axes (a positional constant)."""
    shape = value.array.shape if value.perm is None else tuple(value.array.shape[value.perm.index(a)]
                                                              for a in range(value.array.ndim))
    shape = (1,) * (4 - len(shape)) + tuple(shape) if len(shape) <= 4 else shape
    return len(shape) == 4 and any(shape[a] > 1 for a in spatial)


def channel_product_groups(nodes, params):
    """Convolutions that are matrix products (ops.is_matrix_product) with kernels among the parameters and
    read one tensor, keyed by the first one's output, where there are two or more: each group runs as one
    product."""
    groups = {}
    for node in nodes:
        if node.op != 'Conv' or len(node.inputs) < 2 or not isinstance(node.inputs[1], str):
            continue
        w = params.get(node.inputs[1])
        if w is not None and w.ndim == 4 and ops.is_matrix_product(node, w) and isinstance(node.inputs[0], str):
            groups.setdefault(node.inputs[0], []).append(node)
    return {group[0].output: group for group in groups.values() if len(group) > 1}


def _outside(x, extent, fill):
    """`x` with `fill` at every position beyond the true (height, width) `extent` of its axes 1 and 2."""
    inside = (jnp.arange(x.shape[1])[:, None] < extent[0]) & (jnp.arange(x.shape[2])[None, :] < extent[1])
    return jnp.where(inside[None, :, :, None], x, fill)


@functools.lru_cache(maxsize=256)
def _bucketable(nodes, end, params_shapes):
    params = {name: jax.ShapeDtypeStruct(shape, jnp.float32) for name, shape in params_shapes}
    data = jax.ShapeDtypeStruct((1, 3, 64, 64), jnp.float32)
    try:
        jax.eval_shape(lambda p, d: evaluate(nodes, p, d, end, (jnp.int32(64), jnp.int32(64))), params, data)
    except NotBucketable:
        return False
    except Unsupported:                                  # too small for 64x64, say
        return _fits_exactly_only(nodes, end)
    return True


def _fits_exactly_only(nodes, end):
    """A layer that does not fit a 64x64 input: bucketed where every operator it needs has a border rule."""
    for node in needed_nodes(nodes, end)[1:]:
        op = REGISTRY.get(node.op)
        if op is None or op.border == 'exact' or op.layout == 'onnx':
            return False
    return True


def bucketable(nodes, end, params):
    """Whether `end` can be evaluated inside a padded bucket: every operator it needs reads beyond the
    true extent only what its border rule says (a trace, no computation; kept per layer)."""
    shapes = tuple(sorted((k, tuple(np.shape(v))) for k, v in params.items()))
    return _bucketable(nodes, end, shapes)


def run(model, inputs):
    """Every output of any ONNX graph for `inputs` ({name: array}, in ONNX's layout), evaluated as a dream
    evaluates it but eagerly, with no image input assumed: what an ONNX backend does (ONNX's conformance
    tests run classicdream through this)."""
    constants = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    _, nodes, params, unsupported = read_nodes(model, constants)
    values = {name: Laid(np.asarray(p)) for name, p in params.items()}
    values.update((name, Laid(np.asarray(x) if np.asarray(x).dtype.kind not in 'f' else jnp.asarray(x)))
                  for name, x in inputs.items())
    values.update((name, Laid(c)) for name, c in constants.items() if name not in values)
    wanted = {o.name for o in model.graph.output} | {i for n in nodes for i in n.inputs if isinstance(i, str)}
    for node in nodes:
        missing = [o for o in node.outputs if o in unsupported and o in wanted]
        if missing:
            raise Unsupported(unsupported[missing[0]])
        outs = apply(node, operands(node, values))
        values.update(zip(node.outputs, outs))
    return [np.asarray(materialize(values[o.name])) for o in model.graph.output]


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

def static_sizes(nodes, end, size, axis):
    """Each image tensor's extent along `axis` up to `end` for an input of `size`, from the operators' own
    rules (Operator.spatial); NotImplementedError where one has none (a reshape, a transpose)."""
    sizes = {nodes[0].output: size}
    for node in needed_nodes(nodes, end)[1:]:
        ins = [sizes[i] for i in node.inputs if isinstance(i, str) and i in sizes]
        if not ins:
            continue
        op = REGISTRY.get(node.op)
        if op is None or op.spatial is None:
            raise NotImplementedError
        out = op.spatial(node, max(ins), axis)
        if out is not None:
            sizes.update(dict.fromkeys(node.outputs, out))
    return sizes


def _smallest(fits):
    lo, hi = 1, 1
    while not fits(hi):
        lo, hi = hi + 1, hi * 2
        if hi > 1 << 14:
            return None
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(mid) else (mid + 1, hi)
    return lo


class Net:
    """The notebook's net, in JAX: blobs in network order, forward(end=...) and the L2 gradient.

    It holds the graph, the parameter pytree and Caffe's layer table; arrays go in and come out as
    numpy so it can stand where the notebook's pycaffe net stood. Any ONNX CNN loads the same way: its
    input's layout, channels and declared size are ``input``, and ``default_end`` is the layer it dreams
    at when none is named.
    """

    def __init__(self, model, sha256=None):
        model = onnx.load(model) if not isinstance(model, onnx.ModelProto) else model
        graph = read_graph(model)
        self.nodes, self.layers, self.unsupported, self.input = graph.nodes, graph.layers, graph.unsupported, graph.input
        # An explicit dtype: without one jnp.asarray takes a path that held ~4x the parameters' bytes at peak.
        self.params = {name: jnp.asarray(value, jax.dtypes.canonicalize_dtype(value.dtype))
                       for name, value in graph.params.items()}
        self.producer = graph.producer
        props = {p.key: p.value for p in model.metadata_props}
        self.preprocess_given = props.get('classicdream_preprocess') or ('caffe' if 'caffe_layers' in props else None)
        self.preprocessing = self.preprocess_given or assumed_preprocessing(graph.producer)
        self.sha256 = sha256
        self.blobs = list(dict.fromkeys(blob for _, _, blob in self.layers))
        self._tensor = {layer: tensor for layer, tensor, _ in self.layers}
        self.dynamic = {tensor for _, tensor, _ in self.layers[1:]} - set(self.unsupported)   # activations
        self._fits = {}

    @property
    def input_layout(self):
        return self.input.layout

    def tensor(self, end):
        """The tensor holding what Caffe's forward(end=END) leaves in blob END (END names a layer).

        A tuple or list of layers gives a tuple of tensors: the objective then sees all of them."""
        if isinstance(end, (tuple, list)):
            return tuple(self.tensor(e) for e in end)
        if end in self._tensor:
            tensor = self._tensor[end]
            needed = needed_nodes(self.nodes, tensor) if self.unsupported else ()
            for name in [tensor, *(i for node in needed for i in node.inputs if isinstance(i, str))]:
                if name in self.unsupported:
                    raise ValueError(f'layer {end!r} needs {self.unsupported[name]}')
            return tensor
        close = difflib.get_close_matches(end, list(self._tensor), n=3, cutoff=0.5)
        hint = f'; did you mean {", ".join(close)}?' if close else \
            '; `classicdream layers` (with the same --model) lists them'
        raise ValueError(f'unknown layer {end!r}{hint}')

    def min_size(self, end):
        """(height, width) of the smallest input that reaches `end` (every layer of it, for a tuple)."""
        tensor = self.tensor(end)
        try:
            return tuple(_smallest(lambda s, a=axis: all(v >= 1 for v in static_sizes(self.nodes, tensor, s, a)
                                                            .values())) for axis in (0, 1))
        except NotImplementedError:
            other = max(self.input.size or (224, 224))
            h = _smallest(lambda s: self.fits((s, other), end))
            w = _smallest(lambda s: self.fits((other, s), end))
            if h is None or w is None:
                raise ValueError(f'layer {end!r} cannot be computed at any input size near '
                                 f'{other}x{other}') from None
            return h, w

    def statically_sized(self, end):
        """Whether every operator up to `end` has a size rule (no reshape, transpose, ...): then min_size
        alone says which inputs it takes."""
        tensor = self.tensor(end)
        if any(node.op in FLATTENING for node in needed_nodes(self.nodes, tensor)):
            return False                    # a fully connected layer takes the features of one size only
        try:
            static_sizes(self.nodes, tensor, 64, 0)
            return True
        except NotImplementedError:
            return False

    def fits(self, size, end):
        """Whether an input of `size` (height, width) reaches `end` (a trace, no computation; kept)."""
        return self.why_not(size, end) is None

    def why_not(self, size, end):
        """None where an input of `size` reaches `end`, else why not, in words."""
        key = (tuple(size), end if not isinstance(end, list) else tuple(end))
        if key not in self._fits:
            tensor = self.tensor(end)
            data = jax.ShapeDtypeStruct((1, 3, *size), jnp.float32)
            try:
                jax.eval_shape(partial(evaluate, self.nodes, end=tensor), self.params, data)
                self._fits[key] = None
            except (Unsupported, ValueError, TypeError) as e:
                self._fits[key] = ' '.join(str(e).split())
        return self._fits[key]

    def check_size(self, shape, end):
        h, w = shape[-2:]
        try:
            mh, mw = self.min_size(end)
        except ValueError:
            mh = mw = 1
        if h < mh or w < mw:
            raise ValueError(f'an input of {w}x{h} pixels is too small for layer {end!r}: '
                             f'it needs at least {mw}x{mh} (width x height)')
        why = self.why_not((h, w), end)
        if why is not None:
            declared = self.input.size
            hint = f' (the net was exported for {declared[1]}x{declared[0]})' if declared else ''
            raise ValueError(f'layer {end!r} cannot be computed for a {w}x{h} input{hint}: {why}')

    def _checked(self, data, end):
        data = np.asarray(data, np.float32)
        if data.ndim != 4:
            raise ValueError(f'data must have shape (N, C, H, W), got {data.shape}')
        self.check_size(data.shape, end)
        return data

    def forward(self, data, end):
        """What pycaffe's net.forward(end=end) leaves in blob `end`, for data of shape (N, C, H, W) (NCHW
        whatever the graph's own layout); each end in the graph's own layout. A tuple of ends gives a tuple."""
        data = self._checked(data, end)
        out = forward_fn(self.params, data, nodes=self.nodes, end=self.tensor(end))
        return tuple(map(np.asarray, out)) if isinstance(end, (tuple, list)) else np.asarray(out)

    def gradient(self, data, end, objective=objective_L2):
        """d(½‖forward(data, end)‖²)/d data, or the diff of another notebook-style objective."""
        data = self._checked(data, end)
        return np.asarray(gradient_fn(self.params, data, as_objective(objective),
                                      nodes=self.nodes, end=self.tensor(end)))

    def shape(self, end, height=224, width=224):
        """Shape of layer `end`'s output for one input of the given size (abstract evaluation, no compute)."""
        data = jax.ShapeDtypeStruct((1, 3, height, width), jnp.float32)
        return jax.eval_shape(partial(evaluate, self.nodes, end=self.tensor(end)), self.params, data).shape

    def describe(self, height=None, width=None):
        """{layer: its output's shape for one input of the given size (default: the declared one, else
        224x224), or why it cannot be computed}: one trace of the whole graph, no computation."""
        height, width = height or (self.input.size or (224, 224))[0], width or (self.input.size or (224, 224))[1]
        found = dict(self.unsupported)

        def run(params, data):
            values = {name: Laid(p) for name, p in params.items()}
            values[self.nodes[0].output] = _input(self.nodes[0], data)
            found[self.nodes[0].output] = tuple(data.shape) if self.input.layout == 'NCHW' else \
                (data.shape[0], *data.shape[2:], 1 if self.input.channels == 1 else data.shape[1])
            for node in self.nodes[1:]:
                missing = [i for i in node.inputs if isinstance(i, str) and i not in values]
                if missing:
                    why = found.get(missing[0], f'{missing[0]!r} is not computed')
                    found.update((o, why) for o in node.outputs if o not in found)
                    continue
                try:
                    outs = apply(node, operands(node, values))
                except ValueError as e:
                    found.update((o, ' '.join(str(e).split())) for o in node.outputs)
                    continue
                for name, out in zip(node.outputs, outs):
                    values[name] = out
                    shape = np.shape(out.array)
                    found[name] = shape if out.perm is None else tuple(shape[out.perm.index(a)]
                                                                       for a in range(len(shape)))
            return jnp.zeros(())
        jax.eval_shape(run, self.params, jax.ShapeDtypeStruct((1, 3, height, width), jnp.float32))
        return {layer: found.get(tensor, 'not computed') for layer, tensor, _ in self.layers}

    def shapes(self, height=224, width=224):
        """Shape of every layer's output for one input of the given size; None where it cannot be computed."""
        return {layer: shape if isinstance(shape, tuple) else None
                for layer, shape in self.describe(height, width).items()}

    @functools.cached_property
    def default_end(self):
        """The layer a dream takes when none is named: the notebook's where the net has it; else, of the
        image-shaped outputs of the net's trunk (activations and residual sums that feed two or more
        nodes: a block's output, like inception_4c/output), or where it has none of the activations
        (ReLU, ReLU6, HardSwish, GELU, SiLU, concatenations), the one after about 60% of the net's
        convolutions, where inception_4c/output lies in bvlc_googlenet (35 of its 57): patterns and parts
        of things, rather than edges or whole classes. Only layers that also take another size than the
        declared one count where there are such (an exporter's fixed reshapes stop the octaves)."""
        from .dream import DEFAULT_END
        if DEFAULT_END in self._tensor:
            return DEFAULT_END
        shapes = self.describe()
        h, w = self.input.size or (224, 224)
        elsewhere = self.describe(h * 3 // 2 + 1, w * 3 // 2 + 1)
        if any(isinstance(elsewhere[layer], tuple) and len(elsewhere[layer]) == 4 for layer in list(elsewhere)[1:]):
            shapes = {layer: shape if isinstance(elsewhere[layer], tuple) else None for layer, shape in shapes.items()}
        produced = {o: n for n in self.nodes for o in n.outputs}
        readers = {}
        convs, seen = {}, 0
        for node in self.nodes[1:]:
            seen += node.op == 'Conv'
            convs.update(dict.fromkeys(node.outputs, seen))
            for i in node.inputs:
                if isinstance(i, str):
                    readers[i] = readers.get(i, 0) + 1
        activations, trunk = [], []
        for layer, tensor, _ in self.layers[1:]:
            shape, node = shapes.get(layer), produced.get(tensor)
            if not (isinstance(shape, tuple) and len(shape) == 4 and min(shape[1:]) >= 2 and node is not None):
                continue
            distance = (abs(convs[tensor] - 0.6 * seen), layer)
            activation = node.op in ACTIVATIONS or is_silu(node, produced)
            if activation:
                activations.append(distance)
            if (activation or node.op == 'Add') and readers.get(tensor, 0) >= 2:
                trunk.append(distance)
        if trunk or activations:
            return min(trunk or activations)[1]
        return next((layer for layer, shape in shapes.items() if isinstance(shape, tuple)
                     and layer != self.layers[0][0]), self.layers[-1][0])


def is_silu(node, produced):
    """x · sigmoid(x), as torch.onnx writes SiLU / Swish (EfficientNet's activation)."""
    if node.op != 'Mul':
        return False
    a, b = (produced.get(i) if isinstance(i, str) else None for i in node.inputs[:2])
    return any(n is not None and n.op == 'Sigmoid' and n.inputs[0] == other
               for n, other in ((a, node.inputs[1]), (b, node.inputs[0])))


PRODUCERS = {'tf2onnx': 'tf', 'keras2onnx': 'tf', 'pytorch': 'torch', 'paddle2onnx': 'torch', 'PaddlePaddle': 'torch'}


def assumed_preprocessing(producer):
    """The input a net from `producer` most likely wants, where its metadata says nothing: Keras'
    applications' [-1, 1] for tf2onnx, ImageNet's mean and std (torchvision's, paddle's) otherwise."""
    return PRODUCERS.get(producer, 'torch')
