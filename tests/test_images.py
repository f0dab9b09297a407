"""Image input/output: the notebook's float32 RGB contract, odd and broken files, safe saving."""
import errno
import io
import os

import numpy as np
import pytest
from PIL import Image

from classicdream.images import ImageError, load_image, read_recipe, same_file, save_image

RNG = np.random.default_rng(0)


def random_u8(*shape):
    return RNG.integers(0, 256, shape, dtype=np.uint8)


def raises_one_line(path, call, *args):
    """call(*args) raises ImageError whose message is one line naming `path`; the message is returned."""
    with pytest.raises(ImageError) as e:
        call(*args)
    msg = str(e.value)
    assert os.fspath(path) in msg and '\n' not in msg, msg
    assert isinstance(e.value, ValueError)
    return msg


def notebook(path):
    """The 2015 notebook's loader, np.float32(PIL.Image.open(path)), closing the file."""
    with Image.open(path) as im:
        return np.float32(im)


def grey3(a):
    return np.stack([a, a, a], axis=-1).astype(np.float32)


# --- loading: the notebook's array -------------------------------------------------------------

@pytest.mark.parametrize('name', ['sky1024px.jpg', 'flowers.jpg'])
def test_matches_notebook_on_rgb_jpeg(shared, name):
    path = shared / 'images' / name
    ours, theirs = load_image(path), notebook(path)
    assert ours.dtype == np.float32 and ours.shape == theirs.shape and ours.shape[2] == 3
    assert np.array_equal(ours, theirs)


# --- loading: files that are not usable images -------------------------------------------------

def test_missing_file(tmp_path):
    assert 'no such file' in raises_one_line(tmp_path / 'nope.jpg', load_image, tmp_path / 'nope.jpg')


def test_directory(tmp_path):
    (tmp_path / 'pics.jpg').mkdir()
    assert 'folder' in raises_one_line(tmp_path / 'pics.jpg', load_image, tmp_path / 'pics.jpg')


def test_fifo_is_refused_without_blocking(tmp_path):
    path = tmp_path / 'pipe.png'
    os.mkfifo(path)
    assert 'regular file' in raises_one_line(path, load_image, path)


def test_empty_file(tmp_path):
    path = tmp_path / 'empty.png'
    path.write_bytes(b'')
    assert 'empty' in raises_one_line(path, load_image, path)


def test_text_file(tmp_path):
    path = tmp_path / 'notes.jpg'
    path.write_text('this is not an image\nsecond line\n')
    assert 'not an image' in raises_one_line(path, load_image, path)


