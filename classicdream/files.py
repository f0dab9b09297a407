"""Writing user-visible files safely: a temporary file in the same folder, then an atomic rename."""
import os
import tempfile
from pathlib import Path


def atomic_write(path, write, check=None):
    """Call write(binary file) on a temporary file beside `path`, then check(temp path), then rename.

    An interrupted or refused write leaves neither a partial file nor a changed `path`.
    The file gets the usual permissions (0666 less the umask), not mkstemp's private 0600.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}-', suffix='.part')
    try:
        with os.fdopen(fd, 'wb') as f:
            write(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        if check is not None:
            check(tmp)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
