"""The rest of ONNX's neural-network operators, beyond Caffe's (ops.py): normalisations, softmax,
reductions, matrix products, resizing: what torch.onnx, tf2onnx, paddle2onnx and the model zoo write for
ResNets, Inceptions, MobileNets, EfficientNets, ConvNeXts and their classifier heads.

Each is ``fn(node, *inputs)``; those of layout 'axes' also get the ``perm`` their input is held in and map
their axes through it (operators.py). Gradients are JAX's own.
"""
import jax
import jax.numpy as jnp
import numpy as np

from .ops import HIGHEST
from .operators import Laid, attr, attr_or_input, axis_of, is_static, register, same_size, xp


def _off_the_image(axes_of):
    """A border rule: pointwise inside a padded bucket where the operator's axes miss the image's two."""
    return lambda node, spatial: None if not set(axes_of(node)) & set(spatial) else 'exact'


def _unknown(node, size, axis):
    raise NotImplementedError


def _not_an_image(node, size, axis):
    """The static size rule of a fully connected layer: what it gives is no longer an image."""
    return None


# ---------------------------------------------------------------- normalisation

@register('BatchNormalization', layout='axes', border=None, spatial=same_size)
def _batch_norm(node, x, scale, bias, mean, var, perm=None):
    """Inference batch normalisation over the channel axis (ONNX's axis 1, wherever the layout holds it)."""
    ndim = np.ndim(x)
    channel = axis_of(1, perm, ndim) if ndim > 1 else 0
    shape = [1] * ndim
    shape[channel] = -1
    factor = (scale / xp(var).sqrt(var + attr(node, 'epsilon', 1e-5))).reshape(shape)
    return (x - mean.reshape(shape)) * factor + bias.reshape(shape)


@register('InstanceNormalization', layout='spatial', spatial=same_size)
def _instance_norm(node, x, scale, bias):
    mean = jnp.mean(x, axis=(1, 2), keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=(1, 2), keepdims=True)
    return (x - mean) / jnp.sqrt(var + attr(node, 'epsilon', 1e-5)) * scale + bias


def _normalized_axes(node, ndim=4):
    return range(attr(node, 'axis', -1) % ndim, ndim)


@register('LayerNormalization', border=_off_the_image(_normalized_axes), spatial=_unknown, outputs=3)
def _layer_norm(node, x, scale, bias=None):
    """Y, and the Mean and InvStdDev that ONNX lets a graph read too."""
    axes = tuple(_normalized_axes(node, np.ndim(x)))
    mean = jnp.mean(x, axis=axes, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=axes, keepdims=True)
    inverse = jax.lax.rsqrt(var + attr(node, 'epsilon', 1e-5))
    y = (x - mean) * inverse * scale
    return (y if bias is None else y + bias), mean, inverse


# ---------------------------------------------------------------- softmax and reductions

def _softmax_axis(node, ndim):
    return attr(node, 'axis', -1 if attr(node, 'opset', 13) >= 13 else 1) % ndim


def _softmax(fn):
    def op(node, x, perm=None):
        ndim = np.ndim(x)
        axis = _softmax_axis(node, ndim)
        if attr(node, 'opset', 13) >= 13 or axis == ndim - 1:
            return fn(x, axis=axis_of(axis, perm, ndim))
        if perm is not None:                          # before opset 13: over the flattened trailing axes
            x = jnp.transpose(x, np.argsort(perm))
        shape = np.shape(x)
        return Laid(fn(x.reshape(*shape[:axis], -1), axis=-1).reshape(shape))
    return op


SOFTMAX_BORDER = lambda node, spatial: None if _softmax_axis(node, 4) not in spatial and (  # noqa: E731
    attr(node, 'opset', 13) >= 13 or _softmax_axis(node, 4) == 3) else 'exact'
register('Softmax', layout='axes', border=SOFTMAX_BORDER, spatial=_unknown)(_softmax(jax.nn.softmax))
register('LogSoftmax', layout='axes', border=SOFTMAX_BORDER, spatial=_unknown)(_softmax(jax.nn.log_softmax))


