"""Caffe deploy net + parameters → ONNX, keeping Caffe's names and semantics.

Tensor names are Caffe's names so a user can ask for any blob the notebook could: a layer that writes a
new blob produces a tensor named after that blob (``conv1/7x7_s2``, ``inception_4c/output``); an in-place
layer (ReLU, Dropout) produces a tensor named after the *layer* (``conv1/relu_7x7``), because ONNX
tensors are written once. The model's metadata ``caffe_layers`` records, in network order, each layer's
name, the tensor holding its output and the Caffe blob it wrote, which is what pycaffe's
``forward(end=LAYER)`` semantics need (see graph.py).

Caffe semantics are kept: pooling rounds up (``ceil_mode=1``, where ONNX also drops a last window that
would start in the padding, as Caffe does); LRN is across channels with Caffe's alpha/n convention,
which is ONNX's; average pooling counts padding in its divisor (``count_include_pad=1``).
"""
import hashlib
import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .caffe import CaffeFormatError, first, read_caffemodel, read_prototxt
from .files import atomic_write

OPSET = 13
IR_VERSION = 7           # pinned with the opset so that conversion is byte-identical across onnx releases


def _pair(params, name, default):
    """Caffe's kernel/stride/pad: a repeated field, or name_h/name_w, or the default."""
    h, w = first(params, name + '_h'), first(params, name + '_w')
    if h is not None or w is not None:
        return [h if h is not None else default, w if w is not None else default]
    values = params.get(name + '_size' if name == 'kernel' else name, [])
    if not values:
        return [default, default]
    return [values[0], values[-1]] if len(values) <= 2 else values[:2]


def load_npz_params(path):
    """Parameters from a Caffe-layout npz (keys '<layer>.weight', '<layer>.bias') as layer → [W, b]."""
    params = {}
    with np.load(path) as npz:
        for key in npz.files:
            layer, _, kind = key.rpartition('.')
            params.setdefault(layer, [None, None])[kind == 'bias'] = npz[key].astype(np.float32)
    return {k: [p for p in v if p is not None] for k, v in params.items()}


