"""The layer tour: one image dreamed at every chosen layer, here or on a cluster, on one labelled sheet.

Resumable: a layer whose dream is already in the folder with the same recipe is not dreamed again."""
from pathlib import Path

from .cluster import runner
from .dream import check_octaves
from .graph import ACTIVATIONS, is_silu
from .dreamer import UserError, slug
from .images import contact_sheet, decode_image, holds_recipe, load_image, save_image, write_encoded
from .outputs import check_output, output_folder


def atlas_layers(net):
    """Every activation output in network order (ReLUs, concatenations, and another net's HardSwish, GELU,
    SiLU, ...): each stage of how the net sees, conv1 to inception_5b in bvlc_googlenet."""
    produced = {o: node for node in net.nodes for o in node.outputs}
    return [layer for layer, tensor, _ in net.layers
            if tensor in produced and (produced[tensor].op in ACTIVATIONS or is_silu(produced[tensor], produced))]


def layer_list(value):
    """--layers=A,B,... (fire reads it as a tuple) as a list of names."""
    layers = value if isinstance(value, (tuple, list)) else str(value).split(',')
    layers = [str(layer).strip() for layer in layers if str(layer).strip()]
    if not layers:
        raise UserError('--layers must name at least one layer')
    return layers


def dream_layer(d, previous, layer, img, recipe, tile):
    """One layer of an atlas: a task for cluster.runner."""
    return d.at(layer).tiled(tile).encoded(img, recipe, layer)


def atlas(d, img, layers, outdir, thumb, cluster=None, workers=None):
    """Dream `img` (a path) at each of `layers` (default atlas_layers) into `outdir` (default
    atlas/<image>/), each dream beside the contact sheet atlas.jpg; print each path as it is written."""
    base, name = load_image(img), Path(str(img)).name
    layers = layers or atlas_layers(d.net)
    dreamers = [d.at(layer).fitted(base.shape) for layer in layers]
    for each in dreamers:
        check_octaves(d.net, base.shape, each.octave_n, each.octave_scale, each.end)
    outdir = Path(outdir or f'atlas/{slug(Path(name).stem)}')
    output_folder(outdir)
    sheet = str(outdir / 'atlas.jpg')
    check_output(sheet, [img])
    dreams, paths, lanes = {}, {}, []
    for i, each in enumerate(dreamers):
        paths[i], recipe = str(outdir / f'{i:02d}_{each.name()}.jpg'), each.recipe(command='atlas', input=name)
        if holds_recipe(paths[i], recipe):               # done in an earlier, interrupted run
            dreams[i] = load_image(paths[i])
            continue
        check_output(paths[i], [img])
        lanes.append((None, [(i, (each.end, base, recipe, each.tile))]))
    with runner(cluster, d, workers) as pool:
        for i, result in pool.run(dream_layer, lanes):
            if isinstance(result, Exception):
                raise UserError(f'{layers[i]}: {result}')
            write_encoded(paths[i], result)
            dreams[i] = decode_image(result, paths[i])
            print(paths[i])
    save_image(sheet, contact_sheet([dreams[i] for i in range(len(layers))], layers, thumb),
               dict(d.recipe(command='atlas', input=name), end=None, layers=list(layers)))
    print(sheet)
