"""`make bench-live`: frames per second of the page's live view, without a browser.

A camera is played from a generated 640x480 clip (a pan across the notebook's sky) at 30 frames per second
into the loop the Live tab runs (live.LiveFeed on a jobs.Device: one frame on the device at a time, the
newest next), for each live size with the tab's defaults (1 octave x 2 steps at inception_4c/output,
blend 0.5). The programs are built first and not timed. Prints key=value lines, with cpu or gpu for the device that ran:
- live_fps_{device}_{size}= dreamed frames per second, as a visitor sees them;
- live_frame_ms_{device}_{size}= the device's time for one frame, back to back, and
  live_steps_ms_{device}_{size}= the part of it spent in the octave's compiled steps (the net's forward and
  backward passes): what is left is the frame's way in and out (fitting, blending, pre- and deprocessing).
Options: --seconds=10 (per size), --iter_n=2 --octave_n=1.
"""
import sys
import threading
import time

import jax
import numpy as np

from classicdream import load_net
from classicdream.dream import DEFAULT_END, octave_steps, pad, plan, preprocessed
from classicdream.dreamer import Dreamer
from classicdream.graph import as_objective, objective_L2
from classicdream.jobs import Device
from classicdream.live import SIZES, LiveDreamer, LiveFeed, fitted_frame

CAMERA_FPS = 30


def camera_frames(n=60):
    """n frames of a camera panning across the notebook's sky (the copy the package ships), 640x480 uint8
    RGB as a webcam gives them: generated here, so no video decoder is needed (a lent GPU has none)."""
    from PIL import Image
    from classicdream.serve import SKY
    sky = np.asarray(Image.open(SKY).convert('RGB'))
    x = np.linspace(0, sky.shape[1] - 640, n).round().astype(int)
    return [np.ascontiguousarray(sky[40:520, i:i + 640]) for i in x]


def streamed_fps(device, live, frames, size, seconds):
    """Frames per second that come back when the camera offers CAMERA_FPS frames a second for `seconds`."""
    feed = LiveFeed(device)
    stop = time.monotonic() + seconds
    i = 0

    def camera():
        nonlocal i
        while time.monotonic() < stop:
            feed.offer(live, fitted_frame(frames[i % len(frames)], size))
            i += 1
            time.sleep(1 / CAMERA_FPS)
    thread = threading.Thread(target=camera)
    thread.start()
    feed.wait(0, 60)                            # time from the first dreamed frame on
    first, counted = time.monotonic(), feed.dreamed
    thread.join()
    done = feed.dreamed - counted
    elapsed = time.monotonic() - first
    feed.close()
    return done / elapsed, feed.dropped, i


def steps_ms(net, d, frame, repeats=10):
    """Milliseconds of the octave's compiled steps alone, on a preprocessed frame."""
    _, shapes, _, padded, extents, steps = plan(net, frame.shape, d.octave_n, d.octave_scale, d.end, d.clip, None,
                                                    0, d.prep)
    src = preprocessed(pad(frame, shapes[0]), prep=d.prep)
    shifts = np.zeros((d.iter_n, 2), np.int32)
    run = lambda: octave_steps(net.params, src, shifts, as_objective(objective_L2), np.float32(d.step_size),  # noqa
                               extents[0] if padded else None, None, **steps)
    jax.block_until_ready(run())
    start = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(run())
    return (time.perf_counter() - start) / repeats * 1000


def main(seconds=10.0, iter_n=2, octave_n=1):
    net = load_net(None)
    platform = 'gpu' if jax.devices()[0].platform in ('gpu', 'cuda', 'rocm') else 'cpu'
    d = Dreamer(DEFAULT_END, iter_n, octave_n, 1.4, 1.5, 32, True, 0, True).using(net)
    frames = camera_frames()
    device = Device()
    print(f'end={d.end}\niter_n={iter_n}\noctave_n={octave_n}\nblend=0.5\ncamera_fps={CAMERA_FPS}')
    for name, size in SIZES.items():
        live = LiveDreamer(d, 0.5)
        frame = fitted_frame(frames[0], size)
        for future in live.programs(frame.shape):
            future.result()
        for f in frames[:3]:                      # first calls: loading, allocation
            live.dream(fitted_frame(f, size))
        start = time.perf_counter()
        for f in frames[:10]:
            live.dream(fitted_frame(f, size))
        frame_ms = (time.perf_counter() - start) / 10 * 1000
        fps, dropped, offered = streamed_fps(device, live, frames, size, seconds)
        print(f'live_fps_{platform}_{name}={fps:.2f}')
        print(f'live_frame_ms_{platform}_{name}={frame_ms:.1f}')
        print(f'live_steps_ms_{platform}_{name}={steps_ms(net, d, frame):.1f}')
        print(f'live_dropped_{platform}_{name}={dropped} of {offered} camera frames')


if __name__ == '__main__':
    options = dict(a[2:].split('=', 1) for a in sys.argv[1:])
    main(float(options.get('seconds', 10)), int(options.get('iter_n', 2)), int(options.get('octave_n', 1)))