def _reduce_axes(node, x, axes):
    """The axes a Reduce* node reduces: attribute (older opsets) or input; all of them where none are given,
    none where noop_with_empty_axes says so."""
    axes = attr_or_input(node, (x, axes), 1, 'axes')
    if axes is None or np.size(axes) == 0:
        return () if attr(node, 'noop_with_empty_axes', 0) else tuple(range(np.ndim(x)))
    return tuple(sorted(int(a) % np.ndim(x) for a in np.atleast_1d(axes)))


def _reduction(fn):
    def op(node, x, axes=None, perm=None):
        ndim = np.ndim(x)
        onnx_axes = _reduce_axes(node, x, axes)
        if not onnx_axes:
            return x
        m = xp(x)
        keep = bool(attr(node, 'keepdims', 1))
        y = fn(m, x, tuple(axis_of(a, perm, ndim) for a in onnx_axes), keep)
        if keep or perm is None:
            return y
        kept = [a for a in perm if a not in onnx_axes]            # the array's remaining axes, in ONNX numbering
        order = [sorted(kept).index(a) for a in kept]
        return Laid(y, None if order == sorted(order) else tuple(order))
    return op


def _lowest(x):
    """The maximum of no values: -inf (the lowest integer, False), as ONNX's empty reductions give."""
    kind = np.dtype(x.dtype)
    return False if kind == bool else -np.inf if kind.kind == 'f' else np.iinfo(kind).min


def _highest(x):
    kind = np.dtype(x.dtype)
    return True if kind == bool else np.inf if kind.kind == 'f' else np.iinfo(kind).max


REDUCTIONS = {
    'ReduceMean': lambda m, x, axes, keep: m.mean(x, axis=axes, keepdims=keep),
    'ReduceSum': lambda m, x, axes, keep: m.sum(x, axis=axes, keepdims=keep),
    'ReduceMax': lambda m, x, axes, keep: m.max(x, axis=axes, keepdims=keep, initial=_lowest(x)),
    'ReduceMin': lambda m, x, axes, keep: m.min(x, axis=axes, keepdims=keep, initial=_highest(x)),
    'ReduceProd': lambda m, x, axes, keep: m.prod(x, axis=axes, keepdims=keep),
    'ReduceL1': lambda m, x, axes, keep: m.sum(m.abs(x), axis=axes, keepdims=keep),
    'ReduceL2': lambda m, x, axes, keep: m.sqrt(m.sum(x * x, axis=axes, keepdims=keep)),
    'ReduceSumSquare': lambda m, x, axes, keep: m.sum(x * x, axis=axes, keepdims=keep),
    'ReduceLogSumExp': lambda m, x, axes, keep: (np.log(np.sum(np.exp(x), axis=axes, keepdims=keep)) if m is np
                                                 else jax.nn.logsumexp(x, axis=axes, keepdims=keep)),
}


def _reduce_border(node, spatial):
    axes = const_axes(node)
    return None if axes is not None and not set(axes) & set(spatial) and attr(node, 'keepdims', 1) else 'exact'


def const_axes(node):
    value = node.inputs[1] if len(node.inputs) > 1 else None
    axes = value.array if hasattr(value, 'array') else attr(node, 'axes')
    return None if axes is None else [int(a) % 4 for a in np.atleast_1d(axes)]


for _name, _fn in REDUCTIONS.items():
    register(_name, layout='axes', static=(1,), border=_reduce_border, spatial=_unknown)(_reduction(_fn))


