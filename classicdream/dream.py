"""The 2015 notebook's dream, step for step: preprocess, make_step, deepdream, objectives, zoom frames.

Function names, parameters, defaults and the order of operations are the notebook's (google/deepdream
``dream.ipynb``). What differs is where the work runs: the whole dream stays on the device. The octave
pyramid and the detail carried between octaves are resampled there (resample.zoom, scipy's map), the
``iter_n`` steps of one octave are a single compiled ``lax.scan``, and the jitter offsets the notebook
drew with ``np.random.randint`` are drawn up front from the same ``RandomState`` stream, in the same
order, and passed in. So a seed reproduces what the notebook did after ``np.random.seed(seed)``.

Each octave is padded up to the octave of the image's bucket (octave_buckets) and carries its true
extent: nearby image sizes then share compiled programs, and the true pixels get what the unpadded
image would.
"""

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import scipy.ndimage as nd
from jax.tree_util import Partial

from . import resample
from .lapnorm import lap_normalize
from .graph import as_objective, backward, bucketable, gradient_fn, objective_L2
from .ops import HIGHEST
from .programs import abstract, bucket, program

@dataclass(frozen=True)
class Preprocessing:
    """How an RGB image on 0..255 becomes a net's input: channels reversed to BGR or not, then
    (x - mean) / std per channel, in the net's channel order and on the 0..255 scale."""
    name: str
    bgr: bool
    mean: tuple
    std: tuple = (1.0, 1.0, 1.0)

    @property
    def description(self):
        return DESCRIPTIONS[self.name]

    @property
    def unit(self):
        return self.std == (1.0, 1.0, 1.0)

    @property
    def mean_chw(self):
        return np.float32(self.mean)[:, None, None]

    @property
    def std_chw(self):
        return np.float32(self.std)[:, None, None]


