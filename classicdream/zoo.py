"""Published ONNX models to dream with, pinned like bvlc_googlenet: ``--model=resnet18-v2-7``.

A name below is the ONNX model zoo's file (onnx/models, ``validated/vision/classification``), kept in
the models folder: downloaded there on first use where the machine has internet, and checked against
the sha256 and size the zoo publishes (its Git LFS pointer) at every load. A wrong file is refused,
never used. Each entry also says which input its net was trained on (dream.PREPROCESSINGS).
"""
import os
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .files import atomic_write
from .models import ModelError, file_digest, models_dir

ZOO_URL = 'https://github.com/onnx/models/raw/main/validated/vision/classification/'


@dataclass(frozen=True)
class Published:
    file: str               # its name in the models folder
    path: str               # under ZOO_URL
    sha256: str             # of the file downloaded (an archive's, for a .tar.gz)
    size: int
    preprocess: str


ZOO = {
    'resnet18-v2-7': Published('resnet18-v2-7.onnx', 'resnet/model/resnet18-v2-7.onnx',
                               '3b4d048057854022232aa20bf68262e31718ab7119a17f920b8a2dc1433f824b', 46806737, 'torch'),
    'resnet50-v1-7': Published('resnet50-v1-7.onnx', 'resnet/model/resnet50-v1-7.tar.gz',
                               '898a9183256e884ae06fb1c11869386eccd38393ab41d9339909e974519a9feb', 95435189, 'torch'),
    'squeezenet1.0-8': Published('squeezenet1.0-8.onnx', 'squeezenet/model/squeezenet1.0-8.onnx',
                                 '3c0bff2f7c984350d3ffa98e0167dc08c15da88f05d0c31989ebeba6fbb5e025', 4952222, 'torch'),
    'densenet-12': Published('densenet-12.onnx', 'densenet-121/model/densenet-12.onnx',
                             '0294e7e88e5b3360de9b0fdc321baf9e6ef18b7f058c4536caae3b9f18ed9ed5', 32726877, 'torch'),
    'googlenet-7': Published('googlenet-7.onnx', 'inception_and_googlenet/googlenet/model/googlenet-7.onnx',
                             '5725ccfd90845735ce5897faf7843c3f9b13acda3c4f3bff82cb21c9337c9de8', 28020232, 'caffe'),
}


def resolve(model):
    """A --model value as (path of an ONNX file, the preprocessing it was published with or None).

    A file that exists is used as it is; a zoo name is its checked file in the models folder, downloaded
    there first if missing."""
    if os.path.isfile(str(model)) or str(model) not in ZOO:
        if not os.path.isfile(str(model)):
            raise ModelError(f'{model}: no such model file, nor a model-zoo name ({", ".join(ZOO)})')
        return Path(str(model)), None
    entry = ZOO[str(model)]
    path = models_dir() / entry.file
    if not path.exists():
        download(entry, path)
    elif entry.path.endswith('.onnx'):
        check(path, entry)
    return path, entry.preprocess


def check(path, entry):
    size, digest = os.path.getsize(path), file_digest(path)
    if (size, digest) != (entry.size, entry.sha256):
        raise ModelError(f'{path}: not the published {entry.file} (sha256 {digest}, {size} bytes; expected '
                         f'{entry.sha256}, {entry.size} bytes): remove it to download it again')


def download(entry, path):
    """Fetch the entry into `path`, hash-checked (an archive's one .onnx file is extracted)."""
    url = ZOO_URL + entry.path
    part = path.with_name(f'.{Path(entry.path).name}.download')
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(part, 'wb') as f:
            while chunk := response.read(1 << 20):
                f.write(chunk)
        check(part, entry)
        if entry.path.endswith('.tar.gz'):
            with tarfile.open(part) as archive:
                members = [m for m in archive.getmembers() if m.isfile() and m.name.endswith('.onnx')]
                if len(members) != 1:
                    raise ModelError(f'{url}: holds {len(members)} .onnx files, expected one')
                data = archive.extractfile(members[0]).read()
            atomic_write(path, lambda f: f.write(data))
        else:
            os.replace(part, path)
    except OSError as e:
        raise ModelError(f'{entry.file}: cannot download {url} ({" ".join(str(e).split())}); fetch it by hand '
                         f'and give --model=PATH') from None
    finally:
        part.unlink(missing_ok=True)
