"""Where to dream: a mask image whose luminance weighs each step's gradient, pixel by pixel.

White dreams fully, black not at all, grey in between. The mask is read once (its luminance, ITU-R 601
as PIL's ``convert('L')`` weighs R, G and B) and fitted to each image: the same size, or a scaled copy of
the same aspect ratio. A mask of another aspect ratio is refused rather than stretched: stretched, it
would fall on other parts of the picture than the ones painted. dream.deepdream then resamples it to
every octave as it does the image.
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .images import ImageError, load_image
from .models import file_digest

LUMINANCE = np.float32([0.299, 0.587, 0.114])
ASPECT_TOLERANCE = 0.01                 # a mask scaled to the image's width may be 1% (and 1 pixel) off in height


@dataclass(frozen=True, eq=False)
class Mask:
    """A mask's luminance as 0..255 bytes (small enough to send to a cluster's workers), and its file's
    name and sha256 for the recipe."""
    name: str
    sha256: str
    luminance: np.ndarray

    @property
    def size(self):
        return self.luminance.shape[1], self.luminance.shape[0]

    def recipe(self):
        return dict(mask=self.name, mask_sha256=self.sha256)

    def fitted(self, shape):
        """The mask for an image of `shape` (H, W, ...): float32 (H, W) on 0..1."""
        h, w = shape[:2]
        mw, mh = self.size
        if (mh, mw) == (h, w):
            return self.luminance.astype(np.float32) / np.float32(255)
        if abs(mh * w / mw - h) > max(1.0, ASPECT_TOLERANCE * h):
            raise ValueError(f'mask {self.name} is {mw}x{mh} and the image {w}x{h}: give a mask of the '
                             f"image's aspect ratio (it is scaled to the image's size, not stretched)")
        scaled = Image.fromarray(self.luminance.astype(np.float32), 'F').resize((w, h), Image.BILINEAR)
        return np.clip(np.asarray(scaled, np.float32), 0, 255) / np.float32(255)


def load_mask(path, name=None):
    """The mask in the image file `path`: any image load_image reads. A black one is refused: nothing
    would dream."""
    name = name or Path(path).name
    rgb = load_image(path, name)
    luminance = np.round(rgb @ LUMINANCE).clip(0, 255).astype(np.uint8)
    if not luminance.any():
        raise ImageError(f'{name}: the mask is black everywhere, so nothing would dream (white is where it '
                         f'dreams)')
    return Mask(name, file_digest(path), luminance)
