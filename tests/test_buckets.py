"""Size buckets: an image padded up to its bucket dreams exactly as the unpadded image, to the bit.

The independent reference is the unpadded evaluation itself (whose parity with Caffe test_parity and
test_dream prove), and scipy.ndimage.zoom for the device resampling.
"""
import jax
import numpy as np
import pytest
import scipy.ndimage as nd

import classicdream.dream as dream
from classicdream import deepdream, load_image, objective_guide, preprocess
from classicdream.graph import as_objective, backward, bucketable, evaluate, objective_L2
from classicdream.programs import bucket
from classicdream.resample import zoom
from conftest import relative_error


def padded(x, shape, junk=7.0):
    """(N, C, h, w) x in a larger (N, C, *shape) array whose padding holds junk, which must not matter."""
    out = np.full(x.shape[:2] + shape, junk, np.float32)
    out[..., :x.shape[2], :x.shape[3]] = x
    return out


@pytest.mark.parametrize('layer', ['conv1/7x7_s2', 'pool1/3x3_s2', 'inception_3b/5x5_reduce', 'inception_3b/output',
                                   'inception_4c/output', 'inception_5b/output'])
def test_padded_evaluation_is_the_unpadded_one(net, reference, layer):
    """Odd sizes (181x253 noise, Caffe's own fixture) put ceil-mode pooling windows across the border.

    The same arithmetic on the same values: bit for bit wherever XLA picks the same convolution kernel for
    both widths (every layer up to inception_4c here); on the smallest maps it may not, and then the
    kernels' summation order differs in the last bit."""
    x = reference('blobs_noise181x253')['data']
    end = net.tensor(layer)
    big = padded(x, (bucket(181) + 16, bucket(253) + 8))
    exact = jax.jit(lambda d: evaluate(net.nodes, net.params, d, end))(x)
    ours = jax.jit(lambda d, e: evaluate(net.nodes, net.params, d, end, e))(big, np.int32((181, 253)))
    h, w = exact.shape[2:]
    assert relative_error(np.asarray(ours)[..., :h, :w], exact) <= 1e-6
    if layer != 'inception_5b/output':
        np.testing.assert_array_equal(np.asarray(ours)[..., :h, :w], exact)
    assert not np.asarray(ours)[..., h:, :].any() and not np.asarray(ours)[..., :, w:].any()


@pytest.mark.parametrize('objective', ['L2', 'guide'])
def test_padded_gradient_is_the_unpadded_one_and_zero_in_the_padding(net, reference, shared, objective):
    x = reference('blobs_noise181x253')['data']
    end = net.tensor('inception_3b/output')
    obj = as_objective(objective_L2) if objective == 'L2' else \
        objective_guide(net, load_image(shared / 'images' / 'flowers.jpg'), 'inception_3b/output')
    grad = jax.jit(lambda d, o, e=None: backward(net.nodes, net.params, d, end, o, e))
    exact = grad(x, obj)
    ours = np.asarray(grad(padded(x, (200, 264)), obj, np.int32((181, 253))))
    np.testing.assert_array_equal(ours[..., :181, :253], exact)
    assert not ours[..., 181:, :].any() and not ours[..., :, 253:].any()


def test_bucketed_dream_is_the_exact_size_dream_bit_for_bit(net, shared, monkeypatch):
    """Roll, mean |g|, zooms and steps inside buckets change nothing: the same dream as exact-size programs."""
    img = load_image(shared / 'images' / 'flowers.jpg')[:227, :301]
    assert [bucket(s) for s in (227, 301)] != [227, 301]
    ours = deepdream(net, img, iter_n=2, octave_n=3, seed=3)
    monkeypatch.setattr(dream, 'bucket', lambda size: size)
    assert np.array_equal(ours, deepdream(net, img, iter_n=2, octave_n=3, seed=3))


def test_layers_past_the_convolutions_run_at_the_exact_size(net):
    """Average pooling divides by Caffe's clipped window and a classifier sees the whole map: not bucketable."""
    assert bucketable(net.nodes, net.tensor('inception_5b/output'), net.params)
    assert not bucketable(net.nodes, net.tensor('loss3/classifier'), net.params)


def test_nearby_sizes_share_the_skys_buckets():
    """The README's promise: a 1020x572 photo runs the programs compiled for the 1024x575 sky, whose
    own octaves fill them: every image of a bucket fits the bucket's octaves."""
    sky = dream.octave_buckets((575, 1024), 4, 1.4)
    assert dream.octave_buckets((572, 1020), 4, 1.4) == sky == [(576, 1024), (411, 731), (294, 522), (210, 373)]
    for h in range(545, 577):
        for w in (993, 1000, 1024):
            assert dream.octave_buckets((h, w), 4, 1.4) == sky
            assert all(s <= b for size, b in zip(dream.octave_sizes((h, w), 4, 1.4), sky) for s, b in zip(size, b))


def test_buckets_waste_at_most_a_sixteenth_per_axis():
    sizes = np.arange(1, 5000)
    buckets = np.array([bucket(s) for s in sizes])
    assert (buckets >= sizes).all() and (np.diff(buckets) >= 0).all()
    assert ((buckets - sizes) / sizes)[sizes >= 128].max() <= 1 / 16


@pytest.mark.parametrize('size, out', [((575, 1024), (411, 731)), ((411, 731), (575, 1024)), ((17, 9), (5, 13)),
                                       ((210, 373), (294, 522)), ((7, 1), (3, 1)), ((1, 5), (4, 2))])
def test_device_zoom_is_scipys_to_the_bit(size, out):
    """resample.zoom inside padded arrays against nd.zoom(order=1), the notebook's own call."""
    rng = np.random.default_rng(sum(size))
    x = np.float32(rng.normal(size=(3, *size)) * 60)
    expected = nd.zoom(x, (1, out[0] / size[0], out[1] / size[1]), order=1)
    assert expected.shape[1:] == out
    shape = (out[0] + 5, out[1] + 3)
    ours = np.asarray(zoom(padded(x[None], (size[0] + 4, size[1] + 6))[0], np.int32(size), np.int32(out), shape))
    np.testing.assert_array_equal(ours[:, :out[0], :out[1]], expected)
    assert not ours[:, out[0]:].any() and not ours[:, :, out[1]:].any()


def test_pre_and_deprocess_on_the_device_are_the_notebooks(shared):
    img = load_image(shared / 'images' / 'flowers.jpg')
    x = dream.preprocessed(dream.pad(img, (bucket(240), bucket(320))))
    np.testing.assert_array_equal(np.asarray(x)[:, :240, :320], np.asarray(preprocess(img)))
    np.testing.assert_allclose(np.asarray(dream.deprocessed(x))[:240, :320], img, atol=1e-4)