PREPROCESSINGS = {p.name: p for p in (
    Preprocessing('caffe', True, (104.0, 116.0, 122.0)),                            # bvlc_googlenet's, the notebook's
    Preprocessing('torch', False, (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),   # torchvision's ImageNet
    Preprocessing('tf', False, (127.5, 127.5, 127.5), (127.5, 127.5, 127.5)),         # Keras' [-1, 1]
)}
DESCRIPTIONS = {'caffe': "BGR, less Caffe's ImageNet mean, on 0..255",
                'torch': "RGB on 0..1 less ImageNet's mean, over its std: torchvision's",
                'tf': "RGB scaled to [-1, 1]: Keras' applications'"}
CAFFE = PREPROCESSINGS['caffe']
DEFAULT_END = 'inception_4c/output'


def preprocess(img, prep=CAFFE):
    """HWC RGB float image → the net's CHW BGR input, mean subtracted (the notebook's preprocess); another
    net's own input with `prep`."""
    x = jnp.moveaxis(jnp.asarray(img, jnp.float32), 2, 0)
    x = (x[::-1] if prep.bgr else x) - prep.mean_chw
    return x if prep.unit else x / prep.std_chw


def deprocess(img, prep=CAFFE):
    """The inverse of preprocess: CHW BGR, mean subtracted → HWC RGB float image."""
    x = jnp.asarray(img) if prep.unit else jnp.asarray(img) * prep.std_chw
    x = x + prep.mean_chw
    return jnp.moveaxis(x[::-1] if prep.bgr else x, 0, 2)


def for_display(vis, clip=True):
    """The notebook shows unclipped dreams scaled by their 99.98th percentile; clipped ones as they are."""
    return vis if clip else vis * (255.0 / np.percentile(vis, 99.98))


def objective_guide(net, guide_img, end, prep=CAFFE):
    """The notebook's guided objective (cells 25–27): at each position, the guide feature that matches best.

    The guide's features at `end` are computed once; the objective then sets each position's diff to the
    guide feature vector with the largest dot product with the dream's own feature there.
    """
    guide_features = net.forward(preprocess(guide_img, prep)[None], end)[0]
    return Partial(_guide_diff, jnp.asarray(guide_features))


def _guide_diff(guide_features, dst):
    x = dst[0]
    y = guide_features
    ch = x.shape[0]
    x = x.reshape(ch, -1)
    y = y.reshape(ch, -1)
    A = jnp.dot(x.T, y, precision=HIGHEST)          # the matrix of dot-products with guide features
    return y[:, A.argmax(1)].reshape(dst.shape)      # select the ones that match best


def make_step(gradient, src, shift, *, step_size=1.5, clip=True, extent=None, lapnorm=0, prep=CAFFE, mask=None):
    """Basic gradient ascent step, on the (3, H, W) input `src`; `shift` is the step's jitter (ox, oy).

    `gradient(src)` is the notebook's net.forward(end) + objective + net.backward(start=end), returning
    the diff that reaches the input: the whole image at once, or tile by tile for big images. With
    `extent` (h, w), `src` is padded to a bucket: the roll and the mean see only its true h x w pixels.
    `lapnorm` (levels; 0: the notebook's step) first normalises the gradient's frequency bands (lapnorm.py).
    Another net's input (`prep`) is clipped to its own range, and the step stays in pixel levels.
    A `mask` (1, H, W) on 0..1, rolled with the jitter as the image is, weighs the gradient pixel by pixel,
    and the step is normalised over the masked pixels alone, so a small region dreams as strongly as a
    whole image would; an all-white mask is the notebook's step exactly.
    """
    ox, oy = shift[0], shift[1]
    src = roll(src, ox, oy, extent)                                # apply jitter shift
    g = gradient(src)
    if lapnorm:
        g = lap_normalize(g, lapnorm)
    if mask is not None:
        mask = roll(mask, ox, oy, extent)
        g = g * mask
    if not prep.unit:
        step_size = step_size / np.float32(np.mean(prep.std))
    src = src + step_size / mean_abs(g, extent, mask) * g          # normalized ascent step
    src = roll(src, -ox, -oy, extent)                              # unshift image
    if clip:
        bias = jnp.asarray(prep.mean_chw)
        low, high = -bias, 255 - bias
        if not prep.unit:
            low, high = low / prep.std_chw, high / prep.std_chw
        src = jnp.clip(src, low, high)
    return src


def roll(x, ox, oy, extent=None):
    """np.roll(np.roll(x, ox, -1), oy, -2), within the true `extent` of a padded x when given."""
    if extent is None:
        return jnp.roll(jnp.roll(x, ox, -1), oy, -2)
    for axis, shift, size in ((-1, ox, extent[1]), (-2, oy, extent[0])):
        i = jnp.arange(x.shape[axis])
        x = jnp.take(x, jnp.where(i < size, (i - shift) % size, i), axis=axis)
    return x


def mean_abs(g, extent=None, mask=None):
    """np.abs(g).mean(), over the true extent of a padded g (zero beyond it); over the pixels of a
    `mask` (1, H, W), each counted by its weight, where given.

    Summed in float64: then the float32 result does not depend on how XLA orders the sum for the
    array's shape, so a bucket gives the step that the exact size gives, to the bit (and an all-white
    mask counts exactly the pixels that no mask does)."""
    with jax.enable_x64(True):
        if mask is not None:
            count = g.shape[0] * mask.astype(jnp.float64).sum()
        else:
            count = g.size if extent is None else g.shape[0] * extent[0] * extent[1]
        return (jnp.abs(g).astype(jnp.float64).sum() / count).astype(jnp.float32)


@program(static_argnames=('nodes', 'end', 'clip', 'lapnorm', 'prep'))
def octave_steps(params, src, shifts, objective, step_size, extent, mask=None, *, nodes, end, clip, lapnorm=0,
                 prep=CAFFE):
    """All iter_n steps of one octave in one device call: a scan of make_step over the jitter shifts.

    The scan stays rolled, so one step is traced and compiled whatever iter_n is; the net's convolutions
    are written in the form XLA:CPU runs fast inside a loop (ops.conv_nhwc). `extent` is None for an
    unpadded src, else its true (h, w) inside the bucket. `mask` is this octave's (make_step), or None.
    """
    def gradient(x):
        return backward(nodes, params, x[None], end, objective, extent)[0]

    def step(x, shift):
        return make_step(gradient, x, shift, step_size=step_size, clip=clip, extent=extent, lapnorm=lapnorm,
                         prep=prep, mask=mask), None
    return jax.lax.scan(step, src, shifts)[0]


def tile_slices(length, tile):
    """[0, length) cut into ceil(length / tile) near-equal pieces: at most two sizes, so few compiles,
    and none much smaller than `tile`, so every piece is big enough for the net."""
    n = -(-length // tile)
    edges = [round(i * length / n) for i in range(n + 1)]
    return [slice(a, b) for a, b in zip(edges, edges[1:])]


def tiled_gradient(net, end, objective, tile, offset):
    """A gradient(src) for make_step that runs the net on tiles of at most tile x tile pixels.

    The image is rolled by `offset` (oy, ox) first, so the tile edges fall somewhere new at every
    step and leave no seams; each tile's gradient is computed on that tile alone, as a smaller
    image would be. Peak memory is then the net's for one tile, whatever the image size.
    """
    def gradient(src):
        rolled = np.asarray(jnp.roll(src, offset, (-2, -1)))
        g = np.empty_like(rolled)
        for ys in tile_slices(rolled.shape[-2], tile):
            for xs in tile_slices(rolled.shape[-1], tile):
                g[:, ys, xs] = gradient_fn(net.params, rolled[None, :, ys, xs], objective,
                                           nodes=net.nodes, end=end)[0]
        return jnp.roll(g, (-offset[0], -offset[1]), (-2, -1))
    return gradient


def random_state(seed):
    """The notebook's randomness: a RandomState seeded like np.random.seed(seed); None picks a seed."""
    if isinstance(seed, np.random.RandomState):
        return seed
    return np.random.RandomState(seed)


def octave_sizes(shape, octave_n, octave_scale):
    """(h, w) of each octave, largest first, as scipy.ndimage.zoom(order=1) produces them."""
    sizes = [tuple(shape[:2])]
    for _ in range(octave_n - 1):
        h, w = sizes[-1]
        sizes.append((int(round(h * (1.0 / octave_scale))), int(round(w * (1.0 / octave_scale)))))
    return sizes


def octave_buckets(shape, octave_n, octave_scale):
    """The padded shape of each octave: the octaves of the image's bucket (programs.bucket), which hold
    the octaves of every image in that bucket, since an octave's size never falls as the image grows.
    So images of one bucket share all their programs, and the sky's octaves waste nothing."""
    return octave_sizes((bucket(shape[0]), bucket(shape[1])), octave_n, octave_scale)


def octave_shapes(net, shape, octave_n, octave_scale, end, tile=None, lapnorm=0):
    """Each octave's true size and the shape it runs at, largest first; which are tiled; whether padded.

    An untiled octave is padded to its octave_buckets shape where layer `end` allows it
    (graph.bucketable) and no Laplacian pyramid spans the image (lapnorm); a tiled one runs at its own
    size, tile by tile."""
    sizes = octave_sizes(shape, octave_n, octave_scale)
    tiled = [bool(tile) and (h > tile or w > tile) for h, w in sizes]
    padded = bucketable(net.nodes, net.tensor(end), net.params) and not lapnorm
    buckets = octave_buckets(shape, octave_n, octave_scale) if padded else sizes
    return sizes, [size if t else b for size, b, t in zip(sizes, buckets, tiled)], tiled, padded


def check_octaves(net, shape, octave_n, octave_scale, end):
    """Refuse an octave stack whose smallest octave is below what layer `end` accepts, saying what fits; and,
    for a layer past shapes an exporter fixed (a Reshape to the export's size), any octave it cannot take."""
    try:
        mh, mw = net.min_size(end)
    except ValueError:
        mh = mw = 1
    sizes = octave_sizes(shape, octave_n, octave_scale)
    fits = [h >= mh and w >= mw for h, w in sizes]
    if not all(fits):
        h, w = sizes[-1]
        can = fits.index(False) if False in fits else octave_n
        hint = f'use --octave_n={can} or fewer' if can else 'use a larger image'
        raise ValueError(f'the smallest of {octave_n} octaves is {w}x{h} pixels, but layer {end!r} needs at '
                         f'least {mw}x{mh}: {hint}')
    if net.statically_sized(end):
        return
    for i, (h, w) in enumerate(sizes):
        why = net.why_not((h, w), end)
        if why is not None:
            declared = f' (the net was exported for {net.input.size[1]}x{net.input.size[0]})' if net.input.size else ''
            hint = f'use --octave_n={i}, or an earlier layer' if i else 'use an earlier layer'
            raise ValueError(f'layer {end!r} cannot be computed for octave {i + 1} of {octave_n}, {w}x{h} pixels'
                             f'{declared}: {why}; {hint} (`classicdream layers --model=... --height=H --width=W` '
                             f'shows which layers take a size)')


def deepdream(net, base_img, iter_n=10, octave_n=4, octave_scale=1.4, end=DEFAULT_END, clip=True, seed=0,
              objective=objective_L2, progress=None, tile=None, lapnorm=0, preprocessing=CAFFE, mask=None,
              **step_params):
    """The notebook's deepdream(): octaves, detail carried between them, iter_n steps per octave.

    Returns the float HWC RGB image, as the notebook did. `seed` is an int (the notebook's
    np.random.seed), a RandomState to continue (the zoom loop does), or None for a random seed.
    `end` is a layer, or a tuple of layers for an objective that weighs several (objective_weighted).
    `step_params` are make_step's: step_size (1.5) and jitter (32). `progress(octave, size, image)` is
    called after each octave, for progress bars and live views: `image()` is the dream so far, at that
    octave's size, as the float HWC RGB image the dream returns; an exception it raises stops the dream.
    `tile` (pixels) computes the gradient of octaves larger than tile x tile in tiles, to bound memory; an
    octave it covers runs exactly as untiled. `lapnorm` (levels, 0: off) normalises each step's gradient
    with a Laplacian pyramid, as TensorFlow's deepdream tutorial does (lapnorm.py). `preprocessing` is
    how the net wants its input (Preprocessing: the notebook's Caffe mean, torchvision's or Keras').
    `mask` (H, W) on 0..1 says where to dream (mask.py): it is resampled to each octave as the image is,
    and weighs each step's gradient (make_step).
    """
    rng = random_state(seed)
    jitter = step_params.pop('jitter', 32)
    step_size = step_params.pop('step_size', 1.5)
    if step_params:
        raise TypeError(f'unknown step parameters: {", ".join(step_params)}')
    tensor = net.tensor(end)
    check_octaves(net, np.shape(base_img), octave_n, octave_scale, end)
    check_tile(net, tile, end)
    objective = as_objective(objective)
    prep = preprocessing
    sizes, shapes, tiled, padded, extents, steps = plan(net, np.shape(base_img), octave_n, octave_scale, end, clip,
                                                        tile, lapnorm, prep)
    ask_ahead(net, shapes, extents, tiled, padded, iter_n, objective, steps, mask is not None)
    # prepare base images for all octaves
    octaves = [preprocessed(pad(base_img, shapes[0]), prep=prep)]
    for i in range(octave_n - 1):
        octaves.append(zoomed(octaves[-1], extents[i], extents[i + 1], shape=shapes[i + 1]))
    masks = [None] * octave_n
    if mask is not None:                              # the mask's pyramid, as the image's
        masks[0] = pad(mask, shapes[0])[None]
        for i in range(octave_n - 1):
            masks[i + 1] = zoomed(masks[i], extents[i], extents[i + 1], shape=shapes[i + 1])
    detail = np.zeros(octaves[-1].shape, np.float32)     # allocate image for network-produced details
    for octave, octave_base in enumerate(octaves[::-1]):
        i = octave_n - 1 - octave
        h, w = sizes[i]
        if octave > 0:
            # upscale details from the previous octave
            detail = zoomed(detail, extents[i + 1], extents[i], shape=shapes[i])
        src = added(octave_base, detail)
        shifts = np.stack([rng.randint(-jitter, jitter + 1, 2) for _ in range(iter_n)]).astype(np.int32) \
            if iter_n else np.zeros((0, 2), np.int32)
        if tiled[i]:
            for shift in shifts:                 # tile offsets come from the same stream, after the jitter
                offset = (rng.randint(tile) if h > tile else 0, rng.randint(tile) if w > tile else 0)
                src = make_step(tiled_gradient(net, tensor, objective, tile, offset), src, shift,
                                step_size=np.float32(step_size), clip=clip, lapnorm=lapnorm, prep=prep,
                                mask=masks[i])
        else:
            src = octave_steps(net.params, src, shifts, objective, np.float32(step_size),
                               extents[i] if padded else None, masks[i], **steps)
        if progress:
            jax.block_until_ready(src)
            progress(octave, (h, w), lambda src=src, h=h, w=w: np.asarray(deprocessed(src, prep=prep))[:h, :w])
        # extract details produced on the current octave
        detail = subtracted(src, octave_base)
    # returning the resulting image
    return np.asarray(deprocessed(src, prep=prep))[:h, :w]


def pad(img, shape):
    """The HWC image at the top left of a zero array of spatial `shape` (its bucket), as float32."""
    img = np.asarray(img, np.float32)
    if img.shape[:2] == shape:
        return img
    out = np.zeros(shape + img.shape[2:], np.float32)
    out[:img.shape[0], :img.shape[1]] = img
    return out


def _added(a, b):
    return a + b


def _subtracted(a, b):
    return a - b


# Every array operation of the dream is a program: an eager one would compile on first use, waiting
# behind the octaves' compiles, and would be compiled again in every new process.
preprocessed = program(static_argnames=('prep',))(preprocess)
deprocessed = program(static_argnames=('prep',))(deprocess)
zoomed = program(static_argnames=('shape',))(resample.zoom)
added = program()(_added)
subtracted = program()(_subtracted)


def ask_ahead(net, shapes, extents, tiled, padded, iter_n, objective, steps, masked=False):
    """Have every program this dream runs built (or loaded) in the pool now, so building overlaps dreaming.

    They are asked for in the order the dream needs them, so the pool's threads take the first octave's
    step right after the few small programs before it (the pyramid's zooms), and the later octaves compile
    while the first ones dream. Returns their futures: done once every one is ready."""
    float_image = lambda shape, channels=3: jax.ShapeDtypeStruct((channels, *shape), jnp.float32)
    extent = jax.ShapeDtypeStruct((2,), jnp.int32)
    prep = steps['prep']
    futures = [preprocessed.executable(jax.ShapeDtypeStruct((*shapes[0], 3), jnp.float32), prep=prep)]
    for i in range(len(shapes) - 1):
        futures.append(zoomed.executable(float_image(shapes[i]), extent, extent, shape=shapes[i + 1]))
        if masked:
            futures.append(zoomed.executable(float_image(shapes[i], 1), extent, extent, shape=shapes[i + 1]))
    for i in reversed(range(len(shapes))):
        if i < len(shapes) - 1:
            futures.append(zoomed.executable(float_image(shapes[i + 1]), extent, extent, shape=shapes[i]))
        futures.append(added.executable(float_image(shapes[i]), float_image(shapes[i])))
        if not tiled[i]:
            futures.append(octave_steps.executable(
                abstract(net.params), float_image(shapes[i]), jax.ShapeDtypeStruct((iter_n, 2), jnp.int32),
                objective, jax.ShapeDtypeStruct((), jnp.float32), extent if padded else None,
                float_image(shapes[i], 1) if masked else None, **steps))
        futures.append(subtracted.executable(float_image(shapes[i]), float_image(shapes[i])))
    futures.append(deprocessed.executable(float_image(shapes[0]), prep=prep))
    return futures


def plan(net, shape, octave_n, octave_scale, end, clip, tile, lapnorm, prep):
    """What a dream of an image of `shape` runs: octave_shapes' sizes, shapes, tiled and padded, each octave's
    true extent as the programs take it, and the octave programs' static arguments."""
    sizes, shapes, tiled, padded = octave_shapes(net, shape, octave_n, octave_scale, end, tile, lapnorm)
    steps = dict(nodes=net.nodes, end=net.tensor(end), clip=clip, lapnorm=lapnorm, prep=prep)
    return sizes, shapes, tiled, padded, [np.int32(size) for size in sizes], steps


def ask_for(net, shape, iter_n=10, octave_n=4, octave_scale=1.4, end=DEFAULT_END, clip=True, objective=objective_L2,
            tile=None, lapnorm=0, preprocessing=CAFFE):
    """Have the programs of deepdream(net, an image of `shape`, ...) built in the pool, without dreaming:
    a server warms up so before its first visitor, and the live view before its first frame. Returns the
    programs' futures (ask_ahead)."""
    _, shapes, tiled, padded, extents, steps = plan(net, shape, octave_n, octave_scale, end, clip, tile, lapnorm,
                                                    preprocessing)
    return ask_ahead(net, shapes, extents, tiled, padded, iter_n, as_objective(objective), steps)


def check_tile(net, tile, end):
    """A tile must be at least twice the smallest input `end` accepts: pieces can be half a tile."""
    if tile is None:
        return
    need = 2 * max(net.min_size(end))
    if tile < need:
        raise ValueError(f'a tile of {tile} pixels is too small for layer {end!r}: use at least {need}')


def zoom_frame(frame, s=0.05):
    """The notebook's zoom between frames: scale by (1 - s) about the centre, bilinear."""
    h, w = frame.shape[:2]
    return nd.affine_transform(frame, [1 - s, 1 - s, 1], [h * s / 2, w * s / 2, 0], order=1)


def skip_dreams(rng, n, iter_n=10, octave_n=4, jitter=32):
    """Advance `rng` past n dreams' jitter draws, so a resumed zoom continues the same random stream.

    The draws must repeat deepdream's own calls: how much of the stream randint uses depends on its range.
    """
    for _ in range(n * iter_n * octave_n):
        rng.randint(-jitter, jitter + 1, 2)
    return rng
