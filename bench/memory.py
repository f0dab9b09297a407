"""Calibrate classicdream/memory.py: measure dreams' peak memory and fit the estimate's coefficients.

`python bench/memory.py` dreams each case below (the sky resized) in a fresh process with no compile
cache, takes its maximum resident set size, and prints the table the README shows: peak, the current
estimate, its error, and the coefficients that least-squares (relative error) would fit to these peaks.
Run it after a change to the dream's step or the compiled programs, and copy the coefficients into
memory.CPU if they moved. It takes about 10 minutes on 2 cores and needs about 6 GB free.
"""
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SKY = Path(os.environ.get('CLASSICDREAM_SHARED', ROOT.parent / 'shared')) / 'images' / 'sky1024px.jpg'
END = 'inception_4c/output'

# (width, height, octave_n, options): every one with --iter_n=1 unless its options say otherwise
CASES = [(256, 256, 1, []), (512, 512, 1, []), (1024, 575, 1, []), (1024, 575, 4, []), (2048, 1152, 1, []),
         (512, 512, 1, ['--end=conv2/3x3']), (512, 512, 1, ['--end=inception_3b/output']),
         (2048, 2048, 1, ['--tile=512']), (1024, 575, 1, ['--tile=256']), (2048, 1152, 4, []),
         (1024, 575, 4, ['--iter_n=10']), (2048, 2048, 1, []), (4096, 4096, 1, ['--tile=512']),
         (2048, 2048, 3, ['--tile=384'])]


def peak(argv):
    """Maximum resident set size (bytes) of `classicdream argv` in a fresh process, compiling included."""
    child = ('import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); '
             'print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)')
    result = subprocess.run([sys.executable, '-c', child, sys.executable, '-m', 'classicdream', *argv],
                            capture_output=True, text=True, env=dict(os.environ, CLASSICDREAM_JAX_CACHE=''))
    if result.returncode:
        raise SystemExit(result.stderr)
    return int(result.stdout.split()[-1])


def main():
    import classicdream
    from classicdream import memory
    net = classicdream.load_net()
    rows, weighed, rest = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for w, h, octave_n, options in CASES:
            img = Path(tmp) / f'{w}x{h}.png'
            if not img.exists():
                Image.open(SKY).resize((w, h), Image.BILINEAR).save(img)
            argv = ['dream', str(img), f'--out={tmp}/out.jpg', '--iter_n=1', f'--octave_n={octave_n}', '--quiet',
                    *options]
            flags = dict(o[2:].split('=', 1) for o in options)
            end, tile = flags.get('end', END), int(flags['tile']) if 'tile' in flags else None
            measured = peak(argv)
            terms, images = memory.terms(net, (h, w), octave_n, 1.4, end, tile)
            estimate = memory.estimate(net, (h, w), octave_n, 1.4, end, tile, memory.CPU)
            rows.append((f'{w}×{h} {" ".join(options)}'.strip(), octave_n, measured, estimate))
            weighed.append(terms)
            rest.append(measured - images)
            print(f'| {rows[-1][0]} | {octave_n} | {measured / 1e9:.2f} | {estimate / 1e9:.2f} | '
                  f'{100 * (estimate / measured - 1):+.0f}% |', flush=True)
    a, b = np.array(weighed), np.array(rest)
    scale = 1 / np.array([m for _, _, m, _ in rows])
    fit, *_ = np.linalg.lstsq(a * scale[:, None], b * scale, rcond=None)
    print('fitted: ' + ', '.join(f'{name}={value:.3g}' for name, value in zip(memory.Model.__annotations__, fit)))


if __name__ == '__main__':
    main()
