"""Any ONNX CNN: every operator beyond Caffe's against onnxruntime, on graphs made here with onnx.helper
(forward ≤ 1e-5 relative; the dream's gradient against float64 finite differences), small networks in
ResNet, VGG, Inception-v3 and MobileNet shapes with random weights, and a dream through the CLI."""
import jax
import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from classicdream.graph import Net, evaluate
from classicdream.images import read_recipe

from conftest import assert_one_line_error, relative_error, run

RNG = np.random.RandomState(0)
OPSET = 13


class Graph:
    """A small ONNX graph built node by node, with random weights: input 'data' of 3 channels, NCHW unless
    `nhwc` (tf2onnx's form: the graph transposes it to NCHW itself)."""

    def __init__(self, nhwc=False, name='data', channels=3, size=(None, None)):
        self.nodes, self.weights, self.count, self.opset = [], [], 0, OPSET
        self.input, self.nhwc = name, nhwc
        self.shape = [1, *size, channels] if nhwc else [1, channels, *size]
        self.last = name
        if nhwc:
            self.node('Transpose', perm=[0, 3, 1, 2])

    def name(self, kind):
        self.count += 1
        return f'{kind}{self.count}'

    def const(self, array, kind='w'):
        name = self.name(kind)
        array = np.asarray(array)
        self.weights.append(numpy_helper.from_array(array.astype(np.float32 if array.dtype.kind == 'f' else
                                                                   np.int64), name))
        return name

    def node(self, op, inputs=None, outputs=1, **attrs):
        names = [self.name(op.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op, list(inputs if inputs is not None else [self.last]), names, **attrs))
        self.last = names[0]
        return names[0] if outputs == 1 else names

    def conv(self, c_in, c_out, k=3, stride=1, pad=None, group=1, dilation=1, x=None, kernel=None):
        kh, kw = kernel or (k, k)
        pads = pad if pad is not None else [dilation * (kh - 1) // 2, dilation * (kw - 1) // 2] * 2
        w = self.const(RNG.randn(c_out, c_in // group, kh, kw) * np.sqrt(2 / (c_in // group * kh * kw)))
        b = self.const(RNG.randn(c_out) * 0.1)
        return self.node('Conv', [x or self.last, w, b], kernel_shape=[kh, kw], strides=[stride] * 2, pads=pads,
                         group=group, dilations=[dilation] * 2)

    def bn(self, c, x=None):
        ws = [self.const(v) for v in (1 + 0.1 * RNG.randn(c), 0.1 * RNG.randn(c), 0.1 * RNG.randn(c),
                                      0.5 + RNG.rand(c))]
        return self.node('BatchNormalization', [x or self.last, *ws], epsilon=1e-3)

    def model(self, outputs=None, producer=''):
        outputs, opset = outputs or [self.last], self.opset
        graph = helper.make_graph(
            self.nodes, 'test', [helper.make_tensor_value_info(self.input, TensorProto.FLOAT, self.shape)],
            [helper.make_tensor_value_info(o, TensorProto.FLOAT, []) for o in outputs], self.weights)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', opset)], producer_name=producer)
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model


def onnxruntime_forward(model, x, outputs):
    """onnxruntime's values of `outputs` for NCHW `x` (given NHWC to an NHWC net, as Net.forward does)."""
    nhwc = Net(model).input_layout == 'NHWC'
    free = onnx.ModelProto()
    free.CopyFrom(model)                            # its declared height and width freed, as they are for us
    for i in (1, 2) if nhwc else (2, 3):
        free.graph.input[0].type.tensor_type.shape.dim[i].dim_param = f'd{i}'
    session = onnxruntime.InferenceSession(free.SerializeToString(), providers=['CPUExecutionProvider'])
    (value,) = session.get_inputs()
    if nhwc:
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    return session.run(outputs, {value.name: x})


def check(model, end, size=(23, 29), grad=True, sizes=()):
    """Forward against onnxruntime (at `size` and each of `sizes`); the gradient of ½‖end‖² against float64
    central differences."""
    net = Net(model)
    for hw in (size, *sizes):
        x = RNG.rand(1, 3, *hw).astype(np.float32) * 2 - 1
        ours = net.forward(x, end)
        (theirs,) = onnxruntime_forward(model, x, [end])
        assert ours.shape == theirs.shape
        assert relative_error(ours, theirs) <= 1e-5, relative_error(ours, theirs)
    if grad:
        x = RNG.rand(1, 3, *size).astype(np.float32) * 2 - 1
        g = net.gradient(x, end)
        tensor = net.tensor(end)
        with jax.enable_x64(True):
            params = {k: np.float64(v) for k, v in net.params.items()}
            f = lambda d: 0.5 * float(np.sum(np.square(evaluate(net.nodes, params, d, tensor))))   # noqa: E731
            for _ in range(2):
                v = RNG.randn(*x.shape)
                eps = 1e-6                   # small enough not to cross ReLU and Clip kinks
                numeric = (f(np.float64(x) + eps * v) - f(np.float64(x) - eps * v)) / (2 * eps)
                analytic = float(np.sum(np.float64(g) * v))
                assert abs(analytic - numeric) <= 1e-4 * max(1.0, abs(numeric)), (analytic, numeric)
    return net


def _with(op, *extra, **attrs):
    """conv → op (with constant extra inputs) → conv: the operator in the middle of a net."""
    def build(g):
        g.conv(3, 8)
        g.node(op, [g.last, *[g.const(e) if not isinstance(e, str) else e for e in extra]], **attrs)
    return build


OPERATORS = {
    'Add constant': _with('Add', RNG.randn(8, 1, 1)),
    'Sub scalar': _with('Sub', np.float32(0.3)),
    'Mul per channel': _with('Mul', RNG.randn(1, 8, 1, 1)),
    'Div constant': _with('Div', 1 + RNG.rand(8, 1, 1)),
    'BatchNormalization': lambda g: (g.conv(3, 8), g.bn(8)),
    'Clip (ReLU6)': _with('Clip', np.float32(0), np.float32(0.5)),
    'Sigmoid': _with('Sigmoid'),
    'Tanh': _with('Tanh'),
    'HardSigmoid': _with('HardSigmoid', alpha=0.3, beta=0.4),
    'HardSwish': lambda g: (setattr(g, 'opset', 14), _with('HardSwish')(g)),
    'PRelu': _with('PRelu', RNG.rand(8, 1, 1) * 0.3),
    'Elu': _with('Elu', alpha=0.7),
    'Pad constant': _with('Pad', np.int64([0, 0, 1, 2, 0, 0, 3, 0]), np.float32(0.5)),
    'Pad reflect': _with('Pad', np.int64([0, 0, 2, 1, 0, 0, 1, 2]), mode='reflect'),
    'Pad edge': _with('Pad', np.int64([0, 0, 1, 1, 0, 0, 2, 2]), mode='edge'),
    'Transpose': _with('Transpose', perm=[0, 2, 3, 1]),
    'Reshape': _with('Reshape', np.int64([1, 8, -1])),
    'Flatten': _with('Flatten', axis=1),
    'Unsqueeze': _with('Unsqueeze', np.int64([0])),
    'Squeeze': lambda g: (g.conv(3, 1), g.node('Squeeze', [g.last, g.const(np.int64([0, 1]))])),
    'Slice channels and rows': _with('Slice', np.int64([2, 1]), np.int64([6, 2 ** 31]), np.int64([1, 2]),
                                     np.int64([1, 2])),
    'ReduceMean': _with('ReduceMean', axes=[2, 3], keepdims=0),
    'grouped convolution': lambda g: (g.conv(3, 8), g.conv(8, 8, group=4)),
    'depthwise convolution': lambda g: (g.conv(3, 8), g.conv(8, 8, group=8, stride=2)),
    'dilated convolution': lambda g: (g.conv(3, 8), g.conv(8, 8, dilation=2)),
    'asymmetric 1x7 convolution': lambda g: (g.conv(3, 8), g.conv(8, 8, kernel=(1, 7), pad=[0, 3, 0, 3])),
    'AveragePool, padding not counted': lambda g: (g.conv(3, 8), g.node('AveragePool', kernel_shape=[3, 3],
                                                                       strides=[2, 2], pads=[1, 1, 1, 1])),
    'AveragePool, padding counted': lambda g: (g.conv(3, 8), g.node('AveragePool', kernel_shape=[3, 3],
                                                                   strides=[1, 1], pads=[1, 1, 1, 1],
                                                                   count_include_pad=1)),
    'MaxPool padded': lambda g: (g.conv(3, 8), g.node('MaxPool', kernel_shape=[3, 3], strides=[2, 2],
                                                      pads=[1, 1, 1, 1])),
    'Constant node': lambda g: (g.conv(3, 8), g.nodes.append(helper.make_node(
        'Constant', [], ['bias'], value=numpy_helper.from_array(RNG.randn(8, 1, 1).astype(np.float32)))),
        g.node('Add', [g.last, 'bias'])),
    'MatMul after Flatten': lambda g: (g.conv(3, 4, stride=4), g.node('GlobalAveragePool'), g.node('Flatten'),
                                       g.node('MatMul', [g.last, g.const(RNG.randn(4, 5))])),
    # what torch.onnx, tf2onnx and paddle2onnx write beyond the Caffe operators
    'Cast to float': _with('Cast', to=TensorProto.FLOAT),
    'Identity': _with('Identity'),
    'Dropout (inference)': lambda g: (g.conv(3, 8), g.node('Dropout', [g.last, g.const(np.float32(0.5))])),
    'Gemm after Flatten': lambda g: (g.conv(3, 4, stride=4), g.node('GlobalMaxPool'), g.node('Flatten'),
                                     g.node('Gemm', [g.last, g.const(RNG.randn(4, 5)), g.const(RNG.randn(5))],
                                            alpha=0.5, beta=2.0)),
    'Softmax over channels': _with('Softmax', axis=1),
    'Softmax before opset 13 (flattened from its axis)': lambda g: (setattr(g, 'opset', 11),
                                                                    _with('Softmax', axis=1)(g)),
    'LogSoftmax': _with('LogSoftmax', axis=1),
    'GlobalMaxPool': _with('GlobalMaxPool'),
    'LRN': _with('LRN', size=3, alpha=1e-2, beta=0.75, bias=2.0),
    'Resize nearest x2 (torch)': _with('Resize', '', np.float32([1, 1, 2, 2]), mode='nearest',
                                       coordinate_transformation_mode='asymmetric', nearest_mode='floor'),
    'Resize linear half-pixel by sizes': lambda g: (g.conv(3, 8), g.node('Resize', [
        g.last, '', '', g.const(np.int64([1, 8, 40, 31]))], mode='linear')),
    'Resize linear align-corners x1.5': _with('Resize', '', np.float32([1, 1, 1.5, 1.5]), mode='linear',
                                              coordinate_transformation_mode='align_corners'),
    'Upsample nearest (opset 9)': lambda g: (setattr(g, 'opset', 9), _with('Upsample', np.float32([1, 1, 2, 2]),
                                                                            mode='nearest')(g)),
    'Erf': _with('Erf'),
    'Gelu (opset 20)': lambda g: (setattr(g, 'opset', 20), _with('Gelu')(g)),
    'Gelu tanh (opset 20)': lambda g: (setattr(g, 'opset', 20), _with('Gelu', approximate='tanh')(g)),
    'LayerNormalization over channels, NHWC-permuted (ConvNeXt)': lambda g: (
        setattr(g, 'opset', 17), g.conv(3, 8), g.node('Transpose', perm=[0, 2, 3, 1]),
        g.node('LayerNormalization', [g.last, g.const(1 + 0.1 * RNG.randn(8)), g.const(0.1 * RNG.randn(8))],
               axis=-1, epsilon=1e-6),
        g.node('MatMul', [g.last, g.const(RNG.randn(8, 6))]), g.node('Transpose', perm=[0, 3, 1, 2])),
    'Mish (opset 18)': lambda g: (setattr(g, 'opset', 18), _with('Mish')(g)),
    'SiLU (Sigmoid times x)': lambda g: (g.conv(3, 8), g.node('Sigmoid'), g.node('Mul', [g.last, g.nodes[-2].output[0]])),
    'ReduceMean over channels (opset 18, axes input)': lambda g: (setattr(g, 'opset', 18), _with(
        'ReduceMean', np.int64([1]), keepdims=1)(g)),
    'ReduceMax over space, dims dropped': lambda g: (setattr(g, 'opset', 18), _with(
        'ReduceMax', np.int64([2, 3]), keepdims=0)(g)),
    'ReduceSum over height only (opset 13)': _with('ReduceSum', np.int64([2]), keepdims=0),
    'Split channels (opset 13, sizes input)': lambda g: (g.conv(3, 8), g.node('Split', [g.last, g.const(np.int64([3, 5]))],
                                                                          outputs=2, axis=1)),
    'Split channels (opset 18, num_outputs)': lambda g: (setattr(g, 'opset', 18), g.conv(3, 8), g.node(
        'Split', [g.last], outputs=2, axis=1, num_outputs=2)),
    'Conv without kernel_shape, strides, pads, dilations or group': lambda g: g.node(
        'Conv', [g.last, g.const(RNG.randn(8, 3, 3, 3)), g.const(RNG.randn(8))]),
    'Conv auto_pad SAME_UPPER, stride 2': lambda g: g.node(
        'Conv', [g.last, g.const(RNG.randn(8, 3, 4, 3))], auto_pad='SAME_UPPER', strides=[2, 2]),
    'Conv auto_pad SAME_LOWER': lambda g: g.node('Conv', [g.last, g.const(RNG.randn(8, 3, 4, 4))],
                                                 auto_pad='SAME_LOWER'),
    'Conv auto_pad VALID': lambda g: g.node('Conv', [g.last, g.const(RNG.randn(8, 3, 3, 3))], auto_pad='VALID',
                                            strides=[2, 1]),
    'MaxPool auto_pad SAME_UPPER (tf2onnx)': lambda g: (g.conv(3, 8), g.node(
        'MaxPool', kernel_shape=[3, 3], strides=[2, 2], auto_pad='SAME_UPPER')),
    'AveragePool asymmetric pads, ceil_mode': lambda g: (g.conv(3, 8), g.node(
        'AveragePool', kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, 1, 1], ceil_mode=1)),
    'InstanceNormalization': lambda g: (g.conv(3, 8), g.node('InstanceNormalization', [
        g.last, g.const(1 + 0.1 * RNG.randn(8)), g.const(0.1 * RNG.randn(8))])),
    'Expand a per-channel scale': lambda g: (g.conv(3, 8), g.node('Mul', [g.last, g.node(
        'Expand', [g.const(RNG.randn(8, 1, 1)), g.const(np.int64([1, 8, 1, 1]))])])),
    'Concat channels with a computed Reshape (shufflenet channel shuffle)': lambda g: _channel_shuffle(g),
    'Flatten head from shape arithmetic (torch x.view(x.size(0), -1))': lambda g: _torch_flatten_head(g),
    'Pad from shape arithmetic (torch F.pad)': lambda g: _torch_pad(g),
    'paddle2onnx head: Shape, Slice, Concat, Reshape, MatMul, Add': lambda g: _paddle_head(g),
}


def _channel_shuffle(g):
    """torchvision's channel_shuffle, as the TorchScript exporter writes it: sizes read off Shape."""
    g.conv(3, 8)
    x = g.last
    shape = g.node('Shape', [x])
    dims = [g.node('Gather', [shape, g.const(np.int64(i))], axis=0) for i in range(4)]
    unsq = [g.node('Unsqueeze', [d, g.const(np.int64([0]))]) for d in dims]
    groups = g.const(np.int64([2]))
    per = g.node('Div', [unsq[1], groups])
    g.node('Reshape', [x, g.node('Concat', [unsq[0], groups, per, unsq[2], unsq[3]], axis=0)])
    g.node('Transpose', perm=[0, 2, 1, 3, 4])
    flat = g.last
    g.node('Reshape', [flat, g.node('Concat', [unsq[0], g.const(np.int64([-1])), unsq[2], unsq[3]], axis=0)])
    g.conv(8, 4)


def _torch_flatten_head(g):
    g.conv(3, 4, stride=2)
    g.node('GlobalAveragePool')
    x = g.last
    batch = g.node('Unsqueeze', [g.node('Gather', [g.node('Shape', [x]), g.const(np.int64(0))], axis=0),
                                 g.const(np.int64([0]))])
    g.node('Reshape', [x, g.node('Concat', [batch, g.const(np.int64([-1]))], axis=0)])
    g.node('Gemm', [g.last, g.const(RNG.randn(3, 4)), g.const(RNG.randn(3))], transB=1)


def _torch_pad(g):
    """F.pad(x, (1, 2, 0, 1)) as older torch.onnx wrote it: the pads computed from the rank."""
    g.conv(3, 8)
    x = g.last
    rank = g.node('Size', [g.node('Shape', [x])])
    zeros = g.node('ConstantOfShape', [g.node('Unsqueeze', [g.node('Sub', [g.node('Mul', [
        rank, g.const(np.int64(2))]), g.const(np.int64(4))]), g.const(np.int64([0]))])],
        value=numpy_helper.from_array(np.int64([0])))
    pads = g.node('Concat', [g.const(np.int64([1, 2, 0, 1])), zeros], axis=0)
    g.node('Reshape', [pads, g.const(np.int64([-1, 2]))])
    g.node('Slice', [g.last, g.const(np.int64([-1])), g.const(np.int64([-2 ** 63])), g.const(np.int64([0])),
                     g.const(np.int64([-1]))])
    g.node('Transpose', perm=[1, 0])
    g.node('Reshape', [g.last, g.const(np.int64([-1]))])
    g.node('Cast', to=TensorProto.INT64)
    g.node('Pad', [x, g.last, g.const(np.float32(0.25))], mode='constant')


def _paddle_head(g):
    g.opset = 14
    g.conv(3, 8), g.node('HardSwish')
    x = g.last
    g.node('GlobalAveragePool'), g.conv(8, 4, k=1, pad=[0, 0, 0, 0]), g.node('Relu')
    g.conv(4, 8, k=1, pad=[0, 0, 0, 0]), g.node('HardSigmoid', alpha=1 / 6, beta=0.5)
    g.node('Mul', [x, g.last])
    g.node('GlobalAveragePool')
    pooled = g.last
    batch = g.node('Slice', [g.node('Shape', [pooled]), g.const(np.int64([0])), g.const(np.int64([1])),
                             g.const(np.int64([0]))])
    g.node('Reshape', [pooled, g.node('Concat', [batch, g.const(np.int64([-1]))], axis=0)])
    g.node('MatMul', [g.last, g.const(RNG.randn(8, 5))])
    g.node('Add', [g.last, g.const(RNG.randn(5))])


@pytest.mark.parametrize('name', list(OPERATORS))
def test_operator_matches_onnxruntime(name):
    """At two sizes (the shapes computed inside the graph follow the size), and its gradient."""
    g = Graph()
    OPERATORS[name](g)
    end = g.last
    check(g.model(), end, sizes=[(32, 37)])


def resnet_block(g, c):
    """conv-BN-ReLU-conv-BN, plus the block's input, then ReLU (ResNet's basic block)."""
    start = g.last
    g.conv(c, c), g.bn(c), g.node('Relu'), g.conv(c, c), g.bn(c)
    g.node('Add', [g.last, start])
    return g.node('Relu')


def test_small_resnet_vgg_inception_and_mobilenet_match_onnxruntime():
    # ResNet: stem, two residual blocks, a strided projection block, classifier
    g = Graph()
    g.conv(3, 8, k=7, stride=2), g.bn(8), g.node('Relu'), g.node('MaxPool', kernel_shape=[3, 3], strides=[2, 2],
                                                              pads=[1, 1, 1, 1])
    resnet_block(g, 8)
    block = resnet_block(g, 8)
    g.conv(8, 16, stride=2), g.bn(16), g.node('Relu'), g.conv(16, 16), g.bn(16)
    main = g.last
    g.conv(8, 16, k=1, stride=2, pad=[0, 0, 0, 0], x=block), g.bn(16)
    g.node('Add', [main, g.last])
    relu = g.node('Relu')
    g.node('GlobalAveragePool'), g.node('Flatten')
    g.node('Gemm', [g.last, g.const(RNG.randn(10, 16)), g.const(RNG.randn(10))], transB=1)
    model = g.model([relu, block, g.last])
    check(model, relu, size=(48, 40))
    check(model, block, size=(48, 40))
    check(model, g.last, size=(32, 32))
    # VGG: conv-ReLU pairs and max pooling
    g = Graph()
    for channels in ((3, 8), (8, 8), None, (8, 16), (16, 16), None):
        if channels is None:
            g.node('MaxPool', kernel_shape=[2, 2], strides=[2, 2])
        else:
            g.conv(*channels), g.node('Relu')
    check(g.model(), g.last, size=(32, 44))
    # Inception-v3: factorised 1x7 / 7x1 branches, average pooling without padding counted, concat
    g = Graph()
    g.conv(3, 8), g.node('Relu')
    x = g.last
    b1 = g.conv(8, 4, k=1, pad=[0, 0, 0, 0], x=x)
    g.conv(8, 4, k=1, pad=[0, 0, 0, 0], x=x), g.conv(4, 4, kernel=(1, 7), pad=[0, 3, 0, 3])
    b2 = g.conv(4, 4, kernel=(7, 1), pad=[3, 0, 3, 0])
    g.node('AveragePool', [x], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])
    b3 = g.conv(8, 4, k=1, pad=[0, 0, 0, 0])
    g.node('Concat', [b1, b2, b3], axis=1)
    check(g.model(), g.last, size=(25, 31))
    # MobileNet v2/v3: expand, depthwise, ReLU6 (Clip), project, HardSwish, residual
    g = Graph()
    g.opset = 14
    g.conv(3, 8, stride=2), g.bn(8), g.node('Clip', [g.last, g.const(np.float32(0)), g.const(np.float32(6))])
    start = g.last
    g.conv(8, 24, k=1, pad=[0, 0, 0, 0]), g.bn(24), g.node('HardSwish')
    g.conv(24, 24, group=24), g.bn(24), g.node('Clip', [g.last, g.const(np.float32(0)), g.const(np.float32(6))])
    g.conv(24, 8, k=1, pad=[0, 0, 0, 0]), g.bn(8)
    g.node('Add', [g.last, start])
    check(g.model(), g.last, size=(40, 36))


def _residual_model(path):
    g = Graph()
    g.conv(3, 8, stride=2), g.bn(8), g.node('Relu')
    resnet_block(g, 8)
    end = resnet_block(g, 8)
    onnx.save(g.model(), str(path))
    return end


def test_a_generated_residual_model_dreams_through_the_cli(capsys, tmp_path, shared):
    photo = shared / 'images' / 'flowers.jpg'
    model = tmp_path / 'tiny_resnet.onnx'
    end = _residual_model(model)
    code, out, err = run(capsys, 'layers', f'--model={model}')
    assert code == 0 and end in out, err
    dream = tmp_path / 'dream.png'
    code, _, err = run(capsys, 'dream', photo, f'--model={model}', f'--end={end}', f'--out={dream}',
                       '--iter_n=2', '--octave_n=2', '--preprocess=torch', '--quiet')
    assert code == 0, err
    recipe = read_recipe(dream)
    assert (recipe['model'], recipe['preprocess'], recipe['end']) == ('tiny_resnet.onnx', 'torch', end)
    from classicdream.images import load_image
    assert np.abs(load_image(dream) - load_image(photo)).mean() > 1          # it dreamed
    code, _, err = run(capsys, 'dream', photo, f'--model={model}', f'--out={tmp_path / "x.png"}', '--iter_n=1',
                       '--octave_n=1', '--quiet')
    assert code == 0, err                                # no --end: the net's own default layer
    assert read_recipe(tmp_path / 'x.png')['end'] == Net(str(model)).default_end


def test_an_unsupported_operator_is_one_line_naming_it_and_its_node(capsys, tmp_path, photo):
    g = Graph()
    g.conv(3, 8)
    ok = g.node('Relu')
    g.nodes.append(helper.make_node('Det', [g.last], ['erf_out'], name='gelu/erf'))
    g.last = 'erf_out'
    model = tmp_path / 'gelu.onnx'
    onnx.save(g.model(), str(model))
    code, _, err = run(capsys, 'dream', photo, f'--model={model}', '--end=erf_out', f'--out={tmp_path / "x.jpg"}',
                       '--quiet')
    assert_one_line_error(code, err, "operator Det (node 'gelu/erf') is not supported")
    code, _, err = run(capsys, 'dream', photo, f'--model={model}', f'--end={ok}', f'--out={tmp_path / "y.jpg"}',
                       '--iter_n=1', '--octave_n=1', '--quiet')
    assert code == 0, err                                  # the layers before it still dream


def test_model_zoo_files_are_pinned_and_a_wrong_one_refused(capsys, tmp_path, monkeypatch, photo):
    from classicdream.zoo import ZOO
    monkeypatch.setenv('CLASSICDREAM_MODELS', str(tmp_path))
    fake = tmp_path / ZOO['resnet18-v2-7'].file                   # present, so nothing is downloaded
    _residual_model(fake)
    code, _, err = run(capsys, 'layers', '--model=resnet18-v2-7')
    assert_one_line_error(code, err, 'not the published resnet18-v2-7.onnx', ZOO['resnet18-v2-7'].sha256)
    assert fake.exists()                                           # the user's file is left alone
    code, _, err = run(capsys, 'dream', photo, '--model=resnet19', f'--out={tmp_path / "x.jpg"}', '--quiet')
    assert_one_line_error(code, err, 'resnet19: no such model file, nor a model-zoo name', 'resnet50-v1-7')
    assert all(len(e.sha256) == 64 and e.size > 10 ** 6 and e.preprocess in ('caffe', 'torch') for e in ZOO.values())


def _bucket_agrees(net, tensor, size, bucket):
    """Evaluated inside a padded bucket, the true positions get what the exact size gives, and the rest 0."""
    x = RNG.rand(1, 3, *size).astype(np.float32) * 2 - 1
    padded = np.zeros((1, 3, *bucket), np.float32)
    padded[..., :size[0], :size[1]] = x
    exact = np.asarray(evaluate(net.nodes, net.params, x, tensor))
    inside = np.asarray(evaluate(net.nodes, net.params, padded, tensor, extent=np.int32(size)))
    region = tuple(slice(0, n) for n in exact.shape)
    rest = inside.copy()
    rest[region] = 0
    return relative_error(inside[region], exact) <= 1e-6 and not rest.any()


def test_pointwise_operators_run_in_a_padded_bucket_and_the_rest_at_the_exact_size(tmp_path):
    """Inside a bucket the true pixels get what the unpadded image gives (graph.evaluate's extent);
    operators whose result depends on the true size (reflect padding, reshapes) make the layer exact-size."""
    from classicdream.graph import bucketable
    model = tmp_path / 'res.onnx'
    end = _residual_model(model)
    net = Net(str(model))
    tensor = net.tensor(end)
    assert bucketable(net.nodes, tensor, net.params)
    assert _bucket_agrees(net, tensor, (37, 45), (48, 48))
    for name in ('Pad reflect', 'Reshape', 'AveragePool, padding not counted', 'Conv auto_pad SAME_UPPER, stride 2',
                 'Resize nearest x2 (torch)', 'ReduceMax over space, dims dropped'):
        g = Graph()
        OPERATORS[name](g)
        other = Net(g.model())
        assert not bucketable(other.nodes, other.tensor(g.last), other.params), name
    for name in ('Pad constant', 'LRN', 'GlobalMaxPool', 'SiLU (Sigmoid times x)', 'Split channels (opset 18, num_outputs)',
                 'Softmax over channels', 'LayerNormalization over channels, NHWC-permuted (ConvNeXt)',
                 'paddle2onnx head: Shape, Slice, Concat, Reshape, MatMul, Add'):
        g = Graph()
        OPERATORS[name](g)
        other = Net(g.model())
        tensor = other.tensor(g.last)
        if name.startswith('paddle2onnx'):          # its SE block buckets; its flattened head does not
            tensor = next(n.output for n in other.nodes if n.op == 'Mul')
        assert bucketable(other.nodes, tensor, other.params), name


@pytest.mark.parametrize('name', list(OPERATORS))
def test_every_operator_in_a_bucket_gives_the_exact_sizes_values_or_runs_exact(name):
    """The bucket rule for each operator: where graph.bucketable lets a layer run padded, it gives what the
    exact size gives."""
    from classicdream.graph import bucketable
    g = Graph()
    OPERATORS[name](g)
    net = Net(g.model())
    tensor = net.tensor(g.last)
    if bucketable(net.nodes, tensor, net.params):
        assert _bucket_agrees(net, tensor, (29, 35), (40, 48)), name


# ---------------------------------------------------------------- the front end: what exporters write

def _tf2onnx_model(path=None, channels=3):
    """A net in tf2onnx's exact form: NHWC input 'input_1:0' of a fixed 64x64, a leading Transpose, fused
    BatchNorm (a bias), ReLU6 as Clip, names ending in ':0', Keras' global average pooling as ReduceMean
    over the NHWC axes after a Transpose back, a MatMul + Add head and a Softmax."""
    g = Graph(nhwc=True, name='input_1:0', channels=channels, size=(64, 64))

    def node(op, inputs=None, **attrs):
        g.node(op, inputs, **attrs)
        g.nodes[-1].output[0] = g.last = f'model/{op}_{g.count}:0'
        return g.last
    w = g.const(RNG.randn(8, channels, 3, 3) * 0.3, 'conv2d/kernel:0')
    node('Conv', [g.last, w, g.const(RNG.randn(8) * 0.1)], kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, 1, 1])
    node('Clip', [g.last, g.const(np.float32(0)), g.const(np.float32(6))])
    node('Conv', [g.last, g.const(RNG.randn(16, 8, 3, 3) * 0.2), g.const(RNG.randn(16) * 0.1)],
         kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    relu = node('Relu')
    node('Transpose', perm=[0, 2, 3, 1])
    node('ReduceMean', axes=[1, 2], keepdims=0)
    node('MatMul', [g.last, g.const(RNG.randn(16, 10))])
    node('Add', [g.last, g.const(RNG.randn(10))])
    node('Softmax', axis=-1)
    model = g.model([relu, g.last], producer='tf2onnx')
    if path:
        onnx.save(model, str(path))
    return model, relu


def test_an_nhwc_net_in_tf2onnx_form_is_read_as_nhwc_and_matches_onnxruntime(capsys, tmp_path, photo):
    model, relu = _tf2onnx_model()
    net = Net(model)
    assert net.input_layout == 'NHWC' and net.input.size == (64, 64)
    check(model, relu, size=(64, 64), sizes=[(75, 93)])          # the declared size is a hint, not a limit
    check(model, net.layers[-1][0], size=(64, 64), grad=False, sizes=[(71, 57)])
    path = tmp_path / 'keras.onnx'
    onnx.save(model, str(path))
    code, out, err = run(capsys, 'layers', f'--model={path}')
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines()}
    assert code == 0 and rows[relu] == '1x16x32x32', err
    assert '(default --end)' in out
    out_file = tmp_path / 'd.png'
    code, _, err = run(capsys, 'dream', photo, f'--model={path}', f'--end={relu}', f'--out={out_file}',
                       '--iter_n=1', '--octave_n=1', '--quiet')
    assert code == 0, err                                 # 'model/Relu_4:0' is one layer, not Relu_4 weighed 0
    assert read_recipe(out_file)['end'] == relu and read_recipe(out_file)['preprocess'] == 'tf'
    code, _, err = run(capsys, 'dream', photo, f'--model={path}', f'--end={relu}:0.5,{net.layers[2][0]}:1',
                       f'--out={tmp_path / "w.png"}', '--iter_n=1', '--octave_n=1')
    assert code == 0, err                                 # a weight after the name's own ':0'
    assert 'assuming tf' in err                           # the preprocessing assumed is said, with how to change it
    assert read_recipe(tmp_path / 'w.png')['end'] == f'{relu}:0.5,{net.layers[2][0]}:1'


