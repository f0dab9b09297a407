"""Compiled programs: kept on disk for the next process, which loads them without tracing; a damaged
file is rebuilt, never a crash; a program is built once however many ask for it."""
import os
import shutil
import subprocess
import sys
import threading

import numpy as np

from classicdream.models import models_dir
from classicdream.programs import Program, program
from conftest import ROOT

# A dream in a child process. With NO_TRACE set, tracing or lowering any program fails the child:
# everything must come from the executables the first process left.
CHILD = '''
import os, sys
import numpy as np
import classicdream
from classicdream.programs import Program
assert classicdream.__file__.startswith(os.environ['PYTHONPATH']), classicdream.__file__     # the frozen copy
if os.environ.get('NO_TRACE'):
    def refuse(self, *args, **statics):
        raise SystemExit(f'traced {self.__name__} again')
    Program.lower = refuse
net = classicdream.load_net()
img = classicdream.load_image(sys.argv[1])
np.save(sys.argv[2], classicdream.deepdream(net, img, iter_n=2, octave_n=2, seed=5))
'''


def dream_in_child(tmp_path, image, name, **env):
    """The child runs a copy of the package frozen at its first call, in tmp_path/frozen: an executable's
    key digests classicdream's source, so an edit to the checkout while the test runs (a developer at work
    beside the suite) would key every program anew in the next child, which must then trace them all."""
    frozen = tmp_path / 'frozen'
    if not frozen.exists():
        shutil.copytree(ROOT / 'classicdream', frozen / 'classicdream', ignore=shutil.ignore_patterns('__pycache__'))
    env = dict(os.environ, CLASSICDREAM_JAX_CACHE=str(tmp_path / 'cache'), PYTHONPATH=str(frozen),
               CLASSICDREAM_MODELS=str(models_dir()), **env)
    proc = subprocess.run([sys.executable, '-c', CHILD, str(image), str(tmp_path / name)], env=env, cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return np.load(tmp_path / name)


def test_a_new_process_loads_executables_without_tracing_even_for_a_new_size(tmp_path, shared):
    from PIL import Image
    sky = Image.open(shared / 'images' / 'sky1024px.jpg')
    sky.crop((0, 0, 300, 200)).save(tmp_path / 'a.png')
    sky.crop((40, 20, 337, 218)).save(tmp_path / 'b.png')     # 297x198: the same buckets as 300x200
    first = dream_in_child(tmp_path, tmp_path / 'a.png', 'first.npy')
    assert list((tmp_path / 'cache' / 'executables').iterdir())
    np.testing.assert_array_equal(dream_in_child(tmp_path, tmp_path / 'a.png', 'again.npy', NO_TRACE='1'), first)
    other = dream_in_child(tmp_path, tmp_path / 'b.png', 'other.npy', NO_TRACE='1')
    assert other.shape == (198, 297, 3) and np.isfinite(other).all()


def test_damaged_executables_are_rebuilt_not_fatal(tmp_path, photo):
    first = dream_in_child(tmp_path, photo, 'first.npy')
    files = sorted((tmp_path / 'cache' / 'executables').iterdir())
    for i, path in enumerate(files):      # truncated, garbage, empty
        path.write_bytes(path.read_bytes()[:100] if i % 3 == 0 else b'not an executable' if i % 3 == 1 else b'')
    np.testing.assert_array_equal(dream_in_child(tmp_path, photo, 'again.npy'), first)
    # rebuilt in place: a third process needs no tracing
    np.testing.assert_array_equal(dream_in_child(tmp_path, photo, 'third.npy', NO_TRACE='1'), first)


def test_a_program_is_built_once_however_many_threads_ask(monkeypatch, tmp_path):
    monkeypatch.setenv('CLASSICDREAM_JAX_CACHE', str(tmp_path))
    builds = []
    double = program()(lambda x: 2 * x)
    lower = Program.lower

    def counting(self, *args, **statics):
        builds.append(args[0].shape)
        return lower(self, *args, **statics)
    monkeypatch.setattr(Program, 'lower', counting)
    x = np.arange(6, dtype=np.float32)
    futures = []
    threads = [threading.Thread(target=lambda: futures.append(double.executable(x))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(f) for f in futures}) == 1
    np.testing.assert_array_equal(double(x), 2 * x)
    np.testing.assert_array_equal(double(x + 1), 2 * x + 2)          # same shape: the same executable
    assert builds == [(6,)]
    double(np.zeros(7, np.float32))
    assert builds == [(6,), (7,)]


def test_a_users_own_objective_is_compiled_but_never_kept_on_disk(net, photo, tmp_path, monkeypatch):
    """Its code may change under the same name between processes; classicdream's own code is digested."""
    from classicdream import deepdream, load_image, objective_L2

    def mine(dst):
        return 2 * dst
    monkeypatch.setenv('CLASSICDREAM_JAX_CACHE', str(tmp_path))
    img = np.float32(np.resize(load_image(photo), (97, 203, 3)))     # a bucket no other test compiles
    kept = lambda: len(list((tmp_path / 'executables').iterdir()))
    deepdream(net, img, iter_n=1, octave_n=1, objective=mine)
    assert kept() == 4                   # pre- and deprocess, adding and taking out the detail; not the steps
    deepdream(net, img, iter_n=1, octave_n=1, objective=objective_L2)
    assert kept() == 5                   # the steps with objective_L2
