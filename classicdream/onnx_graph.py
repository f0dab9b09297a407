"""An ONNX file read into what graph.py evaluates: its nodes, its constants folded, its input and its layers.

Read once, when a net is loaded, as onnxruntime and onnx2torch do before running a graph:
- *constants folded*: every node whose inputs are all constants (Constant nodes, initializers, a model-zoo
  file's ``ConstantOfShape``-built weights) is computed here, in numpy, by the operator that evaluates it;
- *parameters or baked in*: a large float constant stays a parameter (an argument of every program); what
  is small, integer, or an operand that must be known while tracing (a shape, axes, pads, scales) travels
  inside its node as a ``Const``;
- *attributes at the spec's defaults*: a convolution's kernel_shape from its weights, absent strides, pads,
  dilations and group filled in, and the opset where an operator's meaning changed with it (Softmax);
- *the input*: the one image input, its layout (NHWC where the graph says so: tf2onnx and Keras) and its
  channels (RGB, or one for a greyscale net); anything else is refused in one line.
"""
import json
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, inliner, numpy_helper

from . import elementwise, onnx_ops, ops, shapes  # noqa: F401 -- each registers its operators
from .operators import REGISTRY, Laid, Unsupported, apply, materialize
from .ops import Const, Node

SMALL = 16           # float constants of at most this many elements are baked into programs, not parameters
FLOAT = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}


@dataclass(frozen=True)
class ImageInput:
    name: str
    layout: str          # 'NCHW' or 'NHWC': the graph's own
    channels: int        # 3, or 1 for a greyscale net (it sees the image's intensity)
    size: tuple          # the declared (height, width), None where not fixed: a hint, not a limit


@dataclass(frozen=True)
class Graph:
    nodes: tuple         # the Input node first, then the nodes that depend on it, in graph order
    params: dict         # {name: float32 array}: the parameters
    layers: list         # [(layer, tensor, blob)]: a Caffe conversion's layer table, else every tensor
    unsupported: dict    # {tensor: why it cannot be computed}
    input: ImageInput
    opset: int
    producer: str


def read_graph(model):
    """ONNX ModelProto → Graph. Raises Unsupported for a graph classicdream cannot dream with at all."""
    model = inliner.inline_local_functions(model) if model.functions else model
    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    image = image_input(model, constants)
    opset, nodes, params, unsupported = read_nodes(model, constants)
    props = {p.key: p.value for p in model.metadata_props}
    dynamic = _dynamic_tensors(nodes)
    if 'caffe_layers' in props:
        layers = [tuple(x) for x in json.loads(props['caffe_layers'])]
    else:                                   # a plain ONNX model: every tensor is its own layer and blob
        layers = [(image.name,) * 3] + [(o, o, o) for n in nodes for o in n.outputs if o in dynamic]
    first = Node('Input', (), (image.name,), (('channels', image.channels), ('layout', image.layout)))
    return Graph((first, *nodes), params, layers, unsupported, image, opset, model.producer_name)


def read_nodes(model, constants=None):
    """(opset, nodes, parameters, {tensor: why not}) of any ONNX graph: its constants folded and baked in
    (see the module's docstring), its nodes' attributes at the spec's defaults."""
    model = inliner.inline_local_functions(model) if model.functions else model
    opset = next((o.version for o in model.opset_import if o.domain in ('', 'ai.onnx')), 1)
    if constants is None:
        constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    unsupported, kept = {}, []
    for proto in model.graph.node:
        node = _node(proto, opset)
        if node.op == 'Constant':
            try:
                constants[node.output] = _constant(proto)
            except ValueError as e:
                unsupported[node.output] = f'{node}: {e}'
            continue
        if node.op in REGISTRY and all(i == '' or i in constants for i in node.inputs):
            try:
                outs = apply(node, [None if i == '' else Laid(constants[i]) for i in node.inputs])
                constants.update((name, np.asarray(materialize(o))) for name, o in zip(node.outputs, outs))
            except ValueError as e:
                unsupported.update((o, str(e)) for o in node.outputs)
            continue
        kept.append(node)
    nodes, params = _with_constants(kept, constants, unsupported)
    return opset, nodes, params, unsupported


def image_input(model, constants):
    """The graph's one image input, its layout and channels; Unsupported in one line for anything else."""
    inputs = [i for i in model.graph.input if i.name not in constants]
    if len(inputs) != 1:
        names = ', '.join(repr(i.name) for i in inputs) or 'none'
        raise Unsupported(f'the graph has {len(inputs)} inputs ({names}); classicdream dreams with nets of '
                          f'one image input')
    value = inputs[0]
    tensor = value.type.tensor_type
    dims = [d.dim_value if d.HasField('dim_value') else None for d in tensor.shape.dim] \
        if tensor.HasField('shape') else None
    kind = onnx.TensorProto.DataType.Name(tensor.elem_type) if tensor.elem_type else value.type.WhichOneof('value')
    if tensor.elem_type not in FLOAT:
        raise Unsupported(f'input {value.name!r} is {kind} of shape {dims}: not an image, so there is nothing to dream')
    if dims is None:
        return ImageInput(value.name, 'NCHW', 3, None)
    if len(dims) != 4:
        raise Unsupported(f'input {value.name!r} has shape {dims}: classicdream dreams on images, '
                          f'(N, C, H, W) or (N, H, W, C)')
    layout = 'NHWC' if _first_transposes_to_nchw(model, value.name) else \
        'NCHW' if dims[1] in (1, 3) else 'NHWC' if dims[3] in (1, 3) else 'NCHW'
    channels = dims[1] if layout == 'NCHW' else dims[3]
    if channels not in (None, 1, 3):
        raise Unsupported(f'input {value.name!r} of shape {dims} has {channels} channels; classicdream dreams on '
                          f'RGB (3 channels) or greyscale (1) images')
    size = tuple(dims[2:] if layout == 'NCHW' else dims[1:3])
    return ImageInput(value.name, layout, channels or 3, size if None not in size else None)


