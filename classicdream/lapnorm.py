"""The Laplacian-pyramid gradient normalisation of TensorFlow's deepdream tutorial (``render_lapnorm``).

The raw gradient is dominated by its finest scales. Split into frequency bands (a Laplacian pyramid of
a 5x5 binomial kernel, each band half the size of the one above), each band scaled to unit RMS and the
bands merged back, every scale moves the image alike: smoother, larger patterns. ``make_step`` applies
it to the gradient before its own mean-|g| normalisation, so the notebook's step is otherwise unchanged.

One difference from the tutorial's ``SAME`` convolutions: every band is centred on its first pixel
(2 pixels of zero padding each side), so the split does not depend on whether a size is odd or even.
"""
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .ops import HIGHEST

_BINOMIAL = np.float32([1, 4, 6, 4, 1])
KERNEL = np.outer(_BINOMIAL, _BINOMIAL)[None, None] / np.float32(256)       # (1, 1, 5, 5), sums to 1


def _down(x):
    """Blurred and halved: (C, H, W) -> (C, ceil(H/2), ceil(W/2)), each channel alone."""
    return lax.conv_general_dilated(x[:, None], KERNEL, (2, 2), ((2, 2), (2, 2)), precision=HIGHEST)[:, 0]


def _up(x, shape):
    """The transpose of _down (times 4, so a constant stays constant) onto spatial `shape`."""
    extra = [size - (2 * n - 1) for size, n in zip(shape, x.shape[1:])]
    return lax.conv_general_dilated(x[:, None], KERNEL * 4, (1, 1), ((2, 2 + extra[0]), (2, 2 + extra[1])),
                                    lhs_dilation=(2, 2), precision=HIGHEST)[:, 0]


def lap_split(x, levels):
    """The Laplacian pyramid of (C, H, W) `x`: `levels` band-pass arrays, finest first, then the low-pass
    rest; lap_merge gives x back."""
    bands = []
    for _ in range(levels):
        low = _down(x)
        bands.append(x - _up(low, x.shape[1:]))
        x = low
    return bands + [x]


def lap_merge(bands):
    x = bands[-1]
    for band in reversed(bands[:-1]):
        x = _up(x, band.shape[1:]) + band
    return x


def _unit_rms(x, eps=1e-10):
    """x / its root mean square, summed in float64 (the tutorial's normalize_std)."""
    with jax.enable_x64(True):
        rms = jnp.sqrt(jnp.mean(jnp.square(x.astype(jnp.float64)))).astype(jnp.float32)
    return x / jnp.maximum(rms, eps)


def lap_normalize(g, levels=4):
    """The tutorial's lap_normalize: each of the pyramid's levels + 1 bands at unit RMS, merged back."""
    return lap_merge([_unit_rms(band) for band in lap_split(g, levels)])
