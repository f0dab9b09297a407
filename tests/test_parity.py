"""The JAX net against real Caffe (shared/reference) and against onnxruntime on the same ONNX file."""
import re
import subprocess
import sys
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from caffe_pb import onnxruntime_session
from classicdream.graph import evaluate
from classicdream.models import build
from conftest import fixture_keys, relative_error

INPUTS = ('sky224', 'noise181x253', 'flowers224')
CASES = [(name, key) for name in INPUTS for key in fixture_keys(f'blobs_{name}') if key != 'data']


def last_layer_writing(net, blob):
    """The last layer that writes `blob`: after a full pass Caffe's blob holds its output (post in-place ReLU)."""
    return [layer for layer, _, b in net.layers if b == blob][-1]


@pytest.mark.parametrize('name,key', CASES, ids=[f'{n}-{k}' for n, k in CASES])
def test_matches_caffe(net, reference, name, key):
    ref = reference(f'blobs_{name}')
    data, caffe = ref['data'], ref[key]
    kind, _, blob = key.partition(':')
    if kind == 'blob':
        ours = net.forward(data, last_layer_writing(net, blob))
    elif kind == 'end':
        ours = net.forward(data, blob)
    else:
        ours = net.gradient(data, blob)
    # Gradients of natural images cross near-ties in max pooling and ReLU, where float noise picks
    # another winner than Caffe (reference README, fact 6); noise input has none of those.
    limit = 1e-2 if kind == 'grad' and name != 'noise181x253' else 1e-5
    assert ours.shape == caffe.shape
    assert relative_error(ours, caffe) <= limit


def test_end_at_convolution_is_pre_relu(net, reference):
    ref = reference('blobs_sky224')
    caffe_end = ref['end:inception_3b/5x5_reduce']
    ours_end = net.forward(ref['data'], 'inception_3b/5x5_reduce')
    assert (caffe_end < 0).any() and (ours_end < 0).any()
    assert ref['blob:conv1/7x7_s2'].min() >= 0 and (ref['end:conv1/7x7_s2'] < 0).any()
    assert net.forward(ref['data'], last_layer_writing(net, 'conv1/7x7_s2')).min() >= 0
    assert (net.forward(ref['data'], 'conv1/7x7_s2') < 0).any()


# ---------------------------------------------------------------- against onnxruntime

ORT_LAYERS = ('conv1/7x7_s2', 'pool1/norm1', 'inception_3b/output', 'inception_4c/output',
              'inception_5b/output', 'prob')


@pytest.fixture(scope='module')
def ort_224(net):
    """onnxruntime on the same .onnx file, with the tensors of ORT_LAYERS as outputs."""
    session = onnxruntime_session(build(), [net.tensor(layer) for layer in ORT_LAYERS])
    return lambda data: dict(zip(ORT_LAYERS, session.run(None, {'data': data})))


@pytest.mark.parametrize('layer', ORT_LAYERS)
def test_matches_onnxruntime(net, reference, ort_224, layer):
    data = reference('blobs_sky224')['data']
    theirs = ort_224(data)[layer]
    ours = net.forward(data, layer)
    assert ours.shape == theirs.shape
    assert relative_error(ours, theirs) <= 1e-5


def test_matches_onnxruntime_at_odd_size(net, reference):
    data = reference('blobs_noise181x253')['data']
    theirs, = onnxruntime_session(build(), ['inception_4c/output']).run(None, {'data': data})
    ours = net.forward(data, 'inception_4c/output')
    assert ours.shape == theirs.shape == (1, 512, 11, 15)
    assert relative_error(ours, theirs) <= 1e-5


def test_flowers_top1_is_986(net, reference, ort_224):
    ref = reference('blobs_flowers224')
    assert ref['blob:prob'].argmax() == 986
    assert net.forward(ref['data'], 'prob').argmax() == 986
    assert ort_224(ref['data'])['prob'].argmax() == 986


# ---------------------------------------------------------------- sizes and names

_ORT_RUN = '''
import sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from caffe_pb import onnxruntime_session
model, tensor, h, w = sys.argv[2:]
out, = onnxruntime_session(model, [tensor]).run(None, {'data': np.zeros((1, 3, int(h), int(w)), np.float32)})
sys.exit(0 if out.size else 3)
'''


def ort_accepts(tensor, h, w):
    """Whether onnxruntime computes a non-empty `tensor` for an HxW input (in a child process: too small
    an input makes onnxruntime fail, or crash with SIGFPE)."""
    args = [sys.executable, '-c', _ORT_RUN, str(Path(__file__).parent), str(build()), tensor, str(h), str(w)]
    return subprocess.run(args, capture_output=True).returncode == 0


def jax_accepts(net, tensor, h, w):
    """Whether the JAX graph, without Net's size check, gives a non-empty `tensor` for an HxW input."""
    try:
        shape = jax.eval_shape(partial(evaluate, net.nodes, end=tensor), net.params,
                               jax.ShapeDtypeStruct((1, 3, h, w), jnp.float32)).shape
    except ValueError:            # the InnerProduct meets an empty input (operators.Unsupported, one line)
        return False
    return 0 not in shape


@pytest.mark.parametrize('end', ['inception_4c/output', 'prob'])
def test_min_size_is_the_smallest_accepted_input(net, end):
    mh, mw = net.min_size(end)
    tensor = net.tensor(end)
    for accepts in (partial(ort_accepts, tensor), partial(jax_accepts, net, tensor)):
        assert accepts(mh, mw)
        assert not accepts(mh - 1, mw)
        assert not accepts(mh, mw - 1)


def test_too_small_input_names_the_minimum(net):
    mh, mw = net.min_size('inception_4c/output')
    with pytest.raises(ValueError, match=f'at least {mw}x{mh}'):
        net.forward(np.zeros((1, 3, 8, 8), np.float32), 'inception_4c/output')


def test_unknown_layer_suggests_close_names(net):
    with pytest.raises(ValueError, match="unknown layer 'inception_4c/ouput'.*inception_4c/output"):
        net.forward(np.zeros((1, 3, 224, 224), np.float32), 'inception_4c/ouput')


def test_blobs_in_deploy_order(net, shared):
    tops = re.findall(r'^\s*top:\s*"([^"]+)"', (shared / 'models' / 'deploy.prototxt').read_text(), re.M)
    assert net.blobs[0] == 'data'
    assert 'inception_4c/output' in net.blobs
    assert len(set(net.blobs)) == len(net.blobs)
    assert net.blobs == list(dict.fromkeys(tops))
