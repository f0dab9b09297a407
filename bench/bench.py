"""`make bench`: classicdream against the 2015 notebook on real Caffe and on PyTorch eager, in one run here.

Same image (sky1024px.jpg), the notebook's default parameters, seed 0. Each measurement runs in its own
process, so compile caches and peak memory belong to one thing only:
- Caffe: the notebook's cells (bench/notebook_caffe.py) on the pycaffe that `make reference` built;
- Caffe's BLAS: Debian's OpenBLAS 0.3.21 picks its kernels by the CPU it knows; on a CPU newer than it
  knows it falls back to generic ones (an AVX-512 Xeon got "Prescott", SSE3: half the speed). Where it
  did so on a CPU with AVX-512 or AVX2, Caffe runs with OPENBLAS_CORETYPE=SkylakeX or Haswell, the kernels
  the CPU supports; a core the environment already sets is kept. The core is in the table and the
  caffe_openblas_core= line, and the step parity is Caffe's step with that core;
- PyTorch: the same loop and weights in torch eager (bench/torch_dream.py: fp32, channels_last, every core),
  what a user would pick instead of either; a first run in a fresh process (oneDNN's primitives for each
  shape built then) and the better of two more, in two processes: the better first run, the best steady.
  Then torch.compile (TorchInductor) on the same loop: a first process with an empty inductor cache, a
  second with it warm, each a first run and two steady ones.
  On the GPU too where torch has CUDA (the `bench` extra's CPU wheel has not);
- classicdream, per JAX platform (CPU, and GPU when JAX sees one): a first run in a fresh process with an
  empty cache of compiled programs, two more calls in that process (steady state: the better of the two,
  split into host and device work), a dream at a second layer in that process; then new processes with
  the cache now warm, and on an image size never seen (1020x572, whose octaves fall in the sky's buckets),
  each the better of two processes, since the machine's noise (±0.5 s) is the size of their targets.
  The warm process also measures what the times are read against: XLA's FLOP count of the dream, the
  device's matrix-product peak, and one step beside Caffe's (PSNR).
Prints a table, writes it to bench/RESULTS.md, and ends with key=value lines for scripts. JAX and torch are
imported only inside the workers, so this parent process never holds device memory that they need.
"""
import contextlib
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get('CLASSICDREAM_SHARED', ROOT.parent / 'shared'))
IMAGE = SHARED / 'images' / 'sky1024px.jpg'
CAFFE = Path(os.environ.get('CLASSICDREAM_CACHE', Path.home() / '.cache' / 'classicdream')) / 'caffe'
PYCAFFE = CAFFE / 'brocolli-caffe-9.0.2' / 'python'     # where bench/build_caffe.sh builds it
CAFFE_MODEL = CAFFE / 'model'
CAFFE_NAME = 'BVLC Caffe 9b89154 (PyPI brocolli-caffe 9.0.2), CPU only, Debian OpenBLAS'
CAFFE_PYTHON = '/usr/bin/python3'                        # pycaffe is built for Debian's own interpreter
RESULTS = ROOT / 'bench' / 'RESULTS.md'
MODEL = Path(os.environ.get('CLASSICDREAM_MODELS', ROOT / 'models')) / 'bvlc_googlenet.onnx'   # `make models`
SECOND_END = 'inception_3b/output'          # a layer the first dreams did not compile
NEW_SIZE = (1020, 572)                        # never dreamed before; its octaves share the sky's buckets
GB = 1e9


class BenchError(Exception):
    """A situation the benchmark cannot go on from, said in one line."""


# ---------------------------------------------------------------- workers: one measurement per process

def peak_rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def timed_dream(net, img, **kwargs):
    """Wall time of the notebook's call, deepdream(net, img) after np.random.seed(0), the peak RSS so far, and
    the dream."""
    import classicdream
    start = time.perf_counter()
    dream = classicdream.deepdream(net, img, seed=0, **kwargs)
    return time.perf_counter() - start, peak_rss(), dream