def _first_transposes_to_nchw(model, name):
    """tf2onnx's sign of an NHWC input: it is transposed to NCHW before its first convolution."""
    consumers = [n for n in model.graph.node if name in n.input]
    return any(n.op_type == 'Transpose' and [a.ints for a in n.attribute if a.name == 'perm'] == [[0, 3, 1, 2]]
               for n in consumers)


def _node(proto, opset):
    attrs = {a.name: _attribute(proto, a) for a in proto.attribute}
    if proto.op_type in ('Softmax', 'LogSoftmax', 'Hardmax'):
        attrs['opset'] = opset
    if proto.op_type in ('Conv', 'MaxPool', 'AveragePool', 'LpPool'):
        attrs.setdefault('pads', (0, 0, 0, 0))
        if 'kernel_shape' in attrs:
            attrs.setdefault('strides', (1,) * len(attrs['kernel_shape']))
            attrs.setdefault('dilations', (1,) * len(attrs['kernel_shape']))
    if proto.op_type == 'Conv':
        attrs.setdefault('group', 1)
    return Node(proto.op_type, tuple(proto.input), tuple(proto.output), tuple(sorted(attrs.items())),
                proto.name)


def _attribute(proto, a):
    if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
        return f'<subgraph {a.name}>'                 # If, Loop, Scan: not supported (no operator registered)
    value = helper.get_attribute_value(a)
    if isinstance(value, onnx.TensorProto):
        return Const(numpy_helper.to_array(value))
    if isinstance(value, list):
        return tuple(v.decode() if isinstance(v, bytes) else v for v in value)
    return value.decode() if isinstance(value, bytes) else value


def _constant(proto):
    """A Constant node's value, whichever of its attributes holds it."""
    for a in proto.attribute:
        value = helper.get_attribute_value(a)
        if isinstance(value, onnx.TensorProto):
            return numpy_helper.to_array(value)
        if a.name in ('value_float', 'value_floats'):
            return np.asarray(value, np.float32)
        if a.name in ('value_int', 'value_ints'):
            return np.asarray(value, np.int64)
        raise ValueError(f'a Constant holding {a.name} is not supported')
    raise ValueError('the Constant holds no value')


def _with_constants(nodes, constants, unsupported):
    """Each node with its constant inputs as Consts or parameter names (see the module's docstring), a Conv's
    kernel_shape from its weights; and the parameters."""
    params, out = {}, []
    produced = {o for n in nodes for o in n.outputs}
    for node in nodes:
        op = REGISTRY.get(node.op)
        static = op.static if op else ()
        inputs = []
        for position, name in enumerate(node.inputs):
            if name == '':
                inputs.append(None)
            elif name in constants and name not in produced:
                value = constants[name]
                baked = position in static or value.dtype.kind not in 'f' or value.size <= SMALL
                inputs.append(Const(value) if baked else name)
                if not baked:
                    params[name] = np.asarray(value, np.float32)
            else:
                inputs.append(name)
        attrs = dict(node.attrs)
        if node.op == 'Conv' and 'kernel_shape' not in attrs:
            w = inputs[1] if len(inputs) > 1 else None
            shape = w.array.shape if isinstance(w, Const) else params[w].shape if w in params else None
            if shape is not None:
                attrs['kernel_shape'] = tuple(shape[2:])
                attrs.setdefault('strides', (1,) * len(shape[2:]))
                attrs.setdefault('dilations', (1,) * len(shape[2:]))
        if op is None:
            unsupported.update((o, f'operator {node.op} (node {node.name or node.output!r}) is not supported') for o in node.outputs)
        elif op.outputs is not None:
            unsupported.update((o, f'{node} computes only its first {op.outputs} output(s), not {o!r}')
                               for o in node.outputs[op.outputs:] if o)
        out.append(Node(node.op, tuple(inputs), node.outputs, tuple(sorted(attrs.items())), node.name))
    return out, params


def _dynamic_tensors(nodes):
    """The tensors that depend on the image's values, not only on its shape (Shape, Size and what is
    computed from them alone are shape arithmetic: known while tracing, nothing to dream on)."""
    static, dynamic = set(), set()
    for node in nodes:
        names = [i for i in node.inputs if isinstance(i, str)]
        if node.op in ('Shape', 'Size') or all(i in static for i in names):
            static.update(node.outputs)
        else:
            dynamic.update(o for o in node.outputs if o)
    return dynamic
