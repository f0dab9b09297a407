"""The GPU's measured peak memory of dreams beside memory.estimate's prediction (issue 18: within 25%).

Each case runs in its own process, so the device's peak_bytes_in_use belongs to that dream alone; the
parameters, which the estimate leaves out on a GPU (they are already on the device), are subtracted.
Prints a table and `gpu_memory_worst_error=` (the largest |estimate / measured - 1|). Run on a GPU only.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKY = Path(os.environ.get('CLASSICDREAM_SHARED', ROOT.parent / 'shared')) / 'images' / 'sky1024px.jpg'
END = 'inception_4c/output'
CASES = [(1024, 575, 4, None), (2048, 1152, 1, None), (2048, 2048, 1, None), (4096, 4096, 1, 1024)]


def measure(w, h, octave_n, tile):
    """One dream's device peak less the parameters, and the estimate for it, in a fresh process."""
    import jax
    import numpy as np
    from PIL import Image
    import classicdream
    from classicdream import memory
    net = classicdream.load_net()
    params = sum(x.nbytes for x in jax.tree_util.tree_leaves(net.params))
    img = np.float32(Image.open(SKY).convert('RGB').resize((w, h), Image.BILINEAR))
    classicdream.deepdream(net, img, iter_n=1, octave_n=octave_n, tile=tile)
    peak = jax.devices()[0].memory_stats()['peak_bytes_in_use'] - params
    estimate = memory.estimate(net, (h, w), octave_n, 1.4, END, tile, memory.GPU)
    print(json.dumps({'peak': peak, 'estimate': estimate}))


def main():
    worst = 0.0
    print('| dream (iter_n=1) | octaves | device peak less params, GB | estimate, GB | error |\n|---|---:|---:|---:|---:|')
    for w, h, octave_n, tile in CASES:
        out = subprocess.run([sys.executable, __file__, str(w), str(h), str(octave_n), str(tile or 0)],
                             capture_output=True, text=True, check=True).stdout
        r = json.loads(out.splitlines()[-1])
        error = r['estimate'] / r['peak'] - 1
        worst = max(worst, abs(error))
        print(f'| {w}×{h}{f" --tile={tile}" if tile else ""} | {octave_n} | {r["peak"] / 1e9:.2f} | '
              f'{r["estimate"] / 1e9:.2f} | {error:+.0%} |', flush=True)
    print(f'gpu_memory_worst_error={worst:.3f}')


if __name__ == '__main__':
    if len(sys.argv) > 1:
        w, h, octave_n, tile = map(int, sys.argv[1:5])
        measure(w, h, octave_n, tile or None)
    else:
        main()