class BuildClock:
    """Seconds spent building programs (tracing and lowering, compiling, loading kept executables), summed
    over the pool's threads, so a sum can exceed the wall time it overlapped."""

    def __init__(self):
        from classicdream import programs
        self.seconds = {'trace': 0.0, 'compile': 0.0, 'load': 0.0}
        lower, load, clock = programs.Program.lower, programs._load, self

        class Timed:
            def __init__(self, lowered):
                self.lowered = lowered

            def compile(self):
                with clock.timing('compile'):
                    return self.lowered.compile()

        def timed_lower(program, *args, **statics):
            with self.timing('trace'):
                return Timed(lower(program, *args, **statics))

        def timed_load(path, text):
            with self.timing('load'):
                return load(path, text)
        programs.Program.lower, programs._load = timed_lower, timed_load

    @contextlib.contextmanager
    def timing(self, what):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[what] += time.perf_counter() - start

    def take(self):
        taken, self.seconds = self.seconds, dict.fromkeys(self.seconds, 0.0)
        return taken


def host_and_device(net, img):
    """A steady dream's wall time, its host work and its device work.

    Host work is what the calling thread itself spends on the CPU (time.thread_time): Python and
    dispatch. XLA runs the programs on threads of its own, so their work is not in it; device work is
    every program the dream ran, run again alone and waited for."""
    import jax
    from classicdream import programs
    calls, call = [], programs.Program.__call__

    def recording(program, *args, **statics):
        calls.append((program.executable(*args, **statics).result(), args))
        return call(program, *args, **statics)
    programs.Program.__call__ = recording
    try:
        host = time.thread_time()
        wall, _, _ = timed_dream(net, img)
        host = time.thread_time() - host
    finally:
        programs.Program.__call__ = call
    device = 0.0
    for executable, args in calls:
        jax.block_until_ready(args)
        device += min(timed_run(executable, args) for _ in range(2))      # the less disturbed of two
    return wall, host, device


def timed_run(executable, args):
    import jax
    start = time.perf_counter()
    jax.block_until_ready(executable(*args))
    return time.perf_counter() - start


def notebook_steps(run, net, src, shifts):
    """`run` (octave_steps, or its .lower) on the notebook's defaults: L2 at inception_4c, step 1.5, clipped."""
    from classicdream import objective_L2
    from classicdream.dream import DEFAULT_END
    from classicdream.graph import as_objective
    return run(net.params, src, shifts, as_objective(objective_L2), np.float32(1.5), None, nodes=net.nodes,
               end=net.tensor(DEFAULT_END), clip=True)


def dream_flops(net, shape, iter_n=10):
    """XLA's count of one default dream's work: each octave's compiled step, times iter_n steps.

    One step, because XLA's cost analysis counts a while loop's body once, whatever its trip count."""
    import jax
    from classicdream.dream import octave_sizes, octave_steps
    total = 0.0
    for h, w in octave_sizes(shape, 4, 1.4):
        lowered = notebook_steps(octave_steps.lower, net, jax.ShapeDtypeStruct((3, h, w), np.float32),
                                 jax.ShapeDtypeStruct((1, 2), np.int32))
        total += iter_n * lowered.compile().cost_analysis()['flops']
    return total


def matmul_peak():
    """The device's best float32 matrix-product rate, the ceiling the dream's FLOP/s is read against.

    On a CPU the better of XLA's and numpy's BLAS, since either could be the machine's best."""
    import jax
    import jax.numpy as jnp
    cpu = jax.default_backend() == 'cpu'
    n = 2048 if cpu else 8192
    a = np.random.RandomState(0).rand(n, n).astype(np.float32)
    x = jnp.asarray(a)
    product = jax.jit(lambda p, q: jnp.dot(p, q, precision=jax.lax.Precision.HIGHEST))
    runs = [lambda: product(x, x).block_until_ready()] + ([lambda: a @ a] if cpu else [])
    best = float('inf')
    for run in runs:
        run()
        for _ in range(5):
            start = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best


def one_step(net, img):
    """One make_step on the full-size image with the jitter shift that np.random.seed(0) draws first, as
    the Caffe worker does: the dream's own compiled step (octave_steps with one shift)."""
    from classicdream import preprocess
    from classicdream.dream import octave_steps
    shift = np.random.RandomState(0).randint(-32, 33, 2).astype(np.int32)
    return np.asarray(notebook_steps(octave_steps, net, preprocess(img), shift[None]))


