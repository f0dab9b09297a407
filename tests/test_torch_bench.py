"""`make bench`'s PyTorch anchor (bench/torch_dream.py) computes the notebook's dream, not something faster.

Its layers against real Caffe's blobs (ceil-rounded pooling, LRN's alpha/n), its inception_4c/output and the
objective's gradient against Caffe's, a seeded one-step dream against Caffe's on the full sky, and one step
against classicdream's own. Then its rows in the benchmark are the same computation as the others'.
"""
import importlib.util
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from classicdream import deepdream, load_image
from classicdream.models import build
from classicdream.ops import pooled_size
from conftest import ROOT, relative_error

INPUTS = ('noise181x253', 'sky224', 'flowers224')


def _load_torch_dream():
    spec = importlib.util.spec_from_file_location('torch_dream', ROOT / 'bench' / 'torch_dream.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


td = _load_torch_dream()


@pytest.fixture(scope='module')
def torch_net():
    return td.GoogLeNet(td.load_weights(build(log=lambda *a: None)))


@pytest.fixture(scope='module')
def sky(shared):
    return load_image(shared / 'images' / 'sky1024px.jpg')


def psnr(ours, ref):
    mse = np.mean((np.float64(ours) - ref) ** 2)
    return 10 * np.log10(255.0 ** 2 / mse)


def as_torch(a):
    return torch.from_numpy(np.ascontiguousarray(a)).contiguous(memory_format=torch.channels_last)


def test_pooling_rounds_up_as_caffe():
    """torch's ceil_mode drops a last window starting in the padding whatever the pad, Caffe only when
    padded: for the net's windows (k >= s) the two rules give the same sizes."""
    for kernel, stride, pad in ((3, 2, 0), (3, 1, 1)):
        for size in range(3, 80):
            out = F.max_pool2d(torch.zeros(1, 1, size, size), kernel, stride, pad, ceil_mode=True)
            assert out.shape[-1] == pooled_size(size, kernel, stride, pad, True), (kernel, stride, pad, size)


def test_pooling_gradient_goes_to_the_first_maximum():
    """Caffe sends a tied window's gradient to its first maximum in row-major order (reference README, fact 4);
    torch does too, in the net's channels_last layout."""
    x = torch.ones(1, 8, 5, 5).contiguous(memory_format=torch.channels_last).requires_grad_()
    F.max_pool2d(x, 3, 2, ceil_mode=True).sum().backward()
    first = torch.zeros(5, 5)
    first[0:3:2, 0:3:2] = 1                      # the top-left corners of the 2 x 2 windows
    assert torch.equal(x.grad[0, 0], first)


@pytest.mark.parametrize('name', ('noise181x253', 'sky224'))
def test_pooling_and_lrn_are_caffes(reference, name):
    """Each pooling and LRN layer of the stem, fed Caffe's own input blob, gives Caffe's output blob.
    pool3 of 181x253 noise is a ceil-rounded size (22 -> 11), which floor rounding would make 10."""
    ref = reference(f'blobs_{name}')
    blob = lambda b: as_torch(ref[f'blob:{b}'])
    pool = lambda x: F.max_pool2d(x, 3, 2, ceil_mode=True)
    layers = {'pool1/3x3_s2': pool(blob('conv1/7x7_s2')), 'pool1/norm1': td.lrn(blob('pool1/3x3_s2')),
              'conv2/norm2': td.lrn(blob('conv2/3x3')), 'pool2/3x3_s2': pool(blob('conv2/norm2')),
              'pool3/3x3_s2': pool(blob('inception_3b/output'))}
    for layer, ours in layers.items():
        caffe = ref[f'blob:{layer}']
        assert ours.shape == caffe.shape, layer
        assert relative_error(ours.numpy(), caffe) <= 1e-6, layer


@pytest.mark.parametrize('name', INPUTS)
def test_objective_and_gradient_are_caffes(torch_net, reference, name):
    ref = reference(f'blobs_{name}')
    with torch.no_grad():
        end = torch_net(as_torch(ref['data'])).numpy()
    grad = td.gradient(torch_net, torch.from_numpy(ref['data'][0])).numpy()
    assert end.shape == ref['end:inception_4c/output'].shape
    assert relative_error(end, ref['end:inception_4c/output']) <= 1e-5
    # near-ties in a natural image's max pooling flip under float noise (as in test_parity)
    assert relative_error(grad, ref['grad:inception_4c/output'][0]) <= (1e-2 if name == 'sky224' else 1e-5)


def test_seeded_step_is_caffes(torch_net, sky, reference):
    """deepdream(net, img, iter_n=1, octave_n=1) after np.random.seed(0), on the full sky: Caffe's image."""
    np.random.seed(0)
    ours = td.deepdream(torch_net, sky, iter_n=1, octave_n=1)
    caffe = reference('steps_sky')['sky_4c_s0_i1_o1']
    assert ours.shape == caffe.shape and ours.dtype == np.float32
    assert psnr(ours, caffe) >= 80
    assert np.abs(ours - caffe).max() <= 2.0


def test_two_octave_steps_are_classicdreams(net, torch_net, sky):
    """Two octaves of two steps on a 224x224 crop, seed 0: the jitter stream, the octave zoom, the detail
    carried up, the roll, step and clip are classicdream's. The same maths agrees to about 70 dB here (float
    rounding, grown by four steps: classicdream's LRN gradient is Caffe's formula, torch's is autodiff's
    chain; they agreed to 124 dB when both were autodiff's); another seed, zoom order 0 or step_size 1.4
    gives 34-38 dB."""
    crop = sky[175:399, 400:624]
    np.random.seed(0)
    ours = td.deepdream(torch_net, crop, iter_n=2, octave_n=2)
    theirs = deepdream(net, crop, iter_n=2, octave_n=2, seed=0)
    print(f'torch vs classicdream, 2 octaves x 2 steps: PSNR {psnr(ours, theirs):.1f} dB')
    assert psnr(ours, theirs) >= 60


def _load_bench():
    spec = importlib.util.spec_from_file_location('bench_main', ROOT / 'bench' / 'bench.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


AVX512 = {'sse3', 'avx', 'avx2', 'fma', 'avx512f', 'avx512cd', 'avx512bw', 'avx512dq', 'avx512vl'}


@pytest.mark.parametrize('environment, picked, flags, setting, core', [
    (None, 'Prescott', AVX512, 'SkylakeX', 'SkylakeX'),              # an AVX-512 CPU OpenBLAS 0.3.21 does not know
    (None, 'Prescott', {'sse3', 'avx', 'avx2', 'fma'}, 'Haswell', 'Haswell'),
    (None, 'Prescott', {'sse3', 'avx'}, None, 'Prescott'),           # nothing better to give it
    (None, 'Cooperlake', AVX512, None, 'Cooperlake'),                # its own pick is a real one: kept
    (None, 'Zen', AVX512, None, 'Zen'),
    ('Prescott', 'Prescott', AVX512, None, 'Prescott'),              # the environment's, never overridden
])
def test_caffe_gets_the_blas_kernels_its_cpu_supports(monkeypatch, environment, picked, flags, setting, core):
    """make bench runs Caffe on the OpenBLAS core its CPU supports where OpenBLAS fell back to generic
    kernels, keeps a core the environment sets, and says which (the caffe_openblas_core= line)."""
    bench = _load_bench()
    monkeypatch.delenv('OPENBLAS_CORETYPE', raising=False)
    if environment:
        monkeypatch.setenv('OPENBLAS_CORETYPE', environment)
    probes = []

    def probe(env):
        probes.append(env.get('OPENBLAS_CORETYPE'))
        return env.get('OPENBLAS_CORETYPE') or os.environ.get('OPENBLAS_CORETYPE') or picked
    monkeypatch.setattr(bench, 'openblas_core', probe)
    monkeypatch.setattr(bench, 'cpu_flags', lambda: flags)
    env, blas = bench.caffe_blas({})
    assert env == ({'OPENBLAS_CORETYPE': setting} if setting else {})
    assert blas['core'] == core
    assert ('set by the environment' in blas['how']) == bool(environment)
    if setting:
        assert probes == [None, setting] and f'picked {picked}' in blas['how']


def test_a_core_openblas_refuses_is_not_claimed(monkeypatch):
    bench = _load_bench()
    monkeypatch.delenv('OPENBLAS_CORETYPE', raising=False)
    monkeypatch.setattr(bench, 'openblas_core', lambda env: 'Prescott')
    monkeypatch.setattr(bench, 'cpu_flags', lambda: AVX512)
    env, blas = bench.caffe_blas({})
    assert env == {} and blas['core'] == 'Prescott' and 'gave Prescott' in blas['how']
