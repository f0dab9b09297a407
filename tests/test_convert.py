"""Caffe → ONNX conversion: the real net (deterministic, recorded hash, Caffe names) and a tiny net written
here, checked against an independent numpy implementation of Caffe's layers."""
import hashlib
import math
import re
import subprocess
import sys

import numpy as np
import onnx
import pytest

import caffe_pb
from classicdream.caffe import CaffeFormatError
from classicdream.cli import main
from classicdream.convert import convert
from classicdream.graph import Net
from conftest import ROOT, relative_error


def recorded_sha256():
    line, = [l for l in (ROOT / 'models' / 'SHA256SUMS').read_text().splitlines() if 'bvlc_googlenet.onnx' in l]
    return line.split()[0]


# ---------------------------------------------------------------- the real net

def test_conversion_is_deterministic_and_recorded(tmp_path, shared):
    mirror = shared / 'models'
    digests = [convert(mirror / 'deploy.prototxt', mirror / 'bvlc_googlenet_caffe_layout.npz', tmp_path / name)
               for name in ('a.onnx', 'b.onnx')]
    data = (tmp_path / 'a.onnx').read_bytes()
    assert data == (tmp_path / 'b.onnx').read_bytes()
    assert digests == [hashlib.sha256(data).hexdigest()] * 2 == [recorded_sha256()] * 2


def test_caffemodel_converts_like_the_mirror(tmp_path, shared):
    """bvlc_googlenet written as a LayerParameter .caffemodel (real protobuf) converts to the same bytes."""
    mirror = shared / 'models'
    deploy = mirror / 'deploy.prototxt'
    weights = np.load(mirror / 'bvlc_googlenet_caffe_layout.npz')
    layers = re.findall(r'layer\s*\{\s*name:\s*"([^"]+)"\s*type:\s*"([^"]+)"', deploy.read_text())
    layers = [(name, t, [weights[f'{name}.weight'], weights[f'{name}.bias']] if f'{name}.weight' in weights.files
               else []) for name, t in layers]
    assert sum(1 for *_, blobs in layers if blobs) == 58
    caffe_pb.write_caffemodel(tmp_path / 'bvlc_googlenet.caffemodel', layers, 'GoogleNet')
    assert convert(deploy, tmp_path / 'bvlc_googlenet.caffemodel', tmp_path / 'g.onnx') == recorded_sha256()


def test_onnx_model_is_valid_with_caffe_names_and_dynamic_size():
    model = onnx.load(str(ROOT / 'models' / 'bvlc_googlenet.onnx'))
    onnx.checker.check_model(model, full_check=True)
    tensors = {o for n in model.graph.node for o in n.output}
    assert {'conv1/7x7_s2', 'pool1/norm1', 'inception_4c/output', 'prob'} <= tensors
    data, = model.graph.input
    assert data.name == 'data'
    dims = data.type.tensor_type.shape.dim
    assert dims[1].dim_value == 3
    assert all(d.dim_param and not d.dim_value for d in (dims[2], dims[3]))


# ---------------------------------------------------------------- a tiny net, checked against numpy

def caffe_conv(x, w, b, stride=1, pad=0):
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    _, _, kh, kw = w.shape
    oh, ow = (x.shape[2] - kh) // stride + 1, (x.shape[3] - kw) // stride + 1
    y = sum(np.einsum('nchw,oc->nohw', x[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride], w[:, :, i, j])
            for i in range(kh) for j in range(kw))
    return y + b[None, :, None, None]


def caffe_pool(x, method, kernel, stride, pad=0):
    """Caffe's PoolingLayer, literally: ceil-rounded output, minus a last window starting in the padding;
    MAX over the window clipped to the input; AVE divides by the window clipped to the padded input."""
    h, w = x.shape[2:]

    def pooled(size):
        n = int(math.ceil((size + 2 * pad - kernel) / stride)) + 1
        return n - 1 if pad and (n - 1) * stride >= size + pad else n
    y = np.zeros(x.shape[:2] + (pooled(h), pooled(w)))
    for i in range(y.shape[2]):
        for j in range(y.shape[3]):
            h0, w0 = i * stride - pad, j * stride - pad
            h1, w1 = min(h0 + kernel, h + pad), min(w0 + kernel, w + pad)
            window = x[:, :, max(h0, 0):min(h1, h), max(w0, 0):min(w1, w)]
            y[:, :, i, j] = window.max((2, 3)) if method == 'MAX' else window.sum((2, 3)) / ((h1 - h0) * (w1 - w0))
    return y