def worker(mode, out, again=False):
    """`cold`: a fresh process's first dream, its steady dreams, a second layer; `warm`: a new process's first
    dream, then the yardsticks (not `again`); `newsize`: a new process's first dream at a size it has never
    seen (nor has any process before it, since the cache is keyed by the size's bucket)."""
    import jax
    import classicdream
    clock = BuildClock()
    net = classicdream.load_net()
    img = classicdream.load_image(IMAGE)
    result = {'device': jax.devices()[0].device_kind}
    if mode == 'cold':
        result['cold'], result['cold_rss'], dream = timed_dream(net, img)
        result['cold_builds'] = clock.take()
        np.save(out / f'{jax.default_backend()}_dream.npy', dream)         # what PyTorch's dream is read against
        steady, result['steady_rss'], _ = timed_dream(net, img)
        result['steady_wall'], result['host_work'], result['device_work'] = host_and_device(net, img)
        result['steady'] = min(steady, result['steady_wall'])
        result['second_end'], _, _ = timed_dream(net, img, end=SECOND_END)
        result['second_end_builds'] = clock.take()
    elif mode == 'warm':
        result['warm'], result['warm_rss'], _ = timed_dream(net, img)
        result['warm_builds'] = clock.take()
        if not again:
            result['flops'] = dream_flops(net, img.shape)
            result['peak'] = matmul_peak()
            np.save(out / f'{jax.default_backend()}_step.npy', one_step(net, img))
    else:
        from PIL import Image
        other = np.float32(Image.fromarray(np.uint8(img)).resize(NEW_SIZE, Image.BILINEAR))
        result['newsize'], result['newsize_rss'], _ = timed_dream(net, other)
        result['newsize_builds'] = clock.take()
    (out / f'{jax.default_backend()}_{mode}{"_again" if again else ""}.json').write_text(json.dumps(result))


# ---------------------------------------------------------------- the run: processes and their results

def run(what, cmd, env):
    """Run one measurement process (env: settings to add, None to remove); a failure becomes one line, the
    last its stderr said."""
    env = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        raise BenchError(f'{what} failed: {lines[-1] if lines else f"exit status {proc.returncode}"}')


# OpenBLAS's cores for CPUs with AVX2 or AVX-512 (dynamic-arch names, as OPENBLAS_VERBOSE=2 prints them);
# any other core on such a CPU is a generic fallback (Prescott: SSE3)
AVX2_CORES = {'Haswell', 'Zen', 'SkylakeX', 'Cooperlake', 'SapphireRapids'}
SKYLAKEX_FLAGS = {'avx512f', 'avx512cd', 'avx512bw', 'avx512dq', 'avx512vl'}     # what its kernels use
HASWELL_FLAGS = {'avx2', 'fma'}


def cpu_flags():
    with open('/proc/cpuinfo') as f:
        return set(next((line.split(':', 1)[1].split() for line in f if line.startswith('flags')), []))


def openblas_core(env):
    """The core Debian's OpenBLAS runs in Caffe's process with `env` (its OPENBLAS_VERBOSE=2 line), or None."""
    env = {k: v for k, v in {**os.environ, **env, 'OPENBLAS_VERBOSE': '2'}.items() if v is not None}
    probe = 'import numpy, caffe; a = numpy.ones((64, 64), numpy.float32); caffe.set_mode_cpu()'
    proc = subprocess.run([CAFFE_PYTHON, '-c', probe], env=env, capture_output=True, text=True)
    cores = [line.split(':', 1)[1].strip() for line in (proc.stdout + proc.stderr).splitlines()
             if line.startswith('Core:')]
    return cores[-1] if cores else None


