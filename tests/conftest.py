"""Shared test fixtures. Real data only: the real weights and real-Caffe fixtures from ../shared.

$CLASSICDREAM_SHARED points at the shared folder (default ../shared beside the checkout). It is
required: a missing folder fails the run loudly rather than skipping the parity tests. The one
exception is bench/gpu.sh on a device, which can carry only part of shared/reference per call (the
call's size limit) and says so with $CLASSICDREAM_FIXTURES_CARRIED: a fixture it did not carry skips.
"""
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get('CLASSICDREAM_SHARED', ROOT.parent / 'shared'))


def pytest_configure(config):
    if not (SHARED / 'reference' / 'README.md').exists():
        raise pytest.UsageError(f'shared folder not found at {SHARED}: set CLASSICDREAM_SHARED')


@pytest.fixture(scope='session')
def shared():
    return SHARED


@pytest.fixture(scope='session')
def net():
    """The real bvlc_googlenet, converted from the mirror by `make models`, loaded into JAX."""
    import classicdream
    return classicdream.load_net()


def not_carried(name):
    """Whether bench/gpu.sh left fixture `name` for another device call (never so elsewhere: a missing
    fixture then fails loudly)."""
    return bool(os.environ.get('CLASSICDREAM_FIXTURES_CARRIED')) and not (SHARED / 'reference' / f'{name}.npz').exists()


def fixture_keys(name):
    """The arrays of a real-Caffe fixture, to parametrize tests by; none where it was not carried."""
    return [] if not_carried(name) else np.load(SHARED / 'reference' / f'{name}.npz').files


@pytest.fixture(scope='session')
def reference():
    """Open a real-Caffe fixture file from shared/reference by name, e.g. reference('steps_sky')."""
    cache = {}

    def load(name):
        if name not in cache:
            if not_carried(name):
                pytest.skip(f'{name} not carried to this device call (bench/gpu.sh runs it in another part)')
            cache[name] = np.load(SHARED / 'reference' / f'{name}.npz')
        return cache[name]
    return load


def relative_error(ours, ref):
    return float(np.linalg.norm(np.asarray(ours, np.float64) - ref) / np.linalg.norm(ref))


# ---------------------------------------------------------------- the command line, run in this process

FAST = ['--iter_n=1', '--octave_n=1', '--quiet']


def run(capsys, *argv):
    """Run the CLI in this process (sharing the jit cache); return (exit status, stdout, stderr)."""
    from classicdream.cli import main
    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *words):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('classicdream: error:'), err
    assert 'Traceback' not in err
    for word in words:
        assert word in lines[0]


@pytest.fixture
def photo(tmp_path, shared):
    """A small real photo (a crop of the notebook's sky), big enough for one octave at inception_4c."""
    path = tmp_path / 'photo.jpg'
    Image.open(shared / 'images' / 'sky1024px.jpg').crop((0, 0, 96, 64)).save(path, quality=95)
    return path
