"""classicdream: Google's 2015 DeepDream notebook, faithfully, in JAX.

    net = classicdream.load_net()                       # bvlc_googlenet, converted from Caffe via ONNX
    img = classicdream.load_image('sky1024px.jpg')
    dream = classicdream.deepdream(net, img)            # the notebook's defaults, seed 0
"""
__version__ = '0.1.0'

from .graph import Net, objective_L2  # noqa: E402


def load_net(path=None):
    """The notebook's net: bvlc_googlenet from ``models/`` (built there first if needed), or an ONNX file."""
    from .models import build, file_digest
    path = path or build()
    return Net(str(path), sha256=file_digest(path))