def caffe_blas(env):
    """(settings for Caffe's process, {'core', 'how'}): OpenBLAS's own pick, or the core this CPU supports
    where OpenBLAS fell back to generic kernels; never over an OPENBLAS_CORETYPE the environment sets."""
    if os.environ.get('OPENBLAS_CORETYPE'):
        core = openblas_core(env) or os.environ['OPENBLAS_CORETYPE']
        return {}, {'core': core, 'how': f'OPENBLAS_CORETYPE={os.environ["OPENBLAS_CORETYPE"]} set by the '
                                          'environment, kept'}
    picked = openblas_core(env)
    flags = cpu_flags()
    fit = 'SkylakeX' if SKYLAKEX_FLAGS <= flags else 'Haswell' if HASWELL_FLAGS <= flags else None
    if picked is None or fit is None or picked in AVX2_CORES:
        return {}, {'core': picked or 'unknown', 'how': "OpenBLAS's own pick" + (
            f', kernels for {"AVX-512" if picked in ("SkylakeX", "Cooperlake", "SapphireRapids") else "AVX2"}, '
            f'which this CPU has' if fit and picked else '')}
    chosen = openblas_core({**env, 'OPENBLAS_CORETYPE': fit})
    if chosen != fit:           # this OpenBLAS would not take it: keep its own pick
        return {}, {'core': picked, 'how': f"OpenBLAS's own pick (a generic fallback; OPENBLAS_CORETYPE={fit} "
                                           f'gave {chosen})'}
    return {'OPENBLAS_CORETYPE': fit}, {
        'core': fit, 'how': f'OPENBLAS_CORETYPE={fit} set by make bench: OpenBLAS picked {picked}, a generic '
                            f'fallback, on this {"AVX-512" if fit == "SkylakeX" else "AVX2"} CPU'}


def caffe_built():
    return all(p.exists() for p in (PYCAFFE / 'caffe' / '_caffe.so', CAFFE_MODEL / 'bvlc_googlenet.caffemodel',
                                    Path(CAFFE_PYTHON)))


def run_caffe(out):
    """The notebook on real Caffe, or None (and why) when it is not built or fails."""
    if not caffe_built():
        print('Caffe reference not built here: `make reference` builds it once (about 10 min); '
              'classicdream alone this time.', file=sys.stderr)
        return None
    env = {'PYTHONPATH': str(PYCAFFE), 'GLOG_minloglevel': '2'}
    blas_env, blas = caffe_blas(env)
    print(f'Caffe: the notebook, one default dream (OpenBLAS core {blas["core"]}: {blas["how"]}) ...',
          file=sys.stderr)
    try:
        run('the Caffe reference', [CAFFE_PYTHON, str(ROOT / 'bench' / 'notebook_caffe.py'), str(CAFFE_MODEL),
                                    str(IMAGE), str(out)], {**env, **blas_env})
    except BenchError as e:
        print(f'{e}; classicdream alone this time.', file=sys.stderr)
        return None
    return dict(json.loads((out / 'caffe.json').read_text()), step=np.load(out / 'caffe_step.npy'),
                blas=blas)


def gpu_platform():
    """'gpu' when JAX sees one; asked in a throwaway process, so no GPU memory stays claimed here."""
    proc = subprocess.run([sys.executable, '-c', 'import jax; print(jax.default_backend())'],
                          capture_output=True, text=True)
    return 'gpu' if proc.stdout.strip() in ('gpu', 'cuda', 'rocm') else None


def run_classicdream(plat, out):
    """Cold, steady, warm-cache and new-size dreams on one JAX platform, with a program cache of their own."""
    env = {'CLASSICDREAM_JAX_CACHE': str(out / f'jax-cache-{plat}'),
           'JAX_PLATFORMS': 'cpu' if plat == 'cpu' else None}
    result = {}
    for mode, runs, note in (('cold', 1, 'first run with an empty cache, then steady ones and a second layer'),
                             ('warm', 2, 'new processes with the warm cache'),
                             ('newsize', 2, f'new processes, warm cache, a {NEW_SIZE[0]}x{NEW_SIZE[1]} image')):
        print(f'classicdream {plat.upper()}: {note} ...', file=sys.stderr)
        for again in range(runs):
            run(f'classicdream on {plat.upper()} ({mode})',
                [sys.executable, __file__, '--worker', mode, str(out)] + ['--again'] * again, env)
            measured = json.loads((out / f'{plat}_{mode}{"_again" if again else ""}.json').read_text())
            if again and measured[mode] >= result[mode]:
                continue            # the better of the processes, with its own peak memory and build times
            result.update(measured)
    return dict(result, step=np.load(out / f'{plat}_step.npy'), dream=np.load(out / f'{plat}_dream.npy'))


def torch_cuda():
    """Whether torch sees a CUDA device; asked in a throwaway process, as gpu_platform asks JAX."""
    proc = subprocess.run([sys.executable, '-c', 'import torch; print(torch.cuda.is_available())'],
                          capture_output=True, text=True)
    return proc.stdout.strip() == 'True'


