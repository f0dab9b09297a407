"""Tiled dreams for big images: exact where one tile covers the image, the same maths tile by tile otherwise."""
import numpy as np
import pytest

from classicdream import deepdream, load_image, preprocess
from classicdream.dream import check_tile, tile_slices, tiled_gradient
from classicdream.graph import as_objective, objective_L2
from conftest import assert_one_line_error, run

END = 'inception_4c/output'


@pytest.fixture(scope='module')
def flowers(shared):
    return load_image(shared / 'images' / 'flowers.jpg')          # 320x240


def test_a_tile_covering_the_image_gives_the_untiled_dream_exactly(net, flowers):
    untiled = deepdream(net, flowers, iter_n=2, octave_n=2, seed=4)
    assert np.array_equal(deepdream(net, flowers, iter_n=2, octave_n=2, seed=4, tile=320), untiled)


@pytest.mark.parametrize('length, tile', [(320, 160), (321, 160), (4096, 512), (1000, 512), (100, 512)])
def test_tiles_cover_the_axis_in_at_most_two_sizes_none_below_half_a_tile(length, tile):
    pieces = tile_slices(length, tile)
    assert pieces[0].start == 0 and pieces[-1].stop == length
    assert all(a.stop == b.start for a, b in zip(pieces, pieces[1:]))
    sizes = {p.stop - p.start for p in pieces}
    assert len(sizes) <= 2 and max(sizes) <= tile and min(sizes) >= min(length, tile) / 2


def test_tiled_gradient_is_each_tiles_own_gradient_after_the_roll(net, flowers):
    src = preprocess(flowers)
    offset = (37, 101)
    g = np.asarray(tiled_gradient(net, net.tensor(END), as_objective(objective_L2), 160, offset)(src))
    rolled = np.roll(src, offset, (-2, -1))
    expected = np.empty_like(rolled)
    for ys in tile_slices(240, 160):
        for xs in tile_slices(320, 160):
            expected[:, ys, xs] = net.gradient(rolled[None, :, ys, xs], END)[0]
    assert np.array_equal(g, np.roll(expected, (-offset[0], -offset[1]), (-2, -1)))
    # and the seams are real: the whole image's gradient differs from the tiled one near tile edges
    assert not np.allclose(g, net.gradient(src[None], END)[0], atol=1e-3)


def test_tiled_dream_moves_its_tile_grid_every_step(net, flowers, monkeypatch):
    """Each step rolls the grid anew (on the tiled axis only), so no edge stays put to become a seam."""
    import classicdream.dream as dream
    offsets = []

    def recording(net, end, objective, tile, offset):
        offsets.append(offset)
        return tiled_gradient(net, end, objective, tile, offset)
    monkeypatch.setattr(dream, 'tiled_gradient', recording)
    a = deepdream(net, flowers, iter_n=4, octave_n=1, seed=1, tile=300)      # 320 wide: tiled; 240 high: not
    assert len(offsets) == 4 and len(set(offsets)) == 4
    assert all(oy == 0 and 0 <= ox < 300 for oy, ox in offsets)
    untiled = deepdream(net, flowers, iter_n=4, octave_n=1, seed=1)
    assert np.isfinite(a).all() and not np.array_equal(a, untiled)
    assert np.abs(a - flowers).mean() > 0.5 * np.abs(untiled - flowers).mean()


def test_tile_too_small_for_the_layer_is_refused(net):
    need = 2 * max(net.min_size(END))
    check_tile(net, need, END)
    with pytest.raises(ValueError, match=f'at least {need}'):
        check_tile(net, need - 1, END)


def test_cli_tile_option(capsys, tmp_path, photo):
    code, _, err = run(capsys, 'dream', photo, f'--out={tmp_path / "t.jpg"}', '--tile=8', '--quiet')
    assert_one_line_error(code, err, 'tile', 'at least')
