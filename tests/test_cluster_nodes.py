"""Many machines, tested as many machines: a Ray cluster of separate nodes on this machine, reached from
the command line on the loopback with --cluster=auto (through RAY_ADDRESS=127.0.0.1:PORT) and
--cluster=ray://127.0.0.1:PORT (the head's Ray Client server), and compared byte for byte with the same
command run without a cluster. (Between themselves the nodes use this machine's own address: Ray turns
127.0.0.1 into it, services.resolve_ip_for_localhost.)

Each node is a `ray start --block` of its own, as README's "Many machines" section runs them, rather than
ray.cluster_utils.Cluster: so each is a family of processes that can be killed like a machine that fails
(its raylet, its agents, and the workers it started, which leave its process group but keep its
environment, where a mark names the node), and nothing of Ray starts in the pytest process, which later
tests share. Every node has one CPU, so the CPU workers (one per machine) land one on each.

Where each dream ran is read from the task events the GCS keeps (ray._private.state, as ray.timeline
reads them), by an observer process connected for the module: that is what `ray list tasks` shows, but
Ray's state API needs the dashboard of ray[default], and the project's extra is ray[client]. Every dream
runs on the CPU (JAX_PLATFORMS=cpu), on the node that declares a fake GPU too, so every cluster run must
equal the sequential one byte for byte.

A worker takes work once it is up, so each batch here is large enough (8 dreams of about 0.8 s on one
core) that the head's worker cannot finish it before the second node's worker is up (about 1 s later):
it would have to be more than 6 dreams ahead.
"""
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from PIL import Image

OPTIONS = ['--iter_n=10', '--octave_n=2', '--quiet']
IMAGES = 8
LAYERS = [f'inception_{block}/output' for block in ('3a', '3b', '4a', '4b', '4c', '4d', '4e', '5a')]
DREAMS = dict(folder=IMAGES, atlas=len(LAYERS))
# the GCS counts a killed node dead after 3 missed health checks a second apart, not Ray's 5 three seconds
# apart; a node that is only slow still has 5 s to answer each
HEALTH_CHECKS = dict(RAY_health_check_period_ms='1000', RAY_health_check_timeout_ms='5000',
                     RAY_health_check_failure_threshold='3')

OBSERVER = r'''
import json, sys
import ray
from ray._private.state import state
from ray.core.generated.common_pb2 import TaskStatus
ray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False)
for _ in sys.stdin:
    nodes = [dict(id=n['NodeID'], alive=n['Alive']) for n in ray.nodes()]
    tasks = [dict(job=e.job_id.hex(), node=e.state_updates.node_id.hex(), worker=e.state_updates.worker_id.hex(),
                  finished=TaskStatus.FINISHED in e.state_updates.state_ts_ns)
             for e in state._get_all_task_events() if e.task_info.name == 'Worker.run']
    sys.stdout.write('OBSERVED ' + json.dumps(dict(nodes=nodes, tasks=tasks)) + '\n')   # one write: Ray's
    sys.stdout.flush()                                  # own notices about dead nodes come here too
'''


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def processes():
    """{pid: (parent pid, environment entries)} of every process this user may read."""
    found = {}
    for proc in Path('/proc').glob('[0-9]*'):
        try:
            parent = int((proc / 'stat').read_text().rsplit(')', 1)[1].split()[1])
            found[int(proc.name)] = parent, set((proc / 'environ').read_bytes().split(b'\0'))
        except (OSError, IndexError, ValueError):
            continue
    return found


def family(pid, found):
    """`pid` and every process under it."""
    kids = {}
    for child, (parent, _) in found.items():
        kids.setdefault(parent, []).append(child)
    out, todo = set(), [pid]
    while todo:
        out.add(todo[-1])
        todo += kids.get(todo.pop(), [])
    return out


def kill(pids):
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def title(pid):
    """What Ray calls a worker process now: ray::Worker.run while it dreams, ray::Worker between dreams."""
    try:
        return Path(f'/proc/{pid}/cmdline').read_bytes().split(b'\0')[0].decode(errors='replace').strip()
    except OSError:
        return ''


