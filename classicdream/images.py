"""Reading and writing images with the 2015 notebook's conventions, and clear errors for bad files.

The notebook loads with ``np.float32(PIL.Image.open(path))`` and saves ``np.uint8(np.clip(a, 0, 255))``;
everything downstream assumes a float32 H x W x 3 RGB array on the 0..255 scale. ``load_image`` gives
exactly that array for an ordinary 8-bit RGB file, and the same contract for every other file PIL
reads (greyscale, palette, alpha, 16-bit, CMYK, rotated photos), so the dream code never sees a
2-D or 4-channel array. Any file that cannot be used raises ``ImageError``: one line naming the
file and the problem, which the CLI prints instead of a traceback. Saving is atomic, so an
interrupted or failed save never leaves a half-written image or damages an existing one.
"""
import io
import json
import math
import os
import stat
import warnings

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps, PngImagePlugin

from .files import atomic_write

RECIPE_KEY = 'classicdream'
FORMATS = {'.png': 'PNG', '.jpg': 'JPEG', '.jpeg': 'JPEG'}
JPEG_QUALITY = 95


class ImageError(ValueError):
    """An image file that cannot be read or written; the message is one line naming the file."""


def _name(path):
    s = os.fsdecode(path)
    return s if s.isprintable() else repr(s)


def _reason(e):
    text = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
    return ' '.join(text.split()) or type(e).__name__


def _to_rgb(im):
    if im.mode == 'RGB':
        return np.asarray(im, np.float32)
    if im.mode.startswith('I;16'):                   # 16-bit: 0..65535 onto 0..255 (65535 / 255 = 257)
        grey = np.asarray(im).astype(np.float32) / np.float32(257)
    elif im.mode in ('I', 'F'):                       # taken as 0..255 values, clamped as PIL's convert('L') does
        grey = np.clip(np.asarray(im, np.float32), 0, 255)
    else:                                             # L, P, 1, RGBA, LA, PA, CMYK, YCbCr, ...: alpha discarded
        return np.asarray(im.convert('RGB'), np.float32)
    return np.repeat(grey[:, :, None], 3, axis=2)


def load_image(path, name=None):
    """Read an image file as a float32 (H, W, 3) RGB array with values 0..255.

    For an 8-bit RGB file this is exactly the notebook's ``np.float32(PIL.Image.open(path))``.
    Other files follow the same contract:

    - greyscale (L, 1) gives three equal channels; palette images (P) are expanded to RGB;
    - alpha (RGBA, LA, PA, palette transparency) is discarded, as PIL's ``convert('RGB')`` does:
      the colour under a transparent pixel is kept, not composited onto a background;
    - 16-bit greyscale (I;16) is scaled from 0..65535 to 0..255 (divided by 257), not clipped;
      32-bit integer (I) and float (F) pixels are taken as 0..255 values and clipped;
    - CMYK and other modes are converted with PIL's ``convert('RGB')``;
    - an EXIF orientation tag is honoured (``PIL.ImageOps.exif_transpose``), so a photo comes out
      the way viewers show it, where the notebook would have used the sensor's layout;
    - multi-frame files (GIF, APNG, TIFF) give their first frame.

    Raises ImageError for a missing, unreadable, empty, non-image, truncated or corrupt file, and
    for an image of more than ``PIL.Image.MAX_IMAGE_PIXELS`` pixels (PIL's decompression-bomb limit).
    Its message names the file as `name` (default: the path), so the page names an upload as sent.
    """
    name = name or _name(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ImageError(f'{name}: no such file') from None
    except OSError as e:
        raise ImageError(f'{name}: cannot read ({_reason(e)})') from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageError(f'{name}: is a folder, not an image file')
    if not stat.S_ISREG(st.st_mode):                      # a pipe or device would block or not seek
        raise ImageError(f'{name}: not a regular file')
    if st.st_size == 0:
        raise ImageError(f'{name}: file is empty (0 bytes)')
    try:
        f = open(path, 'rb')
    except OSError as e:
        raise ImageError(f'{name}: cannot read ({_reason(e)})') from None
    with f:
        return _decode(f, name)


def decode_image(data, name='image'):
    """load_image's array from an encoded file's bytes: what load_image gives once they are saved."""
    return _decode(io.BytesIO(data), name)


def _decode(f, name):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')               # e.g. palette transparency, odd EXIF
            warnings.simplefilter('error', Image.DecompressionBombWarning)
            with Image.open(f) as im:
                im.load()                                 # decode fully now: truncation raises here
                ImageOps.exif_transpose(im, in_place=True)
                img = _to_rgb(im)
    except Image.UnidentifiedImageError:
        raise ImageError(f'{name}: not an image file (or not a format PIL can read)') from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f'{name}: image too large to be sensible ({_reason(e)})') from None
    except MemoryError:
        raise ImageError(f'{name}: image too large for the available memory') from None
    except Exception as e:                            # PIL raises OSError, SyntaxError, ValueError, ...
        raise ImageError(f'{name}: truncated or corrupt image ({_reason(e)})') from None
    return img


def check_writable(path):
    """The PIL format for an output path, or ImageError if an image cannot be written there.

    Called by save_image, and by the CLI before a long dream, so a bad --out fails in a second.
    """
    name = _name(path)
    path = os.fspath(path)
    fmt = FORMATS.get(os.path.splitext(path)[1].lower())
    if fmt is None:
        raise ImageError(f'{name}: unsupported file type; use one of {", ".join(FORMATS)}')
    folder = os.path.dirname(path) or '.'
    if os.path.isdir(path):
        raise ImageError(f'{name}: is a folder; give a file name ending in .png or .jpg')
    if not os.path.exists(folder):
        raise ImageError(f'{name}: folder {os.fsdecode(folder)!r} does not exist')
    if not os.path.isdir(folder):
        raise ImageError(f'{name}: {os.fsdecode(folder)!r} is not a folder')
    if not os.access(folder, os.W_OK):
        raise ImageError(f'{name}: folder {os.fsdecode(folder)!r} is not writable')
    return fmt


