"""The convolution the graph evaluates with: NHWC/HWIO and a hand-written input gradient (ops.conv_nhwc),
checked against JAX's own NCHW convolution and its automatic gradient over the geometries ONNX allows."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from classicdream import ops, programs
from classicdream.operators import REGISTRY
from classicdream.ops import HIGHEST, Node

OPS = {name: op.fn for name, op in REGISTRY.items()}
from conftest import relative_error

GEOMETRIES = [  # (kernel, strides, pads (top, left, bottom, right), dilations, group)
    ((7, 7), (2, 2), (3, 3, 3, 3), (1, 1), 1),      # bvlc_googlenet's conv1
    ((3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    ((1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),
    ((5, 3), (3, 2), (2, 0, 1, 1), (1, 1), 1),      # strides that skip input, asymmetric padding
    ((3, 3), (1, 2), (2, 1, 0, 2), (2, 3), 1),      # dilated
    ((3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 2),      # grouped: JAX's own gradient
]


def reference_conv(x, w, b, strides, pads, dilations, group):
    pt, pl, pb, pr = pads
    y = lax.conv_general_dilated(x, w, strides, ((pt, pb), (pl, pr)), rhs_dilation=dilations,
                                 dimension_numbers=('NCHW', 'OIHW', 'NCHW'), feature_group_count=group,
                                 precision=HIGHEST)
    return y + b[None, :, None, None]


def graph_conv(x, w, b, strides, pads, dilations, group):
    """One ONNX Conv node as evaluate runs it: NCHW in and out, NHWC between."""
    node = Node('Conv', ('x', 'w', 'b'), 'y', (('dilations', dilations), ('group', group), ('kernel_shape', w.shape[2:]),
                                              ('pads', pads), ('strides', strides)))
    y = OPS['Conv'](node, jnp.transpose(x, (0, 2, 3, 1)), w, b)
    return jnp.transpose(y, (0, 3, 1, 2))


@pytest.mark.parametrize('geometry', GEOMETRIES, ids=lambda g: f'k{g[0]}s{g[1]}p{g[2]}d{g[3]}g{g[4]}')
def test_conv_value_and_gradients_are_jax_own(geometry):
    kernel, strides, pads, dilations, group = geometry
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 4, 17, 14)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(6, 4 // group) + kernel), jnp.float32)
    b = jnp.asarray(rng.normal(size=6), jnp.float32)
    ours, ours_pullback = jax.vjp(lambda *a: graph_conv(*a, strides, pads, dilations, group), x, w, b)
    theirs, theirs_pullback = jax.vjp(lambda *a: reference_conv(*a, strides, pads, dilations, group), x, w, b)
    assert ours.shape == theirs.shape
    assert relative_error(ours, theirs) <= 1e-6
    cotangent = jnp.asarray(rng.normal(size=ours.shape), jnp.float32)
    for name, a, b in zip('xwb', ours_pullback(cotangent), theirs_pullback(cotangent)):
        assert a.shape == b.shape, name
        assert relative_error(a, b) <= 1e-6, name


def test_an_xla_option_this_jaxlib_lacks_leaves_xla_defaults(monkeypatch):
    """XLA refuses unknown options at compile time; a jaxlib without ours must still compile the net."""
    monkeypatch.setattr(programs, 'XLA_OPTIONS', {'xla_cpu_no_such_option': False})
    programs.xla_options.cache_clear()
    try:
        assert programs.xla_options() == {}
        assert float(programs.program()(lambda x: x + 1)(np.float32(1))) == 2
    finally:
        programs.xla_options.cache_clear()


def caffe_max_pool_backward(x, top_diff_of, kernel, stride, pad):
    """Caffe's PoolingLayer MAX, literally: the window clipped to the input, the first strictly greater
    value kept (row-major), and the top diff added to that one bottom element."""
    _, _, h, w = x.shape

    def pooled(size):
        n = -(-(size + 2 * pad - kernel) // stride) + 1
        return n - 1 if pad and (n - 1) * stride >= size + pad else n
    top = np.full(x.shape[:2] + (pooled(h), pooled(w)), -np.inf, np.float32)
    mask = np.zeros(top.shape + (2,), int)
    for ph in range(top.shape[2]):
        for pw in range(top.shape[3]):
            h0, w0 = ph * stride - pad, pw * stride - pad
            for i in range(max(h0, 0), min(h0 + kernel, h)):
                for j in range(max(w0, 0), min(w0 + kernel, w)):
                    greater = x[:, :, i, j] > top[:, :, ph, pw]
                    top[:, :, ph, pw] = np.where(greater, x[:, :, i, j], top[:, :, ph, pw])
                    mask[:, :, ph, pw] = np.where(greater[..., None], (i, j), mask[:, :, ph, pw])
    diff = top_diff_of(top.shape)
    bottom = np.zeros_like(x)
    for n, c, ph, pw in np.ndindex(top.shape):
        bottom[(n, c, *mask[n, c, ph, pw])] += diff[n, c, ph, pw]
    return top, diff, bottom


@pytest.mark.parametrize('kernel, stride, pad', [(3, 2, 0), (3, 1, 1), (3, 3, 2), (2, 2, 0), (3, 2, 1)])
def test_max_pool_gradient_goes_to_the_first_maximum_like_caffe(kernel, stride, pad):
    """Small integers make ties everywhere (as ReLU's zeros do in the net); overlapping windows add up."""
    rng = np.random.default_rng(2)
    x = rng.integers(0, 3, (2, 3, 11, 9)).astype(np.float32)
    top, diff, bottom = caffe_max_pool_backward(x, lambda shape: rng.normal(size=shape).astype(np.float32),
                                                kernel, stride, pad)
    node = Node('MaxPool', ('x',), 'y', (('ceil_mode', 1), ('kernel_shape', (kernel, kernel)),
                                         ('pads', (pad,) * 4), ('strides', (stride, stride))))
    nhwc = lambda a: jnp.transpose(a, (0, 2, 3, 1))
    ours, pullback = jax.vjp(lambda a: OPS['MaxPool'](node, nhwc(a)), jnp.asarray(x))
    np.testing.assert_array_equal(ours, nhwc(top))
    np.testing.assert_allclose(pullback(nhwc(diff))[0], bottom, rtol=1e-6, atol=1e-6)


def test_sibling_channel_products_are_each_convolution():
    """1x1 kernels over one input run as one product (graph.channel_product_groups): each output is the
    convolution it stands for, a kernel without a bias among them too."""
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.normal(size=(1, 6, 7, 16)), jnp.float32)
    weights = [jnp.asarray(rng.normal(size=(o, 16, 1, 1)), jnp.float32) for o in (8, 3, 5)]
    biases = [jnp.asarray(rng.normal(size=8), jnp.float32), None, jnp.asarray(rng.normal(size=5), jnp.float32)]
    outputs = ops.channel_products(x, weights, biases)
    for w, b, y in zip(weights, biases, outputs):
        conv = lax.conv_general_dilated(x, jnp.transpose(w, (2, 3, 1, 0)), (1, 1), 'VALID',
                                        dimension_numbers=ops.NHWC, precision=HIGHEST)
        assert relative_error(y, conv if b is None else conv + b) <= 1e-6


