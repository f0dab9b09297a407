"""Read Caffe's two model files without Caffe: ``deploy.prototxt`` and ``.caffemodel``.

The prototxt is protobuf *text* format and the caffemodel protobuf *binary* format of Caffe's
``NetParameter``. Only the handful of fields a deploy net needs are decoded, so no compiled
``caffe.proto`` (and no Caffe) is required. Both the current ``layer`` messages and the pre-2015
``layers`` (V1) messages are understood, since older model zoo files use the latter.
"""
import re
from dataclasses import dataclass, field

import numpy as np

# V1LayerParameter's LayerType enum values → the current string types (caffe.proto, V1LayerParameter).
V1_TYPES = {3: 'Concat', 4: 'Convolution', 6: 'Dropout', 14: 'InnerProduct', 15: 'LRN', 17: 'Pooling',
            18: 'ReLU', 20: 'Softmax', 21: 'SoftmaxWithLoss', 5: 'Data', 1: 'Accuracy', 29: 'MemoryData'}
V1_NAMES = {'CONCAT': 'Concat', 'CONVOLUTION': 'Convolution', 'DROPOUT': 'Dropout',
            'INNER_PRODUCT': 'InnerProduct', 'LRN': 'LRN', 'POOLING': 'Pooling', 'RELU': 'ReLU',
            'SOFTMAX': 'Softmax'}


class CaffeFormatError(ValueError):
    """A prototxt or caffemodel that cannot be read as a Caffe net."""


# ---------------------------------------------------------------- protobuf text format (prototxt)

_TOKEN = re.compile(r'\s*(?:#[^\n]*\n?\s*)*(?:("(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\')|([{}:;,<>\[\]])|([^\s{}:;,<>\[\]"\'#]+))')


def _tokens(text):
    pos, n = 0, len(text)
    while True:
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            if text[pos:].strip() and not text[pos:].lstrip().startswith('#'):
                raise CaffeFormatError(f'unreadable prototxt near: {text[pos:pos + 40]!r}')
            return
        pos = m.end()
        if m.group(1) is not None:
            yield 'str', bytes(m.group(1)[1:-1], 'utf-8').decode('unicode_escape')
        elif m.group(2) is not None:
            yield 'punct', m.group(2)
        elif m.group(3) is not None:
            yield 'word', m.group(3)
        if pos >= n:
            return


def _scalar(kind, tok):
    if kind == 'str':
        return tok
    for cast in (int, float):
        try:
            return cast(tok)
        except ValueError:
            pass
    return {'true': True, 'false': False}.get(tok, tok)   # enum names stay strings (MAX, AVE, ...)


def parse_prototxt(text):
    """Parse protobuf text format into nested dicts mapping field name → list of values."""
    toks = list(_tokens(text))
    pos = 0

    def message(closing):
        nonlocal pos
        msg = {}
        while pos < len(toks):
            kind, tok = toks[pos]
            if kind == 'punct' and tok == closing:
                pos += 1
                return msg
            if kind != 'word':
                raise CaffeFormatError(f'expected a field name, found {tok!r}')
            name, pos = tok, pos + 1
            if pos < len(toks) and toks[pos] == ('punct', ':'):
                pos += 1
            if pos >= len(toks):
                raise CaffeFormatError(f'field {name!r} has no value')
            kind, tok = toks[pos]
            if kind == 'punct' and tok in '{<':
                pos += 1
                value = message('}' if tok == '{' else '>')
            elif kind == 'punct':
                raise CaffeFormatError(f'field {name!r} has no value')
            else:
                value, pos = _scalar(kind, tok), pos + 1
            msg.setdefault(name, []).append(value)
            if pos < len(toks) and toks[pos] in (('punct', ';'), ('punct', ',')):
                pos += 1
        if closing is not None:
            raise CaffeFormatError('prototxt ends inside a message (missing "}")')
        return msg

    return message(None)


def first(msg, name, default=None):
    """The first value of a (possibly repeated) field, or default: proto2 'optional' reading."""
    values = msg.get(name)
    return values[0] if values else default


# ---------------------------------------------------------------- protobuf binary format (caffemodel)

def _varint(buf, pos):
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise CaffeFormatError('caffemodel is truncated (inside a varint)')
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf):
    """Yield (field number, wire type, value) for one serialized message; value is an int or memoryview."""
    pos, n = 0, len(buf)
    while pos < n:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + size], pos + size
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise CaffeFormatError(f'caffemodel has an unsupported wire type {wire}')
        if pos > n:
            raise CaffeFormatError('caffemodel is truncated')
        yield number, wire, value


