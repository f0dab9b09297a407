"""Real architectures through the real exporters, with random (seeded) weights: the ONNX files users make.

Issue 24's test matrix. Each file is exported once and cached in a folder keyed by the exporter's versions,
``$CLASSICDREAM_EXPORTS/<tool>-<versions>/`` (default ``~/.cache/classicdream/exports``), written
atomically (into a temporary folder beside it, then ``os.replace``, the ``.onnx`` last) so that a run killed
midway never leaves a half file behind.

- torchvision's classifiers through torch.onnx: its TorchScript exporter (``dynamo=False``) and its dynamo
  exporter (``dynamo=True``, with onnxscript; its weights in an external ``.onnx.data`` file beside the
  ``.onnx``, as it writes them by default). Input (1, 3, 224, 224), fixed: no dynamic axes.
- Keras applications through tf2onnx (``tf2onnx.convert.from_keras``, opset 13): NHWC input (1, 224, 224, 3).
  TensorFlow is imported in a child process only (``python tests/exports.py keras NAME``), never beside JAX
  and torch in the test process.
- paddle.vision's MobileNetV3-small through paddle2onnx (``paddle.jit.save`` then ``paddle2onnx.export``), in
  a child process too; and a small MobileNetV3 in the older paddle2onnx 1.x form (Paddle 2 static-graph
  names), written here with onnx.helper (paddle_form_model's docstring).

``python tests/exports.py all`` exports everything and prints the time each took and its operator types.
"""
import hashlib
import inspect
import os
import shutil
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SIZE = 224

# torchvision builder → keyword arguments beyond weights=None. googlenet and inception_v3 build their
# auxiliary classifiers unless told not to (they only run in training mode anyway), and init_weights=True
# is what they default to without weights (said explicitly, which also silences their warning).
TORCHVISION = {
    'resnet50': {},
    'googlenet': dict(aux_logits=False, init_weights=True),
    'inception_v3': dict(aux_logits=False, init_weights=True),
    'vgg16_bn': {},
    'mobilenet_v3_large': {},
    'efficientnet_b0': {},
    'densenet121': {},
    'squeezenet1_1': {},
    'shufflenet_v2_x1_0': {},
    'regnet_y_400mf': {},
    'convnext_tiny': {},
}
KERAS = ('InceptionV3', 'MobileNetV2')
PADDLE = ('mobilenet_v3_small',)          # paddle.vision.models builders


# ---------------------------------------------------------------- the cache

def root():
    return Path(os.environ.get('CLASSICDREAM_EXPORTS') or Path.home() / '.cache' / 'classicdream' / 'exports')


def _atomic(final, write):
    """Call write(path) with a path in a new temporary folder beside `final`, then move what it wrote
    into place: the other files first (an external-data file), the .onnx itself last."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f'.{final.name}.', dir=final.parent))
    try:
        write(tmp / final.name)
        if not (tmp / final.name).exists():
            raise RuntimeError(f'the exporter wrote no {final.name}')
        for f in sorted(tmp.iterdir(), key=lambda f: f.name == final.name):
            os.replace(f, final.parent / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _cached(folder, name, write):
    path = root() / folder / f'{name}.onnx'
    if not path.exists():
        _atomic(path, write)
    return path


# ---------------------------------------------------------------- torchvision through torch.onnx

def import_torchvision():
    """torchvision from PyPI beside this machine's torch 2.13.0+cpu: its two modules that register
    operators against torch's C++ library fail against this build ('operator torchvision::nms does not
    exist'), and the classifiers need neither."""
    if 'torchvision' not in sys.modules:
        for name in ('torchvision._meta_registrations', 'torchvision._autograd_registrations'):
            sys.modules.setdefault(name, types.ModuleType(name))
    import torchvision
    return torchvision


def torch_folder(dynamo):
    import torch
    tv = import_torchvision()
    if dynamo:
        import onnxscript
        return f'torch.onnx.dynamo-{torch.__version__}-onnxscript-{onnxscript.__version__}-torchvision-{tv.__version__}'
    return f'torch.onnx-{torch.__version__}-torchvision-{tv.__version__}'


def torchvision_model(name):
    import torch
    tv = import_torchvision()
    torch.manual_seed(0)
    return getattr(tv.models, name)(weights=None, **TORCHVISION[name]).eval()


def torch_export(name, dynamo):
    """torchvision's `name` (random weights, seed 0) exported by torch.onnx: path of the cached .onnx."""
    def write(path):
        import torch
        model = torchvision_model(name)
        x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            if dynamo:
                torch.onnx.export(model, (x,), str(path), dynamo=True, external_data=True,
                                  input_names=['input'], output_names=['logits'])
            else:
                torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=['input'],
                                  output_names=['logits'])
    return _cached(torch_folder(dynamo), name, write)