def caffe_lrn(x, size, alpha, beta, k):
    """Caffe's across-channel LRN on NCHW, in float64: x / (k + α/n · Σ x² over n channels)^β."""
    sq = jnp.pad(x * x, ((0, 0), ((size - 1) // 2, size // 2), (0, 0), (0, 0)))
    return x * (k + alpha / size * sum(sq[:, i:i + x.shape[1]] for i in range(size))) ** -beta


@pytest.mark.parametrize('beta, size', [(0.75, 5), (0.5, 5), (0.75, 4)])
def test_lrn_value_and_gradient_are_caffes_formula(beta, size):
    """β = 0.75 (bvlc_googlenet's) is computed with square roots, any other β with a power; the gradient is
    Caffe's own formula (ops._lrn_bwd), checked here against float64 autodiff, an even window's too."""
    rng = np.random.default_rng(3)
    x = rng.normal(scale=20, size=(1, 7, 5, 6))          # large enough that the scale matters
    node = Node('LRN', ('x',), 'y', (('alpha', 1e-2), ('beta', beta), ('bias', 2.0), ('size', size)))
    ours, pullback = jax.vjp(lambda a: OPS['LRN'](node, jnp.transpose(a, (0, 2, 3, 1))),
                             jnp.asarray(x, jnp.float32))
    with jax.enable_x64(True):
        theirs, theirs_pullback = jax.vjp(lambda a: caffe_lrn(a, size, 1e-2, beta, 2.0), jnp.asarray(x))
        cotangent = rng.normal(size=theirs.shape)
        theirs_grad = np.asarray(theirs_pullback(jnp.asarray(cotangent))[0])
        theirs = np.asarray(theirs)
    assert relative_error(jnp.transpose(ours, (0, 3, 1, 2)), theirs) <= 1e-6
    ours_grad = pullback(jnp.asarray(np.transpose(cotangent, (0, 2, 3, 1)), jnp.float32))[0]
    assert relative_error(ours_grad, theirs_grad) <= 1e-6