def run_torch(out, gpu):
    """PyTorch eager on the notebook's loop, {'cpu': ..., 'gpu': ...} (each platform it could run on), or {}
    (and why, in one line) where torch is not installed."""
    if importlib.util.find_spec('torch') is None:
        print("PyTorch not installed here: `pip install -e '.[bench]'` adds its CPU wheel (`make bench` "
              "does); no PyTorch rows this time.", file=sys.stderr)
        return {}
    platforms = ['cpu']
    if gpu and torch_cuda():
        platforms.append('gpu')
    elif gpu:
        print('PyTorch here has no CUDA (the bench extra installs the CPU wheel): no PyTorch GPU row.',
              file=sys.stderr)
    results = {}
    for plat in platforms:
        device = 'cuda' if plat == 'gpu' else 'cpu'
        print(f'PyTorch {plat.upper()}: the same loop in torch eager, 2 processes of a first run and steady ones ...',
              file=sys.stderr)
        try:
            results[plat] = torch_processes(out, device, plat)
        except BenchError as e:
            print(f'{e}; no PyTorch {plat.upper()} rows this time.', file=sys.stderr)
        print(f'PyTorch {plat.upper()}: the same loop with torch.compile (inductor), a process with an empty '
              'cache (minutes), then one with it warm ...', file=sys.stderr)
        try:
            results[f'{plat}_compile'] = torch_compile_processes(out, device, plat)
        except BenchError as e:
            print(f'{e}; no torch.compile {plat.upper()} rows this time.', file=sys.stderr)
    return results


def torch_processes(out, device, plat):
    """The better first run of two fresh processes, and the best steady dream of either.

    Two, as for classicdream's new processes: torch's threads wait for one another at every operator, so
    another program on a shared core slows a run by several times, the first run above all."""
    best = {}
    for _ in range(2):
        run(f'PyTorch on {plat.upper()}', [sys.executable, str(ROOT / 'bench' / 'torch_dream.py'), str(MODEL),
                                           str(IMAGE), str(out), device], {})
        name = out / f'torch_{device}'
        measured = json.loads(name.with_suffix('.json').read_text())
        for what in ('cold', 'steady'):
            if what not in best or measured[what] < best[what]:
                best.update({what: measured[what], f'{what}_rss': measured[f'{what}_rss']})
        best.update({k: v for k, v in measured.items() if k not in best},
                    step=np.load(f'{name}_step.npy'), dream=np.load(f'{name}_dream.npy'))
    return best


def torch_compile_processes(out, device, plat):
    """torch.compile's first run in a process with an empty inductor cache (`cold`), a new process's first
    run with that cache warm (`warm`), and the best steady dream of either."""
    cache = out / f'inductor-cache-{device}'
    best = {}
    for what in ('cold', 'warm'):
        run(f'torch.compile on {plat.upper()}', [sys.executable, str(ROOT / 'bench' / 'torch_dream.py'), str(MODEL),
                                                  str(IMAGE), str(out), device, 'compile'],
            {'TORCHINDUCTOR_CACHE_DIR': str(cache)})
        name = out / f'torch_compile_{device}'
        measured = json.loads(name.with_suffix('.json').read_text())
        best.update({what: measured['cold'], f'{what}_rss': measured['cold_rss']})
        if 'steady' not in best or measured['steady'] < best['steady']:
            best.update(steady=measured['steady'], steady_rss=measured['steady_rss'])
        if what == 'cold':
            best.update({k: v for k, v in measured.items() if k not in best},
                        step=np.load(f'{name}_step.npy'), dream=np.load(f'{name}_dream.npy'))
    return best


# ---------------------------------------------------------------- the report

def psnr(a, b):
    mse = np.mean((np.float64(a) - b) ** 2)
    return 10 * np.log10(255.0 ** 2 / mse)


def torch_name(t, plat):
    return f'PyTorch {t["version"].split("+")[0]} eager, {plat.upper()}' + \
        (', channels_last' if plat == 'cpu' else f' ({t["device"]}), channels_last')


def compile_name(t, plat):
    return f'PyTorch {t["version"].split("+")[0]} torch.compile (inductor, mode {t["mode"]}), {plat.upper()}' + \
        ('' if plat == 'cpu' else f' ({t["device"]})')


