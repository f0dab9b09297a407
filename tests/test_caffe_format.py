"""Reading Caffe's files without Caffe: deploy.prototxt (text format) and .caffemodel (binary protobuf,
written here by the real protobuf library from caffe.proto's field numbers)."""
import re

import numpy as np
import pytest

import caffe_pb
from classicdream.caffe import CaffeFormatError, parse_prototxt, read_caffemodel, read_prototxt


def test_reads_the_real_deploy(shared):
    text = (shared / 'models' / 'deploy.prototxt').read_text()
    spec = read_prototxt(shared / 'models' / 'deploy.prototxt')
    named = re.findall(r'layer\s*\{\s*name:\s*"([^"]+)"\s*type:\s*"([^"]+)"', text)
    assert spec.name == 'GoogleNet' and spec.input_name == 'data'
    assert [(layer.name, layer.type) for layer in spec.layers] == [nt for nt in named if nt[1] != 'Input']
    assert [t for layer in spec.layers for t in layer.tops] == re.findall(r'top:\s*"([^"]+)"', text)[1:]
    assert [b for layer in spec.layers for b in layer.bottoms] == re.findall(r'bottom:\s*"([^"]+)"', text)
    weights = np.load(shared / 'models' / 'bvlc_googlenet_caffe_layout.npz')
    for layer in spec.layers:                  # parameters as the weights' shapes say they must be
        if layer.type in ('Convolution', 'InnerProduct'):
            shape = weights[f'{layer.name}.weight'].shape
            assert layer.params['num_output'] == [shape[0]]
            if layer.type == 'Convolution':
                assert layer.params['kernel_size'] == [shape[2]] == [shape[3]]
    pool = {layer.name: layer.params for layer in spec.layers}['pool5/7x7_s1']
    assert (pool['pool'], pool['kernel_size'], pool['stride']) == (['AVE'], [7], [1])


def test_text_format_syntax():
    text = '''# a comment
    name: "a \\"quoted\\" name"   # trailing comment
    layer < name: 'x'; n: -3, f: 1e-4 flag: true kind: MAX >
    layer { sub { v: 1 v: 2 } }
    '''
    assert parse_prototxt(text) == {
        'name': ['a "quoted" name'],
        'layer': [{'name': ['x'], 'n': [-3], 'f': [1e-4], 'flag': [True], 'kind': ['MAX']},
                  {'sub': [{'v': [1, 2]}]}]}


@pytest.mark.parametrize('v1', [False, True], ids=['layer-BlobShape', 'V1-legacy-dims'])
def test_reads_caffemodel(tmp_path, v1):
    rng = np.random.default_rng(0)
    conv = [rng.normal(size=(4, 3, 5, 5)).astype(np.float32), rng.normal(size=4).astype(np.float32)]
    fc = [rng.normal(size=(10, 36)).astype(np.float32), rng.normal(size=10).astype(np.float32)]
    layers = [('conv', 'CONVOLUTION' if v1 else 'Convolution', conv), ('relu', 'RELU' if v1 else 'ReLU', []),
              ('fc', 'INNER_PRODUCT' if v1 else 'InnerProduct', fc)]
    params = read_caffemodel(caffe_pb.write_caffemodel(tmp_path / 'm.caffemodel', layers, v1=v1))
    assert list(params) == ['conv', 'fc']                   # layers without blobs carry no parameters
    for name, _, arrays in layers[::2]:
        assert len(params[name]) == len(arrays)
        for got, want in zip(params[name], arrays):
            assert got.dtype == np.float32
            assert got.shape == ((1,) * (4 - want.ndim) + want.shape if v1 else want.shape)
            assert np.array_equal(got.reshape(want.shape), want)


def test_reads_double_data(tmp_path):
    net = caffe_pb.NetParameter()
    blob = net.layer.add(name='ip', type='InnerProduct').blobs.add()
    blob.shape.dim.extend([2, 3])
    blob.double_data.extend([0.5, -1.25, 3.0, 1e-3, 7.0, -0.0])
    (tmp_path / 'd.caffemodel').write_bytes(net.SerializeToString())
    got, = read_caffemodel(tmp_path / 'd.caffemodel')['ip']
    assert np.array_equal(got, np.float32([[0.5, -1.25, 3.0], [1e-3, 7.0, -0.0]]))


# ---------------------------------------------------------------- malformed files

def _varint(n):
    out = b''
    while n > 0x7F:
        out, n = out + bytes([n & 0x7F | 0x80]), n >> 7
    return out + bytes([n])


def _field(number, payload):
    """One length-delimited protobuf field, by hand: for damage the protobuf library will not write."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _blob_mismatch():
    net = caffe_pb.NetParameter()
    blob = net.layer.add(name='ip', type='InnerProduct').blobs.add()
    blob.shape.dim.extend([2, 3])
    blob.data.extend([1.0] * 5)
    return net.SerializeToString()


CAFFEMODELS = {                                  # damage done to a good (tiny) caffemodel's bytes
    'truncated-early': lambda good: good[:7],
    'truncated-half': lambda good: good[:len(good) // 2],
    'truncated-last-byte': lambda good: good[:-1],
    'empty': lambda good: b'',
    'prototxt': lambda good: caffe_pb.tiny_prototxt().encode(),
    'odd-float-bytes': lambda good: _field(100, _field(1, b'ip') + _field(7, _field(5, b'\0\0\x80'))),
    'name-not-utf8': lambda good: _field(100, _field(1, b'\xff\xfe') + _field(7, _field(5, b'\0' * 4))),
    'shape-mismatch': lambda good: _blob_mismatch(),
}


@pytest.mark.parametrize('make', CAFFEMODELS.values(), ids=CAFFEMODELS)
def test_malformed_caffemodel(tmp_path, make):
    good = caffe_pb.write_tiny_net(tmp_path)[1].read_bytes()
    (tmp_path / 'bad.caffemodel').write_bytes(make(good))
    with pytest.raises(CaffeFormatError):
        read_caffemodel(tmp_path / 'bad.caffemodel')


PROTOTXTS = {
    'unclosed': b'input: "data" layer { name: "a" type: "ReLU" bottom: "data" top: "data"',
    'stray-brace': b'input: "data" }',
    'no-value': b'input: "data" layer { name: }',
    'no-layers': b'name: "net" input: "data"',
    'not-a-net': b'hello world',
    'binary': b'\n\x04tiny\xa2\x06\xcb\x05\n\x05conv1\x12\x0b',
}


@pytest.mark.parametrize('data', PROTOTXTS.values(), ids=PROTOTXTS)
def test_malformed_prototxt(tmp_path, data):
    (tmp_path / 'bad.prototxt').write_bytes(data)
    with pytest.raises(CaffeFormatError):
        read_prototxt(tmp_path / 'bad.prototxt')
