"""bvlc_googlenet's operators with Caffe's semantics, and the gradients XLA runs fast, for graph.py.

Activations are NHWC with HWIO kernels inside: the form XLA:CPU hands to its convolution library (YNNPACK in
jaxlib 0.10) even inside a loop, where it does not rewrite other layouts into it. Each operator takes an ONNX
node (for its attributes) and its input arrays. Sizes follow Caffe: ceil-rounded pooling, LRN's alpha/n,
max-pool gradients to the first maximum of each window. All arithmetic is float32 with Precision.HIGHEST:
TF32 on a GPU would break parity with Caffe.
"""
import hashlib
from dataclasses import dataclass
from functools import partial, reduce

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .operators import attr, register, same_size

HIGHEST = lax.Precision.HIGHEST


@dataclass(frozen=True)
class Node:
    op: str
    inputs: tuple         # tensor names; a Const for a value known while tracing; None for an absent input
    outputs: tuple        # tensor names (a str is taken as the one output)
    attrs: tuple          # sorted (name, value) pairs, hashable so a Node can key a jit cache
    name: str = ''

    def __post_init__(self):
        if isinstance(self.outputs, str):
            object.__setattr__(self, 'outputs', (self.outputs,))

    @property
    def output(self):
        return self.outputs[0]

    def __str__(self):
        return f'{self.op} node {self.name or self.output!r}'


class Const:
    """A value known while tracing (a shape, axes, a small number), held in a node's inputs: hashed and
    printed by its contents, so programs that bake it in are keyed by it."""
    __slots__ = ('array', '_key', '_hash')

    def __init__(self, array):
        self.array = np.asarray(array)
        self.array.setflags(write=False)
        digest = hashlib.sha256(self.array.tobytes()).hexdigest()[:16]
        self._key = (str(self.array.dtype), self.array.shape, digest)
        self._hash = hash(self._key)

    def __hash__(self):
        return self._hash

    def __eq__(self, other):
        return isinstance(other, Const) and self._key == other._key

    def __repr__(self):
        return f'Const({self._key[0]}{list(self._key[1])} {self._key[2]})'


NHWC = ('NHWC', 'HWIO', 'NHWC')


def to_nhwc(x):
    return jnp.transpose(x, (0, 2, 3, 1)) if x.ndim == 4 else x


def to_nchw(x):
    return jnp.transpose(x, (0, 3, 1, 2)) if x.ndim == 4 else x


