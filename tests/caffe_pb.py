"""The few caffe.proto messages a .caffemodel needs, built at runtime with the real protobuf library.

Field numbers and types are those of Caffe's ``src/caffe/proto/caffe.proto`` (NetParameter,
LayerParameter, the pre-2015 V1LayerParameter and its LayerType enum, BlobProto, BlobShape). Tests use
these to write .caffemodel files independently of classicdream's own hand-written reader.

Also here, shared by several test files: TINY, a small Caffe net written by the tests in both prototxt
formats, and an onnxruntime session for chosen tensors of an ONNX model.
"""
from pathlib import Path

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

F = descriptor_pb2.FieldDescriptorProto
OPT, REP = F.LABEL_OPTIONAL, F.LABEL_REPEATED

# V1LayerParameter.LayerType, as in caffe.proto (only the values a deploy net uses).
V1_LAYER_TYPE = {'NONE': 0, 'ACCURACY': 1, 'CONCAT': 3, 'CONVOLUTION': 4, 'DATA': 5, 'DROPOUT': 6,
                 'INNER_PRODUCT': 14, 'LRN': 15, 'POOLING': 17, 'RELU': 18, 'SOFTMAX': 20}


def _file():
    f = descriptor_pb2.FileDescriptorProto(name='classicdream_tests/caffe.proto', package='caffe',
                                           syntax='proto2')

    def message(name, *fields, enum=None):
        m = f.message_type.add(name=name)
        for fname, number, label, ftype, type_name, packed in fields:
            fd = m.field.add(name=fname, number=number, label=label, type=ftype)
            if type_name:
                fd.type_name = type_name
            if packed:
                fd.options.packed = True
        if enum:
            e = m.enum_type.add(name=enum[0])
            for vname, value in enum[1].items():
                e.value.add(name=vname, number=value)

    message('BlobShape', ('dim', 1, REP, F.TYPE_INT64, None, True))
    message('BlobProto',
            ('num', 1, OPT, F.TYPE_INT32, None, False), ('channels', 2, OPT, F.TYPE_INT32, None, False),
            ('height', 3, OPT, F.TYPE_INT32, None, False), ('width', 4, OPT, F.TYPE_INT32, None, False),
            ('data', 5, REP, F.TYPE_FLOAT, None, True), ('shape', 7, OPT, F.TYPE_MESSAGE, '.caffe.BlobShape', False),
            ('double_data', 8, REP, F.TYPE_DOUBLE, None, True))
    message('LayerParameter',
            ('name', 1, OPT, F.TYPE_STRING, None, False), ('type', 2, OPT, F.TYPE_STRING, None, False),
            ('bottom', 3, REP, F.TYPE_STRING, None, False), ('top', 4, REP, F.TYPE_STRING, None, False),
            ('blobs', 7, REP, F.TYPE_MESSAGE, '.caffe.BlobProto', False))
    message('V1LayerParameter',
            ('bottom', 2, REP, F.TYPE_STRING, None, False), ('top', 3, REP, F.TYPE_STRING, None, False),
            ('name', 4, OPT, F.TYPE_STRING, None, False),
            ('type', 5, OPT, F.TYPE_ENUM, '.caffe.V1LayerParameter.LayerType', False),
            ('blobs', 6, REP, F.TYPE_MESSAGE, '.caffe.BlobProto', False),
            enum=('LayerType', V1_LAYER_TYPE))
    message('NetParameter',
            ('name', 1, OPT, F.TYPE_STRING, None, False),
            ('layers', 2, REP, F.TYPE_MESSAGE, '.caffe.V1LayerParameter', False),
            ('layer', 100, REP, F.TYPE_MESSAGE, '.caffe.LayerParameter', False))
    return f


_pool = descriptor_pool.DescriptorPool()
_pool.Add(_file())
NetParameter, LayerParameter, V1LayerParameter, BlobProto, BlobShape = (
    message_factory.GetMessageClass(_pool.FindMessageTypeByName('caffe.' + n))
    for n in ('NetParameter', 'LayerParameter', 'V1LayerParameter', 'BlobProto', 'BlobShape'))


def write_caffemodel(path, layers, name='net', v1=False):
    """Write a binary .caffemodel.

    `layers` is a list of (name, type, [arrays]) in network order; `type` is the string type
    ('Convolution') or, with v1=True, the V1 enum name ('CONVOLUTION'). Blobs get a BlobShape, or with
    v1=True Caffe's legacy 4-D num/channels/height/width (shapes padded with leading ones).
    """
    net = NetParameter(name=name)
    for lname, ltype, arrays in layers:
        layer = net.layers.add(name=lname, type=V1_LAYER_TYPE[ltype]) if v1 else \
            net.layer.add(name=lname, type=ltype)
        for a in arrays:
            blob = layer.blobs.add()
            if v1:
                blob.num, blob.channels, blob.height, blob.width = (1,) * (4 - a.ndim) + a.shape
            else:
                blob.shape.dim.extend(a.shape)
            blob.data.extend(a.astype('float32').ravel().tolist())
    with open(path, 'wb') as f:
        f.write(net.SerializeToString())
    return path


# ---------------------------------------------------------------- a tiny Caffe net written by the tests

