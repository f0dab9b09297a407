"""Compiled programs: built once, in parallel, kept on disk, and shared by every image size in a bucket.

A dream runs a handful of XLA programs (one per octave size, and small ones for the zooms). Building
one means tracing the net in Python, lowering it and compiling it: seconds each on a CPU. This module
makes that happen as rarely as possible:
- *buckets*: the dream pads each octave up to the octave of the image's bucket (`bucket`), so nearby
  image sizes run the same programs (graph.evaluate masks the padding, so the true pixels see exactly
  what they would alone);
- *executables on disk*: a compiled program is serialised under a key of everything that determines it
  (program, static arguments, argument shapes, backend, jax version, model and source digests), so a
  new process loads it without tracing or lowering; a stale or damaged file is ignored and rebuilt;
- *in parallel, once*: `Program.executable` submits the build to a thread pool (compiling releases the
  GIL) and returns a future, so a dream can ask for all its programs up front; a key is built once
  per process, whoever asks.
"""
import concurrent.futures
import functools
import hashlib
import importlib.metadata
import os
import pickle
import re
import threading
from pathlib import Path

import jax
import numpy as np

from .files import atomic_write

# XLA:CPU's older fusion emitters compile this net's step in ~80% of the time (3.75 vs 4.46 s for one
# 575x1024 octave, interleaved runs on 2 cores) and run it as fast, within the machine's noise.
# Other backends ignore xla_cpu_* options; a jaxlib that no longer has the option gets XLA's defaults.
XLA_OPTIONS = {'xla_cpu_use_fusion_emitters': False}

# An image's size is padded up to a multiple of 1/BUCKET_STEPS of its power of two, at least MIN_STEP
# pixels: at most 1/16 more per axis, 5% more pixels on average over photo sizes and none for the sky;
# coarser steps compile fewer programs and waste more (bench/buckets.py weighs them).
BUCKET_STEPS = 16
MIN_STEP = 8


def bucket(size, steps=BUCKET_STEPS):
    """The padded extent that `size` pixels share a program with: the next multiple of a step that grows
    with the size (8 px up to 255, 16 up to 511, 32 up to 1023, ...), so the waste stays a few percent."""
    step = max(MIN_STEP, (1 << (int(size).bit_length() - 1)) // steps)
    return -(-int(size) // step) * step


@functools.cache
def xla_options():
    """XLA_OPTIONS, where this jaxlib knows them (XLA refuses an unknown option at compile time)."""
    try:
        jax.jit(lambda x: x, compiler_options=XLA_OPTIONS).lower(np.float32(0)).compile()
    except Exception:           # the error's class has moved between jax versions
        return {}
    return XLA_OPTIONS


def executables_folder():
    """Where serialised executables live ($CLASSICDREAM_JAX_CACHE/executables); None: kept in memory only.

    Also None while JAX's own persistent cache is on: an executable it hands back was deserialised, and
    XLA:CPU serialises such a one without its code (the next process's call then fails)."""
    if jax.config.jax_compilation_cache_dir and jax.config.jax_enable_compilation_cache:
        return None
    default = Path(os.environ.get('XDG_CACHE_HOME', Path.home() / '.cache')) / 'classicdream' / 'jax'
    folder = os.environ.get('CLASSICDREAM_JAX_CACHE', str(default))
    return Path(folder) / 'executables' if folder else None


@functools.cache
def _pool():
    return concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1,
                                                 thread_name_prefix='classicdream-compile')


@functools.cache
def _environment():
    """What every executable depends on besides its own arguments: versions, backend, options, our code."""
    source = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob('*.py')):
        source.update(path.read_bytes())
    device = jax.devices()[0]
    return (f'jax {jax.__version__} jaxlib {importlib.metadata.version("jaxlib")} {device.platform} '
            f'{device.device_kind} x{jax.device_count()} {sorted(xla_options().items())} {source.hexdigest()}')


