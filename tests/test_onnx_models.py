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
    """A small ONNX graph built node by node, with random weights: NCHW input 'data' of 3 channels."""

    def __init__(self):
        self.nodes, self.weights, self.last, self.count, self.opset = [], [], 'data', 0, OPSET

    def name(self, kind):
        self.count += 1
        return f'{kind}{self.count}'

    def const(self, array, kind='w'):
        name = self.name(kind)
        array = np.asarray(array)
        self.weights.append(numpy_helper.from_array(array.astype(np.float32 if array.dtype.kind == 'f' else
                                                                   np.int64), name))
        return name

    def node(self, op, inputs=None, **attrs):
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, list(inputs if inputs is not None else [self.last]), [out], **attrs))
        self.last = out
        return out

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

    def model(self, outputs=None):
        outputs, opset = outputs or [self.last], self.opset
        graph = helper.make_graph(
            self.nodes, 'test', [helper.make_tensor_value_info('data', TensorProto.FLOAT, [1, 3, None, None])],
            [helper.make_tensor_value_info(o, TensorProto.FLOAT, []) for o in outputs], self.weights)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', opset)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model


def onnxruntime_forward(model, x, outputs):
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=['CPUExecutionProvider'])
    return session.run(outputs, {'data': x})


def check(model, end, size=(23, 29), grad=True):
    """Forward against onnxruntime; the gradient of ½‖end‖² against float64 central differences."""
    x = RNG.rand(1, 3, *size).astype(np.float32) * 2 - 1
    net = Net(model)
    ours = net.forward(x, end)
    (theirs,) = onnxruntime_forward(model, x, [end])
    assert ours.shape == theirs.shape
    assert relative_error(ours, theirs) <= 1e-5, relative_error(ours, theirs)
    if grad:
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
}


@pytest.mark.parametrize('name', list(OPERATORS))
def test_operator_matches_onnxruntime(name):
    g = Graph()
    OPERATORS[name](g)
    end = g.last
    check(g.model(), end)


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
    code, _, err = run(capsys, 'dream', photo, f'--model={model}', f'--out={tmp_path / "x.png"}', '--quiet')
    assert_one_line_error(code, err, "unknown layer 'inception_4c/output'", '--model')


def test_an_unsupported_operator_is_one_line_naming_it_and_its_node(capsys, tmp_path, photo):
    g = Graph()
    g.conv(3, 8)
    ok = g.node('Relu')
    g.nodes.append(helper.make_node('Erf', [g.last], ['erf_out'], name='gelu/erf'))
    g.last = 'erf_out'
    model = tmp_path / 'gelu.onnx'
    onnx.save(g.model(), str(model))
    code, _, err = run(capsys, 'dream', photo, f'--model={model}', '--end=erf_out', f'--out={tmp_path / "x.jpg"}',
                       '--quiet')
    assert_one_line_error(code, err, "operator Erf (node 'gelu/erf') is not supported")
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


def test_pointwise_operators_run_in_a_padded_bucket_and_the_rest_at_the_exact_size(tmp_path):
    """Inside a bucket the true pixels get what the unpadded image gives (graph.evaluate's extent);
    operators whose result depends on the true size (reflect padding, reshapes) make the layer exact-size."""
    from classicdream.graph import bucketable
    model = tmp_path / 'res.onnx'
    end = _residual_model(model)
    net = Net(str(model))
    tensor = net.tensor(end)
    assert bucketable(net.nodes, tensor)
    x = RNG.rand(1, 3, 37, 45).astype(np.float32) * 2 - 1
    padded = np.zeros((1, 3, 48, 48), np.float32)
    padded[..., :37, :45] = x
    exact = np.asarray(evaluate(net.nodes, net.params, x, tensor))
    inside = np.asarray(evaluate(net.nodes, net.params, padded, tensor, extent=(37, 45)))
    h, w = exact.shape[2:]
    assert relative_error(inside[..., :h, :w], exact) <= 1e-6 and not inside[..., h:, :].any()
    for name in ('Pad reflect', 'Reshape', 'AveragePool, padding not counted'):
        g = Graph()
        OPERATORS[name](g)
        other = Net(g.model())
        assert not bucketable(other.nodes, other.tensor(g.last)), name
    g = Graph()
    OPERATORS['Pad constant'](g)
    other = Net(g.model())
    assert bucketable(other.nodes, other.tensor(g.last))
