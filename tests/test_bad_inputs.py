"""The bad-input corpus: what a user can hand classicdream, as data. Each case is the files it makes, the
arguments and environment it runs with, the exit status and words it must end with, and the files that
must not change on disk. Every refusal is one line on stderr and exit status 2: no traceback."""
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image

from classicdream.images import read_recipe
from classicdream.models import ONNX_NAME, models_dir
from conftest import FAST, ROOT, assert_one_line_error, run


def _png(width, height, pixels=b''):
    """A PNG of the given header size holding `pixels` (none: the header alone), written by hand so a
    40000x40000 image costs 70 bytes."""
    def chunk(kind, data):
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0))
            + chunk(b'IDAT', zlib.compress(pixels)) + chunk(b'IEND', b''))


def _flat_png(width, height):
    """A flat-coloured width x height PNG, a few hundred KB however large: huge dimensions, tiny file."""
    row = b'\x00' + bytes([120, 90, 60]) * width
    return _png(width, height, row * height)


def _damaged_model(photo):
    return (models_dir() / ONNX_NAME).read_bytes()[:1 << 20]          # a copy killed after 1 MB


MAKERS = {
    'photo': lambda photo: photo.read_bytes(),
    'empty': lambda photo: b'',
    'truncated': lambda photo: photo.read_bytes()[:len(photo.read_bytes()) // 2],
    'text': lambda photo: b'hello, I am text\n',
    'zero pixels': lambda photo: _png(0, 10),
    'bomb': lambda photo: _png(40000, 40000),
    '6000x6000': lambda photo: _flat_png(6000, 6000),
    'model': _damaged_model,
    'folder': None,
}

# (id, {file: maker}, argv, environment, exit status, words in the one line, files that must not change)
CASES = [
    ('missing file', {}, ['dream', 'nope.jpg'], {}, 2, ['nope.jpg', 'no such file'], []),
    ('empty file', {'e.jpg': 'empty'}, ['dream', 'e.jpg'], {}, 2, ['e.jpg', 'empty'], ['e.jpg']),
    ('truncated file', {'t.jpg': 'truncated'}, ['dream', 't.jpg'], {}, 2, ['t.jpg', 'truncated'], ['t.jpg']),
    ('text named .jpg', {'x.jpg': 'text'}, ['dream', 'x.jpg'], {}, 2, ['x.jpg', 'not an image'], ['x.jpg']),
    ('zero pixels', {'z.png': 'zero pixels'}, ['dream', 'z.png'], {}, 2, ['z.png'], ['z.png']),
    ('huge dimensions in a 70-byte file', {'b.png': 'bomb'}, ['dream', 'b.png'], {}, 2, ['b.png', 'too large'],
     ['b.png']),
    ('a folder named like an image', {'f.jpg': 'folder'}, ['dream', 'f.jpg'], {}, 2, ['f.jpg', 'no images'], []),
    ('output a folder named like an image', {'p.jpg': 'photo', 'o.jpg': 'folder'}, ['dream', 'p.jpg', '--out=o.jpg'],
     {}, 2, ['o.jpg', 'folder'], ['p.jpg']),
    ('output over the input', {'p.jpg': 'photo'}, ['dream', 'p.jpg', '--out=p.jpg'], {}, 2, ['overwrite the input'],
     ['p.jpg']),
    ('output over a file not ours', {'p.jpg': 'photo', 'mine.jpg': 'photo'}, ['dream', 'p.jpg', '--out=mine.jpg'],
     {}, 2, ['not a classicdream result'], ['p.jpg', 'mine.jpg']),
    ('too big for memory, --tile=0', {'big.png': '6000x6000'}, ['dream', 'big.png', '--tile=0', '--out=o.jpg'],
     {'CLASSICDREAM_MEMORY': '4G'}, 2, ['6000x6000', 'untiled', '--tile=750'], ['big.png']),
    ('too big for memory, a tile too large', {'big.png': '6000x6000'},
     ['dream', 'big.png', '--tile=3000', '--out=o.jpg'], {'CLASSICDREAM_MEMORY': '4G'}, 2,
     ['--tile=3000', '--tile=750'], ['big.png']),
    ('too big even in tiles', {'big.png': '6000x6000'}, ['dream', 'big.png', '--out=o.jpg'],
     {'CLASSICDREAM_MEMORY': '2G'}, 2, ['smallest tile'], ['big.png']),
    ('a memory budget that is no size', {'p.jpg': 'photo'}, ['dream', 'p.jpg', '--out=o.jpg'],
     {'CLASSICDREAM_MEMORY': 'lots'}, 2, ['CLASSICDREAM_MEMORY', 'lots'], ['p.jpg']),
    ('damaged model, nothing to rebuild from', {'p.jpg': 'photo', 'models/' + ONNX_NAME: 'model'},
     ['dream', 'p.jpg', '--out=o.jpg'], {'CLASSICDREAM_MODELS': 'models', 'CLASSICDREAM_MIRROR': 'no-mirror'}, 2,
     ['damaged', 'classicdream models --force'], ['p.jpg', 'models/' + ONNX_NAME]),
]


@pytest.mark.parametrize('files, argv, env, status, words, unchanged', [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_input(capsys, tmp_path, monkeypatch, photo, files, argv, env, status, words, unchanged):
    monkeypatch.chdir(tmp_path)
    for name, kind in files.items():
        Path(name).parent.mkdir(parents=True, exist_ok=True)
        Path(name).mkdir() if kind == 'folder' else Path(name).write_bytes(MAKERS[kind](photo))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    before = {name: Path(name).read_bytes() for name in unchanged}
    listing = sorted(map(str, Path().rglob('*')))
    code, _, err = run(capsys, *argv, *FAST)
    assert code == status
    assert_one_line_error(code, err, *words)
    assert {name: Path(name).read_bytes() for name in unchanged} == before
    assert sorted(map(str, Path().rglob('*'))) == listing              # nothing written, nothing left behind


def _dream(*argv, env=None, limit=None, cwd=None):
    """classicdream in a new process; `limit` caps the size of any file it writes (RLIMIT_FSIZE), which
    fails a write exactly as a full disk does, only with EFBIG for ENOSPC."""
    start = (f'import resource; resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); ' if limit else '') + \
        'import sys; from classicdream.cli import main; main(sys.argv[1:])'
    return subprocess.run([sys.executable, '-c', start, *map(str, argv)], capture_output=True, text=True,
                          env=dict(os.environ, **(env or {})), cwd=cwd)


def test_output_on_a_full_file_system_keeps_the_earlier_result(tmp_path, photo):
    out = tmp_path / 'o.png'
    assert _dream('dream', photo, f'--out={out}', *FAST).returncode == 0
    before = out.read_bytes()
    full = _dream('dream', photo, f'--out={out}', '--seed=1', *FAST, limit=len(before) // 2)
    assert_one_line_error(full.returncode, full.stderr, 'o.png', 'cannot write')
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ['o.png', 'photo.jpg']          # no partial file


def test_two_processes_writing_the_same_output(tmp_path, photo):
    """Both finish; the file is whole and is one of the two results, never a mix or a partial file."""
    out = tmp_path / 'o.png'
    argv = [sys.executable, '-m', 'classicdream', 'dream', str(photo), f'--out={out}', *FAST]
    both = [subprocess.Popen(argv + [f'--seed={seed}'], stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    errors = [p.communicate()[1] for p in both]
    assert [p.returncode for p in both] == [0, 0], errors
    assert read_recipe(out)['seed'] in (1, 2) and Image.open(out).size == (96, 64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['o.png', 'photo.jpg']


def test_damaged_model_is_rebuilt_and_the_user_told(tmp_path, photo, shared):
    models = tmp_path / 'models'
    models.mkdir()
    (models / ONNX_NAME).write_bytes(_damaged_model(photo))
    result = _dream('dream', photo, f'--out={tmp_path / "o.jpg"}', *FAST,
                    env={'CLASSICDREAM_MODELS': str(models), 'CLASSICDREAM_MIRROR': str(shared / 'models')})
    assert result.returncode == 0, result.stderr
    assert 'is damaged' in result.stderr and 'rebuilding it' in result.stderr and 'Traceback' not in result.stderr
    assert result.stdout.strip() == str(tmp_path / 'o.jpg')
    assert (models / ONNX_NAME).read_bytes() == (models_dir() / ONNX_NAME).read_bytes()


def test_damaged_compile_cache_entries_are_ignored_and_rebuilt(tmp_path, photo, shared):
    """The compiled programs kept under $CLASSICDREAM_JAX_CACHE, each damaged in one of three ways.

    Both processes run one frozen copy of the package: an entry's name digests classicdream's source, so
    an edit to the checkout between them (a developer at work while the suite runs) would key every
    program anew, and the second run would leave the damaged entries alone, as stale, not rebuild them."""
    cache, frozen = tmp_path / 'jax', tmp_path / 'frozen'
    shutil.copytree(ROOT / 'classicdream', frozen / 'classicdream', ignore=shutil.ignore_patterns('__pycache__'))
    env = {'CLASSICDREAM_JAX_CACHE': str(cache), 'PYTHONPATH': str(frozen), 'CLASSICDREAM_MODELS': str(models_dir()),
           'CLASSICDREAM_MIRROR': str(shared / 'models')}
    first = _dream('dream', photo, f'--out={tmp_path / "1.jpg"}', *FAST, env=env, cwd=tmp_path)
    entries = sorted(cache.rglob('*.xla'))
    assert first.returncode == 0 and entries, first.stderr
    damaged = {}
    for i, entry in enumerate(entries):                 # a write killed at once, cut short, garbage
        damaged[entry] = [b'', entry.read_bytes()[:len(entry.read_bytes()) // 2], os.urandom(5000)][i % 3]
        entry.write_bytes(damaged[entry])
    again = _dream('dream', photo, f'--out={tmp_path / "2.jpg"}', *FAST, env=env, cwd=tmp_path)
    assert again.returncode == 0 and again.stderr == '', again.stderr
    assert (tmp_path / '2.jpg').read_bytes() == (tmp_path / '1.jpg').read_bytes()
    assert sorted(cache.rglob('*.xla')) == entries                      # the same programs, under the same keys
    assert all(entry.read_bytes() != damage for entry, damage in damaged.items())   # each one written anew


NAMES = ['Bob\'s "photo" $HOME $(touch pwned) ünï.jpg', '`touch pwned` 日本語 写真.jpg']


def test_make_dream_passes_any_file_name_verbatim(tmp_path, photo):
    """The Makefile hands IMG and OUT over through the environment: no shell or make re-parses them."""
    folder = tmp_path / 'dir with $x and `y`'
    folder.mkdir()
    for name in NAMES:
        img = folder / name
        shutil.copy(photo, img)
        out = folder / f'out of {name}'
        result = subprocess.run(['make', '-s', '-C', str(ROOT), '-o', '.venv/.installed', f'PY={sys.executable}',
                                 'dream', f'IMG={img}', f'OUT={out}', 'ITER_N=1', 'OCTAVE_N=1', 'SEED=7'],
                                capture_output=True, text=True, cwd=tmp_path)
        assert result.returncode == 0, (name, result.stderr)
        assert read_recipe(out)['input'] == name and read_recipe(out)['seed'] == 7
    assert not list(tmp_path.rglob('pwned')) and not (ROOT / 'pwned').exists()


def test_make_dream_without_an_image_says_how(tmp_path):
    result = subprocess.run(['make', '-s', '-C', str(ROOT), '-o', '.venv/.installed', f'PY={sys.executable}',
                             'dream'], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.startswith('usage: make dream IMG=')


def test_output_names_keep_every_script(capsys, tmp_path, monkeypatch, photo):
    monkeypatch.chdir(tmp_path)
    for name, expected in [('ünï cödé.jpg', 'ünï cödé'), ('日本語 写真.jpg', '日本語 写真'), ("Bob's.jpg", "Bob's"),
                           ('a:b|c?.jpg', 'a-b-c'), ('tab\there.jpg', 'tab-here'), ('caf\udce9.jpg', 'caf'),
                           ('None', 'None'), ('1e3', '1e3')]:              # names fire would read as Python
        shutil.copy(photo, name)
        code, out, err = run(capsys, 'dream', name, '--end=inception_3b/output', *FAST)
        assert code == 0, err
        assert out.strip() == os.path.join('dreams', f'{expected}_inception_3b-output_s0.jpg')
        assert (tmp_path / out.strip()).is_file()
    long = 'é' * 120 + '.jpg'                                   # 240 bytes: the default name would be too long
    shutil.copy(photo, long)
    code, out, err = run(capsys, 'dream', long, '--end=inception_3b/output', *FAST)
    assert code == 0 and (tmp_path / out.strip()).is_file(), err
