"""--mask: where a dream paints. An all-white mask is no mask, pixel for pixel; black keeps the input
exactly, apart from a thin band at the mask's edge that the octaves' resampling spreads; the mask goes
into the recipe, so a folder resumed with another mask dreams again."""
import math

import numpy as np
import pytest
from PIL import Image

from classicdream.images import read_recipe
from classicdream.mask import load_mask
from classicdream.models import file_digest
from conftest import assert_one_line_error, run

# 150x97 pads to a 152x104 bucket, so the masked step runs on a padded octave as well as the true size.
W, H = 150, 97
SMALL = ['--end=inception_3b/output', '--iter_n=2', '--octave_n=3', '--quiet']
OCTAVE_N, OCTAVE_SCALE = 3, 1.4


def band_bound(octave_n, octave_scale):
    """The widest band the octaves can spread a dream past the mask's edge, in pixels: the smallest
    octave dreams within one of its pixels (s^(n-1) here) of the white, its detail reaches one of its
    pixels further when zoomed up (s^(n-1) again), and each larger octave's zoom one of its own (s^j)."""
    s, n = octave_scale, octave_n
    return math.ceil(2 * s ** (n - 1) + sum(s ** j for j in range(n - 1)))


@pytest.fixture
def sky(tmp_path, shared):
    path = tmp_path / 'sky.png'
    Image.open(shared / 'images' / 'sky1024px.jpg').resize((W, H), Image.BILINEAR).save(path)
    return path


def mask_file(path, array):
    Image.fromarray(np.uint8(array)).save(path)
    return path


def pixels(path):
    return np.asarray(Image.open(path).convert('RGB')).astype(int)


def test_an_all_white_mask_is_no_mask_to_the_pixel(capsys, tmp_path, sky):
    white = mask_file(tmp_path / 'white.png', np.full((H, W), 255))
    plain, masked = tmp_path / 'plain.png', tmp_path / 'masked.png'
    assert run(capsys, 'dream', sky, f'--out={plain}', *SMALL)[0] == 0
    code, _, err = run(capsys, 'dream', sky, f'--out={masked}', f'--mask={white}', *SMALL)
    assert code == 0, err
    assert np.array_equal(pixels(plain), pixels(masked))
    assert not np.array_equal(pixels(plain), pixels(sky))


