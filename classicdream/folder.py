"""Dreaming a folder of images, here or on a cluster: resumable, and one bad file does not stop the rest."""
import sys
from collections import Counter
from pathlib import Path

from .cluster import runner
from .dreamer import UserError, slug
from .images import holds_recipe, load_image, write_encoded
from .outputs import check_output, image_files, output_folder


def dream_file(d, previous, img, recipe, label, tile):
    """One image of a folder: a task for cluster.runner."""
    return d.tiled(tile).encoded(img, recipe, label)


def dream_folder(d, folder, outdir, cluster=None, workers=None):
    """Dream every image in `folder` into `outdir`, here or on a cluster: skip those already done with
    this recipe, report a failure per file and go on, and fail (one line, exit 2) at the end if any did."""
    images = image_files(folder)
    if not images:
        raise UserError(f'{folder}: no images in this folder')
    outdir = outdir or Path('dreams') / slug(folder.resolve().name)
    output_folder(outdir)
    d.check()                                         # a bad --end fails once, not once per image
    stems = Counter(p.stem for p in images)
    outs, skipped, failed = {}, 0, []

    def fail(path, e):
        failed.append(path.name)
        print(f'classicdream: {path}: {e}', file=sys.stderr)

    def lanes():                                      # images are read as workers become free
        nonlocal skipped
        for path in images:
            out = outs[path] = outdir / f'{path.stem if stems[path.stem] == 1 else path.name}.jpg'
            recipe = d.recipe(command='dream', input=path.name)
            if holds_recipe(out, recipe):
                skipped += 1
                continue
            try:
                check_output(str(out), [str(path)])
                img = load_image(path)
                each = d.fitted(img.shape)
            except (UserError, ValueError) as e:
                fail(path, e)
                continue
            yield None, [(path, (img, each.recipe(command='dream', input=path.name), path.name, each.tile))]
    dreamed = 0
    with runner(cluster, d, workers) as pool:
        for path, result in pool.run(dream_file, lanes()):
            if isinstance(result, Exception):           # one bad file must not stop the others
                fail(path, result)
                continue
            write_encoded(outs[path], result)
            dreamed += 1
            print(outs[path])
    summary = f'{dreamed} dreamed, {skipped} already done, {len(failed)} failed'
    if failed:
        raise UserError(f'{summary}: {", ".join(failed)}')
    print(summary, file=sys.stderr)
