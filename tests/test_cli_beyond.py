"""The commands beyond the notebook, as a user meets them: channels, several layers, noise, class
visualisation, the layer atlas, folders of images and zoom videos."""
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from classicdream.atlas import atlas_layers
from classicdream.images import load_image, read_recipe
from conftest import FAST, assert_one_line_error, run


def test_channel_and_weighted_layers_are_recorded(capsys, tmp_path, photo):
    code, out, err = run(capsys, 'dream', photo, '--channel=42,7', *FAST)
    assert code == 0, err
    assert out.strip().endswith('photo_inception_4c-output_c42-7_s0.jpg')
    assert read_recipe(out.strip())['channel'] == [42, 7]
    spec = 'inception_4c/output:1,inception_3b/output:0.5'
    code, out, err = run(capsys, 'dream', photo, f'--end={spec}', f'--out={tmp_path / "w.png"}', *FAST)
    assert code == 0, err
    assert read_recipe(tmp_path / 'w.png')['end'] == spec


@pytest.mark.parametrize('args, words', [
    (['--channel=512'], ['has channels 0..511', '512']),
    (['--channel=-1'], ['--channel']),
    (['--end=inception_4c/output:1,inception_3b/output:x'], ['weight', 'inception_3b/output']),
    (['--end=inception_4c/output:1,inception_4c/output:2'], ['twice']),
    (['--end=inception_4c/output:0,inception_3b/output:0'], ['non-zero']),
    (['--end=inception_4c/output,inception_3b/output', '--channel=1'], ['--channel', 'one']),
    (['--end=inception_4c/output,inception_3x/output'], ['unknown layer', 'inception_3a/output']),
])
def test_bad_objective_options_are_one_line_errors(capsys, tmp_path, photo, args, words):
    code, _, err = run(capsys, 'dream', photo, f'--out={tmp_path / "o.jpg"}', *args, *FAST)
    assert_one_line_error(code, err, *words)
    assert not (tmp_path / 'o.jpg').exists()


def test_noise_start_is_seeded(capsys, tmp_path):
    outs = [tmp_path / f'{i}.png' for i in range(3)]
    for out, seed in zip(outs, (5, 5, 6)):
        code, _, err = run(capsys, 'dream', '--noise=72x48', f'--out={out}', f'--seed={seed}', *FAST)
        assert code == 0, err
    assert Image.open(outs[0]).size == (72, 48) and read_recipe(outs[0])['input'] == 'noise72x48'
    assert outs[0].read_bytes() == outs[1].read_bytes() and outs[0].read_bytes() != outs[2].read_bytes()


def test_noise_or_image_not_both_nor_neither(capsys, photo):
    assert_one_line_error(*run(capsys, 'dream', photo, '--noise=64', '--quiet')[::2], 'not both')
    assert_one_line_error(*run(capsys, 'dream', '--quiet')[::2], '--noise')


def test_visualize_writes_the_class_it_was_asked_for(capsys, tmp_path):
    out = tmp_path / 'lady.png'
    code, stdout, err = run(capsys, 'visualize', '--class=ladybird', '--size=96x64', f'--out={out}', *FAST)
    assert code == 0, err
    recipe = read_recipe(out)
    assert recipe['class_index'] == 301 and recipe['class_name'] == 'ladybug' and recipe['input'] == 'noise96x64'
    assert Image.open(out).size == (96, 64)


@pytest.mark.parametrize('args, words', [
    ([], ['--class']),
    (['--class=terrier'], ['ambiguous', 'Yorkshire terrier']),
    (['--class=ladybug', '--colour=red'], ['unknown option --colour']),
    (['--class=2000'], ['out of range']),
])
def test_visualize_bad_input(capsys, tmp_path, args, words):
    code, _, err = run(capsys, 'visualize', f'--out={tmp_path / "v.png"}', *args, *FAST)
    assert_one_line_error(code, err, *words)