def rows(caffe, results, pytorch, cpu_peak):
    """(label, seconds, peak RSS, FLOP/s ceiling) of every timed dream: each platform's PyTorch rows, then
    classicdream's."""
    if caffe:
        yield f'Caffe notebook, CPU, OpenBLAS core {caffe["blas"]["core"]}', caffe['seconds'], caffe['peak_rss'], \
            cpu_peak
    for plat, r in results.items():
        if plat in pytorch:
            t = pytorch[plat]
            yield f'{torch_name(t, plat)}, first run (2 processes, the better)', t['cold'], t['cold_rss'], r['peak']
            yield (f'{torch_name(t, plat)}, steady (2nd and 3rd calls of the 2, the best)', t['steady'],
                   t['steady_rss'], r['peak'])
        if f'{plat}_compile' in pytorch:
            t = pytorch[f'{plat}_compile']
            yield f'{compile_name(t, plat)}, first run, empty inductor cache', t['cold'], t['cold_rss'], r['peak']
            yield (f'{compile_name(t, plat)}, steady (2nd and 3rd calls of 2 processes, the best)', t['steady'],
                   t['steady_rss'], r['peak'])
            yield f'{compile_name(t, plat)}, new process, warm inductor cache', t['warm'], t['warm_rss'], r['peak']
        name = f'classicdream {plat.upper()}' + ('' if plat == 'cpu' else f' ({r["device"]})')
        yield f'{name}, first run, empty cache', r['cold'], r['cold_rss'], r['peak']
        yield f'{name}, steady (2nd and 3rd calls, the better)', r['steady'], r['steady_rss'], r['peak']
        yield f'{name}, new process, warm cache (2 processes, the better)', r['warm'], r['warm_rss'], r['peak']
        yield (f'{name}, new process, warm cache, new size {NEW_SIZE[0]}x{NEW_SIZE[1]} (2 processes, the better)',
               r['newsize'], r['newsize_rss'], r['peak'])


