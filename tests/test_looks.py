"""The looks other ports give, on the real net: the input's colours kept (--colors), and the gradient
normalised over a Laplacian pyramid (--lapnorm, TensorFlow's deepdream tutorial)."""
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
    code, _, err = run(capsys, 'dream', image, f'--out={out}', '--iter_n=5', '--octave_n=2', '--step_size=6',
                       '--quiet', *options)
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


def _top_octave_share(detail):
    """The share of the detail's spectral energy above half the Nyquist frequency (either axis)."""
    grey = detail.mean(axis=2)
    power = np.abs(np.fft.fft2(grey - grey.mean())) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(grey.shape[0]), np.fft.fftfreq(grey.shape[1]), indexing='ij')
    return power[np.maximum(np.abs(fy), np.abs(fx)) > 0.25].sum() / power.sum()


def test_lapnorm_moves_the_dream_to_coarser_scales(capsys, tmp_path, shared):
    sky = _sky(tmp_path, shared)
    source = load_image(sky)
    plain = load_image(_dream(capsys, tmp_path, sky, 'plain.png'))
    smooth_path = _dream(capsys, tmp_path, sky, 'lapnorm.png', '--lapnorm=4')
    smooth = load_image(smooth_path)
    fine, coarse = _top_octave_share(plain - source), _top_octave_share(smooth - source)
    assert coarse < 0.7 * fine, (coarse, fine)
    assert np.abs(smooth - source).mean() > 5                        # it still dreams
    assert read_recipe(smooth_path)['lapnorm'] == 4


def test_laplacian_pyramid_splits_and_merges_exactly():
    import jax.numpy as jnp
    from classicdream.lapnorm import lap_merge, lap_normalize, lap_split
    rng = np.random.RandomState(0)
    for shape in ((3, 64, 96), (3, 65, 97), (3, 7, 5)):
        x = rng.randn(*shape).astype(np.float32)
        bands = lap_split(jnp.asarray(x), 4)
        assert [b.shape[1:] for b in bands][:2] == [shape[1:], (-(-shape[1] // 2), -(-shape[2] // 2))]
        assert np.abs(np.asarray(lap_merge(bands)) - x).max() < 1e-5
    # normalising makes every scale count alike: white noise has little energy in the coarsest band, and
    # after it about as much there as in the finest
    g = jnp.asarray(rng.randn(3, 64, 64).astype(np.float32) * 100
                    + np.broadcast_to(np.linspace(-1, 1, 64, dtype=np.float32), (3, 64, 64)) * 0.01)
    rms = lambda x: float(jnp.sqrt(jnp.mean(x ** 2)))                              # noqa: E731
    coarse_to_fine = lambda x: rms(lap_split(x, 3)[-1]) / rms(lap_split(x, 3)[0])  # noqa: E731
    assert coarse_to_fine(g) < 0.1 and 0.3 < coarse_to_fine(lap_normalize(g, 3)) < 3
    assert np.allclose(lap_normalize(5 * g, 3), lap_normalize(g, 3), rtol=1e-5, atol=1e-6)   # scale-free


def test_lapnorm_is_a_whole_number_of_levels(capsys, tmp_path, photo):
    code, _, err = run(capsys, 'dream', photo, f'--out={tmp_path / "x.jpg"}', '--lapnorm=2.5', '--quiet')
    assert_one_line_error(code, err, '--lapnorm must be a whole number')