def test_atlas_has_one_labelled_tile_per_layer_and_resumes(capsys, tmp_path, photo):
    layers = ['conv1/relu_7x7', 'inception_3a/output', 'inception_4c/output']
    outdir, thumb, margin = tmp_path / 'atlas', 128, 4
    args = ['atlas', photo, f'--layers={",".join(layers)}', f'--outdir={outdir}', f'--thumb={thumb}', *FAST]
    code, out, err = run(capsys, *args)
    assert code == 0, err
    singles = sorted(outdir.glob('[0-9][0-9]_*.jpg'))
    assert [read_recipe(p)['end'] for p in singles] == layers
    sheet = load_image(outdir / 'atlas.jpg')
    assert read_recipe(outdir / 'atlas.jpg')['layers'] == layers
    th, cell_w = round(64 * thumb / 96), thumb + margin         # photo is 96x64; a 2x2 grid for 3 tiles
    label_h = (sheet.shape[0] - margin) // 2 - th - margin
    assert sheet.shape[1] == 2 * cell_w + margin and label_h > 10
    for i, single in enumerate(singles + [None]):
        x, y = margin + (i % 2) * cell_w, margin + (i // 2) * (th + label_h + margin)
        label = sheet[y + th:y + th + label_h, x:x + thumb].min(axis=2)
        if single is None:                                     # the fourth cell is empty: no picture, no label
            assert label.min() > 200 and sheet[y:y + th, x:x + thumb].min() > 200
            continue
        assert (label < 100).sum() > 20                         # dark text under the picture
        small = np.float32(Image.open(single).resize((thumb, th), Image.LANCZOS))
        assert np.abs(sheet[y:y + th, x:x + thumb] - small).mean() < 4
    labels = [sheet[margin + th:margin + th + label_h, margin + i * cell_w:margin + i * cell_w + thumb]
              for i in range(2)]
    assert not np.array_equal(labels[0], labels[1])             # each tile has its own label
    code, out, _ = run(capsys, *args)                           # everything done: only the sheet is rewritten
    assert code == 0 and out.split() == [str(outdir / 'atlas.jpg')]


def test_atlas_default_layers_are_every_relu_and_concat(net):
    layers = atlas_layers(net)
    assert layers[0] == 'conv1/relu_7x7' and layers[-1] == 'inception_5b/output'
    assert 'inception_4c/output' in layers and 'inception_3b/relu_5x5_reduce' in layers
    assert 'inception_4c/5x5_reduce' not in layers and 'pool5/7x7_s1' not in layers
    assert len(layers) == 3 + 9 * 7                             # conv1, conv2 x2; 6 ReLUs + concat per inception


def test_folder_dreams_each_image_skips_done_ones_and_reports_failures(capsys, tmp_path, photo):
    src, outdir = tmp_path / 'in', tmp_path / 'out'
    src.mkdir()
    for name in ('a.jpg', 'b.png'):
        Image.open(photo).save(src / name)
    (src / 'broken.jpg').write_bytes(b'not an image')
    (src / 'notes.txt').write_text('not an image either, and not one it should try')
    code, out, err = run(capsys, 'dream', src, f'--outdir={outdir}', *FAST)
    assert code == 2 and 'Traceback' not in err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and 'broken.jpg' in lines[0] and lines[1].endswith(
        '2 dreamed, 0 already done, 1 failed: broken.jpg')
    assert sorted(p.name for p in outdir.iterdir()) == ['a.jpg', 'b.jpg']
    assert read_recipe(outdir / 'b.jpg')['input'] == 'b.png'
    before = {p.name: p.stat().st_mtime_ns for p in outdir.iterdir()}
    (src / 'broken.jpg').unlink()
    code, out, err = run(capsys, 'dream', src, f'--outdir={outdir}', *FAST)
    assert code == 0 and out == '' and '0 dreamed, 2 already done, 0 failed' in err
    assert {p.name: p.stat().st_mtime_ns for p in outdir.iterdir()} == before


def test_folder_needs_outdir_not_out(capsys, tmp_path, photo):
    assert_one_line_error(*run(capsys, 'dream', tmp_path, f'--out={tmp_path / "x.jpg"}')[::2], '--outdir')
    assert_one_line_error(*run(capsys, 'dream', photo, f'--outdir={tmp_path}')[::2], '--out')


def test_zoom_mp4_holds_the_frames(capsys, tmp_path, photo):
    import imageio_ffmpeg
    frames, mp4 = tmp_path / 'frames', tmp_path / 'zoom.mp4'
    args = ['zoom', photo, '--frames=3', f'--outdir={frames}', f'--mp4={mp4}', *FAST]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        code, out, err = run(capsys, *args)
    assert code == 0, err
    assert out.split()[-1] == str(mp4)
    assert not [w for w in caught if 'fork' in str(w.message)]    # JAX's fork warning must not reach the user
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        reader = imageio_ffmpeg.read_frames(str(mp4))
        meta = next(reader)
        video = [np.frombuffer(f, np.uint8).reshape(64, 96, 3) for f in reader]
    assert meta['size'] == (96, 64) and len(video) == 3
    for i, decoded in enumerate(video):
        assert np.abs(np.float32(decoded) - load_image(frames / f'{i:04d}.jpg')).mean() < 8
    assert np.abs(np.float32(video[0]) - np.float32(video[2])).mean() > 1    # the frames differ: it zooms
    code, out, err = run(capsys, *args)                          # frames done: only the video is written again
    assert code == 0 and out.split() == [str(mp4)], err


def test_zoom_mp4_never_replaces_a_file_that_is_not_ours(capsys, tmp_path, photo):
    foreign = tmp_path / 'holiday.mp4'
    foreign.write_bytes(b'someone else\'s video')
    code, _, err = run(capsys, 'zoom', photo, '--frames=1', f'--outdir={tmp_path / "f"}', f'--mp4={foreign}', *FAST)
    assert_one_line_error(code, err, 'not a classicdream video')
    assert foreign.read_bytes() == b'someone else\'s video' and not (tmp_path / 'f').exists()


def test_zoom_gif_loops_the_frames_at_the_frame_rate(capsys, tmp_path, photo):
    frames, gif = tmp_path / 'frames', tmp_path / 'zoom.gif'
    code, out, err = run(capsys, 'zoom', photo, '--frames=3', f'--outdir={frames}', f'--gif={gif}', '--fps=10', *FAST)
    assert code == 0 and out.split()[-1] == str(gif), err
    with Image.open(gif) as im:
        assert (im.n_frames, im.size, im.info['loop'], im.info['duration']) == (3, (96, 64), 0, 100)
        assert b'"command": "zoom"' in im.info['comment'] and b'"fps": 10' in im.info['comment']
        for i in range(3):
            im.seek(i)
            shown = np.float32(im.convert('RGB'))
            assert np.abs(shown - load_image(frames / f'{i:04d}.jpg')).mean() < 6     # 256 colours a frame
    assert read_recipe(frames / '0002.jpg')['frame'] == 2
    foreign = tmp_path / 'party.gif'
    Image.new('RGB', (8, 8)).save(foreign)
    before = foreign.read_bytes()
    assert_one_line_error(*run(capsys, 'zoom', photo, '--frames=3', f'--outdir={frames}', f'--gif={foreign}',
                               *FAST)[::2], 'not a classicdream video')
    assert foreign.read_bytes() == before
    assert_one_line_error(*run(capsys, 'zoom', photo, '--frames=3', f'--gif={tmp_path / "z.png"}', *FAST)[::2],
                          '--gif must name a .gif file')


@pytest.mark.parametrize('command, words', [
    ('visualize', ['--class=ladybug', 'synset_words']),
    ('atlas', ['--layers', 'contact sheet', '--cluster']),
    ('zoom', ['--mp4', '--gif']),
    ('video', ['--blend', '--flow', '--stop', '--cluster', '--gif']),
    ('dream', ['--channel', '--noise', '--tile', '--outdir', '--cluster', '--mask']),
    ('zoom', ['--mask']),
    ('video', ['--mask']),
    ('guide', ['--mask']),
])
def test_help_for_every_new_option(command, words):
    shown = subprocess.run([sys.executable, '-m', 'classicdream', command, '--help'], capture_output=True,
                           text=True, env=dict(os.environ, PAGER='cat'))
    text = shown.stdout + shown.stderr
    assert shown.returncode == 0 and 'Traceback' not in text and 'error' not in text
    assert all(w in text for w in words), text