def _arg(fn):
    def op(node, x, perm=None):
        ndim = np.ndim(x)
        axis = attr(node, 'axis', 0) % ndim
        at = axis_of(axis, perm, ndim)
        if attr(node, 'select_last_index', 0):
            y = (np.shape(x)[at] - 1) - fn(xp(x).flip(x, at), axis=at)
        else:
            y = fn(x, axis=at)
        y = xp(x).expand_dims(y, at) if attr(node, 'keepdims', 1) else y
        if attr(node, 'keepdims', 1) or perm is None:
            return Laid(y.astype(np.int64) if is_static(y) else y, perm)
        kept = [a for a in perm if a != axis]
        order = [sorted(kept).index(a) for a in kept]
        return Laid(y, None if order == sorted(order) else tuple(order))
    return op


register('ArgMax', layout='axes', spatial=_unknown)(_arg(lambda x, axis: xp(x).argmax(x, axis=axis)))
register('ArgMin', layout='axes', spatial=_unknown)(_arg(lambda x, axis: xp(x).argmin(x, axis=axis)))


# ---------------------------------------------------------------- matrix products

@register('Gemm', spatial=_not_an_image)
def _gemm(node, a, b, c=None):
    a = a.T if attr(node, 'transA', 0) else a
    b = b.T if attr(node, 'transB', 0) else b
    y = attr(node, 'alpha', 1.0) * jnp.dot(a, b, precision=HIGHEST)
    return y if c is None else y + attr(node, 'beta', 1.0) * c


@register('MatMul', border=lambda node, spatial: None if 3 not in spatial else 'exact', spatial=_unknown)
def _matmul(node, a, b):
    return xp(a, b).matmul(a, b) if xp(a, b) is np else jnp.matmul(a, b, precision=HIGHEST)


# ---------------------------------------------------------------- resizing

def _source_coordinates(mode, out, size, scale, roi=(0.0, 1.0)):
    """Where each output position samples the input along one axis (ONNX Resize's coordinate_transformation_mode)."""
    i = np.arange(out, dtype=np.float64)
    if mode == 'asymmetric':
        return i / scale
    if mode == 'align_corners':          # by the output's own length, as onnxruntime and PyTorch map it
        return i * (size - 1) / (out - 1) if out > 1 else np.zeros(out)
    if mode == 'pytorch_half_pixel':
        return (i + 0.5) / scale - 0.5 if out > 1 else np.zeros(out)
    if mode == 'tf_half_pixel_for_nn':
        return (i + 0.5) / scale
    if mode == 'half_pixel_symmetric':
        adjustment = out / (scale * size)
        centre = size / 2 * (1 - adjustment)
        return centre + (i + 0.5) / scale - 0.5
    if mode == 'tf_crop_and_resize':
        start, end = roi
        return (start * (size - 1) + i * (end - start) * (size - 1) / (out - 1) if out > 1
                else np.full(out, 0.5 * (start + end) * (size - 1)))
    return (i + 0.5) / scale - 0.5                                       # half_pixel, the default


def _nearest(node, coords):
    mode = attr(node, 'nearest_mode', 'round_prefer_floor')
    if mode == 'floor':
        return np.floor(coords)
    if mode == 'ceil':
        return np.ceil(coords)
    if mode == 'round_prefer_ceil':
        return np.floor(coords + 0.5)
    return np.ceil(coords - 0.5)                                         # round_prefer_floor


def _resize_axis(node, x, axis, out, scale, mode, roi):
    """x resampled along one array axis to `out` positions: a gather (nearest), or two and a blend (linear)."""
    size = x.shape[axis]
    coords = _source_coordinates(attr(node, 'coordinate_transformation_mode', 'half_pixel'), out, size, scale, roi)
    if mode == 'nearest':
        index = np.clip(_nearest(node, coords), 0, size - 1).astype(np.int32)
        return jnp.take(x, index, axis=axis)
    coords = np.clip(coords, 0, size - 1)
    low = np.floor(coords).astype(np.int32)
    high = np.minimum(low + 1, size - 1)
    shape = [1] * x.ndim
    shape[axis] = out
    weight = jnp.asarray((coords - low).reshape(shape), x.dtype)
    return jnp.take(x, low, axis=axis) * (1 - weight) + jnp.take(x, high, axis=axis) * weight


