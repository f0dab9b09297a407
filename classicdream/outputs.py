"""Where results go, and what is never overwritten: an output is written only where it is new or holds an
earlier classicdream result, and never over an input. Each refusal is one line (a UserError)."""
import os
from pathlib import Path

from .dreamer import UserError
from .images import check_writable, recipe_or_none, same_file


def image_files(folder):
    """The files in `folder` that PIL can name as images, sorted; hidden files are left out."""
    from PIL import Image
    extensions = Image.registered_extensions()
    return sorted(p for p in Path(folder).iterdir()
                  if p.is_file() and not p.name.startswith('.') and p.suffix.lower() in extensions)


def output_folder(folder):
    """Create an output folder (and its parents), refusing a path that is a file."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f'{folder}: exists and is not a folder')
    folder.mkdir(parents=True, exist_ok=True)


def check_output(out, inputs):
    """Refuse, before any work, an output that would replace an input or a file that is not ours."""
    check_writable(out)
    for path in inputs:
        if same_file(out, path):
            raise UserError(f'{out}: the output would overwrite the input {path}; choose another --out')
    if os.path.exists(out) and recipe_or_none(out) is None:
        raise UserError(f'{out}: exists and is not a classicdream result; not overwriting it')


def output(out, default_name, inputs):
    """The output path: --out as given, or dreams/DEFAULT_NAME (that folder is ours to create); checked."""
    if out is None:
        os.makedirs('dreams', exist_ok=True)
        out = os.path.join('dreams', default_name)
    check_output(str(out), [str(p) for p in inputs])
    return str(out)


def check_video_output(out, option='--mp4', suffix='.mp4'):
    """Refuse a video (or GIF) path that is not `suffix`, is in no writable folder, or holds a file of
    someone else's."""
    if not out.lower().endswith(suffix):
        raise UserError(f'{out}: {option} must name a {suffix} file')
    folder = os.path.dirname(out) or '.'
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise UserError(f'{out}: folder {folder!r} does not exist or is not writable')
    from .video import is_ours
    if os.path.isdir(out) or (os.path.exists(out) and not is_ours(out)):
        raise UserError(f'{out}: exists and is not a classicdream video; not overwriting it')