def caffe_to_onnx(spec, params):
    """Build the ONNX model for a NetSpec (caffe.read_prototxt) and its parameters (layer → [W, b])."""
    nodes, inits, layers = [], [], []
    current = {spec.input_name: spec.input_name}        # Caffe blob → tensor holding its latest value
    rank = {spec.input_name: 4}                          # tensor → number of dimensions (for outputs)
    used = {spec.input_name}
    layers.append([spec.input_name, spec.input_name, spec.input_name])

    def weights(layer, weight_shape):
        """Initializers for a layer's weight (reshaped from Caffe's legacy 4-D blobs) and its bias."""
        count = 2 if first(layer.params, 'bias_term', True) else 1
        blobs = params.get(layer.name)
        if blobs is None or len(blobs) < count:
            raise CaffeFormatError(f'no parameters for layer {layer.name!r} in the weights file')
        try:
            values = [blobs[0].reshape(weight_shape)] + [b.reshape(-1) for b in blobs[1:count]]
        except ValueError:
            raise CaffeFormatError(f'layer {layer.name!r}: weights of shape {blobs[0].shape} do not fit '
                                   f'{weight_shape}')
        names = [f'{layer.name}.{kind}' for kind in ('weight', 'bias')[:count]]
        inits.extend(zip(names, values))
        return names

    consumed = set()
    for layer in spec.layers:
        if len(layer.tops) != 1:
            raise CaffeFormatError(f'layer {layer.name!r} has {len(layer.tops)} tops; only one is supported')
        try:
            ins = [current[b] for b in layer.bottoms]
        except KeyError as e:
            raise CaffeFormatError(f'layer {layer.name!r} reads blob {e.args[0]!r} before it is written')
        consumed.update(ins)
        blob = layer.tops[0]
        out = blob if blob not in current else layer.name
        if out in used:
            raise CaffeFormatError(f'layer {layer.name!r}: tensor name {out!r} would be written twice')
        p, t = layer.params, layer.type
        if t == 'Convolution':
            kh, kw = _pair(p, 'kernel', None)
            names = weights(layer, (first(p, 'num_output'), -1, kh, kw))
            ph, pw = _pair(p, 'pad', 0)
            attrs = dict(kernel_shape=[kh, kw], strides=_pair(p, 'stride', 1), pads=[ph, pw, ph, pw],
                         dilations=_pair(p, 'dilation', 1), group=first(p, 'group', 1))
            nodes.append(helper.make_node('Conv', ins + names, [out], layer.name, **attrs))
        elif t == 'ReLU':
            slope = first(p, 'negative_slope', 0.0)
            op = helper.make_node('LeakyRelu', ins, [out], layer.name, alpha=float(slope)) if slope \
                else helper.make_node('Relu', ins, [out], layer.name)
            nodes.append(op)
        elif t == 'Pooling':
            method = first(p, 'pool', 'MAX')
            method = {0: 'MAX', 1: 'AVE'}.get(method, method)
            if method not in ('MAX', 'AVE'):
                raise CaffeFormatError(f'layer {layer.name!r}: {method} pooling is not supported')
            if first(p, 'global_pooling', False):
                op = 'GlobalMaxPool' if method == 'MAX' else 'GlobalAveragePool'
                nodes.append(helper.make_node(op, ins, [out], layer.name))
            else:
                ph, pw = _pair(p, 'pad', 0)
                attrs = dict(kernel_shape=_pair(p, 'kernel', None), strides=_pair(p, 'stride', 1),
                             pads=[ph, pw, ph, pw], ceil_mode=1)
                if method == 'AVE':
                    attrs['count_include_pad'] = 1
                op = 'MaxPool' if method == 'MAX' else 'AveragePool'
                nodes.append(helper.make_node(op, ins, [out], layer.name, **attrs))
        elif t == 'LRN':
            if first(p, 'norm_region', 'ACROSS_CHANNELS') not in ('ACROSS_CHANNELS', 0):
                raise CaffeFormatError(f'layer {layer.name!r}: only ACROSS_CHANNELS LRN is supported')
            nodes.append(helper.make_node('LRN', ins, [out], layer.name, size=first(p, 'local_size', 5),
                                          alpha=float(first(p, 'alpha', 1.0)),
                                          beta=float(first(p, 'beta', 0.75)),
                                          bias=float(first(p, 'k', 1.0))))
        elif t == 'Concat':
            axis = first(p, 'axis', first(p, 'concat_dim', 1))
            nodes.append(helper.make_node('Concat', ins, [out], layer.name, axis=axis))
        elif t == 'Dropout':                    # inference: identity (Caffe scales at train time)
            nodes.append(helper.make_node('Identity', ins, [out], layer.name))
        elif t == 'InnerProduct':
            names = weights(layer, (first(p, 'num_output'), -1))
            flat = f'{layer.name}/flatten'
            nodes.append(helper.make_node('Flatten', ins, [flat], layer.name + '/flatten', axis=1))
            nodes.append(helper.make_node('Gemm', [flat] + names, [out], layer.name, transB=1))
            used.add(flat)
            rank[flat] = 2
        elif t == 'Softmax':
            nodes.append(helper.make_node('Softmax', ins, [out], layer.name, axis=first(p, 'axis', 1)))
        else:
            raise CaffeFormatError(f'layer {layer.name!r}: Caffe layer type {t!r} is not supported')
        used.add(out)
        rank[out] = rank[flat] if t == 'InnerProduct' else rank[ins[0]]
        current[blob] = out
        layers.append([layer.name, out, blob])

    outputs = [t for t in current.values() if t not in consumed]
    graph = helper.make_graph(
        nodes, spec.name,
        [helper.make_tensor_value_info(spec.input_name, TensorProto.FLOAT, ['batch', 3, 'height', 'width'])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, [None] * rank[o]) for o in outputs],
        [numpy_helper.from_array(np.ascontiguousarray(v, np.float32), n) for n, v in inits])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', OPSET)],
                              producer_name='classicdream', ir_version=IR_VERSION,
                              doc_string=f'Caffe net {spec.name!r} converted by classicdream')
    helper.set_model_props(model, {'caffe_layers': json.dumps(layers)})
    onnx.checker.check_model(model)
    return model


def convert(deploy, weights, out):
    """Convert DEPLOY.prototxt + WEIGHTS (.caffemodel or Caffe-layout .npz) to OUT.onnx; returns its sha256."""
    spec = read_prototxt(deploy)
    params = load_npz_params(weights) if str(weights).endswith('.npz') else read_caffemodel(weights)
    data = caffe_to_onnx(spec, params).SerializeToString(deterministic=True)
    atomic_write(out, lambda f: f.write(data))
    return hashlib.sha256(data).hexdigest()