def _packed_varints(value):
    out, pos = [], 0
    while pos < len(value):
        v, pos = _varint(value, pos)
        out.append(v)
    return out


def _blob(buf):
    """BlobProto → float32 array, shaped by its BlobShape or by the legacy num/channels/height/width."""
    legacy, dims, chunks = {}, None, []
    for number, wire, value in _fields(buf):
        if number in (1, 2, 3, 4) and wire == 0:
            legacy[number] = value
        elif number == 5:                            # data: packed (wire 2) or not (wire 5)
            chunks.append(np.frombuffer(value, '<f4'))
        elif number == 8:                            # double_data
            chunks.append(np.frombuffer(value, '<f8').astype(np.float32))
        elif number == 7:                            # BlobShape { repeated int64 dim = 1 [packed] }
            dims = []
            for n2, w2, v2 in _fields(value):
                if n2 == 1:
                    dims += _packed_varints(v2) if w2 == 2 else [v2]
    data = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if dims is None:
        dims = [legacy.get(i, 1) for i in (1, 2, 3, 4)]
    if int(np.prod(dims)) != data.size:
        raise CaffeFormatError(f'caffemodel blob of shape {dims} holds {data.size} values')
    return data.reshape(dims).astype(np.float32)


def read_caffemodel(path):
    """Map layer name → list of parameter arrays (weights, bias) from a binary .caffemodel."""
    with open(path, 'rb') as f:
        buf = memoryview(f.read())
    try:
        params = _layer_params(buf)
    except CaffeFormatError:
        raise
    except ValueError as e:             # float data of an odd byte length, a name that is not UTF-8, ...
        raise CaffeFormatError(f'{path}: corrupt caffemodel ({e})') from None
    if not params:
        raise CaffeFormatError(f'{path}: no layer with parameters found; is it a .caffemodel?')
    return params


def _layer_params(buf):
    params = {}
    # NetParameter: field 100 = LayerParameter (name 1, blobs 7); field 2 = V1LayerParameter (name 4, blobs 6)
    for number, wire, value in _fields(buf):
        if wire != 2 or number not in (100, 2):
            continue
        name_field, blob_field = (1, 7) if number == 100 else (4, 6)
        name, blobs = None, []
        for n2, w2, v2 in _fields(value):
            if n2 == name_field and w2 == 2:
                name = bytes(v2).decode('utf-8')
            elif n2 == blob_field and w2 == 2:
                blobs.append(_blob(v2))
        if name is not None and blobs:
            params[name] = blobs
    return params


# ---------------------------------------------------------------- the net definition

@dataclass
class Layer:
    name: str
    type: str
    bottoms: list
    tops: list
    params: dict = field(default_factory=dict)   # the layer's *_param message, e.g. convolution_param


@dataclass
class NetSpec:
    name: str
    input_name: str
    layers: list


_PARAM_FIELDS = {'Convolution': 'convolution_param', 'Pooling': 'pooling_param', 'LRN': 'lrn_param',
                 'InnerProduct': 'inner_product_param', 'Concat': 'concat_param',
                 'Dropout': 'dropout_param', 'Softmax': 'softmax_param', 'ReLU': 'relu_param'}


def read_prototxt(path):
    """Read a deploy prototxt into a NetSpec: the input blob and the layers in network order."""
    try:
        with open(path, encoding='utf-8') as f:
            text = f.read()
    except UnicodeDecodeError:
        raise CaffeFormatError(f'{path}: not a text prototxt (is it a binary .caffemodel?)') from None
    net = parse_prototxt(text)
    layers, input_name = [], first(net, 'input')
    for msg in net.get('layer', []) + net.get('layers', []):
        ltype = first(msg, 'type')
        ltype = V1_TYPES.get(ltype, ltype) if isinstance(ltype, int) else V1_NAMES.get(ltype, ltype)
        if ltype == 'Input':
            input_name = input_name or first(msg, 'top')
            continue
        layers.append(Layer(first(msg, 'name'), ltype, msg.get('bottom', []), msg.get('top', []),
                            first(msg, _PARAM_FIELDS.get(ltype, ''), {})))
    if input_name is None or not layers:
        raise CaffeFormatError(f'{path}: no input blob or no layers; is it a deploy prototxt?')
    return NetSpec(first(net, 'name', 'net'), input_name, layers)