def save_image(path, img, recipe=None):
    """Write a float (H, W, 3) RGB array as ``np.uint8(np.clip(img, 0, 255))``, the notebook's conversion.

    The format follows the extension: .png, or .jpg/.jpeg at quality 95. ``recipe`` (a dict of
    JSON-serialisable values) is embedded as JSON: in PNG as a text chunk with keyword
    'classicdream', in JPEG as a COM comment ``{"classicdream": recipe}``; ``read_recipe`` reads it
    back. The file is written beside ``path`` and renamed into place only once complete.
    """
    write_encoded(path, encode_image(img, check_writable(path), recipe, _name(path)))


def encode_image(img, fmt='JPEG', recipe=None, name='image'):
    """The bytes save_image writes: for a worker that dreams far from where the file goes."""
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3 or 0 in img.shape:
        raise ImageError(f'{name}: expected an H x W x 3 RGB array, got shape {img.shape}')
    options = {'quality': JPEG_QUALITY} if fmt == 'JPEG' else {}
    if recipe is not None:
        try:
            if fmt == 'PNG':
                options['pnginfo'] = PngImagePlugin.PngInfo()
                options['pnginfo'].add_text(RECIPE_KEY, json.dumps(recipe))
            else:
                options['comment'] = json.dumps({RECIPE_KEY: recipe}).encode()
        except (TypeError, ValueError) as e:
            raise ImageError(f'{name}: recipe is not JSON-serialisable ({_reason(e)})') from None
        if len(options.get('comment', b'')) > 65533:
            raise ImageError(f'{name}: recipe too long for a JPEG comment; save as .png')
    data = io.BytesIO()
    try:
        Image.fromarray(np.uint8(np.clip(img, 0, 255)), 'RGB').save(data, format=fmt, **options)
    except OSError as e:
        raise ImageError(f'{name}: cannot write ({_reason(e)})') from None
    return data.getvalue()


def write_encoded(path, data):
    """Write encode_image's bytes to `path`, atomically: a complete file or none."""
    check_writable(path)
    try:
        atomic_write(os.fspath(path), lambda f: f.write(data))
    except OSError as e:
        raise ImageError(f'{_name(path)}: cannot write ({_reason(e)})') from None


def read_recipe(path):
    """The recipe dict that ``save_image`` embedded in a PNG or JPEG, or None if there is none."""
    name = _name(path)
    try:
        with Image.open(path) as im:
            if im.format == 'PNG':
                im.load()                                 # text chunks after the image data
                text = im.info.get(RECIPE_KEY)
                comments = []
            else:
                text = None
                comments = [data for marker, data in getattr(im, 'applist', []) if marker == 'COM']
    except Image.UnidentifiedImageError:
        raise ImageError(f'{name}: not an image file (or not a format PIL can read)') from None
    except Exception as e:
        raise ImageError(f'{name}: cannot read ({_reason(e)})') from None
    if text is not None:
        try:
            return json.loads(text)
        except ValueError:
            raise ImageError(f'{name}: the embedded classicdream recipe is not valid JSON') from None
    for data in comments:                                 # other tools' comments are not ours: skip
        try:
            obj = json.loads(data)
        except ValueError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get(RECIPE_KEY), dict):
            return obj[RECIPE_KEY]
    return None


def recipe_or_none(path):
    """The recipe of an earlier result, or None where there is none (or no readable file)."""
    try:
        return read_recipe(path)
    except ImageError:
        return None


def holds_recipe(path, recipe):
    """Whether `path` holds an earlier result of exactly this recipe, so a resumed run can skip it."""
    return os.path.exists(path) and recipe_or_none(path) == recipe


def same_file(a, b):
    """Whether paths a and b name the same file: os.path.samefile when both exist, else resolved paths."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b))


def contact_sheet(images, labels, thumb=256, margin=4):
    """One image of labelled thumbnails in a grid: each image scaled to `thumb` pixels wide, its label
    written under it in dark text on white, so a sheet of many layers reads at a glance."""
    if not images or len(images) != len(labels):
        raise ValueError('a contact sheet needs one label per image, and at least one image')
    h, w = np.shape(images[0])[:2]
    th = max(1, round(h * thumb / w))
    font = _font_fitting(labels, thumb, max(10, thumb // 16))
    label_h = int(font.size * 1.6)
    cols = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    cell_w, cell_h = thumb + margin, th + label_h + margin
    sheet = Image.new('RGB', (cols * cell_w + margin, rows * cell_h + margin), 'white')
    draw = ImageDraw.Draw(sheet)
    for i, (img, label) in enumerate(zip(images, labels)):
        x, y = margin + (i % cols) * cell_w, margin + (i // cols) * cell_h
        pil = Image.fromarray(np.uint8(np.clip(img, 0, 255)), 'RGB').resize((thumb, th), Image.LANCZOS)
        sheet.paste(pil, (x, y))
        draw.text((x + thumb / 2, y + th + label_h / 2), label, fill='black', font=font, anchor='mm')
    return np.float32(sheet)


def _font_fitting(labels, width, size):
    """The default font at `size`, or smaller until the longest label fits in `width` (down to 6 px)."""
    longest = max(labels, key=len)
    font = ImageFont.load_default(size=size)
    while size > 6 and font.getlength(longest) > width:
        size -= 1
        font = ImageFont.load_default(size=size)
    return font
