"""Where bvlc_googlenet comes from, and building ``models/bvlc_googlenet.onnx`` from it.

Sources, in order (the first that is present wins, and the build says which it used):
1. a ``bvlc_googlenet.caffemodel`` the user already has, in the models folder (sha1-checked);
2. a local mirror folder holding ``bvlc_googlenet_caffe_layout.npz`` + ``deploy.prototxt``, checked
   against its SHA256SUMS (``$CLASSICDREAM_MIRROR``, default ``../shared/models`` beside the checkout);
3. the official files, downloaded and hash-checked (a wrong hash is refused and the file removed).
"""
import hashlib
import os
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .convert import convert
from .files import atomic_write

REPO = Path(__file__).resolve().parent.parent
ONNX_NAME = 'bvlc_googlenet.onnx'
CAFFEMODEL = 'bvlc_googlenet.caffemodel'
NPZ = 'bvlc_googlenet_caffe_layout.npz'
DEPLOY = 'deploy.prototxt'


@dataclass(frozen=True)
class Official:
    name: str
    url: str
    algorithm: str
    digest: str


OFFICIAL = (
    Official(DEPLOY, 'https://raw.githubusercontent.com/BVLC/caffe/master/models/bvlc_googlenet/deploy.prototxt',
             'sha256', 'fa36cd4112a3240a29600a5aa35333f31bec33daa1a6085b0af308a9f50f0c50'),
    Official(CAFFEMODEL, 'http://dl.caffe.berkeleyvision.org/bvlc_googlenet.caffemodel',
             'sha1', '405fc5acd08a3bb12de8ee5e23a96bec22f08204'),
)
OFFICIAL_BY_NAME = {o.name: o for o in OFFICIAL}


class ModelError(RuntimeError):
    """The model cannot be found, fetched or verified."""


def models_dir():
    """``$CLASSICDREAM_MODELS``, else the checkout's ``models/``, else ``~/.cache/classicdream/models``."""
    if os.environ.get('CLASSICDREAM_MODELS'):
        return Path(os.environ['CLASSICDREAM_MODELS'])
    if (REPO / 'models' / 'README.md').exists():
        return REPO / 'models'
    return Path(os.environ.get('XDG_CACHE_HOME', Path.home() / '.cache')) / 'classicdream' / 'models'


def mirror_dir():
    """``$CLASSICDREAM_MIRROR``, else ``../shared/models`` beside the checkout when it exists."""
    if os.environ.get('CLASSICDREAM_MIRROR'):
        return Path(os.environ['CLASSICDREAM_MIRROR'])
    default = REPO.parent / 'shared' / 'models'
    return default if default.is_dir() else None


def file_digest(path, algorithm='sha256'):
    h = hashlib.new(algorithm)
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def verify(path, algorithm, digest):
    actual = file_digest(path, algorithm)
    if actual != digest:
        raise ModelError(f'{path}: {algorithm} is {actual}, expected {digest}')


def verify_mirror(folder):
    """Check the mirror's npz and prototxt against its SHA256SUMS."""
    sums = {}
    for line in (Path(folder) / 'SHA256SUMS').read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            sums[name.lstrip('*')] = digest
    for name in (NPZ, DEPLOY):
        if name not in sums:
            raise ModelError(f'{folder}/SHA256SUMS lists no {name}')
        verify(Path(folder) / name, 'sha256', sums[name])


def download(url, dest, algorithm, digest):
    """Fetch url to dest through a temporary file; a wrong hash is refused and nothing is left behind."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)

    def fetch(out):
        with urllib.request.urlopen(url, timeout=60) as response:
            shutil.copyfileobj(response, out, 1 << 20)
    try:
        atomic_write(dest, fetch, check=lambda tmp: verify(tmp, algorithm, digest))
    except OSError as e:
        raise ModelError(f'download of {url} failed: {e}') from None


def _official(folder, item, urls=None):
    """An official file in `folder`: verified if present, downloaded (and verified) if not."""
    path = Path(folder) / item.name
    if not path.exists():
        url = (urls or {}).get(item.name, item.url)
        print(f'downloading {url}')
        download(url, path, item.algorithm, item.digest)
    else:
        verify(path, item.algorithm, item.digest)
    return path


def pinned_sha256(name=ONNX_NAME):
    """The sha256 that ``models/SHA256SUMS`` in the checkout pins for `name`, or None (no checkout, not listed)."""
    try:
        lines = (REPO / 'models' / 'SHA256SUMS').read_text().splitlines()
    except OSError:
        return None
    return next((line.split()[0] for line in lines if line.split()[1:] == [name]), None)


def find_sources(folder=None, mirror=None, urls=None, official=OFFICIAL_BY_NAME, download=True):
    """(kind, deploy path, weights path) of the first source present; downloads as the last resort, or
    raises ModelError where `download` is False and no source is on this machine."""
    folder = Path(folder or models_dir())
    mirror = mirror_dir() if mirror is None else mirror
    caffemodel = folder / CAFFEMODEL
    if caffemodel.exists():
        verify(caffemodel, official[CAFFEMODEL].algorithm, official[CAFFEMODEL].digest)
        deploy = folder / DEPLOY if (folder / DEPLOY).exists() or not mirror else Path(mirror) / DEPLOY
        verify(deploy, official[DEPLOY].algorithm, official[DEPLOY].digest)
        return 'your caffemodel', deploy, caffemodel
    if mirror and (Path(mirror) / NPZ).exists():
        verify_mirror(mirror)
        return f'local mirror {mirror}', Path(mirror) / DEPLOY, Path(mirror) / NPZ
    if not download:
        raise ModelError('no caffemodel or mirror on this machine to build from')
    deploy = _official(folder, official[DEPLOY], urls)
    return 'download', deploy, _official(folder, official[CAFFEMODEL], urls)


def build(folder=None, mirror=None, urls=None, official=OFFICIAL_BY_NAME, force=False, log=print):
    """Make ``<models>/bvlc_googlenet.onnx`` if it is missing, damaged or `force`d; return its path.

    Damaged means its sha256 is not the one SHA256SUMS pins, as after a killed copy or a full
    disk: it is rebuilt from a source on this machine and the user told, or refused in one line saying
    how to rebuild it; it is not downloaded again unasked.
    """
    folder = Path(folder or models_dir())
    out = folder / ONNX_NAME
    pinned = pinned_sha256()
    damaged = False
    if out.exists() and not force:
        digest = file_digest(out)
        if pinned is None or digest == pinned:
            return out
        damaged = True
        try:
            kind, deploy, weights = find_sources(folder, mirror, urls, official, download=False)
        except ModelError as e:
            raise ModelError(f'{out} is damaged (sha256 {digest[:12]}..., SHA256SUMS pins {pinned[:12]}...) and '
                             f'{e}: rebuild it with `classicdream models --force`') from None
        log(f'{out} is damaged (sha256 {digest[:12]}..., SHA256SUMS pins {pinned[:12]}...): rebuilding it')
    else:
        kind, deploy, weights = find_sources(folder, mirror, urls, official)
    folder.mkdir(parents=True, exist_ok=True)
    digest = convert(deploy, weights, out)
    log(f'converted bvlc_googlenet from {kind} ({weights.name}) -> {out} (sha256 {digest})')
    if damaged and digest != pinned:
        raise ModelError(f'{out} rebuilt from {kind} has sha256 {digest}, not the {pinned} that SHA256SUMS pins')
    return out
