"""The looks other ports give, on the real net: the input's colours kept (--colors)."""
import numpy as np
from PIL import Image

from classicdream.colors import to_ycbcr
from classicdream.images import load_image, read_recipe

from conftest import assert_one_line_error, run


def _sky(tmp_path, shared, size=(256, 144)):
    path = tmp_path / 'sky.png'
    Image.open(shared / 'images' / 'sky1024px.jpg').resize(size, Image.LANCZOS).save(path)
    return path


def _dream(capsys, tmp_path, image, name, *options):
    out = tmp_path / name
    code, _, err = run(capsys, 'dream', image, f'--out={out}', '--iter_n=5', '--octave_n=2', '--step_size=6', '--quiet', *options)
    assert code == 0, err
    return out


def test_original_colors_keep_the_inputs_chroma_and_the_dreams_luminance(capsys, tmp_path, shared):
    sky = _sky(tmp_path, shared)
    plain = load_image(_dream(capsys, tmp_path, sky, 'plain.png'))
    kept_path = _dream(capsys, tmp_path, sky, 'kept.png', '--colors=original')
    kept, source = (to_ycbcr(load_image(p)) for p in (kept_path, sky))
    dreamed = to_ycbcr(plain)
    chroma = np.abs(kept[..., 1:] - source[..., 1:]).mean()
    assert chroma < 3, chroma                                          # the input's Cb and Cr
    assert np.abs(dreamed[..., 1:] - source[..., 1:]).mean() > 2 * chroma   # which the plain dream had lost
    assert np.abs(kept[..., 0] - dreamed[..., 0]).mean() < 1           # the dream's luminance
    assert np.abs(kept[..., 0] - source[..., 0]).mean() > 5            # which is not the input's
    assert read_recipe(kept_path)['colors'] == 'original'


def test_histogram_colors_match_each_channel_of_the_input(capsys, tmp_path, shared):
    sky = _sky(tmp_path, shared)
    plain, matched = (load_image(_dream(capsys, tmp_path, sky, name, *options))
                      for name, options in (('plain.png', ()), ('matched.png', ('--colors=histogram',))))
    source = load_image(sky)
    distance = lambda a: max(np.abs(np.sort(a[..., c], None) - np.sort(source[..., c], None)).mean()  # noqa: E731
                             for c in range(3))
    assert distance(matched) < 1 < 4 < distance(plain), (distance(matched), distance(plain))
    assert np.corrcoef(matched[..., 0].ravel(), plain[..., 0].ravel())[0, 1] > 0.9   # the same picture


def test_colors_must_be_a_known_choice(capsys, tmp_path, photo):
    code, _, err = run(capsys, 'dream', photo, f'--out={tmp_path / "x.jpg"}', '--colors=sepia', '--quiet')
    assert_one_line_error(code, err, '--colors must be original or histogram')
