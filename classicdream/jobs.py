"""One device, many visitors: dreams run one at a time, in the order they were asked for.

The page (serve.py) hands each visitor's dream to a ``Device``: one thread that owns the net and runs
the dreams in turn, so two visitors never share the device's memory and every dream runs at full speed.
A ``Job`` reports where it is (its place in the queue, each octave as it is made, the result) as
events, and can be cancelled: a waiting job is dropped, a running one stops at its next octave.
"""
import itertools
import queue
import threading


class Cancelled(Exception):
    """The dream was cancelled (the visitor pressed Stop, or left the page)."""


class Job:
    """One piece of device work: `work(job)` does it, calling job.report(kind, ...) as it goes (job.on_octave
    after each octave of a dream), which raises Cancelled once the job is cancelled.

    `events()` yields ('waiting', n ahead) while it waits (again every `poll` seconds if n changes), what
    the work reports, then ('done', result) or ('failed', exception); once cancelled, ('stopping',) every
    `poll` seconds until the work stops, so a listener that is told to go can go at once."""

    def __init__(self, device, work, owner=None):
        self.device, self.work, self.owner = device, work, owner
        self.id = next(device.ids)
        self._events = queue.Queue()
        self._cancelled = threading.Event()

    def cancel(self):
        self._cancelled.set()

    @property
    def cancelled(self):
        return self._cancelled.is_set()

    def report(self, kind, index, *details):
        """Tell the visitor that `kind` number `index` (from 0) is done; stop here if cancelled."""
        if self.cancelled:
            raise Cancelled(f'cancelled after {kind} {index + 1}')
        self._events.put((kind, index, *details))

    def on_octave(self, octave, size, image):
        """Dreamer.dream's on_octave: each octave's image goes to the visitor (computed only if wanted)."""
        self.report('octave', octave, size, image() if not self.cancelled else None)

    def events(self, poll=0.5):
        ahead = None
        while True:
            try:
                event = self._events.get(timeout=poll)
            except queue.Empty:
                if self.cancelled:
                    yield 'stopping',
                    continue
                now = self.device.ahead(self)
                if now is not None and now != ahead:
                    ahead = now
                    yield 'waiting', now
                continue
            yield event
            if event[0] in ('done', 'failed'):
                return

    def _run(self):
        try:
            if self.cancelled:
                raise Cancelled('cancelled before it started')
            self._events.put(('done', self.work(self)))
        except Exception as e:        # noqa: BLE001 -- the visitor sees it; the device goes on
            self._events.put(('failed', e))


class Device:
    """A thread that runs jobs one after another, in the order submitted."""

    def __init__(self, name='classicdream-device'):
        self.ids = itertools.count(1)
        self._queue = []                        # waiting jobs, first next; the running one is self._running
        self._running = None
        self._changed = threading.Condition()
        threading.Thread(target=self._serve, name=name, daemon=True).start()

    def submit(self, work, owner=None):
        job = Job(self, work, owner)
        with self._changed:
            self._queue.append(job)
            self._changed.notify()
        return job

    def ahead(self, job):
        """How many dreams run before `job` (the running one counts), or None once it is running."""
        with self._changed:
            if job not in self._queue:
                return None
            return self._queue.index(job) + (self._running is not None)

    def cancel(self, owner):
        """Cancel every job of `owner` (a visitor's session), waiting or running; how many there were."""
        with self._changed:
            jobs = [job for job in self._queue + [self._running] if job is not None and job.owner == owner]
        for job in jobs:
            job.cancel()
        return len(jobs)

    def _serve(self):
        while True:
            with self._changed:
                while not self._queue:
                    self._changed.wait()
                self._running = self._queue.pop(0)
            try:
                self._running._run()
            finally:
                with self._changed:
                    self._running = None