def _signature(tree):
    """What an executable is compiled for: a pytree's structure and its leaves' shapes and dtypes."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, tuple((np.shape(x), getattr(x, 'dtype', type(x)), getattr(x, 'weak_type', False)) for x in leaves)


@functools.lru_cache(maxsize=256)
def _static_digest(name, statics):
    return hashlib.sha256(repr((name, statics)).encode()).hexdigest()


class Program:
    """A jitted function whose executables are keyed by argument shapes, kept on disk, built in a pool.

    Static arguments are passed by keyword, the others positionally; `abstract` arguments (shapes) may
    stand for arrays that do not exist yet, so a caller can have programs built ahead of their inputs.
    """

    def __init__(self, fun, static_argnames=()):
        functools.update_wrapper(self, fun)
        self.fun, self.static_argnames = fun, tuple(static_argnames)
        self._futures = {}
        self._lock = threading.Lock()

    @functools.cached_property
    def jitted(self):
        return jax.jit(self.fun, compiler_options=xla_options(), static_argnames=self.static_argnames)

    def lower(self, *args, **statics):
        return self.jitted.lower(*args, **statics)

    def __call__(self, *args, **statics):
        return self.executable(*args, **statics).result()(*args)

    def executable(self, *args, **statics):
        """A future of the compiled program for these argument shapes and static values."""
        statics = tuple(sorted(statics.items()))
        functions = _functions(args)        # by identity: a redefined objective is another program
        key = (_static_digest(f'{self.__module__}.{self.__qualname__}', statics), _signature(args), functions)
        with self._lock:
            future = self._futures.get(key)
            if future is None:
                future = self._futures[key] = _pool().submit(self._build, key, args, dict(statics))
        return future

    def _build(self, key, args, statics):
        path, text = self._saved_as(key)
        compiled = _load(path, text) if path else None
        if compiled is None:
            compiled = self.lower(*args, **statics).compile()
            if path:
                _save(path, text, compiled)
        return compiled

    def _saved_as(self, key):
        """The file and key text of an executable on disk; (None, None) for code the environment's source
        digest does not cover (a user's own objective may change between processes under the same name)."""
        folder = executables_folder()
        code = [self.fun, *key[2]]
        names = [f'{getattr(f, "__module__", None)}.{getattr(f, "__qualname__", None)}' for f in code]
        if folder is None or not all(name.startswith(__package__ + '.') for name in names):
            return None, None
        treedef, avals = key[1]
        structure = re.sub(r' at 0x[0-9a-f]+', '', str(treedef))     # function reprs without their addresses
        text = repr((key[0], structure, avals, names, _environment()))
        return folder / f'{hashlib.sha256(text.encode()).hexdigest()}.xla', text


def _functions(tree):
    """The functions that travel in a pytree as jax.tree_util.Partial (objectives)."""
    is_partial = lambda x: isinstance(x, jax.tree_util.Partial)
    return tuple(p.func for p in jax.tree_util.tree_leaves(tree, is_leaf=is_partial) if is_partial(p))


def program(static_argnames=()):
    """Decorator: the function as a Program."""
    return lambda fun: Program(fun, static_argnames)


def abstract(tree):
    """Arrays → their shapes and dtypes, for asking for a program before its inputs exist."""
    return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), tree)


def _load(path, text):
    """The executable saved for exactly `text`, or None: a missing, stale or damaged file is not an error."""
    from jax.experimental import serialize_executable
    try:
        saved_text, payload, in_tree, out_tree = pickle.loads(path.read_bytes())
        if saved_text != text:
            return None
        return serialize_executable.deserialize_and_load(payload, in_tree, out_tree)
    except Exception:       # unreadable, truncated, from another version: build it again
        return None


def _save(path, text, compiled):
    """Keep the executable for the next process; a cache that cannot be written only costs speed."""
    from jax.experimental import serialize_executable
    try:
        payload, in_tree, out_tree = serialize_executable.serialize(compiled)
        blob = pickle.dumps((text, payload, in_tree, out_tree))
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: f.write(blob))
    except Exception:
        pass