# ---------------------------------------------------------------- Keras applications through tf2onnx

def keras_available():
    import importlib.util
    return all(importlib.util.find_spec(m) is not None for m in ('tensorflow', 'tf2onnx'))


def _keras_versions():
    """tensorflow's and tf2onnx's versions, read from their metadata (no import of TensorFlow here)."""
    from importlib.metadata import PackageNotFoundError, version
    tf = None
    for dist in ('tensorflow-cpu', 'tensorflow', 'tensorflow-intel'):
        try:
            tf = version(dist)
            break
        except PackageNotFoundError:
            pass
    return f'tf2onnx-{version("tf2onnx")}-tensorflow-{tf}-keras-{version("keras")}'


def _keras_write(name, path):
    """In a process of its own: Keras application `name`, random weights (seed 0), through tf2onnx."""
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    import keras
    import tensorflow as tf
    import tf2onnx
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, name)(weights=None, input_shape=(SIZE, SIZE, 3))
    spec = (tf.TensorSpec((1, SIZE, SIZE, 3), tf.float32, name='input_1'),)
    tf2onnx.convert.from_keras(model, input_signature=spec, opset=13, output_path=str(path))


def keras_export(name):
    def write(path):
        subprocess.run([sys.executable, __file__, '_keras', name, str(path)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=900)
    return _cached(_keras_versions(), name, write)


# ---------------------------------------------------------------- Paddle models through paddle2onnx

def paddle_available():
    import importlib.util
    return all(importlib.util.find_spec(m) is not None for m in ('paddle', 'paddle2onnx'))


def _paddle_write(name, path):
    """In a process of its own: paddle.vision's `name` (random weights, seed 0) saved for inference with
    paddle.jit.save, then paddle2onnx on the saved files, as its command line does."""
    import paddle
    import paddle2onnx
    paddle.seed(0)
    model = getattr(paddle.vision.models, name)(pretrained=False)
    model.eval()
    saved = Path(path).parent / 'inference'
    paddle.jit.save(model, str(saved), input_spec=[paddle.static.InputSpec([1, 3, SIZE, SIZE], 'float32', 'x')])
    program = next(p for p in (saved.with_suffix('.json'), saved.with_suffix('.pdmodel')) if p.exists())
    paddle2onnx.export(str(program), str(saved.with_suffix('.pdiparams')), str(path))
    for f in Path(path).parent.glob('inference.*'):
        f.unlink()


def paddle_export(name):
    from importlib.metadata import version

    def write(path):
        subprocess.run([sys.executable, __file__, '_paddle', name, str(path)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=900)
    return _cached(f'paddle2onnx-{version("paddle2onnx")}-paddlepaddle-{version("paddlepaddle")}', name, write)


# ---------------------------------------------------------------- a graph in paddle2onnx's form

def paddle_form_model():
    """A small MobileNetV3 (PaddleClas's layout) as paddle2onnx writes it, opset 14, random weights.

    paddle2onnx's own naming: input 'x' of shape (-1, 3, 224, 224); every tensor named after the Paddle
    variable it was (``conv2d_0.tmp_0``, ``batch_norm_0.tmp_2``, ``hardswish_0.tmp_0``,
    ``elementwise_add_0``...), weights ``conv2d_0.w_0`` and ``batch_norm_0.w_0/b_0/w_1/w_2``, node names
    ``p2o.Conv.0``, constants as Constant nodes ``p2o.helper.constant.N``. BatchNormalization stays a
    node, hard_swish is HardSwish (opset 14), the SE block's hardsigmoid is HardSigmoid(alpha 0.2, beta
    0.5) as PaddleClas calls it, adaptive_avg_pool2d(1) is GlobalAveragePool, flatten(start_axis=1) is
    Shape → Slice → Concat(-1) → Reshape (its flatten_contiguous_range mapper), and Linear is MatMul + Add.

    The older form, of Paddle 2.x static-graph programs (PaddleClas's published inference models) through
    paddle2onnx 1.x; paddle2onnx 2.x on Paddle 3's programs names tensors ``p2o.pd_op.conv2d.0.0`` and keeps
    weights as Constant nodes: that form is exported for real (paddle_export) where Paddle is installed.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.RandomState(0)
    nodes, inits, counts = [], [], {}

    def var(kind):
        counts[kind] = counts.get(kind, -1) + 1
        return f'{kind}_{counts[kind]}'

    def p2o(op, inputs, outputs, **attrs):
        counts['p2o.' + op] = counts.get('p2o.' + op, -1) + 1
        nodes.append(helper.make_node(op, inputs, outputs, name=f'p2o.{op}.{counts["p2o." + op]}', **attrs))
        return outputs[0]

    def constant(value):
        counts['const'] = counts.get('const', -1) + 1
        name = f'p2o.helper.constant.{counts["const"]}'
        nodes.append(helper.make_node('Constant', [], [name], name=name,
                                      value=numpy_helper.from_array(np.asarray(value))))
        return name

    def weight(name, array):
        inits.append(numpy_helper.from_array(np.asarray(array, np.float32), name))
        return name

    def conv(x, c_in, c_out, k, stride=1, groups=1, bias=False):
        v = var('conv2d')
        w = weight(f'{v}.w_0', rng.randn(c_out, c_in // groups, k, k) * np.sqrt(2 / (c_in // groups * k * k)))
        inputs = [x, w] + ([weight(f'{v}.b_0', rng.randn(c_out) * 0.1)] if bias else [])
        return p2o('Conv', inputs, [f'{v}.tmp_0' if not bias else f'{v}.tmp_1'], kernel_shape=[k, k],
                   strides=[stride, stride], pads=[(k - 1) // 2] * 4, group=groups, dilations=[1, 1])

    def bn(x, c):
        v = var('batch_norm')
        ws = [weight(f'{v}.w_0', 1 + 0.1 * rng.randn(c)), weight(f'{v}.b_0', 0.1 * rng.randn(c)),
              weight(f'{v}.w_1', 0.1 * rng.randn(c)), weight(f'{v}.w_2', 0.5 + rng.rand(c))]
        return p2o('BatchNormalization', [x, *ws], [f'{v}.tmp_2'], epsilon=1e-5, momentum=0.9)

    def act(x, kind):
        if kind is None:
            return x
        op = {'relu': 'Relu', 'hardswish': 'HardSwish'}[kind]
        return p2o(op, [x], [f'{var(kind)}.tmp_0'])

    def conv_bn(x, c_in, c_out, k, stride=1, groups=1, a=None):
        return act(bn(conv(x, c_in, c_out, k, stride, groups), c_out), a)

    def se(x, c):
        pooled = p2o('GlobalAveragePool', [x], [f'{var("pool2d")}.tmp_0'])
        h = p2o('Relu', [conv(pooled, c, c // 4, 1, bias=True)], [f'{var("relu")}.tmp_0'])
        gate = p2o('HardSigmoid', [conv(h, c // 4, c, 1, bias=True)], [f'{var("hardsigmoid")}.tmp_0'],
                   alpha=0.2, beta=0.5)
        return p2o('Mul', [x, gate], [var('elementwise_mul')])

    def block(x, c_in, c_mid, c_out, k, stride, use_se, a):
        h = conv_bn(x, c_in, c_mid, 1, a=a)
        h = conv_bn(h, c_mid, c_mid, k, stride, groups=c_mid, a=a)
        if use_se:
            h = se(h, c_mid)
        h = conv_bn(h, c_mid, c_out, 1)
        if stride == 1 and c_in == c_out:
            h = p2o('Add', [x, h], [var('elementwise_add')])
        return h

    x = conv_bn('x', 3, 16, 3, 2, a='hardswish')
    for args in ((16, 16, 16, 3, 1, False, 'relu'), (16, 64, 24, 3, 2, False, 'relu'),
                 (24, 72, 24, 3, 1, False, 'relu'), (24, 72, 40, 5, 2, True, 'relu'),
                 (40, 120, 40, 5, 1, True, 'relu'), (40, 240, 80, 3, 2, False, 'hardswish'),
                 (80, 200, 80, 3, 1, False, 'hardswish'), (80, 480, 112, 3, 1, True, 'hardswish'),
                 (112, 672, 160, 5, 2, True, 'hardswish')):
        x = block(x, *args)
    x = conv_bn(x, 160, 320, 1, a='hardswish')
    x = p2o('GlobalAveragePool', [x], [f'{var("pool2d")}.tmp_0'])
    x = act(conv(x, 320, 640, 1), 'hardswish')                       # last_conv: no BN, no bias
    shape = p2o('Shape', [x], [f'p2o.Shape.{counts.get("p2o.Shape", -1) + 1}'])
    first = p2o('Slice', [shape, constant(np.int64([0])), constant(np.int64([1])), constant(np.int64([0]))],
                ['p2o.Slice.0.out'])
    new_shape = p2o('Concat', [first, constant(np.int64([-1]))], ['p2o.Concat.0.out'], axis=0)
    x = p2o('Reshape', [x, new_shape], [f'{var("flatten")}.tmp_0'])
    v = var('linear')
    x = p2o('MatMul', [x, weight(f'{v}.w_0', rng.randn(640, 1000) * np.sqrt(1 / 640))], [f'{v}.tmp_0'])
    x = p2o('Add', [x, weight(f'{v}.b_0', rng.randn(1000) * 0.01)], [f'{v}.tmp_1'])
    x = p2o('Softmax', [x], [f'{var("softmax")}.tmp_0'], axis=-1)
    graph = helper.make_graph(
        nodes, 'Model from PaddlePaddle.',
        [helper.make_tensor_value_info('x', TensorProto.FLOAT, [-1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [-1, 1000])], inits)
    graph.input[0].type.tensor_type.shape.dim[0].dim_param = 'p2o.DynamicDimension.0'
    graph.output[0].type.tensor_type.shape.dim[0].dim_param = 'p2o.DynamicDimension.1'
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 14)], producer_name='PaddlePaddle')
    model.ir_version = 7
    onnx.checker.check_model(model)
    return model


def paddle_form():
    import onnx
    digest = hashlib.sha256(inspect.getsource(paddle_form_model).encode()).hexdigest()[:12]

    def write(path):
        onnx.save(paddle_form_model(), str(path))
    return _cached(f'paddle2onnx-form-{digest}', 'mobilenet_v3_small_paddle', write)


# ---------------------------------------------------------------- the matrix

def cases():
    """(id, exporter, name) of every export, in a stable order; Keras ones only where tf2onnx is installed."""
    out = [(f'{name}-torchscript', 'torchscript', name) for name in TORCHVISION]
    out += [(f'{name}-dynamo', 'dynamo', name) for name in TORCHVISION]
    out += [(f'{name}-tf2onnx', 'tf2onnx', name) for name in KERAS]
    out += [(f'{name}-paddle2onnx', 'paddle2onnx', name) for name in PADDLE]
    out += [('mobilenet_v3-paddle2onnx_form', 'paddle2onnx_form', 'mobilenet_v3')]
    return out


def export(exporter, name):
    if exporter in ('torchscript', 'dynamo'):
        return torch_export(name, exporter == 'dynamo')
    if exporter == 'tf2onnx':
        return keras_export(name)
    if exporter == 'paddle2onnx':
        return paddle_export(name)
    if exporter == 'paddle2onnx_form':
        return paddle_form()
    raise ValueError(exporter)


def op_types(model):
    """Every operator type in the model, its subgraphs' and its local functions' included."""
    def graph_ops(g):
        out = set()
        for n in g.node:
            out.add(n.op_type if n.domain in ('', 'ai.onnx') else f'{n.domain}:{n.op_type}')
            for a in n.attribute:
                for sub in ([a.g] if a.HasField('g') else []) + list(a.graphs):
                    out |= graph_ops(sub)
        return out
    ops = graph_ops(model.graph)
    for f in model.functions:
        ops |= graph_ops(f)
    return ops


# ---------------------------------------------------------------- README's export commands, run as written

# What a README shows users (it moves there; tests/test_exporters.py runs each block as written, offline:
# trained torchvision weights are read from $TORCH_HOME/hub/checkpoints, where torch.hub keeps them once
# downloaded, and the test puts a state dict there first).
def readme_blocks():
    """[(language, code)] of the fenced blocks of docs/models.md's export commands (between its
    `<!-- exports: begin ... -->` and `<!-- exports: end -->`)."""
    import re
    text = (HERE.parent / 'docs' / 'models.md').read_text()
    text = text[text.index('<!-- exports: begin'):text.index('<!-- exports: end -->')]
    return [(m.group(1), m.group(2)) for m in re.finditer(r'```(\w+)\n(.*?)```', text, re.S)]


# ---------------------------------------------------------------- as a script

def main(argv):
    if argv[:1] == ['_keras']:
        _keras_write(argv[1], argv[2])
        return
    if argv[:1] == ['_paddle']:
        _paddle_write(argv[1], argv[2])
        return
    if argv[:1] == ['all']:
        import onnx
        for case, exporter, name in cases():
            if (exporter == 'tf2onnx' and not keras_available()) or (exporter == 'paddle2onnx'
                                                                     and not paddle_available()):
                print(f'{case}: its exporter is not installed', flush=True)
                continue
            start = time.time()
            try:
                path = export(exporter, name)
            except Exception as e:                  # noqa: BLE001 -- report every case
                print(f'{case}: FAILED {type(e).__name__}: {" ".join(str(e).split())[:300]}', flush=True)
                continue
            took = time.time() - start
            model = onnx.load(str(path), load_external_data=False)
            extra = [f.name for f in path.parent.iterdir() if f.name.startswith(path.name + '.')
                     or f.name == path.stem + '.data']
            opset = [o.version for o in model.opset_import if o.domain in ('', 'ai.onnx')]
            print(f'{case}: {took:.1f} s, opset {opset}, {len(model.graph.node)} nodes, external {extra}, '
                  f'ops {sorted(op_types(model))}', flush=True)
        return
    raise SystemExit('usage: python tests/exports.py all')


if __name__ == '__main__':
    main(sys.argv[1:])
