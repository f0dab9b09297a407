"""Where a batch of dreams runs: here, one after another, or on a Ray cluster, one task per dream.

A batch is a sequence of lanes. A lane is ``(start, items)``: ``items`` yields ``(key, args)`` in
order, and each item is ``fn(tool, previous, *args)``, where ``previous`` is the result of the item
before it in its lane (``start`` for the first). A folder or an atlas is lanes of one item; a video
blended frame to frame is lanes of consecutive frames. ``tool`` holds the options and the net, and
``fn`` returns an encoded file. Both runners yield ``(key, result or exception)`` as results come, and
the caller writes the files: a cluster run writes exactly what a run here does, atomically, on the
machine that started it. Ray is imported only when a cluster is asked for.
"""
import logging
import os
import secrets
import sys
import threading
import time
import warnings
from collections import deque
from itertools import chain

SETTINGS = ('CLASSICDREAM_JAX_CACHE', 'CLASSICDREAM_MODELS', 'CLASSICDREAM_MIRROR')
DEPTH = 2       # tasks queued per worker: the next one's input is already on its way while one runs
RESTARTS = 3    # times a worker that dies is replaced, per worker and run
# Ray Client gives up on a ray:// head after about 35 s (3 tries, 5 s backing off), while the head starts a
# server process of its own for each new client: on a loaded machine that can take longer. Tries within:
CLIENT_DEADLINE = 180


class RayQuiet:
    """While a cluster is in use, what Ray's own threads print on stdout goes to stderr.

    Ray prints its notices ("(raylet) ... node ... marked dead", a worker's death, a client's log stream)
    with print() on sys.stdout, from threads of its own, whatever log_to_driver says; stdout is the
    command's: the paths of its results. Writes from the thread that made the cluster stay on stdout."""

    def __init__(self, stdout):
        self.stdout, self.owner = stdout, threading.current_thread()

    def write(self, text):
        return (self.stdout if threading.current_thread() is self.owner else sys.stderr).write(text)

    def flush(self):
        self.stdout.flush()
        sys.stderr.flush()

    def __getattr__(self, name):
        return getattr(self.stdout, name)


def own_token(address, environ=os.environ):
    """Ray 2.5x+ turns token authentication on for a cluster that ray.init starts, and with no token set
    writes one to ~/.ray/auth_token: a file every later `ray start` of the user then adopts (a head takes
    it up, and a node that joins without it is refused). A local cluster of ours gets a token of its own
    in this process's environment instead (its workers inherit it), unless the user set Ray's
    authentication themselves. Joining a cluster (auto, ray://) uses the user's settings as they are."""
    if address != 'local' or any(k in environ for k in ('RAY_AUTH_MODE', 'RAY_AUTH_TOKEN', 'RAY_AUTH_TOKEN_PATH')):
        return
    environ.update(RAY_AUTH_MODE='token', RAY_AUTH_TOKEN=secrets.token_hex(16))
    try:        # Ray read its settings when it was imported: have it read them again, as ray.init itself does
        from ray._raylet import AuthenticationTokenLoader, Config
        Config.initialize('')
        AuthenticationTokenLoader.instance().reset_cache()
    except (ImportError, AttributeError):       # a Ray before token authentication
        pass


class Worker:
    """A Ray actor: loads the net once, then runs task after task with it. On a machine without GPUs it
    keeps to its share of the cores, so workers side by side do not fight over them."""

    def __init__(self, tool, index=0, cores=None):
        if cores:
            # XLA:CPU sizes its thread pool by the cores it may use: worker `index` takes the index-th
            # `cores` of its machine (exact on one machine; with one worker per machine, all of them)
            n = os.cpu_count()
            os.sched_setaffinity(0, {(index * cores + j) % n for j in range(cores)})
        self.tool = tool
        tool.net                                # noqa: B018 -- load (and check) the net now, once

    def run(self, fn, previous, *args):
        return fn(self.tool, previous, *args)

    def ready(self):
        """Answers once this worker is up: Cluster.run gives it work only then."""
        return True