def table(caffe, results, pytorch):
    flops = results['cpu']['flops']
    lines = ['| deepdream(net, img), sky1024px, defaults, seed 0 | wall s | speed vs Caffe | process peak RSS | '
             'GFLOP/s | of peak |', '|---|---:|---:|---:|---:|---:|']
    for label, seconds, rss, peak in rows(caffe, results, pytorch, results['cpu']['peak']):
        ratio = f'{caffe["seconds"] / seconds:.2f}×' if caffe else '—'
        lines.append(f'| {label} | {seconds:.3g} | {ratio} | {rss / GB:.2f} GB | {flops / seconds / 1e9:.0f} | '
                     f'{flops / seconds / peak:.1%} |')
    lines += ['', f'- Work: {flops / 1e12:.3f} TFLOP per dream (XLA cost analysis of each octave\'s compiled step, '
                  'times 10 steps; the same work for every row).']
    for plat, r in results.items():
        how = 'best of XLA and numpy, n=2048' if plat == 'cpu' else f'{r["device"]}, XLA, n=8192'
        lines.append(f'- {plat.upper()} float32 matrix-product peak ({how}): {r["peak"] / 1e9:.0f} GFLOP/s; '
                     '"of peak" is GFLOP/s over it.')
        lines.append(f'- {plat.upper()} breakdown. Steady dream: {r["steady_wall"]:.3g} s wall; device work '
                     f'{r["device_work"]:.3g} s (each program it ran, timed alone); host work '
                     f'{r["host_work"] * 1e3:.0f} ms (the calling thread\'s own CPU time: Python and dispatch). '
                     f'Building programs, summed over the compile '
                     f'pool\'s threads: {builds(r["cold_builds"])} in the first run; {builds(r["warm_builds"])} in '
                     f'the warm process; {builds(r["newsize_builds"])} at the new size; a second layer '
                     f'({SECOND_END}) in the same process: {r["second_end"]:.3g} s, {builds(r["second_end_builds"])}.')
    if caffe:
        lines.append(f'- Caffe\'s BLAS: Debian OpenBLAS, core {caffe["blas"]["core"]} ({caffe["blas"]["how"]}).')
        for plat, r in results.items():
            lines.append(f'- Step parity, {plat.upper()}: one make_step on the full image, seed-0 jitter shift, '
                         f'classicdream vs Caffe (OpenBLAS core {caffe["blas"]["core"]}): PSNR '
                         f'{psnr(r["step"], caffe["step"]):.1f} dB, max |diff| '
                         f'{abs(r["step"] - caffe["step"]).max():.2f} levels.')
    else:
        lines.append('- No Caffe reference in this run (`make reference` builds it), so no ratios or step parity.')
    for plat, t in pytorch.items():
        if plat.endswith('_compile'):
            continue
        r = results[plat]
        caffe_step = f'; PyTorch vs Caffe: {psnr(t["step"], caffe["step"]):.1f} dB' if caffe and plat == 'cpu' else ''
        lines.append(f'- PyTorch anchor, {plat.upper()} ({t["threads"]} threads, bench/torch_dream.py): '
                     f'classicdream\'s steady dream is {t["steady"] / r["steady"]:.2f}× as fast as PyTorch\'s steady '
                     f'one, its first run (empty cache) {t["cold"] / r["cold"]:.2f}× as fast as PyTorch\'s first run. '
                     f'The same computation: one make_step on the full image, seed-0 shift, PyTorch vs classicdream: '
                     f'PSNR {psnr(t["step"], r["step"]):.1f} dB, max |diff| {abs(t["step"] - r["step"]).max():.2f} '
                     f'levels{caffe_step}; the whole seed-0 dream vs classicdream\'s: '
                     f'{psnr(t["dream"], r["dream"]):.1f} dB (40 steps of a chaotic map: float noise flips near-ties '
                     f'in pooling, reference README fact 6).')
    for plat in results:
        if f'{plat}_compile' in pytorch:
            t, r = pytorch[f'{plat}_compile'], results[plat]
            lines.append(f'- torch.compile anchor, {plat.upper()} ({t["threads"]} threads, bench/torch_dream.py '
                         f'compile: the forward compiled by TorchInductor, mode {t["mode"]}, dynamic=False, the '
                         f'backward by AOTAutograd): classicdream\'s steady dream is {t["steady"] / r["steady"]:.2f}× '
                         f'as fast as its steady one, its first run (empty cache) {t["cold"] / r["cold"]:.2f}× as fast '
                         f'as its first run (empty inductor cache), a new process with the warm cache '
                         f'{t["warm"] / r["warm"]:.2f}× as fast. The same computation: one make_step, seed-0 shift, '
                         f'vs classicdream: PSNR {psnr(t["step"], r["step"]):.1f} dB, max |diff| '
                         f'{abs(t["step"] - r["step"]).max():.2f} levels; the whole dream: '
                         f'{psnr(t["dream"], r["dream"]):.1f} dB.')
    if not pytorch:
        lines.append("- No PyTorch in this run (`pip install -e '.[bench]'` adds it), so no PyTorch rows.")
    return '\n'.join(lines)


def builds(seconds):
    return ', '.join(f'{what} {s:.2f} s' for what, s in seconds.items())


def machine():
    cpu = next((line.split(':', 1)[1].strip() for line in open('/proc/cpuinfo') if line.startswith('model name')),
               platform.processor())
    memory = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2 ** 30
    return f'{cpu}, {os.cpu_count()} cores, {memory:.0f} GiB memory, {platform.system()} {platform.release()}'


def versions(caffe, pytorch):
    v = importlib.metadata.version
    text = f'Python {platform.python_version()}, jax {v("jax")}, jaxlib {v("jaxlib")}, numpy {v("numpy")}, ' \
           f'scipy {v("scipy")}'
    text += f', torch {pytorch["cpu"]["version"]}' if 'cpu' in pytorch else ''
    text += f', torch.compile mode {pytorch["cpu_compile"]["mode"]}' if 'cpu_compile' in pytorch else ''
    return text + (f'; reference: {CAFFE_NAME}' if caffe else '')


def write_results(text, caffe, pytorch, load):
    """RESULTS.md: the table with what it was measured on; the load says whether others shared the cores."""
    date = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
    title = 'the 2015 notebook on real Caffe' + (', and PyTorch eager and torch.compile' if pytorch else '')
    RESULTS.write_text(f'# Benchmark: classicdream vs {title}\n\n'
                       f'Made by `make bench` on {date}.\n\n- Machine: {machine()}\n'
                       f'- Versions: {versions(caffe, pytorch)}\n'
                       f'- Load average (1 min) when it started: {load:.2f}\n'
                       f'\n{text}\n\nTo reproduce: `make reference` (once), then `make bench` (it installs the '
                       f'`bench` extra, torch\'s CPU wheel, first).\n')