def test_a_greyscale_net_dreams_on_the_images_intensity(capsys, tmp_path, photo):
    model, relu = _tf2onnx_model(channels=1)
    net = Net(model)
    assert net.input.channels == 1
    x = RNG.rand(1, 3, 64, 64).astype(np.float32)
    (theirs,) = onnxruntime_forward(model, x.mean(axis=1, keepdims=True), [relu])
    assert relative_error(net.forward(x, relu), theirs) <= 1e-5
    g = net.gradient(x, relu)
    assert np.allclose(g[:, 0], g[:, 1]) and np.allclose(g[:, 1], g[:, 2])     # the channels change alike
    path = tmp_path / 'grey.onnx'
    onnx.save(model, str(path))
    code, _, err = run(capsys, 'dream', photo, f'--model={path}', f'--out={tmp_path / "g.png"}', '--iter_n=1',
                       '--octave_n=1', '--quiet')
    assert code == 0, err


@pytest.mark.parametrize('inputs, words', [
    ([('ids', TensorProto.INT64, [1, 128])], "input 'ids' is INT64 of shape [1, 128]: not an image"),
    ([('x', TensorProto.FLOAT, [1, 80])], "input 'x' has shape [1, 80]"),
    ([('x', TensorProto.FLOAT, [1, 4, 32, 32])], 'has 4 channels'),
    ([('a', TensorProto.FLOAT, [1, 3, 8, 8]), ('b', TensorProto.FLOAT, [1, 3, 8, 8])], "2 inputs ('a', 'b')"),
])
def test_a_net_whose_input_is_not_an_image_is_refused_in_one_line(capsys, tmp_path, photo, inputs, words):
    values = [helper.make_tensor_value_info(name, kind, shape) for name, kind, shape in inputs]
    node = helper.make_node('Identity', [inputs[0][0]], ['y'])
    graph = helper.make_graph([node], 'g', values, [helper.make_tensor_value_info('y', inputs[0][1], None)])
    path = tmp_path / 'other.onnx'
    onnx.save(helper.make_model(graph), str(path))
    for argv in (['layers'], ['dream', photo, f'--out={tmp_path / "x.jpg"}', '--quiet']):
        code, _, err = run(capsys, *argv, f'--model={path}')
        assert_one_line_error(code, err, words, str(path))


