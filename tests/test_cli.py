"""The command line as a user meets it: every bad input is one line on stderr, exit 2, nothing overwritten."""
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from classicdream.images import load_image, read_recipe
from conftest import FAST, assert_one_line_error, run

def test_dream_writes_result_with_recipe(capsys, tmp_path, photo, net):
    out = tmp_path / 'out.png'
    code, stdout, err = run(capsys, 'dream', photo, f'--out={out}', '--seed=3', *FAST)
    assert code == 0 and stdout.strip() == str(out)
    recipe = read_recipe(out)
    assert recipe['seed'] == 3 and recipe['end'] == 'inception_4c/output' and recipe['iter_n'] == 1
    assert recipe['model_sha256'] == net.sha256
    assert load_image(out).shape == load_image(photo).shape
    assert np.abs(load_image(out) - load_image(photo)).mean() > 1.0       # it dreamed


def test_default_output_path_and_random_seed(capsys, tmp_path, photo, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, stdout, _ = run(capsys, 'dream', photo, '--end=inception_3b/output', *FAST)
    assert code == 0 and stdout.strip() == 'dreams/photo_inception_3b-output_s0.jpg'
    code, stdout, _ = run(capsys, 'dream', photo, '--end=inception_3b/output', '--seed=random', *FAST)
    seed = read_recipe(stdout.strip())['seed']
    assert code == 0 and stdout.strip() == f'dreams/photo_inception_3b-output_s{seed}.jpg'


def test_progress_bar_on_stderr_unless_quiet(capsys, tmp_path, photo):
    code, _, err = run(capsys, 'dream', photo, f'--out={tmp_path / "a.jpg"}', '--iter_n=1', '--octave_n=1')
    assert code == 0 and 'octave 1/1' in err and 'inception_4c/output' in err


@pytest.mark.parametrize('mode', ['RGBA', 'LA', 'P', 'I;16', 'CMYK', 'L'])
def test_odd_image_modes_dream(capsys, tmp_path, photo, mode):
    rgb = Image.open(photo)
    if mode == 'I;16':
        img = Image.fromarray(np.asarray(rgb.convert('L'), np.uint16) * 257)
    else:
        img = rgb.convert(mode)
    src = tmp_path / ('odd.jpg' if mode == 'CMYK' else 'odd.png')
    img.save(src)
    code, _, err = run(capsys, 'dream', src, f'--out={tmp_path / "o.jpg"}', *FAST)
    assert code == 0, err
    assert load_image(tmp_path / 'o.jpg').shape == (64, 96, 3)


def test_exif_rotation_is_honoured(capsys, tmp_path, photo):
    src = tmp_path / 'rotated.jpg'
    exif = Image.Exif()
    exif[0x0112] = 6                                           # orientation: rotate 90° clockwise to view
    Image.open(photo).save(src, exif=exif, quality=95)
    code, _, err = run(capsys, 'dream', src, f'--out={tmp_path / "r.jpg"}', *FAST)
    assert code == 0, err
    assert load_image(tmp_path / 'r.jpg').shape == (96, 64, 3)


def bad_file(tmp_path, kind, photo):
    path = tmp_path / f'bad-{kind}.jpg'
    if kind == 'missing':
        return path
    if kind == 'directory':
        path.mkdir()
    elif kind == 'empty':
        path.write_bytes(b'')
    elif kind == 'truncated':
        path.write_bytes(photo.read_bytes()[:len(photo.read_bytes()) // 2])
    elif kind == 'not-an-image':
        path.write_text('hello, I am text\n')
    return path


@pytest.mark.parametrize('kind', ['missing', 'directory', 'empty', 'truncated', 'not-an-image'])
def test_bad_image_files(capsys, tmp_path, photo, kind):
    path = bad_file(tmp_path, kind, photo)
    code, _, err = run(capsys, 'dream', path, f'--out={tmp_path / "o.jpg"}', *FAST)
    assert_one_line_error(code, err, path.name)
    assert not (tmp_path / 'o.jpg').exists()


@pytest.mark.parametrize('size, words', [((1, 1), ['1x1', '15x15']), ((8, 8), ['8x8', '15x15'])])
def test_tiny_images_name_the_limit(capsys, tmp_path, size, words):
    path = tmp_path / 'tiny.png'
    Image.new('RGB', size, (120, 80, 40)).save(path)
    code, _, err = run(capsys, 'dream', path, f'--out={tmp_path / "o.jpg"}', *FAST)
    assert_one_line_error(code, err, *words)


def test_octave_stack_too_small_suggests_fewer_octaves(capsys, tmp_path, photo):
    code, _, err = run(capsys, 'dream', photo, f'--out={tmp_path / "o.jpg"}', '--octave_n=8', '--quiet')
    assert_one_line_error(code, err, '--octave_n=')


def test_unknown_layer_suggests_names(capsys, tmp_path, photo):
    code, _, err = run(capsys, 'dream', photo, f'--out={tmp_path / "o.jpg"}', '--end=inception_4c/ouput', *FAST)
    assert_one_line_error(code, err, 'inception_4c/output')


@pytest.mark.parametrize('flag', ['--iter_n=abc', '--iter_n=nan', '--iter_n=0', '--iter_n=-3', '--iter_n=1.5',
                                  '--octave_n=0', '--octave_scale=0', '--octave_scale=-1.4', '--step_size=0',
                                  '--step_size=nan', '--step_size=inf', '--jitter=-1', '--seed=-1', '--seed=x',
                                  '--clip=maybe'])
def test_bad_parameters(capsys, tmp_path, photo, flag):
    code, _, err = run(capsys, 'dream', photo, f'--out={tmp_path / "o.jpg"}', flag, '--quiet')
    assert_one_line_error(code, err, flag.split('=')[0])


def test_output_in_missing_or_read_only_folder(capsys, tmp_path, photo, monkeypatch):
    code, _, err = run(capsys, 'dream', photo, f'--out={tmp_path / "nope" / "o.jpg"}', *FAST)
    assert_one_line_error(code, err, 'does not exist')
    locked = tmp_path / 'locked'
    locked.mkdir()
    locked.chmod(0o555)
    if os.geteuid() == 0:             # root ignores permission bits: make access() answer as for a user
        real = os.access
        monkeypatch.setattr(os, 'access', lambda p, m: False if str(p) == str(locked) else real(p, m))
    code, _, err = run(capsys, 'dream', photo, f'--out={locked / "o.jpg"}', *FAST)
    assert_one_line_error(code, err, 'not writable')


def test_never_overwrites_the_input_or_foreign_files(capsys, tmp_path, photo):
    before = photo.read_bytes()
    code, _, err = run(capsys, 'dream', photo, f'--out={photo}', *FAST)
    assert_one_line_error(code, err, 'overwrite the input')
    foreign = tmp_path / 'mine.jpg'
    foreign.write_bytes(before)
    code, _, err = run(capsys, 'dream', photo, f'--out={foreign}', *FAST)
    assert_one_line_error(code, err, 'not a classicdream result')
    assert photo.read_bytes() == before and foreign.read_bytes() == before


def test_guide(capsys, tmp_path, photo, shared):
    out = tmp_path / 'g.png'
    code, _, err = run(capsys, 'guide', photo, shared / 'images' / 'flowers.jpg', f'--out={out}', *FAST)
    assert code == 0, err
    recipe = read_recipe(out)
    assert recipe['guide'] == 'flowers.jpg' and recipe['end'] == 'inception_3b/output'


def test_zoom_frames_resume_exactly(capsys, tmp_path, photo):
    whole, parts = tmp_path / 'whole', tmp_path / 'parts'
    args = ['zoom', photo, '--iter_n=1', '--octave_n=1', '--quiet']
    assert run(capsys, *args, '--frames=3', f'--outdir={whole}')[0] == 0
    assert run(capsys, *args, '--frames=2', f'--outdir={parts}')[0] == 0
    code, stdout, _ = run(capsys, *args, '--frames=3', f'--outdir={parts}')
    assert code == 0 and stdout.split() == [str(parts / '0002.jpg')]     # only the missing frame
    assert sorted(p.name for p in whole.glob('*.jpg')) == ['0000.jpg', '0001.jpg', '0002.jpg']
    for name in ('0000.jpg', '0001.jpg', '0002.jpg'):
        assert (whole / name).read_bytes() == (parts / name).read_bytes()
    # frames really zoom: frame 1 starts from frame 0 scaled about the centre
    assert read_recipe(whole / '0001.jpg')['frame'] == 1


def test_layers_lists_dreamable_layers_with_shapes(capsys, net):
    code, out, _ = run(capsys, 'layers')
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines()}
    assert code == 0
    assert rows['inception_4c/output'] == 'x'.join(map(str, net.forward(np.zeros((1, 3, 224, 224), np.float32),
                                                                        'inception_4c/output').shape))
    assert 'conv1/relu_7x7' in rows and 'in place on conv1/7x7_s2' in out
    assert list(rows) == [layer for layer, _, _ in net.layers[1:]]


def test_module_entry_point_and_help():
    help_text = subprocess.run([sys.executable, '-m', 'classicdream', 'dream', '--help'], capture_output=True,
                               text=True, env=dict(os.environ, PAGER='cat'))
    text = help_text.stdout + help_text.stderr            # fire writes help to stderr when not on a terminal
    assert help_text.returncode == 0
    assert '--seed=random' in text and 'inception_4c/output' in text and 'Traceback' not in text


def test_unclipped_dream_is_saved_scaled_by_its_99_98th_percentile(capsys, tmp_path, photo, net):
    """The notebook shows clip=False dreams as vis * 255 / percentile(vis, 99.98); the saved file is that."""
    from classicdream import deepdream
    out = tmp_path / 'u.png'
    code, _, err = run(capsys, 'dream', photo, f'--out={out}', '--clip=False', '--step_size=40', *FAST)
    assert code == 0, err
    vis = deepdream(net, load_image(photo), iter_n=1, octave_n=1, clip=False, step_size=40)
    assert vis.max() > 255                            # the unclipped dream really leaves the 0..255 range
    expected = np.uint8(np.clip(vis * (255.0 / np.percentile(vis, 99.98)), 0, 255))
    assert np.abs(np.int16(load_image(out)) - expected).max() <= 1


def test_second_process_reuses_the_persistent_compilation_cache(tmp_path, photo):
    cache = tmp_path / 'jax-cache'
    env = dict(os.environ, CLASSICDREAM_JAX_CACHE=str(cache))
    argv = [sys.executable, '-m', 'classicdream', 'dream', str(photo), '--iter_n=1', '--octave_n=1', '--quiet']
    first = subprocess.run(argv + [f'--out={tmp_path / "1.jpg"}'], env=env, capture_output=True, text=True)
    entries = sorted(p.name for p in cache.iterdir())
    second = subprocess.run(argv + [f'--out={tmp_path / "2.jpg"}'], env=env, capture_output=True, text=True)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert entries and sorted(p.name for p in cache.iterdir()) == entries    # nothing new compiled
    assert (tmp_path / '1.jpg').read_bytes() == (tmp_path / '2.jpg').read_bytes()
