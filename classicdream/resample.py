"""scipy.ndimage.zoom(order=1) on the device, for images padded up to a bucket.

The notebook builds its octave pyramid and carries the detail between octaves with ``nd.zoom(x, f,
order=1)``. Run on the device, the dream needs no host round trip between octaves. This is the same
map: output pixel o of an axis samples input coordinate o·(n_in − 1)/(n_out − 1) (scipy's default
``grid_mode=False``), linearly between the two nearest pixels, in float64 as scipy computes it, so the
float32 result is scipy's to the bit: a dream's trajectory is chaotic, and an ulp here becomes levels
after a few octaves.
"""
import jax
import jax.numpy as jnp


def zoom(x, extent, out_extent, shape):
    """x (C, H, W), whose true image is its top-left `extent` (h, w), resampled to `out_extent` (h', w')
    inside an array of spatial `shape`; zero beyond `out_extent`. Extents may be traced."""
    with jax.enable_x64(True):
        y = x.astype(jnp.float64)
        for axis in (0, 1):
            y = _zoom_axis(y, 1 + axis, extent[axis], out_extent[axis], shape[axis])
        return y.astype(jnp.float32)


def _zoom_axis(x, axis, n_in, n_out, size):
    o = jnp.arange(size)
    ratio = (n_in - 1).astype(jnp.float64) / jnp.maximum(n_out - 1, 1)   # scipy: one output pixel samples 0
    coordinate = o * ratio
    low = jnp.minimum(jnp.floor(coordinate).astype(jnp.int32), n_in - 1)
    high = jnp.minimum(low + 1, n_in - 1)
    shape = [1] * x.ndim
    shape[axis] = size
    t = (coordinate - low).reshape(shape)
    y = jnp.take(x, low, axis=axis) * (1 - t) + jnp.take(x, high, axis=axis) * t
    return jnp.where((o < n_out).reshape(shape), y, 0.0)
