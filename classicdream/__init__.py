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
    """The notebook's net: bvlc_googlenet from ``models/`` (built there first if needed, rebuilt if its
    sha256 is not the one SHA256SUMS pins), or an ONNX file, or a model-zoo name (``zoo.ZOO``: its
    published file, downloaded once and hash-checked).

    Its compiled programs are kept in ``$CLASSICDREAM_JAX_CACHE`` (default ``~/.cache/classicdream/jax``;
    empty: in memory only), so a later process, or another image size in the same buckets, starts at once.
    """
    import sys
    from .models import ModelError, build, file_digest
    from .zoo import resolve
    path, published = resolve(path) if path else (None, None)
    path = path or build(log=lambda line: print(line, file=sys.stderr))   # stdout is for the results
    try:
        net = Net(str(path), sha256=file_digest(path))
    except Exception as e:            # noqa: BLE001 -- protobuf's DecodeError and onnx's own errors
        reason = ' '.join(str(e).split())
        raise ModelError(f'{path}: not a readable ONNX model ({type(e).__name__}: {reason})') from None
    net.preprocessing = published or net.preprocessing
    return net