def test_truncated_jpeg(shared, tmp_path):
    data = (shared / 'images' / 'sky1024px.jpg').read_bytes()
    path = tmp_path / 'cut.jpg'
    path.write_bytes(data[:len(data) // 2])
    with Image.open(path) as im:                 # PIL opens it happily; only decoding fails
        assert im.size == (1024, 575)
    assert 'truncated or corrupt' in raises_one_line(path, load_image, path)


def test_truncated_png(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(random_u8(64, 64, 3)).save(buf, 'PNG')
    path = tmp_path / 'cut.png'
    path.write_bytes(buf.getvalue()[:len(buf.getvalue()) // 2])
    assert 'truncated or corrupt' in raises_one_line(path, load_image, path)


@pytest.mark.parametrize('side', [12, 20])      # 144 pixels: PIL warns; 400 > 2 * 100: PIL refuses
def test_decompression_bomb(tmp_path, monkeypatch, side):
    path = tmp_path / 'big.png'
    Image.fromarray(random_u8(side, side, 3)).save(path)
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 100)
    assert 'too large' in raises_one_line(path, load_image, path)


def test_unprintable_name_stays_one_line(tmp_path):
    path = tmp_path / 'two\nlines.png'
    msg = raises_one_line(repr(str(path))[1:-1], load_image, path)
    assert '\n' not in msg


# --- loading: other modes, all to float32 (H, W, 3) RGB ----------------------------------------

def check(img, expected):
    assert img.dtype == np.float32 and img.shape == expected.shape
    assert np.array_equal(img, expected)


def test_rgba_alpha_is_discarded(tmp_path):
    rgba = random_u8(9, 7, 4)
    rgba[0, 0, 3] = 0                             # a fully transparent pixel keeps its colour
    Image.fromarray(rgba, 'RGBA').save(tmp_path / 'a.png')
    check(load_image(tmp_path / 'a.png'), rgba[..., :3].astype(np.float32))


def test_la_alpha_is_discarded(tmp_path):
    la = random_u8(9, 7, 2)
    Image.fromarray(la, 'LA').save(tmp_path / 'la.png')
    check(load_image(tmp_path / 'la.png'), grey3(la[..., 0]))


def test_greyscale(tmp_path):
    grey = random_u8(9, 7)
    Image.fromarray(grey, 'L').save(tmp_path / 'g.png')
    check(load_image(tmp_path / 'g.png'), grey3(grey))


@pytest.mark.parametrize('transparency', [None, 1, bytes([0, 128, 255])])
def test_palette(tmp_path, transparency):
    palette = random_u8(4, 3)
    index = RNG.integers(0, 4, (9, 7), dtype=np.uint8)
    im = Image.fromarray(index, 'P')
    im.putpalette(palette.ravel().tolist())
    im.save(tmp_path / 'p.png', **({} if transparency is None else {'transparency': transparency}))
    with Image.open(tmp_path / 'p.png') as saved:
        assert saved.mode == 'P' and (transparency is None) == ('transparency' not in saved.info)
    check(load_image(tmp_path / 'p.png'), palette[index].astype(np.float32))


def test_16bit_greyscale_is_scaled(tmp_path):
    grey = RNG.integers(0, 65536, (9, 7), dtype=np.uint16)
    grey[0, :2] = [0, 65535]
    Image.fromarray(grey).save(tmp_path / 'g16.png')
    with Image.open(tmp_path / 'g16.png') as im:
        assert im.mode == 'I;16'
    img = load_image(tmp_path / 'g16.png')
    check(img, grey3(grey.astype(np.float64) * 255 / 65535))
    assert img[0, 0, 0] == 0 and img[0, 1, 0] == 255


@pytest.mark.parametrize('mode,dtype', [('I', np.int32), ('F', np.float32)])
def test_32bit_modes_are_clipped(tmp_path, mode, dtype):
    values = np.linspace(-100, 400, 63).reshape(9, 7).astype(dtype)
    Image.fromarray(values, mode).save(tmp_path / 'x.tif')
    with Image.open(tmp_path / 'x.tif') as im:
        assert im.mode == mode
    check(load_image(tmp_path / 'x.tif'), grey3(np.clip(values, 0, 255)))


def test_cmyk_jpeg(tmp_path):
    colours = random_u8(3, 4, 3)
    rgb = np.kron(colours, np.ones((16, 16, 1), np.uint8))   # flat 16x16 blocks: little JPEG error
    Image.fromarray(rgb).convert('CMYK').save(tmp_path / 'c.jpg', quality=100)
    with Image.open(tmp_path / 'c.jpg') as im:
        assert im.mode == 'CMYK'
        via_pil = np.float32(im.convert('RGB'))
    img = load_image(tmp_path / 'c.jpg')
    check(img, via_pil)
    assert np.abs(img - rgb).max() <= 8


@pytest.mark.parametrize('orientation,k', [(6, -1), (8, 1)])   # 6: turn clockwise to view; 8: anticlockwise
def test_exif_orientation(tmp_path, orientation, k):
    stored = np.full((32, 48, 3), 128, np.uint8)
    stored[:16, :16] = (255, 0, 0)                # red mark in the stored top-left corner
    Image.fromarray(stored).save(tmp_path / 'plain.jpg', quality=95, subsampling=0)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(tmp_path / 'photo.jpg', quality=95, subsampling=0, exif=exif)
    decoded = notebook(tmp_path / 'plain.jpg')                  # same JPEG data, no tag
    assert notebook(tmp_path / 'photo.jpg').shape == (32, 48, 3)  # the notebook ignores the tag
    img = load_image(tmp_path / 'photo.jpg')
    check(img, np.rot90(decoded, k))
    # EXIF spec: 6 puts the stored row 0 on the right, so the stored top-left ends top-right;
    # 8 puts it on the left, so the stored top-left ends bottom-left.
    mark = img[:12, -12:] if orientation == 6 else img[-12:, :12]   # away from the JPEG-blurred edge
    assert np.abs(mark - (255, 0, 0)).max() < 16


# --- saving -------------------------------------------------------------------------------------

def test_png_round_trip_is_the_notebook_conversion(tmp_path):
    img = RNG.uniform(-50, 300, (9, 7, 3)).astype(np.float32)
    save_image(tmp_path / 'out.png', img)
    check(load_image(tmp_path / 'out.png'), np.uint8(np.clip(img, 0, 255)).astype(np.float32))
    assert read_recipe(tmp_path / 'out.png') is None


@pytest.mark.parametrize('ext', ['.jpg', '.jpeg', '.JPG'])
def test_jpeg_is_quality_95(tmp_path, ext):
    img = RNG.uniform(0, 255, (16, 24, 3))
    save_image(tmp_path / f'out{ext}', img)
    buf = io.BytesIO()
    Image.fromarray(np.uint8(np.clip(img, 0, 255))).save(buf, 'JPEG', quality=95)
    assert (tmp_path / f'out{ext}').read_bytes() == buf.getvalue()


RECIPE = {'layer': 'inception_4c/output', 'iter_n': 10, 'octave_scale': 1.4, 'seed': 0,
          'model_sha256': 'ab' * 32, 'version': '0.1.0', 'note': 'rêve ☁', 'jitter': [32, 32]}


@pytest.mark.parametrize('name', ['out.png', 'out.jpg'])
def test_recipe_round_trip(tmp_path, name):
    img = RNG.uniform(0, 255, (8, 8, 3))
    save_image(tmp_path / name, img, recipe=RECIPE)
    assert read_recipe(tmp_path / name) == RECIPE
    assert load_image(tmp_path / name).shape == (8, 8, 3)      # still an ordinary image
    if name.endswith('.png'):
        check(load_image(tmp_path / name), np.uint8(np.clip(img, 0, 255)).astype(np.float32))


def test_foreign_jpeg_comment_is_not_a_recipe(shared):
    path = shared / 'images' / 'sky1024px.jpg'
    with Image.open(path) as im:
        assert im.info.get('comment')             # it has a comment, just not ours
    assert read_recipe(path) is None


def test_recipe_must_be_json(tmp_path):
    raises_one_line(tmp_path / 'out.png', save_image, tmp_path / 'out.png', np.zeros((2, 2, 3)), {'x': object()})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize('name', ['out.gif', 'out', 'out.png.bak'])
def test_unsupported_extension(tmp_path, name):
    msg = raises_one_line(tmp_path / name, save_image, tmp_path / name, np.zeros((2, 2, 3)))
    assert '.png' in msg and '.jpg' in msg
    assert list(tmp_path.iterdir()) == []


def test_wrong_shape(tmp_path):
    raises_one_line(tmp_path / 'out.png', save_image, tmp_path / 'out.png', np.zeros((2, 2)))


def test_missing_folder(tmp_path):
    path = tmp_path / 'nope' / 'out.png'
    assert 'does not exist' in raises_one_line(path, save_image, path, np.zeros((2, 2, 3)))


def test_file_as_folder(tmp_path):
    (tmp_path / 'somefile.txt').write_text('keep me')
    path = tmp_path / 'somefile.txt' / 'out.png'
    assert 'not a folder' in raises_one_line(path, save_image, path, np.zeros((2, 2, 3)))
    assert (tmp_path / 'somefile.txt').read_text() == 'keep me'


def test_path_is_a_folder(tmp_path):
    (tmp_path / 'out.png').mkdir()
    assert 'folder' in raises_one_line(tmp_path / 'out.png', save_image, tmp_path / 'out.png', np.zeros((2, 2, 3)))
    assert (tmp_path / 'out.png').is_dir()


def test_read_only_folder(tmp_path, monkeypatch):
    folder = tmp_path / 'ro'
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:                         # root writes anyway: make access() tell the truth
        real = os.access
        monkeypatch.setattr(os, 'access', lambda p, mode, **kw:
                            not (mode & os.W_OK and os.path.samefile(p, folder)) and real(p, mode, **kw))
    try:
        path = folder / 'out.png'
        assert 'not writable' in raises_one_line(path, save_image, path, np.zeros((2, 2, 3)))
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


def test_os_error_while_writing(tmp_path):
    path = tmp_path / ('x' * 300 + '.png')         # a real OSError from the file system: name too long
    assert 'cannot write' in raises_one_line(path, save_image, path, np.zeros((2, 2, 3)))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize('failure', [OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), KeyboardInterrupt()])
def test_failed_save_keeps_the_old_file(tmp_path, monkeypatch, failure):
    path = tmp_path / 'out.png'
    save_image(path, np.full((4, 4, 3), 200.0))
    old = path.read_bytes()

    def broken_save(self, fp, *args, **kwargs):
        fp.write(b'\x89PNG half an image')
        raise failure
    monkeypatch.setattr(Image.Image, 'save', broken_save)
    with pytest.raises(ImageError if isinstance(failure, OSError) else KeyboardInterrupt) as e:
        save_image(path, np.zeros((4, 4, 3)))
    if isinstance(failure, OSError):
        assert 'No space left' in str(e.value) and str(path) in str(e.value)
    assert path.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ['out.png']


def test_overwrite_replaces_the_file(tmp_path):
    path = tmp_path / 'out.png'
    save_image(path, np.full((4, 4, 3), 200.0))
    save_image(path, np.full((5, 3, 3), 10.0))
    check(load_image(path), np.full((5, 3, 3), 10.0, np.float32))
    assert [p.name for p in tmp_path.iterdir()] == ['out.png']


# --- same_file ----------------------------------------------------------------------------------

def test_same_file(tmp_path, monkeypatch):
    a, b = tmp_path / 'a.jpg', tmp_path / 'b.jpg'
    a.write_bytes(b'a')
    b.write_bytes(b'b')
    (tmp_path / 'sub').mkdir()
    os.symlink(a, tmp_path / 'link.jpg')
    os.link(a, tmp_path / 'hard.jpg')
    monkeypatch.chdir(tmp_path)
    assert same_file(a, 'a.jpg') and same_file(a, 'sub/../a.jpg')
    assert same_file(a, tmp_path / 'link.jpg') and same_file(a, tmp_path / 'hard.jpg')
    assert not same_file(a, b)
    assert same_file('new.png', tmp_path / 'sub' / '..' / 'new.png')    # neither exists yet
    assert not same_file(a, 'new.png')
    os.symlink(tmp_path / 'new.png', tmp_path / 'dangling.png')
    assert same_file('dangling.png', 'new.png')