def pooled_size(size, kernel, stride, pad, ceil_mode, pad_high=None):
    """Caffe's pooled size (and ONNX's, PyTorch's): ceil-rounded, less a last window that would start in
    the padding or beyond the input (Caffe checks that only where it pads: without padding a kernel at
    least as large as its stride, as in every Caffe net, never starts one there); `pad_high` where the
    padding is not the same on both sides.

    Plain arithmetic, so `size` may be a traced integer (a true extent inside a padded bucket)."""
    pad_high = pad if pad_high is None else pad_high
    if not ceil_mode:
        return (size + pad + pad_high - kernel) // stride + 1
    out = -(-(size + pad + pad_high - kernel) // stride) + 1
    return out - ((out - 1) * stride >= size + pad)


def _pool_geometry(size, kernel, stride, pad, pad_high, ceil_mode):
    """The pooled size and the high-side padding that reduce_window needs for it."""
    out = pooled_size(size, kernel, stride, pad, ceil_mode, pad_high)
    return out, max((out - 1) * stride + kernel - size - pad, 0)


def explicit_pads(node, sizes):
    """A convolution's or pooling's (top, left, bottom, right) padding for spatial `sizes`, with ONNX's
    auto_pad resolved: SAME_UPPER / SAME_LOWER pad to ceil(size / stride) outputs (the odd pixel after /
    before), VALID not at all."""
    mode = attr(node, 'auto_pad', 'NOTSET')
    if mode in ('NOTSET', ''):
        return tuple(attr(node, 'pads', (0, 0, 0, 0)))
    if mode == 'VALID':
        return (0, 0, 0, 0)
    low, high = [], []
    for size, k, s, d in zip(sizes, attr(node, 'kernel_shape'), attr(node, 'strides', (1, 1)),
                             attr(node, 'dilations', (1, 1))):
        total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small = total // 2
        low.append(small if mode == 'SAME_UPPER' else total - small)
        high.append(total - low[-1])
    return (*low, *high)


def _window(node, x):
    """A pooling node's kernel, strides, (low, high) padding of H and W, and the output size."""
    (kh, kw), (sh, sw) = attr(node, 'kernel_shape'), attr(node, 'strides', (1, 1))
    if any(d != 1 for d in attr(node, 'dilations', (1, 1))):
        raise ValueError('dilated pooling is not supported')
    pt, pl, pb, pr = explicit_pads(node, x.shape[1:3])
    ceil_mode = attr(node, 'ceil_mode', 0)
    (oh, hi_h), (ow, hi_w) = (_pool_geometry(x.shape[1], kh, sh, pt, pb, ceil_mode),
                              _pool_geometry(x.shape[2], kw, sw, pl, pr, ceil_mode))
    return (kh, kw), (sh, sw), ((pt, hi_h), (pl, hi_w)), (oh, ow), (pb, pr)


def _pool(x, init, op, kernel, strides, padding, out):
    y = lax.reduce_window(x, init, op, (1, *kernel, 1), (1, *strides, 1), ((0, 0), *padding, (0, 0)))
    return y[:, :out[0], :out[1]]


def _caffe_avg_divisor(size, out, kernel, stride, pad, pad_high):
    """Caffe's AVE divisor along one axis: the window clipped to the padded input, padding counted."""
    start = np.arange(out) * stride - pad
    return np.minimum(start + kernel, size + pad_high) - start


def _max_pool(node, x):
    return max_pool_nhwc(x, *_window(node, x)[:4])


@partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def max_pool_nhwc(x, kernel, strides, padding, out):
    """Caffe's MAX pooling: -inf padding, so a window's maximum is over its part inside the input."""
    return _pool(x, -jnp.inf, lax.max, kernel, strides, padding, out)


def _max_pool_fwd(x, kernel, strides, padding, out):
    """The pooled values and, for the gradient, each window's first maximum (row-major offset index):
    one pass over the input's kernel offsets gives both, and an int8 index is all the backward keeps."""
    padded = jnp.pad(x, ((0, 0), *padding, (0, 0)), constant_values=-jnp.inf)
    span = [(o - 1) * s + 1 for o, s in zip(out, strides)]       # extent of one offset's strided slice
    offsets = [(i, j) for i in range(kernel[0]) for j in range(kernel[1])]
    at = [lax.slice(padded, (0, i, j, 0), (x.shape[0], i + span[0], j + span[1], x.shape[3]), (1, *strides, 1))
          for i, j in offsets]
    y = reduce(jnp.maximum, at)
    index = jnp.int8 if len(offsets) < 128 else jnp.int32
    first = jnp.full(y.shape, len(offsets), index)
    for k in reversed(range(len(offsets))):
        first = jnp.where(at[k] == y, index(k), first)
    return y, (first, x.shape)


def _max_pool_bwd(kernel, strides, padding, out, residuals, g):
    """Each window's gradient goes to its first maximum in row-major order, Caffe's tie rule.

    A gather (windows_to_input) rather than JAX's select-and-scatter, which XLA:CPU runs as an indexed
    scatter, or a padded scatter per kernel offset, which writes one input-sized array per offset.
    """
    first, shape = residuals
    return (windows_to_input(kernel, strides, padding, out, shape[1:3],
                             lambda i, j, back: jnp.where(back(first, -1) == i * kernel[1] + j, back(g), 0.0)),)


def windows_to_input(kernel, strides, padding, out, size, term, axis=-3):
    """What windows send back to the input positions they cover, summed there: a gather in one pass.

    Position t = s·m + r (stride s, phase r) of the padded input lies at offset a = s·d + r of window
    m - d, for each d that keeps a inside the kernel. `term(i, j, back)` is what the windows send from
    offset (i, j), built from window-resolution arrays read through `back(array, fill)`, which lines
    window m - d up with phase position m. Each phase is a sum of a few shifted window-sized arrays, and
    the phases interleave by a reshape, so XLA fuses it into one loop over the input; the result is cut
    to the unpadded input of spatial `size`. The arrays' spatial axes are `axis` (counted from the end)
    and the one after it.
    """
    (s0, s1), (k0, k1) = strides, kernel
    padded = [low + n + high for n, (low, high) in zip(size, padding)]
    reach = [-(-k // s) - 1 for k, s in zip(kernel, strides)]          # windows back to look
    phases = [-(-n // s) for n, s in zip(padded, strides)]               # a phase's length

    def shifted(d, e):
        def back(a, fill=0.0, spatial=axis):    # a[m - d, n - e] at [m, n]; one pad for every (d, e)
            at = a.ndim + spatial
            grow = [(0, 0)] * a.ndim
            grow[at:at + 2] = [(r, p - o) for r, p, o in zip(reach, phases, out)]
            a = jnp.pad(a, grow, constant_values=fill)
            a = lax.slice_in_dim(a, reach[0] - d, reach[0] - d + phases[0], axis=at)
            return lax.slice_in_dim(a, reach[1] - e, reach[1] - e + phases[1], axis=at + 1)
        return back

    def phase(r, q):                    # input positions (s0·m + r, s1·n + q)
        return sum(term(s0 * d + r, s1 * e + q, shifted(d, e))
                   for d in range(reach[0] + 1) if s0 * d + r < k0
                   for e in range(reach[1] + 1) if s1 * e + q < k1)
    rows = [[phase(r, q) for q in range(s1)] for r in range(s0)]
    at = rows[0][0].ndim + axis
    x = jnp.stack([jnp.stack(row, at + 2) for row in rows], at + 1)     # [..., m, r, n, q, ...]
    x = x.reshape(*x.shape[:at], phases[0] * s0, phases[1] * s1, *x.shape[at + 4:])
    (top, _), (left, _) = padding
    x = lax.slice_in_dim(x, top, top + size[0], axis=at)
    return lax.slice_in_dim(x, left, left + size[1], axis=at + 1)


max_pool_nhwc.defvjp(_max_pool_fwd, _max_pool_bwd)


def _average_pool(node, x):
    """Caffe's average (count_include_pad=1, as convert.py writes it), or ONNX's default, which divides
    by the pixels of the input that each window covers."""
    kernel, strides, padding, (oh, ow), (pb, pr) = _window(node, x)
    total = _pool(x, 0.0, lax.add, kernel, strides, padding, (oh, ow))
    (kh, kw), (sh, sw), ((pt, _), (pl, _)) = kernel, strides, padding
    if attr(node, 'count_include_pad', 0):
        div = np.outer(_caffe_avg_divisor(x.shape[1], oh, kh, sh, pt, pb),
                       _caffe_avg_divisor(x.shape[2], ow, kw, sw, pl, pr))
    else:
        div = _pool(np.ones((1, *x.shape[1:3], 1), np.float32), 0.0, lax.add, kernel, strides, padding,
                    (oh, ow))[0, :, :, 0]
    return total / jnp.asarray(div[:, :, None], jnp.float32)


def _geometry(node, sizes=(1, 1)):
    pt, pl, pb, pr = explicit_pads(node, sizes)
    return tuple(attr(node, 'strides', (1, 1))), ((pt, pb), (pl, pr)), tuple(attr(node, 'dilations', (1, 1)))


def is_matrix_product(node, w):
    """Whether a Conv node with kernel `w` is a matrix product over channels (1x1, unstrided, unpadded)."""
    return (w.shape[2:] == (1, 1) and _geometry(node) == ((1, 1), ((0, 0), (0, 0)), (1, 1))
            and attr(node, 'group', 1) == 1)


def channel_products(x, weights, biases):
    """1x1 convolutions of the NHWC `x`, one per (O, I, 1, 1) kernel of `weights` (biases: arrays or None).

    A matrix product over channels, with the weights as ONNX holds them (O, I): neither it nor its gradient
    copies them into another layout at every step, as a 1x1 convolution would. Several kernels over one
    input (an inception module's 1x1 and reduce branches) are one product: the input is read once, and
    the gradient that reaches it is one product, not a sum of several."""
    w = jnp.concatenate([k[:, :, 0, 0] for k in weights])
    y = lax.dot_general(x, w, (((3,), (1,)), ((), ())), precision=HIGHEST)
    if any(b is not None for b in biases):
        y = y + jnp.concatenate([jnp.zeros(k.shape[0], y.dtype) if b is None else b for k, b in zip(weights, biases)])
    return jnp.split(y, np.cumsum([k.shape[0] for k in weights[:-1]]), axis=3)


def _conv(node, x, w, b=None):
    if is_matrix_product(node, w):
        return channel_products(x, [w], [b])[0]
    geometry, group = _geometry(node, x.shape[1:3]), attr(node, 'group', 1)
    w = jnp.transpose(w, (2, 3, 1, 0))                                   # ONNX's OIHW → HWIO
    # grouped: JAX's own gradient, which XLA:CPU runs slowly inside a loop
    y = conv_nhwc(x, w, *geometry) if group == 1 else _lax_conv(x, w, *geometry, group)
    return y if b is None else y + b


def _lax_conv(x, w, strides, padding, dilation, group=1):
    return lax.conv_general_dilated(x, w, strides, padding, rhs_dilation=dilation, dimension_numbers=NHWC,
                                    feature_group_count=group, precision=HIGHEST)


@partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv_nhwc(x, w, strides, padding, dilation):
    """An ungrouped NHWC/HWIO convolution whose input gradient is one in the same form.

    JAX's own gradient is a convolution with swapped kernel dimensions, which XLA:CPU runs ~30x slower
    inside a loop; written as the usual transposed convolution (flipped kernel, in and out swapped,
    stride as input dilation) it takes the fast kernel too.
    """
    return _lax_conv(x, w, strides, padding, dilation)


def _conv_nhwc_fwd(x, w, strides, padding, dilation):
    return conv_nhwc(x, w, strides, padding, dilation), (x, w)


def _conv_nhwc_bwd(strides, padding, dilation, residuals, g):
    x, w = residuals
    if strides != (1, 1) and dilation == (1, 1) and all(k >= s for k, s in zip(w.shape[:2], strides)):
        # (a kernel smaller than its stride, a ResNet's 1x1 projection, leaves input positions it never reads)
        return _strided_input_gradient(x.shape, w, strides, padding, g), _weight_gradient(x, w, strides, padding, g)
    pads = [_input_gradient_padding(x.shape[1 + a], w.shape[a], strides[a], dilation[a], padding[a][0],
                                    g.shape[1 + a]) for a in (0, 1)]
    flipped = jnp.swapaxes(lax.rev(w, (0, 1)), 2, 3)
    dx = lax.conv_general_dilated(g, flipped, (1, 1), pads, lhs_dilation=strides, rhs_dilation=dilation,
                                  dimension_numbers=NHWC, precision=HIGHEST)
    return dx, _weight_gradient(x, w, strides, padding, g, dilation)


def _weight_gradient(x, w, strides, padding, g, dilation=(1, 1)):
    """JAX's own; the dream never asks for it, so XLA drops it."""
    return jax.vjp(lambda w: _lax_conv(x, w, strides, padding, dilation), w)[1](g)[0]


def _strided_input_gradient(shape, w, strides, padding, g):
    """A strided convolution's input gradient as a matrix product and a gather (col2im).

    The transposed convolution would spend most of its multiplies on the zeros between the stride's
    positions, and XLA:CPU's fast kernels do not take input dilation (conv1's took 44 ms of a 575x1024
    step this way). Each output position's gradient times the kernel is what it sends back to its
    receptive field; windows_to_input sums that onto the input.
    """
    kh, kw, c, k = w.shape
    cols = lax.dot_general(g, w.reshape(kh * kw * c, k), (((3,), (1,)), ((), ())), precision=HIGHEST)
    cols = cols.reshape(*g.shape[:3], kh, kw, c)
    # gathered into channel planes: few channels (conv1's 3) make a poor innermost axis for XLA's loops
    dx = windows_to_input((kh, kw), strides, padding, g.shape[1:3], shape[1:3], axis=-2,
                          term=lambda i, j, back: jnp.moveaxis(back(cols, spatial=-5)[..., i, j, :], -1, 0))
    return jnp.transpose(dx, (1, 2, 3, 0))


def _input_gradient_padding(size, kernel, stride, dilation, pad_before, out):
    """Padding of the stride-dilated output gradient so that the flipped kernel maps it back onto the input."""
    reach = dilation * (kernel - 1)
    before = reach - pad_before
    return before, size + reach - (out - 1) * stride - 1 - before


conv_nhwc.defvjp(_conv_nhwc_fwd, _conv_nhwc_bwd)


def _lrn(node, x):
    return lrn_nhwc(x, attr(node, 'size'), attr(node, 'alpha', 1e-4), attr(node, 'beta', 0.75), attr(node, 'bias', 1.0))


def _channel_window_sum(x, n, mirrored=False):
    """Σ over the n channels around each one: (n-1)//2 below and n//2 above, or the mirror image."""
    below, above = (n - 1) // 2, n // 2
    return lax.reduce_window(x, 0.0, lax.add, (1, 1, 1, n), (1, 1, 1, 1),
                             ((0, 0), (0, 0), (0, 0), (above, below) if mirrored else (below, above)))


def _lrn_scale(x, n, alpha, k):
    return k + alpha / n * _channel_window_sum(x * x, n)


def _inverse_power(scale, beta):
    """scale^-β; bvlc_googlenet's β = 3/4 as r·√r with r = 1/√scale, no exp or log."""
    if beta == 0.75:
        r = lax.rsqrt(scale)
        return r * jnp.sqrt(r)
    return scale ** -beta


@partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def lrn_nhwc(x, n, alpha, beta, k):
    """Across-channel LRN: x / (k + α/n · Σ x²)^β over n channels centred on each (Caffe's and ONNX's α/n)."""
    return x * _inverse_power(_lrn_scale(x, n, alpha, k), beta)


def _lrn_fwd(x, n, alpha, beta, k):
    scale = _lrn_scale(x, n, alpha, k)
    return x * _inverse_power(scale, beta), (x, scale)


def _lrn_bwd(n, alpha, beta, k, residuals, g):
    """Caffe's own backward (lrn_layer.cpp, CrossChannelBackward): g·s^-β - 2αβ/n · x · Σ g·y/s over the
    windows holding each channel. Two passes over the activations where autodiff's chain makes six."""
    x, scale = residuals
    power = _inverse_power(scale, beta)
    windows = _channel_window_sum(g * x * power / scale, n, mirrored=True)
    return (g * power - (2 * alpha * beta / n) * x * windows,)


lrn_nhwc.defvjp(_lrn_fwd, _lrn_bwd)


def conv_size(node, size, axis):
    """A convolution's output extent along one spatial axis (0 = height, 1 = width); `size` may be traced."""
    k, s, d = (attr(node, a, (1, 1))[axis] for a in ('kernel_shape', 'strides', 'dilations'))
    if attr(node, 'auto_pad', 'NOTSET') in ('SAME_UPPER', 'SAME_LOWER'):
        return -(-size // s)
    pads = explicit_pads(node, (1, 1))
    return (size + pads[axis] + pads[axis + 2] - d * (k - 1) - 1) // s + 1


def pool_size(node, size, axis):
    if attr(node, 'auto_pad', 'NOTSET') in ('SAME_UPPER', 'SAME_LOWER'):
        return -(-size // attr(node, 'strides', (1, 1))[axis])
    pads = explicit_pads(node, (1, 1))
    return pooled_size(size, attr(node, 'kernel_shape')[axis], attr(node, 'strides', (1, 1))[axis],
                       pads[axis], attr(node, 'ceil_mode', 0), pads[axis + 2])


# ---------------------------------------------------------------- evaluating inside a padded bucket
#
# An image padded up to a bucket size gives, at its true positions, what the unpadded image gives, if every
# operator that reads neighbouring positions sees there what Caffe's own borders hold. These say what that is.

def _sized_by_the_image(node):
    """auto_pad SAME with a stride pads by an amount that depends on the size: the true one, not the bucket's."""
    return (attr(node, 'auto_pad', 'NOTSET') in ('SAME_UPPER', 'SAME_LOWER')
            and any(s > 1 for s in attr(node, 'strides', (1, 1))))


def conv_border(node, spatial=None):
    """A convolution reads zeros beyond the image (none at all for a 1x1 kernel without padding)."""
    if _sized_by_the_image(node):
        return 'exact'
    pointwise = all(k == 1 for k in attr(node, 'kernel_shape')) and not any(explicit_pads(node, (1, 1)))
    return None if pointwise else 0.0


def max_pool_border(node, spatial=None):
    """Caffe clips max pooling's windows to the input: -inf beyond it."""
    return 'exact' if _sized_by_the_image(node) else -jnp.inf


def _global_average(node, x, extent=None):
    if extent is None:
        return jnp.mean(x, axis=(1, 2), keepdims=True)
    return jnp.sum(x, axis=(1, 2), keepdims=True) / (extent[0] * extent[1]).astype(x.dtype)


def _global_max(node, x, extent=None):
    return jnp.max(x, axis=(1, 2), keepdims=True)


register('Conv', layout='spatial', border=conv_border, spatial=conv_size)(_conv)
register('MaxPool', layout='spatial', border=max_pool_border, spatial=pool_size)(_max_pool)
register('AveragePool', layout='spatial', spatial=pool_size)(_average_pool)   # its divisor: the true size
register('LRN', layout='spatial', border=None, spatial=same_size)(_lrn)       # across channels
# The global poolings read the true extent alone (the padding is zero, or -inf, for them), and what they
# give is no longer an image.
register('GlobalAveragePool', layout='spatial', border=0.0, extent=True, spatial=lambda node, size, axis: None)(_global_average)
register('GlobalMaxPool', layout='spatial', border=-jnp.inf, spatial=lambda node, size, axis: None)(_global_max)
