"""Shared test fixtures. Real data only: the real weights and real-Caffe fixtures from ../shared.

$CLASSICDREAM_SHARED points at the shared folder (default ../shared beside the checkout). It is
required: a missing folder fails the run loudly rather than skipping the parity tests.
"""
import os
from pathlib import Path

import numpy as np
import pytest

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


@pytest.fixture(scope='session')
def reference():
    """Open a real-Caffe fixture file from shared/reference by name, e.g. reference('steps_sky')."""
    cache = {}

    def load(name):
        if name not in cache:
            cache[name] = np.load(SHARED / 'reference' / f'{name}.npz')
        return cache[name]
    return load


def relative_error(ours, ref):
    return float(np.linalg.norm(np.asarray(ours, np.float64) - ref) / np.linalg.norm(ref))