@pytest.mark.parametrize('axis', [0, 1])
def test_black_keeps_the_input_beyond_the_band_and_white_dreams(capsys, tmp_path, sky, axis):
    edge = (H // 2, W // 2 + 3)[axis]
    m = np.zeros((H, W))
    if axis:
        m[:, edge:] = 255
    else:
        m[edge:] = 255
    half = mask_file(tmp_path / 'half.png', m)
    out = tmp_path / 'out.png'
    code, _, err = run(capsys, 'dream', sky, f'--out={out}', f'--mask={half}', *SMALL)
    assert code == 0, err
    changed = (pixels(out) != pixels(sky)).any(2)
    changed = changed if axis else changed.T
    edge_changed = changed[:, :edge]
    band = edge - np.where(edge_changed.any(0))[0].min() if edge_changed.any() else 0
    assert band <= band_bound(OCTAVE_N, OCTAVE_SCALE), band
    assert not changed[:, :edge - band_bound(OCTAVE_N, OCTAVE_SCALE)].any()
    assert changed[:, edge:].mean() > 0.95                     # the white side dreams all over


def test_grey_dreams_less_than_white(capsys, tmp_path, sky):
    """Grey weighs the step: a uniform grey mask takes half-size steps where white takes whole ones, and a
    dark half beside a white half dreams less than the white half."""
    grey = mask_file(tmp_path / 'grey.png', np.full((H, W), 128))
    white = mask_file(tmp_path / 'white.png', np.full((H, W), 255))
    two = np.full((H, W), 255)
    two[:, :W // 2] = 64
    halves = mask_file(tmp_path / 'halves.png', two)
    outs = {}
    for mask in (grey, white, halves):
        outs[mask.stem] = tmp_path / f'{mask.stem}.out.png'
        assert run(capsys, 'dream', sky, f'--out={outs[mask.stem]}', f'--mask={mask}', *SMALL)[0] == 0
    moved = lambda name: np.abs(pixels(outs[name]) - pixels(sky)).mean(2)     # noqa: E731
    assert 0.2 * moved('white').mean() < moved('grey').mean() < 0.8 * moved('white').mean()
    moved = moved('halves')
    assert moved[:, 10:W // 2 - 10].mean() < 0.5 * moved[:, W // 2 + 10:-10].mean()


def test_the_recipe_and_the_name_carry_the_mask(capsys, tmp_path, sky):
    mask = mask_file(tmp_path / 'region.png', np.pad(np.full((H - 40, W - 40), 255), 20))
    code, out, err = run(capsys, 'dream', sky, f'--mask={mask}', f'--out={tmp_path / "d.jpg"}', *SMALL)
    assert code == 0, err
    recipe = read_recipe(tmp_path / 'd.jpg')
    assert recipe['mask'] == 'region.png' and recipe['mask_sha256'] == file_digest(mask)
    from classicdream.dreamer import Dreamer
    d = Dreamer('inception_3b/output', 1, 1, 1.4, 1.5, 32, True, 0, True, mask=str(mask))
    assert d.default_name('sky.png') == 'sky_inception_3b-output_mask-region_s0.jpg'


def test_a_mask_of_another_size_but_the_same_aspect_is_scaled(tmp_path):
    big = mask_file(tmp_path / 'big.png', np.kron(np.eye(2), np.ones((97, 150))) * 255)   # 300x194
    fitted = load_mask(big).fitted((H, W, 3))
    assert fitted.shape == (H, W) and fitted.dtype == np.float32
    assert fitted[:40, :60].min() == 1 and fitted[-40:, :60].max() == 0


def test_a_folder_resumed_with_another_mask_dreams_again(capsys, tmp_path, sky):
    src, outdir = tmp_path / 'in', tmp_path / 'out'
    src.mkdir()
    Image.open(sky).save(src / 'a.png')
    left = np.zeros((H, W))
    left[:, :W // 2] = 255
    first, second = mask_file(tmp_path / 'm1.png', left), mask_file(tmp_path / 'm2.png', 255 - left)
    args = ['dream', src, f'--outdir={outdir}', *SMALL]
    assert run(capsys, *args, f'--mask={first}')[0] == 0
    code, _, err = run(capsys, *args, f'--mask={first}')
    assert code == 0 and '0 dreamed, 1 already done' in err
    code, _, err = run(capsys, *args, f'--mask={second}')
    assert code == 0 and '1 dreamed, 0 already done' in err
    assert read_recipe(outdir / 'a.jpg')['mask'] == 'm2.png'


def test_zoom_and_video_frames_carry_the_mask(capsys, tmp_path, sky):
    import subprocess

    import imageio_ffmpeg
    left = np.zeros((H, W))
    left[:, W // 2:] = 255
    mask = mask_file(tmp_path / 'right.png', left)
    frames = tmp_path / 'frames'
    code, _, err = run(capsys, 'zoom', sky, '--frames=2', f'--outdir={frames}', f'--mask={mask}', *SMALL)
    assert code == 0, err
    assert read_recipe(frames / '0000.jpg')['mask'] == 'right.png'
    moved = np.abs(pixels(frames / '0000.jpg') - pixels(sky)).mean(2)         # a JPEG: a level or two off
    assert moved[:, :W // 2 - 8].mean() < min(2, 0.5 * moved[:, W // 2 + 8:].mean())
    clip = tmp_path / 'clip.mkv'
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), '-loglevel', 'error', '-f', 'lavfi', '-i',
                    f'testsrc=size={W - 2}x{H - 1}:rate=5', '-t', '0.4', '-pix_fmt', 'yuv420p', str(clip)], check=True)
    vmask = mask_file(tmp_path / 'vright.png', left[1:, 2:])
    code, _, err = run(capsys, 'video', clip, f'--out={tmp_path / "v.mp4"}', f'--outdir={tmp_path / "vf"}',
                       f'--mask={vmask}', *SMALL)
    assert code == 0, err
    assert read_recipe(tmp_path / 'vf' / '00000.jpg')['mask_sha256'] == file_digest(vmask)


@pytest.mark.parametrize('make, words', [
    (lambda p: p.write_bytes(b'not an image'), ['nope.png', 'not an image file']),
    (lambda p: mask_file(p, np.zeros((H, W))), ['nope.png', 'black everywhere']),
    (lambda p: mask_file(p, np.full((H, 2 * W), 255)), ['nope.png', '300x97', '150x97', 'aspect ratio']),
    (lambda p: None, ['nope.png', 'no such file']),
])
def test_bad_masks_are_one_line(capsys, tmp_path, sky, make, words):
    make(tmp_path / 'nope.png')
    out = tmp_path / 'never.png'
    assert_one_line_error(*run(capsys, 'dream', sky, f'--out={out}', f'--mask={tmp_path / "nope.png"}',
                               *SMALL)[::2], *words)
    assert not out.exists()