class Loopback:
    """A head node (with a Ray Client server) and the nodes added to it, each its own `ray start`."""

    def __init__(self, temp):
        self.temp, self.token = temp, secrets.token_hex(16)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith('RAY_')}
        # a token of the cluster's own: a head started here would otherwise take up ~/.ray/auth_token where
        # one exists, and a node joining it would not
        self.env.update(JAX_PLATFORMS='cpu', RAY_AUTH_MODE='token', RAY_AUTH_TOKEN=self.token,
                        RAY_USAGE_STATS_ENABLED='0', PYTHONUNBUFFERED='1')
        self.gcs, self.client = free_port(), free_port()
        self.address = f'127.0.0.1:{self.gcs}'
        self.nodes, self.ids, self.seen = {}, {}, set()
        self._start('head', '--head', f'--port={self.gcs}', f'--ray-client-server-port={self.client}',
                    '--include-dashboard=false', f'--dashboard-port={free_port()}', f'--temp-dir={temp}',
                    env=HEALTH_CHECKS)
        self.observer = subprocess.Popen([sys.executable, '-c', OBSERVER, self.address], env=self.env, text=True,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        [self.ids['head']] = [n['id'] for n in self.observe()['nodes']]

    def _start(self, name, *args, gpus=0, env=None):
        log = self.temp / f'{name}.log'
        with log.open('w') as out:
            self.nodes[name] = subprocess.Popen(
                [sys.executable, '-m', 'ray.scripts.scripts', 'start', '--block', '--num-cpus=1', f'--num-gpus={gpus}',
                 f'--dashboard-agent-listen-port={free_port()}', '--min-worker-port=0', '--max-worker-port=0',
                 '--disable-usage-stats', *args],
                env=dict(self.env, **(env or {}), LOOPBACK_NODE=self.mark(name)), stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 120
        while 'Ray runtime started' not in log.read_text():
            assert self.nodes[name].poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)

    def mark(self, name):
        return f'{self.token}-{name}'

    def observe(self):
        self.observer.stdin.write('\n')
        self.observer.stdin.flush()
        while True:
            line = self.observer.stdout.readline()
            assert line, 'the observer died'
            if 'OBSERVED ' in line:
                return json.loads(line.split('OBSERVED ', 1)[1])

    def until(self, what, seconds=60):
        deadline = time.monotonic() + seconds
        while True:
            seen = what(self.observe())
            if seen or time.monotonic() > deadline:
                return seen
            time.sleep(0.5)

    def alive(self):
        return {n['id'] for n in self.observe()['nodes'] if n['alive']}

    def add(self, name, gpus=0):
        """Start node `name` and return its id once the GCS counts it alive."""
        before = self.alive()
        self._start(name, f'--address={self.address}', gpus=gpus)
        new = self.until(lambda seen: {n['id'] for n in seen['nodes'] if n['alive']} - before)
        assert len(new) == 1, new
        [self.ids[name]] = new
        return self.ids[name]

    def ensure(self, name):
        return self.ids[name] if name in self.nodes else self.add(name)

    def processes(self, name):
        found = processes()
        mark = f'LOOPBACK_NODE={self.mark(name)}'.encode()
        return family(self.nodes[name].pid, found) | {pid for pid, (_, env) in found.items() if mark in env}

    def kill(self, name):
        """Kill node `name` as a machine dies, all at once, and wait until the GCS counts it dead."""
        kill(self.processes(name))
        self.nodes.pop(name).wait()
        node = self.ids.pop(name)
        assert self.until(lambda seen: node not in {n['id'] for n in seen['nodes'] if n['alive']}), node

    def tasks(self, finished):
        """The dreams of the runs since the last call: once `finished` of them have finished (task events
        reach the GCS a little after the tasks)."""
        def new(seen):
            tasks = [t for t in seen['tasks'] if t['job'] not in self.seen]
            return tasks if sum(t['finished'] for t in tasks) >= finished else None
        tasks = self.until(new, 30)
        assert tasks, f'fewer than {finished} finished dreams in the task events'
        self.seen |= {t['job'] for t in tasks}
        return tasks

    def run_env(self, cluster):
        """The command's environment: --cluster=auto finds the cluster through RAY_ADDRESS."""
        return dict(self.env, RAY_ADDRESS=self.address) if cluster == 'auto' else self.env

    def cluster(self, cluster):
        return 'auto' if cluster == 'auto' else f'ray://127.0.0.1:{self.client}'

    def close(self):
        self.observer.stdin.close()
        try:
            self.observer.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.observer.kill()
        token = f'RAY_AUTH_TOKEN={self.token}'.encode()
        found = processes()
        kill(set().union(*(family(p.pid, found) for p in self.nodes.values()))
             | {pid for pid, (_, env) in found.items() if token in env})      # every node, and what they left
        for p in self.nodes.values():
            p.wait()


@pytest.fixture(scope='module')
def loopback():
    temp = Path(tempfile.mkdtemp(prefix='cdray'))       # short: Ray's socket paths live under it
    cluster = None
    try:
        cluster = Loopback(temp)
        yield cluster
    finally:
        if cluster:
            cluster.close()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture
def two_nodes(loopback):
    """The head and node b, one CPU each; no GPU anywhere."""
    loopback.ensure('b')
    assert loopback.alive() == {loopback.ids['head'], loopback.ids['b']}
    return loopback


@pytest.fixture(scope='module')
def photos(tmp_path_factory, shared):
    folder = tmp_path_factory.mktemp('photos')
    sky = Image.open(shared / 'images' / 'sky1024px.jpg')
    for i in range(IMAGES):
        sky.crop((90 * i, 30, 90 * i + 320, 30 + 224)).save(folder / f'{i}.jpg', quality=95)
    return folder


def command(what, photos, out):
    return (['dream', photos, f'--outdir={out}'] if what == 'folder' else
            ['atlas', photos / '0.jpg', f'--layers={",".join(LAYERS)}', f'--outdir={out}', '--thumb=64'])


def classicdream(env, *argv, cwd):
    done = subprocess.run([sys.executable, '-m', 'classicdream', *map(str, argv), *OPTIONS], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done


def files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def printed(stdout, folder):
    """The output paths the command printed, in order: stdout holds those and nothing else (Ray prints its
    own notices, such as a node marked dead, on stdout from threads of its own: cluster.RayQuiet sends
    them to stderr)."""
    lines = stdout.splitlines()
    assert all(re.fullmatch(re.escape(str(folder)) + r'/[^/]+\.jpg', line) for line in lines), stdout
    return lines


@pytest.fixture(scope='module')
def sequential(loopback, photos, tmp_path_factory):
    """What the folder and the atlas give without a cluster."""
    here, outputs = tmp_path_factory.mktemp('sequential'), {}
    for what in DREAMS:
        classicdream(loopback.run_env(None), *command(what, photos, here / what), cwd=here)
        outputs[what] = files(here / what)
    return outputs


@pytest.mark.parametrize('cluster', ['auto', 'client'])
@pytest.mark.parametrize('what', ['folder', 'atlas'])
def test_a_batch_spreads_over_both_nodes_and_equals_the_sequential_run(two_nodes, photos, sequential, tmp_path,
                                                                      what, cluster):
    out = tmp_path / 'out'
    done = classicdream(two_nodes.run_env(cluster), *command(what, photos, out),
                        f'--cluster={two_nodes.cluster(cluster)}', cwd=tmp_path)
    assert files(out) == sequential[what]
    assert sorted(printed(done.stdout, out)) == sorted(str(out / name) for name in sequential[what])
    tasks = two_nodes.tasks(DREAMS[what])
    assert len(tasks) == DREAMS[what] and all(t['finished'] for t in tasks)      # none run twice
    assert {t['node'] for t in tasks} == {two_nodes.ids['head'], two_nodes.ids['b']}
    assert len({t['worker'] for t in tasks}) == 2                               # one worker a machine


def test_the_node_with_the_gpu_gets_the_gpu_worker(loopback, photos, sequential, tmp_path):
    """Where the cluster has GPUs, each worker asks for one: one (fake) GPU, one worker, on its node; the
    others, with CPUs to spare, get none of the dreams. And no more workers than GPUs."""
    gpu = loopback.add('gpu', gpus=1)
    try:
        out = tmp_path / 'out'
        classicdream(loopback.run_env('auto'), *command('folder', photos, out), '--cluster=auto', cwd=tmp_path)
        assert files(out) == sequential['folder']
        tasks = loopback.tasks(IMAGES)
        assert {t['node'] for t in tasks} == {gpu} and len({t['worker'] for t in tasks}) == 1
        refused = subprocess.run([sys.executable, '-m', 'classicdream', *map(str, command('folder', photos, out)),
                                  '--cluster=auto', '--workers=2', *OPTIONS], env=loopback.run_env('auto'),
                                 capture_output=True, text=True, timeout=300)
        assert refused.returncode == 2 and 'the cluster has 1 GPUs' in refused.stderr, refused.stderr
    finally:
        loopback.kill('gpu')


@pytest.mark.parametrize('cluster', ['auto', 'client'])
def test_a_node_killed_mid_run_loses_nothing(two_nodes, photos, sequential, tmp_path, cluster):
    """Node b is killed, raylet, agents and worker at once, while its worker is in the middle of a dream:
    the run ends well, every image once, each as the sequential run has it; what b held was run again."""
    out, stdout, stderr = tmp_path / 'out', tmp_path / 'stdout', tmp_path / 'stderr'
    with stdout.open('w') as printing, stderr.open('w') as telling:
        run = subprocess.Popen([sys.executable, '-m', 'classicdream', *map(str, command('folder', photos, out)),
                                f'--cluster={two_nodes.cluster(cluster)}', *OPTIONS],
                               env=two_nodes.run_env(cluster), cwd=tmp_path, stdout=printing, stderr=telling)
    try:
        deadline = time.monotonic() + 120
        while not any(title(pid) == 'ray::Worker.run' for pid in two_nodes.processes('b')):
            assert run.poll() is None, f'the run ended before node b dreamed: {stderr.read_text()}'
            assert time.monotonic() < deadline, 'node b never dreamed'
            time.sleep(0.05)
        two_nodes.kill('b')
        run.wait(timeout=300)
    finally:
        if run.poll() is None:
            run.kill()
    stdout, stderr = stdout.read_text(), stderr.read_text()
    assert run.returncode == 0, stderr
    assert f'{IMAGES} dreamed, 0 already done, 0 failed' in stderr
    assert files(out) == sequential['folder']
    assert sorted(printed(stdout, out)) == sorted(str(out / name) for name in sequential['folder'])
    tasks = two_nodes.tasks(IMAGES)
    assert len(tasks) > IMAGES                          # some were given to b, and given again


def test_a_local_cluster_keeps_to_a_token_of_its_own(photos, tmp_path):
    """--cluster=local with Ray's authentication unset: Ray would turn token authentication on and write
    ~/.ray/auth_token, which every later `ray start` of the user adopts (a head takes it up; a node
    joining without it is refused: InvalidAuthToken). The run's cluster gets a token in its own
    environment instead: nothing is written in the home folder, nothing but the paths reaches stdout."""
    home, out = tmp_path / 'home', tmp_path / 'out'
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith('RAY_')}
    env.update(HOME=str(home), JAX_PLATFORMS='cpu', RAY_USAGE_STATS_ENABLED='0')
    done = classicdream(env, 'dream', photos, f'--outdir={out}', '--cluster=local', '--workers=1', cwd=tmp_path)
    assert sorted(printed(done.stdout, out)) == sorted(str(out / p.name) for p in out.iterdir())
    assert len(list(out.iterdir())) == IMAGES
    assert not (home / '.ray').exists(), sorted(map(str, home.rglob('*')))
    assert 'Token authentication' not in done.stderr, done.stderr


def test_ray_client_is_given_time_where_the_head_is_slow(monkeypatch):
    """Ray Client gives up on a ray:// head after about 35 s (3 tries), while the head starts a server
    process for each new client, which a loaded machine can make slower than that (the likely cause of
    one ray:// failure in 11 loaded runs): a ray:// address is tried again until CLIENT_DEADLINE; a
    local or auto one, which no server start stands behind, fails at once, in one line."""
    from classicdream import cluster

    class Ray:
        def __init__(self, fails):
            self.fails, self.calls = fails, 0

        def init(self, **kwargs):
            self.calls += 1
            if self.calls <= self.fails:
                raise ConnectionError('ray client connection timeout')

    slow = Ray(fails=2)
    cluster.Cluster._init(None, slow, 'ray://127.0.0.1:1', dict(address='ray://127.0.0.1:1'), {})
    assert slow.calls == 3
    for address in ('auto', 'local'):
        with pytest.raises(ValueError, match=f'--cluster={address}: cannot start or reach Ray'):
            cluster.Cluster._init(None, Ray(fails=1), address, dict(address=address), {})
    monkeypatch.setattr(cluster, 'CLIENT_DEADLINE', 0)
    with pytest.raises(ValueError, match='ray client connection timeout'):
        cluster.Cluster._init(None, Ray(fails=5), 'ray://127.0.0.1:1', dict(address='ray://127.0.0.1:1'), {})


def test_ray_notices_from_its_threads_go_to_stderr(capsys):
    """What Ray prints from a thread of its own while a cluster is up goes to stderr; the thread that made
    the cluster still prints on stdout."""
    import threading
    from classicdream.cluster import RayQuiet
    sys.stdout = RayQuiet(sys.stdout)
    try:
        print('/a/result.jpg')
        notice = threading.Thread(target=print, args=('(raylet) node 1 marked dead',))
        notice.start()
        notice.join()
    finally:
        sys.stdout = sys.stdout.stdout
    out, err = capsys.readouterr()
    assert out == '/a/result.jpg\n' and err == '(raylet) node 1 marked dead\n'