def test_external_weights_are_read_and_in_the_recipes_model_sha256(capsys, tmp_path, photo):
    """torch.onnx's dynamo exporter writes the weights beside the .onnx: the digest covers both."""
    from classicdream import load_net
    from classicdream.models import file_digest
    model = onnx.load_model_from_string(_tiny_classifier().SerializeToString())
    path = tmp_path / 'ext.onnx'
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location='ext.onnx.data',
              size_threshold=0)
    net = load_net(str(path))
    assert net.sha256 not in (file_digest(path), file_digest(tmp_path / 'ext.onnx.data'))
    data = tmp_path / 'ext.onnx.data'
    blob = bytearray(data.read_bytes())
    blob[-1] ^= 1
    data.write_bytes(bytes(blob))
    assert load_net(str(path)).sha256 != net.sha256                          # other weights, another model
    data.unlink()
    code, _, err = run(capsys, 'dream', photo, f'--model={path}', f'--out={tmp_path / "x.jpg"}', '--quiet')
    assert_one_line_error(code, err, 'its weights are in ext.onnx.data, which is not beside it')


def _tiny_classifier():
    g = Graph()
    g.conv(3, 8, stride=2), g.node('Relu'), g.conv(8, 12), g.node('Relu')
    g.node('GlobalAveragePool'), g.node('Flatten')
    g.node('Gemm', [g.last, g.const(RNG.randn(5, 12)), g.const(RNG.randn(5))], transB=1)
    return g.model(producer='pytorch')


