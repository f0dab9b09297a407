"""Keeping the photo's colours in its dream, as other ports offer (applied to the finished dream).

- ``original``: the dream's luminance with the input's chroma, in JPEG's YCbCr (BT.601, full range), as
  neural-dream's ``-original_colors`` does: the patterns stay, the colours are the photo's;
- ``histogram``: each RGB channel of the dream remapped so its histogram is the input's.
"""
import numpy as np

CHOICES = ('original', 'histogram')

# JPEG's YCbCr (ITU-R BT.601, full range): Y, Cb, Cr rows over R, G, B; Cb and Cr centred on 128
_TO_YCBCR = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
_CENTRE = np.array([0.0, 128.0, 128.0])


def to_ycbcr(rgb):
    return np.asarray(rgb, np.float64) @ _TO_YCBCR.T + _CENTRE


def to_rgb(ycbcr):
    return (np.asarray(ycbcr, np.float64) - _CENTRE) @ np.linalg.inv(_TO_YCBCR).T


def original_colors(dream, source):
    """The dream's Y with the source's Cb and Cr (both H x W x 3 RGB on 0..255, one size)."""
    y = to_ycbcr(dream)[..., :1]
    return np.float32(to_rgb(np.concatenate([y, to_ycbcr(source)[..., 1:]], axis=-1)))


def match_histograms(dream, source):
    """Each channel of `dream` mapped through its own CDF onto the source's: the same histogram."""
    out = np.empty(np.shape(dream), np.float32)
    for c in range(3):
        d, s = np.ravel(dream[..., c]), np.ravel(source[..., c])
        order = np.argsort(d, kind='stable')
        ranks = np.empty(d.size, np.float64)
        ranks[order] = (np.arange(d.size) + 0.5) / d.size
        out[..., c] = np.quantile(s, ranks).reshape(dream.shape[:2])
    return out


def recolored(dream, source, colors):
    """`dream` with `colors` (None, 'original' or 'histogram') taken from `source`."""
    if colors is None:
        return dream
    if np.shape(dream) != np.shape(source):
        raise ValueError(f'--colors needs the input at the dream\'s size: {np.shape(source)} != {np.shape(dream)}')
    return original_colors(dream, source) if colors == 'original' else match_histograms(dream, source)