# (name, type, V1 type, bottoms, top, *_param text, parameter shapes). Input 1x3x19x24. conv1 (pad, stride)
# → 10x12; pool1 MAX k3 s2 → 5x6 only with Caffe's ceil rounding (floor gives 4x5); pool2 AVE k3 s2 p1 → 3x4,
# its last column window runs past the padded input, so Caffe's clipped divisor matters; pool3 MAX k3 s3 p2
# → 2x2, since Caffe drops a last window that would start in the padding (ceil alone gives 3x3).
TINY_INPUT = (1, 3, 19, 24)
TINY = [
    ('conv1', 'Convolution', 'CONVOLUTION', ['data'], 'conv1',
     'convolution_param { num_output: 6 kernel_size: 3 stride: 2 pad: 1 }', [(6, 3, 3, 3), (6,)]),
    ('relu1', 'ReLU', 'RELU', ['conv1'], 'conv1', '', []),
    ('pool1', 'Pooling', 'POOLING', ['conv1'], 'pool1', 'pooling_param { pool: MAX kernel_size: 3 stride: 2 }', []),
    ('norm1', 'LRN', 'LRN', ['pool1'], 'norm1', 'lrn_param { local_size: 5 alpha: 0.5 beta: 0.75 }', []),
    ('a', 'Convolution', 'CONVOLUTION', ['norm1'], 'a', 'convolution_param { num_output: 3 kernel_size: 1 }',
     [(3, 6, 1, 1), (3,)]),
    ('relu_a', 'ReLU', 'RELU', ['a'], 'a', '', []),
    ('b', 'Convolution', 'CONVOLUTION', ['norm1'], 'b', 'convolution_param { num_output: 5 kernel_size: 3 pad: 1 }',
     [(5, 6, 3, 3), (5,)]),
    ('cat', 'Concat', 'CONCAT', ['a', 'b'], 'cat', '', []),
    ('pool2', 'Pooling', 'POOLING', ['cat'], 'pool2',
     'pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }', []),
    ('pool3', 'Pooling', 'POOLING', ['pool2'], 'pool3',
     'pooling_param { pool: MAX kernel_size: 3 stride: 3 pad: 2 }', []),
    ('fc', 'InnerProduct', 'INNER_PRODUCT', ['pool3'], 'fc', 'inner_product_param { num_output: 7 }',
     [(7, 8 * 2 * 2), (7,)]),
    ('prob', 'Softmax', 'SOFTMAX', ['fc'], 'prob', '', []),
]


def tiny_params(seed=0):
    """Random parameters for TINY: layer name → [weight, bias] in Caffe's layout."""
    rng = np.random.default_rng(seed)
    return {name: [rng.normal(0, 0.5, s).astype(np.float32) for s in shapes]
            for name, _, _, _, _, _, shapes in TINY if shapes}


def tiny_prototxt(v1=False):
    """TINY as a deploy prototxt: `layer` messages with an Input layer, or V1 `layers` with `input_dim`."""
    if v1:
        head = 'name: "tiny"\ninput: "data"\n' + ''.join(f'input_dim: {d}\n' for d in TINY_INPUT)
    else:
        dims = ' '.join(f'dim: {d}' for d in TINY_INPUT)
        head = ('name: "tiny"\n'
                f'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ {dims} }} }} }}\n')
    lines = []
    for name, ltype, v1type, bottoms, top, param, _ in TINY:
        bottoms = ' '.join(f'bottom: "{b}"' for b in bottoms)
        kind, ltype = ('layers', v1type) if v1 else ('layer', f'"{ltype}"')
        lines.append(f'{kind} {{ name: "{name}" type: {ltype} {bottoms} top: "{top}" {param} }}\n')
    return head + ''.join(lines)


def write_tiny_net(folder, v1=False, seed=0, deploy_name='deploy.prototxt', model_name='tiny.caffemodel'):
    """Write TINY's deploy prototxt and .caffemodel into folder; return (deploy, caffemodel, params)."""
    folder = Path(folder)
    params = tiny_params(seed)
    (folder / deploy_name).write_text(tiny_prototxt(v1))
    layers = [(name, v1type if v1 else ltype, params.get(name, [])) for name, ltype, v1type, *_ in TINY]
    write_caffemodel(folder / model_name, layers, 'tiny', v1)
    return folder / deploy_name, folder / model_name, params


def onnxruntime_session(model_path, outputs):
    """An onnxruntime CPU session for the part of an ONNX model that computes the named tensors.

    The graph is pruned to the nodes those tensors depend on: onnxruntime runs every node of a graph,
    and later layers would fail on an input that is too small for them but not for the tensors asked for.
    """
    import onnx
    import onnxruntime
    model = onnx.load(str(model_path))
    graph, want, keep = model.graph, set(outputs), []
    for node in reversed(graph.node):
        if want.intersection(node.output):
            keep.append(node)
            want.update(node.input)
    pruned = onnx.helper.make_graph(
        keep[::-1], graph.name, graph.input,
        [onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in outputs],
        [t for t in graph.initializer if t.name in want])
    pruned = onnx.helper.make_model(pruned, opset_imports=model.opset_import, ir_version=model.ir_version)
    return onnxruntime.InferenceSession(pruned.SerializeToString(), providers=['CPUExecutionProvider'])
