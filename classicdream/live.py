"""Dreaming a camera live: each frame dreamed small, blended with the dream before, the newest frame first.

A live stream is many tiny dreams (a 320x240 frame, one octave of two steps) on the page's one device
(jobs.Device). Each frame is a job of its own, and a visitor has at most one in flight: camera frames that
arrive while it runs are dropped, all but the newest, which goes next. So no backlog grows, and a dream
that any visitor queues meanwhile runs before the next live frame (the live view pauses for it). Each frame
starts from ``blend * previous dream + (1 - blend) * frame``, as ``classicdream video --blend`` does, with
the same seed every frame, so the patterns of a still scene hold still instead of flickering.

The programs of the live size are asked for when the stream starts; until they are built, LiveFeed
dreams nothing and the page shows the camera, saying so, instead of freezing on a device busy compiling.
"""
import threading
import time
from collections import deque
from functools import partial

import numpy as np
from PIL import Image

from .clip import blended
from .dream import ask_for, random_state
from .graph import objective_L2

SIZES = {'320x240': (240, 320), '640x480': (480, 640)}      # (h, w) boxes a camera frame is fitted into
FPS_WINDOW_S = 3.0                                          # frames per second over the last few seconds


def fitted_frame(frame, size):
    """A camera frame (H, W, 3 or 4, uint8) scaled to fit the (h, w) box `size`, its aspect kept, as the
    dream's float32 RGB on 0..255."""
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] not in (3, 4) or 0 in frame.shape:
        raise ValueError(f'a camera frame must be an H x W x 3 image, got shape {frame.shape}')
    h, w = frame.shape[:2]
    scale = min(size[0] / h, size[1] / w)
    fit = max(1, round(h * scale)), max(1, round(w * scale))
    im = Image.fromarray(np.uint8(frame[..., :3]))
    if fit != (h, w):
        im = im.resize(fit[::-1], Image.BILINEAR)
    return np.asarray(im, np.float32)


class LiveDreamer:
    """One stream's dream: its options (a Dreamer, quiet and unmasked), the blend, and the last dream,
    which the next frame starts from."""

    def __init__(self, dreamer, blend=0.5):
        self.dreamer, self.blend = dreamer, float(blend)
        self.previous = None
        self._programs, self._asked = {}, None

    def programs(self, shape):
        """The futures of the programs that frames of `shape` run, asked for once per shape."""
        if shape not in self._programs:
            d = self.dreamer
            self._asked = self._asked or time.monotonic()
            self._programs[shape] = ask_for(d.net, shape, d.iter_n, d.octave_n, d.octave_scale, d.end, d.clip,
                                            d.objective() or objective_L2, None, d.lapnorm, d.prep)
        return self._programs[shape]

    def ready(self, shape):
        return all(future.done() for future in self.programs(shape))

    def waited(self):
        """Seconds since the programs were first asked for."""
        return time.monotonic() - self._asked if self._asked else 0.0

    def dream(self, frame):
        """The dream of one fitted camera frame, blended with the last dream of the same size: uint8 HWC."""
        previous = self.previous if self.previous is not None and self.previous.shape == frame.shape else None
        d = self.dreamer
        dream = d.finished(d.dream(blended(previous, frame, self.blend), random_state(d.seed)), frame)
        self.previous = np.float32(np.clip(dream, 0, 255))
        return np.uint8(self.previous)


class LiveFeed:
    """A visitor's camera frames onto the shared device: at most one in flight; while it runs, a newer frame
    replaces the one waiting (the replaced one is counted as dropped)."""

    def __init__(self, device, owner=None):
        self.device, self.owner = device, owner
        self._changed = threading.Condition()
        self._next = None                          # (LiveDreamer, frame) waiting for the device
        self._job = None                           # the frame on the device (or queued there)
        self._times = deque(maxlen=256)            # when each dreamed frame came back
        self.latest, self.dreamed, self.dropped, self.error, self.closed = None, 0, 0, None, False
        self.live, self.options = None, None       # the LiveDreamer its frames use, and what it was made of

    def offer(self, live, frame):
        """A new camera frame: dreamed next, unless a newer one comes before the device is free."""
        with self._changed:
            if self.closed:
                return
            if self._next is not None:
                self.dropped += 1
            self._next = (live, frame)
            self._submit()

    def _submit(self):
        if self._job is not None and self._job.cancelled:      # cancelled on the device (the page's Stop)
            self._job = None
        if self._job is None and self._next is not None and not self.closed:
            live, frame = self._next
            self._next = None
            self._job = self.device.submit(partial(self._dream, live, frame), self.owner)

    def _dream(self, live, frame, job):
        """The device's work for one frame; the next waiting frame is queued as it finishes, behind any
        dream queued meanwhile."""
        try:
            out, error = live.dream(frame), None
        except Exception as e:        # noqa: BLE001 -- the visitor sees it as one line; the feed goes on
            out, error = None, e
        with self._changed:
            if error is None:
                self.latest = out
                self.dreamed += 1
                self._times.append(time.monotonic())
            self.error = error
            if self._job is job:
                self._job = None
            self._submit()
            self._changed.notify_all()

    def wait(self, dreamed, timeout):
        """Wait until more than `dreamed` frames are done (or an error, or the end): the count now."""
        with self._changed:
            self._changed.wait_for(lambda: self.dreamed > dreamed or self.error is not None or self.closed,
                                   timeout)
            return self.dreamed

    def behind(self):
        """How many dreams run on the device before this feed's next frame (0: none; it is running)."""
        with self._changed:
            job = self._job
        return (self.device.ahead(job) or 0) if job is not None else 0

    def fps(self, now=None):
        """Dreamed frames per second over the last FPS_WINDOW_S seconds; None before two frames."""
        now = time.monotonic() if now is None else now
        with self._changed:
            recent = [t for t in self._times if now - t <= FPS_WINDOW_S]
        if len(recent) < 2 or recent[-1] == recent[0]:
            return None
        return (len(recent) - 1) / (recent[-1] - recent[0])

    def close(self):
        """End the stream: the waiting frame is dropped and the one on the device cancelled, so the device is
        free once that one frame is done (a fraction of a second)."""
        with self._changed:
            self.closed = True
            self._next = None
            job, self._job = self._job, None
            self._changed.notify_all()
        if job is not None:
            job.cancel()
