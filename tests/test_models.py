"""Where the model comes from: the user's caffemodel, the local mirror, or a hash-checked download from
a local HTTP server; each build says which source it used."""
import hashlib
import shutil
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

import caffe_pb
from classicdream.convert import convert
from classicdream.models import CAFFEMODEL, DEPLOY, NPZ, ONNX_NAME, ModelError, Official, build
from test_convert import recorded_sha256


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def official_for(deploy, caffemodel, base='http://127.0.0.1:9'):
    """An `official` mapping whose hashes are those of the given files (the tiny net stands in for
    bvlc_googlenet, whose official caffemodel is not available here)."""
    return {DEPLOY: Official(DEPLOY, f'{base}/{DEPLOY}', 'sha256', sha256(deploy)),
            CAFFEMODEL: Official(CAFFEMODEL, f'{base}/{CAFFEMODEL}', 'sha1',
                                 hashlib.sha1(caffemodel.read_bytes()).hexdigest())}


@pytest.fixture
def tiny(tmp_path_factory):
    """The tiny Caffe net as the files a user or a server would have, and its ONNX file's sha256."""
    folder = tmp_path_factory.mktemp('tiny')
    deploy, caffemodel, _ = caffe_pb.write_tiny_net(folder, deploy_name=DEPLOY, model_name=CAFFEMODEL)
    return deploy, caffemodel, convert(deploy, caffemodel, folder / 'expected.onnx')


def test_mirror_is_used_and_said(tmp_path, shared, capsys):
    mirror = shared / 'models'
    out = build(tmp_path, mirror=mirror)
    assert out == tmp_path / ONNX_NAME and sha256(out) == recorded_sha256()
    assert f'from local mirror {mirror} ({NPZ})' in capsys.readouterr().out


@pytest.mark.parametrize('damaged', [NPZ, DEPLOY])
def test_mirror_with_wrong_hash_is_refused(tmp_path, shared, damaged):
    mirror = tmp_path / 'mirror'
    shutil.copytree(shared / 'models', mirror)
    data = bytearray((mirror / damaged).read_bytes())
    data[len(data) // 2] ^= 0x01
    (mirror / damaged).chmod(0o644)
    (mirror / damaged).write_bytes(data)
    with pytest.raises(ModelError, match=f'{damaged}: sha256 is'):
        build(tmp_path / 'models', mirror=mirror)
    assert not (tmp_path / 'models' / ONNX_NAME).exists()


def test_user_caffemodel_is_preferred_over_the_mirror(tmp_path, shared, tiny):
    deploy, caffemodel, expected = tiny
    for f in (deploy, caffemodel):
        shutil.copy(f, tmp_path)
    log = []
    out = build(tmp_path, mirror=shared / 'models', official=official_for(deploy, caffemodel), log=log.append)
    assert sha256(out) == expected
    assert len(log) == 1 and f'from your caffemodel ({CAFFEMODEL})' in log[0]


def test_user_caffemodel_with_wrong_hash_is_refused(tmp_path, shared, tiny):
    deploy, caffemodel, _ = tiny
    shutil.copy(deploy, tmp_path)
    (tmp_path / CAFFEMODEL).write_bytes(caffemodel.read_bytes()[:-1])
    with pytest.raises(ModelError, match=f'{CAFFEMODEL}: sha1 is'):
        build(tmp_path, mirror=shared / 'models', official=official_for(deploy, caffemodel))
    assert not (tmp_path / ONNX_NAME).exists()


# ---------------------------------------------------------------- downloads, from a local HTTP server

class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path_factory, monkeypatch):
    """(folder it serves, base URL) of an HTTP server on 127.0.0.1, stopped at teardown."""
    for name in ('http_proxy', 'HTTP_PROXY', 'all_proxy', 'ALL_PROXY'):
        monkeypatch.delenv(name, raising=False)
    root = tmp_path_factory.mktemp('www')
    httpd = ThreadingHTTPServer(('127.0.0.1', 0), partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f'http://127.0.0.1:{httpd.server_address[1]}'
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def test_download_is_verified_and_converted(tmp_path, tiny, server, capsys):
    deploy, caffemodel, expected = tiny
    root, base = server
    shutil.copy(deploy, root / 'deploy.prototxt')
    shutil.copy(caffemodel, root / 'weights.caffemodel')
    urls = {DEPLOY: f'{base}/deploy.prototxt', CAFFEMODEL: f'{base}/weights.caffemodel'}
    log = []
    out = build(tmp_path, mirror=False, urls=urls, official=official_for(deploy, caffemodel), log=log.append)
    assert sha256(out) == expected
    assert (tmp_path / CAFFEMODEL).read_bytes() == caffemodel.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([DEPLOY, CAFFEMODEL, ONNX_NAME])
    assert len(log) == 1 and 'from download' in log[0]
    assert capsys.readouterr().out.split() == ['downloading', urls[DEPLOY], 'downloading', urls[CAFFEMODEL]]


@pytest.mark.parametrize('served,match', [
    ('corrupted', 'sha1 is [0-9a-f]+, expected'),
    (None, r'download of http://127\.0\.0\.1:\d+/weights\.caffemodel failed: HTTP Error 404'),
], ids=['wrong-bytes', 'not-found'])
def test_bad_download_is_refused_and_leaves_nothing(tmp_path, tiny, server, served, match):
    deploy, caffemodel, _ = tiny
    root, base = server
    shutil.copy(deploy, root / 'deploy.prototxt')
    if served == 'corrupted':
        data = bytearray(caffemodel.read_bytes())
        data[len(data) // 2] ^= 0x01
        (root / 'weights.caffemodel').write_bytes(data)
    urls = {DEPLOY: f'{base}/deploy.prototxt', CAFFEMODEL: f'{base}/weights.caffemodel'}
    with pytest.raises(ModelError, match=match):
        build(tmp_path, mirror=False, urls=urls, official=official_for(deploy, caffemodel))
    assert [p.name for p in tmp_path.iterdir()] == [DEPLOY]        # no caffemodel, no partial file, no onnx
