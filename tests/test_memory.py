"""Memory known before it is spent: the estimate against a measured peak, the tile chosen when a dream
would not fit, and the one line that a memory exhaustion still becomes."""
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from classicdream import memory
from classicdream.images import load_image, read_recipe
from conftest import FAST, assert_one_line_error, run

END = 'inception_4c/output'


def test_estimate_is_within_a_quarter_of_the_measured_peak(tmp_path, shared, net):
    """A fresh process's maximum resident set size, compiling included (no compilation cache)."""
    img = tmp_path / 'sky256.png'
    Image.open(shared / 'images' / 'sky1024px.jpg').resize((256, 256), Image.BILINEAR).save(img)
    child = (f'import resource, subprocess, sys; subprocess.run([sys.executable, "-m", "classicdream", "dream", '
             f'{str(img)!r}, "--out={tmp_path / "o.jpg"}", "--iter_n=1", "--octave_n=1", "--quiet"], check=True); '
             f'print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)')
    result = subprocess.run([sys.executable, '-c', child], capture_output=True, text=True,
                            env=dict(os.environ, CLASSICDREAM_JAX_CACHE=''))
    assert result.returncode == 0, result.stderr
    peak = int(result.stdout.split()[-1])
    assert abs(memory.estimate(net, (256, 256), 1, 1.4, END) / peak - 1) <= 0.25, peak


def test_activation_bytes_are_the_forward_pass_tensors(net):
    """At 224x224, inception_4c/output's own output alone is 512x14x14 floats; every tensor before it adds."""
    total = memory.activation_bytes(net, END, 224, 224)
    assert total > 4 * 512 * 14 * 14 + 4 * 64 * 112 * 112
    assert memory.activation_bytes(net, END, 448, 448) == pytest.approx(4 * total, rel=0.01)
    assert memory.activation_bytes(net, 'inception_3b/output', 224, 224) < total


def test_largest_tile_fits_and_the_next_larger_does_not(net):
    shape, budget = (3000, 2000, 3), 1.5e9
    candidates = [-(-3000 // n) for n in range(1, 100)]                # the long side in n equal pieces
    tile = memory.largest_tile(net, shape, 2, 1.4, END, budget)
    n = candidates.index(tile)
    assert n > 0 and memory.estimate(net, shape, 2, 1.4, END, tile) <= budget
    assert memory.estimate(net, shape, 2, 1.4, END, candidates[n - 1]) > budget
    assert memory.largest_tile(net, shape, 2, 1.4, END, 1e8) is None


@pytest.mark.parametrize('text, size', [('4G', 4 * 2 ** 30), ('512M', 512 * 2 ** 20), ('2.5GiB', 2.5 * 2 ** 30),
                                        ('1000', 1000)])
def test_memory_budget_from_the_environment(monkeypatch, text, size):
    monkeypatch.setenv('CLASSICDREAM_MEMORY', text)
    assert memory.budget() == size


def test_budget_is_what_the_machine_has(monkeypatch):
    monkeypatch.delenv('CLASSICDREAM_MEMORY', raising=False)
    total = int(next(line for line in open('/proc/meminfo') if line.startswith('MemTotal')).split()[1]) * 1024
    assert 0 < memory.budget() <= total


def test_too_big_to_fit_is_tiled_automatically_and_said(capsys, tmp_path, shared, monkeypatch, net):
    """Between the untiled estimate and that of tiles of half the width: the CLI picks the tile, says so
    in one line, records it, and dreams exactly what --tile=that would have."""
    sky = shared / 'images' / 'sky1024px.jpg'                                  # 1024x575
    args = ['--iter_n=1', '--octave_n=1', '--quiet']
    untiled, halves = (memory.estimate(net, (575, 1024), 1, 1.4, END, tile) for tile in (None, 512))
    assert halves < untiled
    monkeypatch.setenv('CLASSICDREAM_MEMORY', str(int((untiled + halves) / 2)))
    code, _, err = run(capsys, 'dream', sky, f'--out={tmp_path / "auto.png"}', *args)
    assert code == 0 and read_recipe(tmp_path / 'auto.png')['tile'] == 512
    assert err.strip().splitlines() == [f'classicdream: 1024x575 at {END} needs about '
                                        f'{memory.gigabytes(untiled)} untiled, and '
                                        f'{memory.gigabytes(memory.budget())} is available: dreaming in tiles '
                                        f'of 512x512 (--tile=512)']
    code, _, err = run(capsys, 'dream', sky, f'--out={tmp_path / "asked.png"}', '--tile=512', *args)
    assert code == 0
    assert np.array_equal(load_image(tmp_path / 'auto.png'), load_image(tmp_path / 'asked.png'))
    code, _, err = run(capsys, 'dream', sky, f'--out={tmp_path / "never.png"}', '--tile=0', *args)
    assert_one_line_error(code, err, 'untiled', '--tile=512')
    assert not (tmp_path / 'never.png').exists()


def test_an_exhaustion_that_still_happens_is_one_line(capsys, tmp_path, photo, monkeypatch):
    """XLA's own RESOURCE_EXHAUSTED (an allocation no machine has), raised where the dream runs."""
    import classicdream.dreamer as dreamer

    def exhausting(*args, **kwargs):
        return jnp.zeros((2 ** 60,), jnp.uint8).block_until_ready()
    monkeypatch.setattr(dreamer, 'deepdream', exhausting)
    code, _, err = run(capsys, 'dream', photo, f'--out={tmp_path / "o.jpg"}', *FAST)
    assert_one_line_error(code, err, 'out of memory', '96x64', 'RESOURCE_EXHAUSTED', '--tile')
    assert not (tmp_path / 'o.jpg').exists()