def test_visualize_a_class_of_any_classifier(capsys, tmp_path):
    """w·mean(features) + b is the logit of a global-average-pooling classifier at its own size."""
    from classicdream.objectives import class_head, objective_class
    model = _tiny_classifier()
    net = Net(model)
    head = class_head(net)
    assert head.channel_axis == 1 and head.weights.shape == (5, 12)
    x = RNG.rand(1, 3, 40, 40).astype(np.float32)
    logits = net.forward(x, net.layers[-1][0])
    features = net.forward(x, head.end).mean(axis=(2, 3))[0]
    bias = logits[0] - np.asarray(head.weights) @ features
    assert np.allclose(bias, bias[0] * 0 + bias, atol=1e-4)
    g = net.gradient(x, head.end, objective_class(net, 3))
    f = lambda d: float(net.forward(d, net.layers[-1][0])[0, 3])              # noqa: E731
    v = RNG.randn(*x.shape).astype(np.float32)
    numeric = (f(x + 1e-2 * v) - f(x - 1e-2 * v)) / 2e-2
    assert abs(float(np.sum(g * v)) - numeric) <= 2e-2 * max(1.0, abs(numeric))
    path = tmp_path / 'classifier.onnx'
    onnx.save(model, str(path))
    code, out, err = run(capsys, 'visualize', '--class=3', f'--model={path}', '--size=48', '--iter_n=2',
                         '--octave_n=1', f'--out={tmp_path / "v.png"}', '--quiet')
    assert code == 0, err
    assert read_recipe(tmp_path / 'v.png')['class_index'] == 3
    tf_model, _ = _tf2onnx_model()
    assert class_head(Net(tf_model)).channel_axis == 3                   # Keras' head, NHWC features
