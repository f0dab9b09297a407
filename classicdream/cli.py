"""The command line (python-fire): classicdream models | convert | layers | dream | guide | zoom."""
import sys

import fire


class UserError(Exception):
    """Bad input from the user: printed as one line, exit status 2, no traceback."""


class Commands:
    """classicdream: the 2015 DeepDream notebook, faithfully, in JAX (bvlc_googlenet via ONNX)."""

    def models(self, force=False):
        """Build models/bvlc_googlenet.onnx from the first source present (your caffemodel, the local
        mirror, or a hash-checked download) and say which one was used."""
        from .models import build
        path = build(force=force)
        print(path)

    def convert(self, deploy, weights, out):
        """Convert a Caffe net to ONNX: DEPLOY.prototxt WEIGHTS.caffemodel (or Caffe-layout .npz) OUT.onnx.
        Tensor names are Caffe's blob names; works for other Caffe GoogLeNets (Places205/365) too."""
        from .convert import convert
        print(f'{out} (sha256 {convert(deploy, weights, out)})')


def main(argv=None):
    from .caffe import CaffeFormatError
    from .models import ModelError
    try:
        fire.Fire(Commands, command=argv, name='classicdream')
    except (UserError, CaffeFormatError, ModelError, ValueError, OSError) as e:
        print(f'classicdream: error: {e}', file=sys.stderr)
        sys.exit(2)