class Cluster:
    """Ray workers (actors) that hold the tool for their life; `run` spreads lanes over them.

    `address`: 'local' starts Ray on this machine, 'auto' joins the cluster this machine belongs to,
    'ray://HOST:PORT' a remote one. Each worker asks for one GPU where the cluster has GPUs (default: one
    worker per GPU), else for an equal share of the CPUs (default: one worker per machine). A worker
    that dies, or whose machine does, is replaced where it fits, and its tasks are run again;
    results are written by the caller, once."""

    def __init__(self, address, tool, workers=None):
        try:
            import ray
        except ImportError:
            raise ValueError("--cluster needs Ray: pip install 'classicdream[cluster]'") from None
        self.ray = ray
        options = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
        local = dict(address='local', num_cpus=os.cpu_count()) if address == 'local' else dict(address=address)
        own_token(address)
        self._stdout, sys.stdout = sys.stdout, RayQuiet(sys.stdout)
        try:
            self._init(ray, address, local, options)
            self.workers = self._start(tool, workers)
            self.size = len(self.workers)
        except BaseException:
            self._close()
            raise

    def _init(self, ray, address, local, options):
        deadline = time.monotonic() + CLIENT_DEADLINE
        while True:
            try:
                with warnings.catch_warnings():     # JAX warns at any fork; Ray starts its processes by fork+exec
                    warnings.filterwarnings('ignore', 'os.fork', RuntimeWarning)
                    warnings.filterwarnings('ignore', 'Ray Client connection timed out')
                    ray.init(**local, **options)
                return
            except ConnectionError as e:
                if not address.startswith('ray://') or time.monotonic() > deadline:
                    raise ValueError(f'--cluster={address}: cannot start or reach Ray ({" ".join(str(e).split())})') \
                        from None
            except (RuntimeError, ValueError) as e:
                raise ValueError(f'--cluster={address}: cannot start or reach Ray ({" ".join(str(e).split())})') \
                    from None

    def _close(self):
        try:
            self.ray.shutdown()
        finally:
            if isinstance(sys.stdout, RayQuiet):
                sys.stdout = self._stdout

    def _start(self, tool, workers):
        ray = self.ray
        resources = ray.cluster_resources()
        gpus, cpus = int(resources.get('GPU', 0)), int(resources.get('CPU', 1))
        machines = sum(1 for node in ray.nodes() if node['Alive'])
        n = workers or gpus or machines
        have = gpus or cpus
        if n > have:
            raise ValueError(f'--workers={n}: the cluster has {have} {"GPUs" if gpus else "CPUs"}')
        share = dict(num_gpus=1, num_cpus=1) if gpus else dict(num_cpus=cpus // n)
        settings = {k: os.environ[k] for k in SETTINGS if k in os.environ}     # where models and programs are
        # Ray restarts nothing: a restarted actor keeps the tasks queued for it until it finds room again,
        # which it may never do (its machine, with the CPUs or GPU it asked for, may be gone); so every
        # death fails the dead worker's tasks at once, and run() replaces the worker itself
        actor = ray.remote(Worker).options(max_restarts=0, max_task_retries=0, **share,
                                           **(dict(runtime_env={'env_vars': settings}) if settings else {}))
        self._new = lambda i: actor.remote(tool, i, None if gpus else share['num_cpus'])
        return [self._new(i) for i in range(n)]

    def run(self, fn, lanes):
        """Keep every worker busy with a lane at a time, DEPTH tasks ahead, chaining each item to the one
        before it through Ray's object store; yield (key, result or exception) in completion order.

        A worker takes work once it answers ready(): one that never finds room (its machine died as it
        started, say) holds nothing up, and a batch smaller than what the first worker up gets through
        while the others start runs on that one alone. A worker that dies takes its unfinished items with
        it: they go back, in lane order, to the workers at work, and a replacement is started."""
        ray = self.ray
        lanes, again = iter(lanes), deque()             # again: lanes given back by a worker that died
        pending = {}                                    # task -> (key, worker, its lane, previous, args)
        lane, queued = {}, {}                           # worker at work -> [items, previous] of its lane
        probes = {w.ready.remote(): w for w in self.workers}    # ready() -> a worker not at work yet
        restarts, lost = [0] * self.size, None
        while True:
            for w in lane:
                while queued[w] < DEPTH:
                    item = next(lane[w][0], None) if lane[w] else None
                    if item is None:
                        nxt = again.popleft() if again else next(lanes, None)
                        if nxt is None:
                            break
                        lane[w] = [iter(nxt[1]), nxt[0]]
                        continue
                    key, args = item
                    task = w.run.remote(fn, lane[w][1], *args)
                    pending[task] = key, w, lane[w], lane[w][1], args
                    lane[w][1] = task
                    queued[w] += 1
            if lane and not pending:
                return
            if not lane and not probes:                 # no worker left, nor any to come: the rest fails
                for _, items in chain(again, lanes):
                    for key, _ in items:
                        yield key, lost
                return
            [done], _ = ray.wait([*pending, *probes], num_returns=1)
            if done in probes:
                w = probes.pop(done)
                try:
                    ray.get(done)
                    lane[w], queued[w] = None, 0
                except ray.exceptions.RayError as e:   # it died before it could start
                    lost = e
                    self._replace(w, restarts, probes)
                continue
            key, w = pending[done][:2]
            try:
                result = ray.get(done)
            except ray.exceptions.RayActorError as e:
                lost = e
                del lane[w], queued[w]
                self._replace(w, restarts, probes)
                given = {}                              # id(lane) -> (previous, items, lane) to run again
                for task in [t for t in pending if pending[t][1] is w]:   # in the order they were given
                    k, _, its, p, a = pending.pop(task)
                    given.setdefault(id(its), (p, [], its))[1].append((k, a))
                again.extend((p, chain(items, its[0])) for p, items, its in given.values())
                continue
            except ray.exceptions.RayTaskError as e:
                result = e.cause if e.cause is not None else e
            except ray.exceptions.RayError as e:
                result = e
            del pending[done]
            queued[w] -= 1
            yield key, result

    def _replace(self, w, restarts, probes):
        """Start another worker in dead `w`'s place, RESTARTS times at most; it is killed first, in case it
        was only out of reach, so that what it holds is free for the new one."""
        self.ray.kill(w)
        i = self.workers.index(w)
        if restarts[i] < RESTARTS:
            restarts[i] += 1
            self.workers[i] = self._new(i)
            probes[self.workers[i].ready.remote()] = self.workers[i]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._close()


def runner(cluster, tool, workers=None):
    """A context manager with .run(fn, lanes): here when `cluster` is None, else a Cluster at that address."""
    if cluster is None:
        return _Here(tool)
    return Cluster(str(cluster), tool, workers)


class _Here:
    """The runner without a cluster: every lane in this process, in order."""
    size = 1

    def __init__(self, tool):
        self.tool = tool

    def run(self, fn, lanes):
        """A failed item fails the rest of its lane (they need its result); the other lanes go on."""
        for start, items in lanes:
            previous, failure = start, None
            for key, args in items:
                if failure is None:
                    try:
                        previous = fn(self.tool, previous, *args)
                    except Exception as e:      # noqa: BLE001 -- reported with its key; the batch goes on
                        failure = e
                yield key, failure if failure is not None else previous

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass
