"""Objectives beyond the notebook's two, from the DeepDream write-ups: one class, some channels, several layers.

Each objective is what the notebook's ``objective_L2`` and ``objective_guide`` are: a function from the
activations at ``end`` to the diff placed on them, passed as a ``jax.tree_util.Partial`` so that arrays
it holds (a class's weights) are arguments of the compiled step, not constants baked into it. They all
run through the same ``make_step`` and ``deepdream``; nothing here has a loop of its own.
"""
import difflib
from dataclasses import dataclass
from importlib import resources

import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

CLASS_END = 'inception_5b/output'             # bvlc_googlenet's (class_head finds it, and any net's)


def objective_channel(channels):
    """Maximise the sum of the chosen channels of `end` (one neuron's feature map, or several).

    The diff is 1 on those channels and 0 elsewhere: the gradient of their sum, which make_step's
    normalisation makes the same step as their mean.
    """
    return Partial(_channel_diff, jnp.asarray(channels, jnp.int32))


def _channel_diff(channels, dst):
    return jnp.zeros_like(dst).at[:, channels].set(1.0)


def check_channels(net, end, channels):
    """Refuse channel numbers that layer `end` does not have, saying how many it has."""
    count = net.shape(end)[1]
    bad = [c for c in channels if not 0 <= c < count]
    if bad:
        raise ValueError(f'layer {end!r} has channels 0..{count - 1}; no channel {bad[0]}')


def objective_weighted(weights):
    """Several layers at once (`end` a tuple): the weighted sum of their ½‖·‖², as objective_L2 per layer."""
    return Partial(_weighted_diff, tuple(np.float32(w) for w in weights))


def _weighted_diff(weights, dst):
    return tuple(w * d for w, d in zip(weights, dst))


def objective_class(net, index):
    """Maximise class `index`'s pre-softmax score at any input size: bvlc_googlenet's loss3/classifier, or
    the logits of any classifier whose head is global average pooling and a linear layer (torchvision's,
    Keras', paddle's: class_head).

    Such a net scores a class as w·mean(features) + b: bvlc_googlenet's 7x7 average pool covers the whole
    7x7 map of a 224x224 input. Taking that mean over whatever map a larger or smaller octave gives keeps
    the score defined at every size, and equal to the classifier's where the net defines it. Use it with
    ``end=class_head(net).end``; the diff is w/(map size) everywhere, the gradient of that score.
    """
    head = class_head(net)
    if not 0 <= index < head.weights.shape[0]:
        raise ValueError(f'class index {index} is out of range 0..{head.weights.shape[0] - 1}')
    return Partial(_class_diff if head.channel_axis == 1 else _class_diff_nhwc, head.weights[index])


def _class_diff(w, dst):
    n = dst.shape[2] * dst.shape[3]
    return jnp.broadcast_to(w[None, :, None, None] / n, dst.shape)


def _class_diff_nhwc(w, dst):
    """The same for a tf2onnx graph's features, which are NHWC in ONNX itself."""
    n = dst.shape[1] * dst.shape[2]
    return jnp.broadcast_to(w[None, None, None, :] / n, dst.shape)


@dataclass(frozen=True)
class ClassHead:
    end: str             # the layer holding the features the classifier averages
    weights: object      # (classes, features)
    channel_axis: int    # of those features: 1 (NCHW) or 3 (a tf2onnx graph's NHWC)


POOLINGS = ('GlobalAveragePool', 'AveragePool', 'ReduceMean')
PASSING = ('Flatten', 'Reshape', 'Squeeze', 'Dropout', 'Identity')


def class_head(net):
    """The classifier of `net`: its last Gemm or MatMul with constant weights, fed (through flattening) by
    an average over the whole map of a 4-D layer. ValueError where the net has none such."""
    produced = {o: node for node in net.nodes for o in node.outputs}
    layer_of = {tensor: layer for layer, tensor, _ in net.layers}
    for node in reversed(net.nodes):
        w = _constant(net, node.inputs[1]) if node.op in ('Gemm', 'MatMul') and len(node.inputs) > 1 else None
        if w is None or w.ndim != 2:
            continue
        x = node.inputs[0]
        while isinstance(x, str) and x in produced and produced[x].op in PASSING:
            x = produced[x].inputs[0]
        pool = produced.get(x) if isinstance(x, str) else None
        if pool is None or pool.op not in POOLINGS or pool.inputs[0] not in layer_of:
            break
        axis = 1
        if pool.op == 'ReduceMean':
            axes = sorted(int(a) % 4 for a in np.atleast_1d(_constant(net, pool.inputs[1]) if len(pool.inputs) > 1
                                                            else dict(pool.attrs).get('axes')))
            if axes not in ([1, 2], [2, 3]):
                break
            axis = 3 if axes == [1, 2] else 1
        transposed = dict(node.attrs).get('transB', 0) if node.op == 'Gemm' else 0
        return ClassHead(layer_of[pool.inputs[0]], w if transposed else w.T, axis)
    raise ValueError('this net has no classifier head that visualize understands (global average pooling, '
                     'then a linear layer)')


def _constant(net, name):
    value = getattr(name, 'array', None)
    if value is None and isinstance(name, str):
        value = net.params.get(name)
    return None if value is None else jnp.asarray(value, jnp.float32)


def class_weights(net):
    """The classifier's weight matrix as (classes, features), whatever layout the Gemm stores."""
    return class_head(net).weights


def synset_words():
    """The 1000 ImageNet classes as [(wnid, [names...])], line i = output i (Caffe's synset_words.txt)."""
    text = resources.files(__package__).joinpath('synset_words.txt').read_text()
    return [(wnid, [n.strip() for n in names.split(',')])
            for wnid, names in (line.split(' ', 1) for line in text.splitlines() if line.strip())]


def find_class(spec, synsets=None):
    """A class index from an index or a name ('ladybug', 'n02165456'); an ambiguous name lists candidates."""
    synsets = synsets or synset_words()
    if isinstance(spec, int) or str(spec).strip().isdigit():
        index = int(spec)
        if not 0 <= index < len(synsets):
            raise ValueError(f'class index {index} is out of range 0..{len(synsets) - 1}')
        return index
    want = str(spec).strip().lower()
    exact = [i for i, (wnid, names) in enumerate(synsets) if want == wnid or want in map(str.lower, names)]
    if len(exact) == 1:
        return exact[0]
    partial = exact or [i for i, (_, names) in enumerate(synsets) if any(want in n.lower() for n in names)]
    if len(partial) == 1:
        return partial[0]
    if partial:
        shown = '; '.join(f'{i} {synsets[i][1][0]}' for i in partial[:12])
        more = f' and {len(partial) - 12} more' if len(partial) > 12 else ''
        raise ValueError(f'class {spec!r} is ambiguous: {shown}{more}; give a fuller name or the index')
    close = difflib.get_close_matches(want, [n.lower() for _, names in synsets for n in names], n=3, cutoff=0.6)
    hint = f'; did you mean {", ".join(close)}?' if close else ''
    raise ValueError(f'no ImageNet class is called {spec!r}{hint}')


def noise_image(height, width, rng):
    """A start image of noise: mid-grey 100 plus uniform [0, 1) per pixel and channel (TF's DeepDream
    tutorial's start), drawn from `rng` so a seed makes the same noise and then the same jitter."""
    return np.float32(rng.uniform(size=(height, width, 3)) + 100.0)
