"""How coarse the size buckets should be: programs compiled against pixels computed for nothing.

For a set of image sizes, each bucket granularity (programs.bucket with BUCKET_STEPS steps per power of
two; 0 = exact sizes) gives how many different octave programs the default 4-octave dream needs (each
costs a compile, ~2-3 s on the 2-core CPU) and how many more pixels the padded octaves compute
(steady-state cost). Pure arithmetic on the dream's own octave sizes: no net, no timing.

    python bench/buckets.py
"""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from classicdream import programs  # noqa: E402
from classicdream.dream import octave_sizes  # noqa: E402

COMMON = [(480, 640), (600, 800), (768, 1024), (720, 1280), (960, 1280), (900, 1600), (1080, 1920),
          (575, 1024), (240, 320), (1024, 768), (1280, 720), (1080, 1080)]


def photo_sizes(n=300, seed=0):
    """Sizes a folder of photos has: width 480-1280, aspect 0.5-1.0, landscape or portrait."""
    rng = np.random.default_rng(seed)
    w = rng.integers(480, 1281, n)
    h = np.int64(w * rng.uniform(0.5, 1.0, n))
    return [(a, b) if rng.random() < 0.7 else (b, a) for a, b in zip(h, w)]


def cost(sizes, steps):
    """(programs, waste): octaves are padded to the octaves of the image's bucket, as deepdream does."""
    bucket = (lambda s: s) if steps == 0 else lambda s: programs.bucket(s, steps)
    programs_needed, true, padded = set(), 0, 0
    for h, w in sizes:
        for size, shape in zip(octave_sizes((h, w), 4, 1.4), octave_sizes((bucket(h), bucket(w)), 4, 1.4)):
            programs_needed.add(shape)
            true += size[0] * size[1]
            padded += shape[0] * shape[1]
    return len(programs_needed), padded / true - 1


def main():
    print('| steps per power of two | programs, 12 common sizes | waste | programs, 300 photo sizes | waste |')
    print('|---:|---:|---:|---:|---:|')
    for steps in (0, 64, 32, 16, 8, 4):
        common, photos = cost(COMMON, steps), cost(photo_sizes(), steps)
        label = 'exact sizes' if steps == 0 else str(steps) + (' (chosen)' if steps == programs.BUCKET_STEPS else '')
        print(f'| {label} | {common[0]} | {common[1]:.1%} | {photos[0]} | {photos[1]:.1%} |')


if __name__ == '__main__':
    main()