def key_values(caffe, results, pytorch):
    pairs = {}
    for plat, r in results.items():
        pairs.update({f'classicdream_{plat}_s': r['steady'], f'classicdream_{plat}_cold_s': r['cold'],
                      f'classicdream_{plat}_warm_s': r['warm'], f'classicdream_{plat}_newsize_s': r['newsize'],
                      f'classicdream_{plat}_second_end_s': r['second_end'],
                      f'classicdream_{plat}_warm_over_steady_s': r['warm'] - r['steady'],
                      f'classicdream_{plat}_newsize_over_steady_s': r['newsize'] - r['steady'],
                      f'device_work_{plat}_s': r['device_work'],
                      f'host_overhead_{plat}_s': r['host_work'],
                      **{f'{what}_{plat}_cold_s': v for what, v in r['cold_builds'].items()}})
    if caffe:
        cpu = results['cpu']
        pairs = {'caffe_cpu_s': caffe['seconds'], 'caffe_openblas_core': caffe['blas']['core'], **pairs, 'speedup_vs_caffe_cpu': caffe['seconds'] / cpu['steady'],
                 'cold_speedup_vs_caffe_cpu': caffe['seconds'] / cpu['cold'],
                 'step_psnr_db': psnr(cpu['step'], caffe['step'])}
    for plat, t in pytorch.items():
        if plat.endswith('_compile'):
            plat = plat[:-len('_compile')]
            r = results[plat]
            pairs.update({f'torch_compile_{plat}_s': t['steady'], f'torch_compile_{plat}_cold_s': t['cold'],
                          f'torch_compile_{plat}_warm_s': t['warm'],
                          f'speedup_vs_torch_compile_{plat}': t['steady'] / r['steady'],
                          f'cold_speedup_vs_torch_compile_{plat}': t['cold'] / r['cold'],
                          f'warm_speedup_vs_torch_compile_{plat}': t['warm'] / r['warm'],
                          f'torch_compile_{plat}_step_psnr_db': psnr(t['step'], r['step']),
                          f'torch_compile_{plat}_dream_psnr_db': psnr(t['dream'], r['dream'])})
            continue
        r = results[plat]
        pairs.update({f'torch_{plat}_s': t['steady'], f'torch_{plat}_cold_s': t['cold'],
                      f'speedup_vs_torch_{plat}': t['steady'] / r['steady'],
                      f'cold_speedup_vs_torch_{plat}': t['cold'] / r['cold'],
                      f'torch_{plat}_step_psnr_db': psnr(t['step'], r['step']),
                      f'torch_{plat}_dream_psnr_db': psnr(t['dream'], r['dream'])})
    return '\n'.join(f'{k}={v}' if isinstance(v, str) else f'{k}={v:.3f}' for k, v in pairs.items())


def main():
    if not IMAGE.is_file():
        raise BenchError(f'{IMAGE} not found: set CLASSICDREAM_SHARED to the shared folder')
    if not MODEL.is_file():
        raise BenchError(f'{MODEL} not found: `make models` writes it')
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix='classicdream-bench-') as tmp:
        out = Path(tmp)
        caffe = run_caffe(out)
        gpu = gpu_platform()
        pytorch = run_torch(out, gpu)
        results = {'cpu': run_classicdream('cpu', out)}
        if gpu:
            results['gpu'] = run_classicdream('gpu', out)
    text = table(caffe, results, pytorch)
    write_results(text, caffe, pytorch, load)
    print(f'\n{text}\n\n(written to {RESULTS.relative_to(ROOT)})\n')
    print(key_values(caffe, results, pytorch))


if __name__ == '__main__':
    try:
        if sys.argv[1:2] == ['--worker']:
            worker(sys.argv[2], Path(sys.argv[3]), again='--again' in sys.argv[4:])
        else:
            main()
    except BenchError as e:
        sys.exit(f'make bench: {e}')
    except KeyboardInterrupt:
        sys.exit('make bench: interrupted')
    except Exception as e:                  # a worker's last stderr line is all its parent shows
        sys.exit(f'{type(e).__name__}: {e}')
