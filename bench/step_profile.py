"""Where one dream step spends its time: XLA's own per-operation trace of an octave's compiled steps.

Speed work on the net is decided here, not by guesses: a change that looks faster for one operator alone
can make XLA fuse the whole step worse (the max-pool gathers did, at first). This compiles octave_steps for
the notebook's defaults at one size (the sky's top octave by default: 575x1024 in its 576x1024 bucket),
runs it once to warm up and once under jax.profiler with XLA:CPU's per-thunk trace events on, and prints
the time per step by kind of operation (XLA's fusion names: ynn_fusion is the convolution library), then
the slowest single operations with their output shapes.

    python bench/step_profile.py                 # the sky's top octave
    python bench/step_profile.py --height=294 --width=522 --top=20
    python bench/step_profile.py --exact         # unpadded: what running in a bucket costs beside it

Times are per step, averaged over `steps`; the machine is shared, so compare runs made one after another.
"""
import collections
import gzip
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

os.environ['XLA_FLAGS'] = os.environ.get('XLA_FLAGS', '') + ' --xla_cpu_enable_xprof_traceme=true'

import fire  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import classicdream  # noqa: E402
from classicdream import dream  # noqa: E402
from classicdream.programs import bucket  # noqa: E402
from classicdream.graph import as_objective, objective_L2  # noqa: E402

SKY = Path(os.environ.get('CLASSICDREAM_SHARED', Path(__file__).resolve().parent.parent.parent / 'shared')) \
    / 'images' / 'sky1024px.jpg'


def thunk_times(compiled, args):
    """{operation name: microseconds} of one run of `compiled`, from its trace."""
    with tempfile.TemporaryDirectory() as folder:
        jax.profiler.start_trace(folder)
        jax.block_until_ready(compiled(*args))
        jax.profiler.stop_trace()
        trace = next(Path(folder).rglob('*.trace.json.gz'))
        events = json.load(gzip.open(trace))['traceEvents']
    times = collections.Counter()
    for event in events:
        if event.get('ph') == 'X' and re.fullmatch(r'[a-z][a-z0-9_\-]*(\.\d+)?', event.get('name', '')):
            times[event['name']] += event['dur']
    return times


def main(height=575, width=1024, steps=2, end=dream.DEFAULT_END, top=15, exact=False):
    net = classicdream.load_net()
    shape = (height, width) if exact else (bucket(height), bucket(width))
    img = dream.pad(classicdream.load_image(SKY)[:height, :width], shape)
    shifts = np.random.RandomState(0).randint(-32, 33, (steps, 2)).astype(np.int32)
    args = (net.params, dream.preprocessed(img), shifts, as_objective(objective_L2), np.float32(1.5),
            None if exact else np.int32((height, width)))
    compiled = dream.octave_steps.lower(*args, nodes=net.nodes, end=net.tensor(end), clip=True).compile()
    jax.block_until_ready(compiled(*args))
    start = time.perf_counter()
    times = thunk_times(compiled, args)
    wall = (time.perf_counter() - start) / steps
    kinds, counts = collections.Counter(), collections.Counter()
    for name, us in times.items():
        kind = re.sub(r'\.\d+$', '', name)
        kinds[kind] += us
        counts[kind] += 1
    total = sum(times.values())
    print(f'{width}x{height} in a {shape[1]}x{shape[0]} bucket, {end}: {wall * 1e3:.0f} ms per step (traced), '
          f'operations {total / 1e3 / steps:.0f} ms')
    for kind, us in kinds.most_common():
        if us / total >= 0.005:
            print(f'{us / 1e3 / steps:8.1f} ms {us / total:6.1%}  {counts[kind]:4d}x  {kind}')
    text = compiled.as_text()
    print(f'\nslowest {top}:')
    for name, us in times.most_common(top):
        found = re.search(rf'%{re.escape(name)} = (\S+) ', text)
        print(f'{us / 1e3 / steps:8.1f} ms  {name}  {found.group(1) if found else ""}')


if __name__ == '__main__':
    fire.Fire(main)