def caffe_lrn(x, size, alpha, beta, k=1.0):
    sq = np.pad(x * x, ((0, 0), ((size - 1) // 2, size // 2), (0, 0), (0, 0)))
    return x * (k + alpha / size * sum(sq[:, i:i + x.shape[1]] for i in range(size))) ** -beta


def tiny_reference(data, params):
    """What pycaffe's forward(end=LAYER) leaves in LAYER's top blob, for every layer of caffe_pb.TINY."""
    p = {k: [v.astype(np.float64) for v in vs] for k, vs in params.items()}
    out = {'conv1': caffe_conv(data.astype(np.float64), *p['conv1'], stride=2, pad=1)}
    out['relu1'] = np.maximum(out['conv1'], 0)
    out['pool1'] = caffe_pool(out['relu1'], 'MAX', 3, 2)
    out['norm1'] = caffe_lrn(out['pool1'], 5, 0.5, 0.75)
    out['a'] = caffe_conv(out['norm1'], *p['a'])
    out['relu_a'] = np.maximum(out['a'], 0)
    out['b'] = caffe_conv(out['norm1'], *p['b'], pad=1)
    out['cat'] = np.concatenate([out['relu_a'], out['b']], axis=1)
    out['pool2'] = caffe_pool(out['cat'], 'AVE', 3, 2, pad=1)
    out['pool3'] = caffe_pool(out['pool2'], 'MAX', 3, 3, pad=2)
    out['fc'] = out['pool3'].reshape(1, -1) @ p['fc'][0].T + p['fc'][1]
    e = np.exp(out['fc'] - out['fc'].max())
    out['prob'] = e / e.sum()
    return out


@pytest.fixture(params=[False, True], ids=['layer', 'V1-layers'])
def tiny_onnx(request, tmp_path, capsys):
    """The tiny net written as prototxt + .caffemodel (current or V1 format), converted by the CLI."""
    deploy, caffemodel, params = caffe_pb.write_tiny_net(tmp_path, v1=request.param)
    main(['convert', str(deploy), str(caffemodel), str(tmp_path / 'tiny.onnx')])
    digest = hashlib.sha256((tmp_path / 'tiny.onnx').read_bytes()).hexdigest()
    assert capsys.readouterr().out.strip() == f'{tmp_path / "tiny.onnx"} (sha256 {digest})'
    return tmp_path / 'tiny.onnx', params


def test_tiny_net_matches_numpy(tiny_onnx):
    path, params = tiny_onnx
    data = np.random.default_rng(1).normal(0, 1, caffe_pb.TINY_INPUT).astype(np.float32)
    want = tiny_reference(data, params)
    net = Net(str(path))
    assert [layer for layer, _, _ in net.layers] == ['data'] + [layer[0] for layer in caffe_pb.TINY]
    ort = caffe_pb.onnxruntime_session(path, [net.tensor(layer) for layer in want])
    theirs = dict(zip(want, ort.run(None, {'data': data})))
    for layer, ref in want.items():
        ours = net.forward(data, layer)
        assert ours.shape == theirs[layer].shape == ref.shape, layer
        assert relative_error(ours, ref) <= 1e-5, layer
        assert relative_error(theirs[layer], ref) <= 1e-5, layer
    # the geometry that distinguishes Caffe's pooling, and pre-ReLU values at an in-place ReLU's conv
    assert want['pool1'].shape[2:] == (5, 6) and want['pool3'].shape[2:] == (2, 2)
    assert (want['conv1'] < 0).any() and (want['a'] < 0).any()


def test_v1_and_current_formats_convert_identically(tmp_path):
    digests = []
    for v1 in (False, True):
        (tmp_path / str(v1)).mkdir()
        deploy, caffemodel, _ = caffe_pb.write_tiny_net(tmp_path / str(v1), v1=v1)
        digests.append(convert(deploy, caffemodel, tmp_path / f'{v1}.onnx'))
    assert digests[0] == digests[1]


# ---------------------------------------------------------------- malformed inputs

def truncated_caffemodel(tmp_path):
    deploy, caffemodel, _ = caffe_pb.write_tiny_net(tmp_path)
    data = caffemodel.read_bytes()
    caffemodel.write_bytes(data[:len(data) // 2])
    return deploy, caffemodel


def garbage_prototxt(tmp_path):
    deploy, caffemodel, _ = caffe_pb.write_tiny_net(tmp_path)
    deploy.write_text('layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" \n')
    return deploy, caffemodel


def swapped_arguments(tmp_path):
    deploy, caffemodel, _ = caffe_pb.write_tiny_net(tmp_path)
    return caffemodel, deploy


@pytest.mark.parametrize('make', [truncated_caffemodel, garbage_prototxt, swapped_arguments])
def test_malformed_input_is_refused(tmp_path, make):
    deploy, caffemodel = make(tmp_path)
    out = tmp_path / 'out.onnx'
    with pytest.raises(CaffeFormatError):
        convert(deploy, caffemodel, out)
    cli = subprocess.run([sys.executable, '-m', 'classicdream', 'convert', str(deploy), str(caffemodel), str(out)],
                         capture_output=True, text=True, cwd=ROOT)
    assert cli.returncode != 0
    assert len(cli.stderr.splitlines()) == 1 and cli.stderr.startswith('classicdream: error: ')
    assert 'Traceback' not in cli.stderr + cli.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({deploy.name, caffemodel.name})
