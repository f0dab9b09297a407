"""classicdream: Google's 2015 DeepDream notebook, faithfully, in JAX.

    net = classicdream.load_net()                       # bvlc_googlenet, converted from Caffe via ONNX
    img = classicdream.load_image('sky1024px.jpg')
    dream = classicdream.deepdream(net, img)            # the notebook's defaults, seed 0
"""
__version__ = '0.1.0'

from .dream import deepdream, deprocess, make_step, objective_guide, preprocess  # noqa: E402
from .graph import Net, objective_L2  # noqa: E402
from .images import load_image, save_image  # noqa: E402


def load_net(path=None):
    """The notebook's net: bvlc_googlenet from ``models/`` (built there first if needed), or an ONNX file.

    Also turns on JAX's persistent compilation cache, so a second run at the same image size does not
    compile again: ``$CLASSICDREAM_JAX_CACHE`` (default ``~/.cache/classicdream/jax``; empty: off).
    """
    from .models import build, file_digest
    enable_compilation_cache()
    path = path or build()
    return Net(str(path), sha256=file_digest(path))


def enable_compilation_cache():
    import os
    from pathlib import Path
    import jax
    default = Path(os.environ.get('XDG_CACHE_HOME', Path.home() / '.cache')) / 'classicdream' / 'jax'
    folder = os.environ.get('CLASSICDREAM_JAX_CACHE', str(default))
    if folder:
        jax.config.update('jax_compilation_cache_dir', folder)
        jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
