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
    from .models import ModelError, build
    from .zoo import resolve
    path, published = resolve(path) if path else (None, None)
    path = path or build(log=lambda line: print(line, file=sys.stderr))   # stdout is for the results
    model, digest = read_model(path)
    try:
        net = Net(model, sha256=digest)
    except ValueError as e:            # operators.Unsupported: a graph that is no image CNN
        raise ModelError(f'{path}: {e}') from None
    if published:
        net.preprocessing = net.preprocess_given = published
    return net


def read_model(path):
    """An ONNX file with its external weights (torch.onnx's dynamo exporter writes them to a .data file
    beside it), and its sha256: the file's own, or where there are such weights the sha256 of the file's
    and theirs together, so a recipe's model_sha256 names all of the model."""
    import hashlib
    from pathlib import Path

    import onnx
    from onnx import external_data_helper

    from .models import ModelError, file_digest
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:            # noqa: BLE001 -- protobuf's DecodeError and onnx's own errors
        reason = ' '.join(str(e).split())
        raise ModelError(f'{path}: not a readable ONNX model ({type(e).__name__}: {reason})') from None
    tensors = list(external_data_helper._get_all_tensors(model))
    external = sorted({entry.value for t in tensors if t.data_location == onnx.TensorProto.EXTERNAL
                       for entry in t.external_data if entry.key == 'location'})
    digest = file_digest(path)
    if external:
        folder = Path(path).resolve().parent
        combined = hashlib.sha256(digest.encode())
        for name in external:
            data = folder / name
            if not data.is_file():
                raise ModelError(f'{path}: its weights are in {name}, which is not beside it')
            combined.update(f' {name} {file_digest(data)}'.encode())
        digest = combined.hexdigest()
        try:
            external_data_helper.load_external_data_for_model(model, str(folder))
        except Exception as e:        # noqa: BLE001 -- a truncated or unreadable weights file
            raise ModelError(f'{path}: its weights file cannot be read ({" ".join(str(e).split())})') from None
    return model, digest