def _resize(node, x, roi=None, scales=None, sizes=None):
    """ONNX Resize (and Upsample) of an NCHW tensor's height and width, held NHWC: nearest or linear."""
    mode = attr(node, 'mode', 'nearest')
    if mode not in ('nearest', 'linear', 'bilinear'):
        raise ValueError(f'mode {mode!r} is not supported (nearest and linear are)')
    if attr(node, 'antialias', 0):
        raise ValueError('antialiased resizing is not supported')
    scales = attr_or_input(node, (x, roi, scales), 2, 'scales')
    sizes = attr_or_input(node, (x, roi, scales, sizes), 3, 'sizes')
    onnx_shape = (x.shape[0], x.shape[3], x.shape[1], x.shape[2])
    if sizes is not None and np.size(sizes):
        sizes = [int(s) for s in np.atleast_1d(sizes)]
        if attr(node, 'axes') is not None:
            full = list(onnx_shape)
            for a, s in zip(attr(node, 'axes'), sizes):
                full[a % 4] = s
            sizes = full
        policy = attr(node, 'keep_aspect_ratio_policy', 'stretch')
        scales = [s / n for s, n in zip(sizes, onnx_shape)]
        if policy != 'stretch':
            pick = min if policy == 'not_larger' else max
            common = pick(scales[2:])
            scales = [1.0, 1.0, common, common]
            sizes = [onnx_shape[0], onnx_shape[1]] + [int(round(n * common)) for n in onnx_shape[2:]]
    else:
        scales = [float(s) for s in np.atleast_1d(scales)]
        if attr(node, 'axes') is not None:
            full = [1.0] * 4
            for a, s in zip(attr(node, 'axes'), scales):
                full[a % 4] = s
            scales = full
        sizes = [int(np.floor(n * s)) for n, s in zip(onnx_shape, scales)]
    if sizes[:2] != list(onnx_shape[:2]):
        raise ValueError('resizing the batch or channel axes is not supported')
    roi = np.asarray(roi, np.float64).reshape(-1) if roi is not None and np.size(roi) == 8 else None
    for axis, onnx_axis in ((1, 2), (2, 3)):
        if sizes[onnx_axis] != x.shape[axis] or scales[onnx_axis] != 1:
            region = (roi[onnx_axis], roi[onnx_axis + 4]) if roi is not None else (0.0, 1.0)
            x = _resize_axis(node, x, axis, sizes[onnx_axis], scales[onnx_axis], 'nearest' if mode == 'nearest'
                             else 'linear', region)
    return x


def _resize_size(node, size, axis):
    value = node.inputs[2] if len(node.inputs) > 2 else None
    scales = value.array if hasattr(value, 'array') and np.size(value.array) else attr(node, 'scales')
    if scales is None or attr(node, 'axes') is not None:
        raise NotImplementedError
    return int(np.floor(size * float(np.atleast_1d(scales)[2 + axis])))


register('Resize', layout='spatial', static=(1, 2, 3), spatial=_resize_size)(_resize)


@register('Upsample', layout='spatial', static=(1,), spatial=_unknown)
def _upsample(node, x, scales=None):
    """Upsample (opsets 7-9): Resize with asymmetric coordinates; its scales an attribute, then an input."""
    scales = attr_or_input(node, (x, scales), 1, 'scales')
    mode = attr(node, 'mode', 'nearest')
    onnx_shape = (x.shape[0], x.shape[3], x.shape[1], x.shape[2])
    for axis, onnx_axis in ((1, 2), (2, 3)):
        out = int(np.floor(onnx_shape[onnx_axis] * scales[onnx_axis]))
        x = _resize_axis(_ASYMMETRIC, x, axis, out, scales[onnx_axis], 'nearest' if mode == 'nearest' else 'linear',
                         (0.0, 1.0))
    return x


class _Asymmetric:
    attrs = (('coordinate_transformation_mode', 'asymmetric'), ('nearest_mode', 'floor'))


_ASYMMETRIC = _Asymmetric()
