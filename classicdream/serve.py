"""The dream page: `classicdream serve`, a Gradio page over the same Dreamer the command line uses.

A visitor uploads an image (or takes the notebook's sky), picks a layer and the notebook's options, and
watches the dream grow octave by octave; the result downloads as exactly the file `classicdream dream`
writes, recipe inside. Dreams run one at a time on the device (jobs.Device), in the order asked, and the
page says how many are ahead. The net is loaded once, at start, for every visitor.

What a visitor sends is data, never a path: uploads arrive in Gradio's own cache, results are written
under names the server makes, and a bad upload or option is one line on the page while the server goes on.
Gradio is imported only here (`pip install 'classicdream[web]'`).
"""
import hashlib
import io
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from .atlas import atlas_layers
from .clip import check_blend
from .dream import DEFAULT_END, ask_for, check_octaves, objective_guide
from .keyframes import frame_plan, table_keyframes
from .zoom import zoom, zoom_options, zoom_recipe
from .dreamer import Dreamer, UserError, flag, number, say_assumed_preprocessing, slug
from .images import ImageError, load_image, recipe_or_none
from .jobs import Cancelled, Device
from .live import SIZES, LiveDreamer, LiveFeed, fitted_frame
from .mask import load_mask

DATA = Path(__file__).resolve().parent / 'data'
SKY = DATA / 'sky1024px.jpg'                   # the notebook's own input
THUMBS = DATA / 'thumbs'                       # each atlas layer's dream of the sky (data/README.md)
LOCAL = ('127.0.0.1', 'localhost', '::1')
RESULTS_KEPT_S = 3600                          # results (and uploads, in Gradio's cache) older are removed
PREVIEW_PIXELS = 1024                          # an input is previewed at most this wide and high
STOPPING = 'Stopping at the end of this octave.'   # what Stop says: the device stops at the next octave
LIVE_WAIT_S = 2.0                              # a live frame's answer waits this long for its dream at most
LIVE = dict(size='320x240', octave_n=1, iter_n=2, blend=0.5)     # the live tab's own defaults
os.environ.setdefault('GRADIO_ANALYTICS_ENABLED', 'False')       # no usage reports: set before Gradio loads

# The webcam's own stop button, pressed by the page's Stop buttons: the browser stops sending frames
STOP_CAMERA = "() => { document.querySelector('#camera [title=\"stop recording\"]')?.closest('button')?.click(); }"
KEYFRAME_COLUMNS = ['frame', 'end', 'step_size', 'iter_n', 'octave_n', 'jitter', 'scale']
DEFAULTS = dict(end=DEFAULT_END, iter_n=10, octave_n=4, octave_scale=1.4, step_size=1.5, jitter=32, clip=True,
                seed='0', channel='', tile='', colors='dream', lapnorm=0)


def parse_bytes(name, value):
    """50MB, 1.5G, 800k or a number of bytes, as bytes."""
    text = str(value).strip().upper().removesuffix('B')
    scale = {'K': 2 ** 10, 'M': 2 ** 20, 'G': 2 ** 30}.get(text[-1:], 1)
    try:
        return int(number(name, text[:-1] if scale > 1 else text, float, 0) * scale)
    except UserError:
        raise UserError(f'--{name} must be a size such as 50MB, got {value!r}') from None


def thumbnail_of(layer):
    path = THUMBS / f'{slug(layer.replace("/", "-"))}.jpg'
    return path if path.exists() else None


def _line(e):
    """An exception as the one line the page shows, as the command line would print it."""
    text = ' '.join(str(e).split()) or type(e).__name__
    return f'classicdream: error: {text}'


def painted_png(editor):
    """What a visitor painted on the input in the page's image editor, as the PNG of a mask: white where any
    brush stroke went (the layers' alpha), black elsewhere; None where nothing was painted."""
    from PIL import Image
    layers = [np.asarray(layer) for layer in ((editor or {}).get('layers') or []) if layer is not None]
    alpha = [layer[..., 3] for layer in layers if layer.ndim == 3 and layer.shape[2] == 4]
    if not alpha or not np.max(alpha):
        return None
    out = io.BytesIO()
    Image.fromarray(np.uint8(np.max(alpha, axis=0))).save(out, 'PNG')
    return out.getvalue()


def _preview(img):
    """An input image as uint8 for the page, scaled down to fit PREVIEW_PIXELS."""
    from PIL import Image
    im = Image.fromarray(np.uint8(np.clip(img, 0, 255)))
    im.thumbnail((PREVIEW_PIXELS, PREVIEW_PIXELS))
    return np.asarray(im)


class Page:
    """What the page does, apart from how it looks: checks a visitor's request, queues its dream on the
    device, and turns the dream's events into what the page shows."""

    def __init__(self, net, device, results, model=None):
        self.net, self.device, self.results, self.model = net, device, Path(results), model
        self.default_end = net.default_end
        self.feeds, self._feeds_lock = {}, threading.Lock()       # each streaming visitor's LiveFeed

    def dreamer(self, layer, iter_n, octave_n, octave_scale, step_size, jitter, clip, seed, channel, tile,
                colors='dream', lapnorm=0, mask=None):
        """The page's fields as a checked Dreamer on the page's net; empty channel and tile are unset, and
        colors 'dream' are the dream's own. `mask` is a mask.Mask (Page.mask)."""
        blank = lambda v: v is None or str(v).strip() == ''              # noqa: E731
        d = Dreamer(layer if not blank(layer) else self.default_end, iter_n, octave_n, octave_scale, step_size,
                    jitter, clip, seed, True, None if blank(channel) else str(channel),
                    None if blank(tile) else tile, None if blank(colors) or colors == 'dream' else colors,
                    0 if blank(lapnorm) else lapnorm, self.model, mask=mask)
        return d.using(self.net)

    def mask(self, upload, painted, image):
        """The visitor's mask and its file: the mask image they uploaded, else what they painted on `image`,
        saved as `{image}_mask.png` (the file `classicdream dream --mask` takes); None for neither."""
        if upload:
            return load_mask(upload, Path(upload).name), upload
        png = painted_png(painted)
        if png is None:
            return None
        path = self.results / f'mask-{hashlib.sha256(png).hexdigest()[:16]}' / f'{slug(Path(image).stem)}_mask.png'
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(png)
        return load_mask(path), str(path)

    def checked(self, image, notes, mask=None, painted=None, **options):
        """A visitor's image, mask and options, checked before anything queues: (Dreamer, image, its name)."""
        if not image:
            raise UserError('upload an image first (or press "The notebook\'s sky")')
        mask = self.mask(mask, painted, image)
        d = self.dreamer(**options, mask=mask and mask[0])
        name = Path(image).name
        img = load_image(image, name)
        check_octaves(self.net, img.shape, d.octave_n, d.octave_scale, d.end)
        return d.fitted(img.shape, say=notes.append), img, name

    def folder(self, job):
        """A folder of the server's own for a job's files; those of jobs long done are removed first."""
        now = time.time()
        for old in self.results.iterdir():
            if now - old.stat().st_mtime > RESULTS_KEPT_S:
                shutil.rmtree(old, ignore_errors=True)
        folder = self.results / str(job.id)
        folder.mkdir()
        return folder

    def dream(self, image, guide, fmt, owner, **options):
        """Yield what the page shows as the dream goes (see follow); the result is the file
        `classicdream dream` (or `guide`) would write."""
        notes = []
        try:
            fmt = str(fmt or 'JPEG').upper()
            if fmt not in ('JPEG', 'PNG'):
                raise UserError(f'the format must be JPEG or PNG, got {fmt!r}')
            d, img, name = self.checked(image, notes, **options)
            if guide:
                if d.weights:
                    raise UserError('a guided dream goes with one layer')
                guide_img = load_image(guide, Path(guide).name)
                check_octaves(self.net, guide_img.shape, 1, 1.0, d.end)
        except (UserError, ValueError, OSError) as e:
            yield 'error', _line(e)
            return
        recipe = d.recipe(command='guide' if guide else 'dream', input=name,
                          **(dict(guide=Path(guide).name) if guide else {}))
        out = d.default_name(name, guide, 'png' if fmt == 'PNG' else 'jpg')

        def work(job):
            objective = objective_guide(self.net, guide_img, d.end, d.prep) if guide else None
            path = self.folder(job) / out
            path.write_bytes(d.encoded(img, recipe, name, fmt, objective, job.on_octave))
            return str(path)
        yield from self.follow(self.device.submit(work, owner), d, [d.octave_n], recipe, notes)

    def zoom(self, image, frames, scale, fps, owner, keyframes=None, **options):
        """The notebook's zoom loop for a visitor: the frames as they come, then an mp4 and a looping GIF.
        `keyframes`: the rows of the page's keyframe table (KEYFRAME_COLUMNS), as a keyframes file's."""
        notes = []
        try:
            d, img, name = self.checked(image, notes, **options)
            frames, scale, fps = zoom_options(frames, scale, fps)
            keys = table_keyframes(keyframes, KEYFRAME_COLUMNS, 'zoom')
            plan = frame_plan(d, keys, frames, img.shape, notes.append, scale=scale)
        except (UserError, ValueError, OSError) as e:
            yield 'error', _line(e)
            return
        recipe = zoom_recipe(plan, name, fps)

        def work(job):
            from .video import write_gif, write_mp4
            folder = self.folder(job)
            paths = zoom(plan, img, name, folder / 'frames', on_octave=job.on_octave,
                         on_frame=lambda i, path: job.report('frame', i, str(path)))
            return [str(write(paths, folder / d.default_name(name, ext=ext), fps, recipe))
                    for write, ext in ((write_mp4, 'mp4'), (write_gif, 'gif'))]
        yield from self.follow(self.device.submit(work, owner), d,
                               [frame.dreamer.octave_n for frame in plan], recipe, notes)

    def follow(self, job, d, octaves, recipe, notes):
        """A queued job's events as the page shows them, each led by its kind: ('waiting', status),
        ('octave', (done, total), live image, images so far, status), ('done', result, recipe, status),
        ('cancelled', status) or ('error', line). `octaves` holds each piece's octave count: a zoom's pieces
        are its frames, which it shows as they come."""
        started, note = time.monotonic(), ''.join(f'{n}. ' for n in notes)
        shown, live, frame, pieces = [], None, 0, len(octaves)
        elapsed = lambda: f'{time.monotonic() - started:.1f} s'                     # noqa: E731
        try:
            for event in job.events():
                kind = event[0]
                if kind == 'waiting':
                    ahead = event[1]
                    yield 'waiting', f'{note}Waiting: {ahead} dream{"s" if ahead != 1 else ""} ahead of yours ' \
                                     f'on this device.'
                elif kind == 'octave':
                    _, octave, (h, w), image_now = event
                    live = np.uint8(np.clip(image_now, 0, 255))
                    if pieces == 1:
                        shown.append((live, f'octave {octave + 1}: {w}x{h}'))
                    what = f'Frame {frame + 1} of {pieces}, octave' if pieces > 1 else 'Octave'
                    yield 'octave', (sum(octaves[:frame]) + octave + 1, sum(octaves)), live, list(shown), \
                        f'{note}{what} {octave + 1} of {octaves[frame]} done ({w}x{h}, {elapsed()}).'
                elif kind == 'frame':
                    frame = event[1] + 1
                    shown.append((event[2], f'frame {event[1]}'))
                    yield 'octave', (sum(octaves[:frame]), sum(octaves)), event[2], list(shown), \
                        f'{note}Frame {frame} of {pieces} done ({elapsed()}).'
                elif kind == 'done':
                    result = event[1]
                    names = ', '.join(Path(r).name for r in (result if isinstance(result, list) else [result]))
                    yield 'done', result, recipe, f'{note}Done in {elapsed()}: seed {d.seed}, {names} (the recipe ' \
                                                  f'is inside).'
                elif kind == 'stopping':      # Gradio ends a cancelled run only when its generator yields
                    yield 'cancelled', f'{note}{STOPPING}'
                elif isinstance(event[1], Cancelled):
                    yield 'cancelled', f'Cancelled ({event[1]}).'
                else:
                    if not isinstance(event[1], (UserError, ValueError, OSError)):
                        print(f'classicdream serve: {type(event[1]).__name__}: {event[1]}', file=sys.stderr)
                    yield 'error', _line(event[1])
        finally:
            job.cancel()                  # the visitor left or pressed Stop: free the device at the next octave

    def live(self, frame, owner, size=LIVE['size'], blend=LIVE['blend'], **options):
        """One camera frame of a visitor's live stream in, what the Live tab shows out: (image, status line).

        The frame goes to the visitor's LiveFeed, and the answer waits (LIVE_WAIT_S at most) for a dream newer
        than the last one shown; Gradio sends the next camera frame once this one is answered. Until the
        live size's programs are built the camera shows through, saying so."""
        if frame is None:
            return None, 'Start the camera (its button below the picture) to dream it live.'
        try:
            if size not in SIZES:
                raise UserError(f'the live size must be {" or ".join(SIZES)}, got {size!r}')
            blend = check_blend(blend)
            feed, live = self.live_of(owner, options)
            live.blend = blend
            frame = fitted_frame(frame, SIZES[size])
            d = live.dreamer
            check_octaves(self.net, frame.shape, d.octave_n, d.octave_scale, d.end)
            ready = live.ready(frame.shape)
        except (UserError, ValueError, OSError) as e:
            return None, _line(e)
        h, w = frame.shape[:2]
        if not ready:
            return np.uint8(frame), f'Building the programs for {w}x{h} live frames ({live.waited():.0f} s; once ' \
                                    f'for each size and set of options). Meanwhile, the camera as it is.'
        seen = feed.dreamed
        feed.offer(live, frame)
        feed.wait(seen, LIVE_WAIT_S)
        if feed.error is not None:
            return feed.latest, _line(feed.error)
        behind = feed.behind()
        if behind:
            return feed.latest, f'Paused: {behind} dream{"s" if behind != 1 else ""} queued on this page ' \
                                f'run{"s" if behind == 1 else ""} first; the live view goes on after.'
        fps = feed.fps()
        rate = f'{fps:.1f} frames per second' if fps else 'starting'
        dropped = f'; {feed.dropped} camera frame{"s" if feed.dropped != 1 else ""} skipped while the device ' \
                  f'was busy' if feed.dropped else ''
        return feed.latest, f'Live: {rate}, {w}x{h}, {d.octave_n} octave{"s" if d.octave_n != 1 else ""} x ' \
                            f'{d.iter_n} step{"s" if d.iter_n != 1 else ""} at {d.end_spec}, blend {live.blend:g}' \
                            f'{dropped}.'

    def live_of(self, owner, options):
        """A visitor's LiveFeed, and the LiveDreamer of these options (the last one while they stay the same,
        so its blend goes on and a random seed stays the one drawn)."""
        with self._feeds_lock:
            feed = self.feeds.get(owner)
            if feed is None or feed.closed:
                feed = self.feeds[owner] = LiveFeed(self.device, owner)
            key = repr(sorted(options.items()))
            if feed.options != key:
                feed.live, feed.options = LiveDreamer(self.dreamer(**options, tile='')), key
            return feed, feed.live

    def stop_live(self, owner):
        """End a visitor's live stream, freeing the device once the frame on it is done; whether one ran."""
        with self._feeds_lock:
            feed = self.feeds.pop(owner, None)
        if feed is not None:
            feed.close()
        return feed is not None

    def from_recipe(self, path):
        """The page's fields from a dreamed file's recipe, and a line saying what was set."""
        recipe = recipe_or_none(path)
        if not recipe:
            raise UserError(f'{Path(path).name}: holds no classicdream recipe')
        fields = {key: recipe[key] for key in ('iter_n', 'octave_n', 'octave_scale', 'step_size', 'jitter', 'clip',
                                               'seed') if key in recipe}
        fields['end'] = recipe.get('end') or self.default_end
        fields['channel'] = ','.join(map(str, recipe.get('channel', [])))
        fields['tile'] = str(recipe['tile']) if recipe.get('tile') else ''
        fields['colors'] = recipe.get('colors') or 'dream'
        fields['lapnorm'] = recipe.get('lapnorm', 0)
        fields['seed'] = str(fields.get('seed', 0))
        source = recipe.get('input')
        said = f'Recipe of {Path(path).name} set: {recipe.get("command", "dream")} {source}'
        if recipe.get('guide'):
            said += f', guided by {recipe["guide"]} (upload it as the guide)'
        if recipe.get('mask'):
            said += f', masked by {recipe["mask"]} (upload it as the mask)'
        if recipe.get('model_sha256') not in (None, self.net.sha256):
            said += '; it was dreamed with another model, so the result may differ'
        return fields, source, said


def page(net, device, results, max_upload, model=None):
    """The Gradio Blocks of the dream page, for bvlc_googlenet or the ONNX file `model` (net)."""
    import gradio as gr
    p = Page(net, device, results, model)
    defaults = dict(DEFAULTS, end=p.default_end)
    layers = [layer for layer, _, _ in net.layers[1:]]
    thumbs = [(str(thumbnail_of(layer)), layer) for layer in atlas_layers(net) if thumbnail_of(layer)]
    megabytes = f'{max_upload / 2 ** 20:g} MB'

    with gr.Blocks(title='classicdream', analytics_enabled=False, delete_cache=(600, RESULTS_KEPT_S)) as blocks:
        gr.Markdown('# classicdream\nGoogle\'s 2015 DeepDream notebook, the same maths as on Caffe. Upload an '
                    'image, pick a layer, press **Dream**, and watch it grow octave by octave. The result '
                    'downloads as the file `classicdream dream` writes, its recipe inside.')
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.File(label=f'Image (JPEG, PNG, ...; up to {megabytes})', file_types=['image'],
                                type='filepath', height=120, elem_id='image')
                sky = gr.Button("The notebook's sky", size='sm', elem_id='sky')
                shown = gr.Image(label='Input', interactive=False, height=200, elem_id='input')
                end = gr.Dropdown(layers, value=defaults['end'], label='Layer (--end)', elem_id='end',
                                  allow_custom_value=True, info='what the dream amplifies; the thumbnails show '
                                  'each layer\'s dream of the sky: click one to pick it')
                gallery = gr.Gallery(thumbs, label='Layers', columns=6, height=220, allow_preview=False,
                                     interactive=False, elem_id='thumbs')
                with gr.Row():
                    iter_n = gr.Slider(1, 100, DEFAULTS['iter_n'], step=1, label='iter_n (steps per octave)',
                                       elem_id='iter_n')
                    octave_n = gr.Slider(1, 10, DEFAULTS['octave_n'], step=1, label='octave_n', elem_id='octave_n')
                with gr.Row():
                    octave_scale = gr.Number(DEFAULTS['octave_scale'], label='octave_scale', elem_id='octave_scale')
                    step_size = gr.Number(DEFAULTS['step_size'], label='step_size', elem_id='step_size')
                    jitter = gr.Slider(0, 128, DEFAULTS['jitter'], step=1, label='jitter', elem_id='jitter')
                with gr.Row():
                    seed = gr.Textbox(DEFAULTS['seed'], label='seed (a number, or random)', elem_id='seed')
                    clip = gr.Checkbox(DEFAULTS['clip'], label='clip', elem_id='clip')
                    fmt = gr.Radio(['JPEG', 'PNG'], value='JPEG', label='file', elem_id='fmt')
                with gr.Accordion('More: channel, tile, colours, lapnorm, guide image', open=False):
                    channel = gr.Textbox(DEFAULTS['channel'], label='channel (e.g. 42, or 42,43; empty: all)',
                                         elem_id='channel')
                    tile = gr.Textbox(DEFAULTS['tile'], label='tile (pixels; empty: automatic, 0: never)',
                                      elem_id='tile')
                    colors = gr.Radio(['dream', 'original', 'histogram'], value=DEFAULTS['colors'],
                                      label="colours: the dream's, the input's (--colors=original), or the "
                                            "input's histogram", elem_id='colors')
                    lapnorm = gr.Slider(0, 8, DEFAULTS['lapnorm'], step=1, label='lapnorm: Laplacian pyramid '
                                        "levels of TensorFlow's tutorial (0: the notebook's step)", elem_id='lapnorm')
                    guide = gr.File(label='Guide image (the notebook\'s objective_guide)', file_types=['image'],
                                    type='filepath', elem_id='guide')
                with gr.Accordion('Mask: where to dream', open=False, elem_id='mask_section'):
                    painted = gr.ImageEditor(label='Paint where to dream (the rest keeps the input)', type='numpy',
                                             sources=(), transforms=(), layers=False, format='png',
                                             brush=gr.Brush(colors=['#ffffff'], color_mode='fixed'),
                                             height=300, elem_id='painted')
                    mask = gr.File(label='or upload a mask (white: dream, grey: partly, black: keep)',
                                   file_types=['image'], type='filepath', height=80, elem_id='mask')
                    mask_status = gr.Markdown('', elem_id='mask_status')
                    mask_preview = gr.Image(label='What will dream', interactive=False, height=200,
                                            elem_id='mask_preview')
                    mask_made = gr.File(label='The mask, for classicdream dream --mask', interactive=False,
                                        height=80, elem_id='mask_made')
                with gr.Row():
                    go = gr.Button('Dream', variant='primary', elem_id='dream')
                    stop = gr.Button('Stop', variant='stop', elem_id='stop')
                recipe_file = gr.File(label='Dream again: drop a classicdream result here to take its recipe',
                                      type='filepath', height=100, elem_id='recipe_file')
            with gr.Column(scale=2):
                with gr.Tab('Dream'):
                    status = gr.Markdown('Ready.', label='status', elem_id='status')
                    live = gr.Image(label='The dream so far', interactive=False, format='png', elem_id='live')
                    octaves = gr.Gallery(label='Each octave as it was made', columns=4, height=160,
                                         interactive=False, elem_id='octaves')
                    result = gr.File(label='Result (recipe inside)', interactive=False, height=80, elem_id='result')
                with gr.Tab('Zoom', elem_id='zoom_tab'):
                    gr.Markdown("The notebook's zoom loop on the image and options at the left: dream a frame, "
                                "zoom in by *scale*, dream again; then an mp4 and a looping GIF.")
                    with gr.Row():
                        frames = gr.Slider(2, 200, 10, step=1, label='frames', elem_id='frames')
                        scale = gr.Number(0.05, label='scale (zoom per frame)', elem_id='scale')
                        fps = gr.Number(10, label='frames per second', elem_id='fps')
                    keyframes = gr.Dataframe([[''] * len(KEYFRAME_COLUMNS)] * 2, headers=KEYFRAME_COLUMNS,
                                             datatype='str', type='array', elem_id='keyframes',
                                             label='Keyframes (optional): a row gives the options at its frame; '
                                                   'between rows numbers go linearly and the layer cross-fades; '
                                                   'a blank cell takes the option at the left')
                    go_zoom = gr.Button('Zoom', variant='primary', elem_id='zoom')
                    zoom_status = gr.Markdown('', label='zoom status', elem_id='zoom_status')
                    zoom_live = gr.Image(label='The frame being dreamed', interactive=False, format='png',
                                         elem_id='zoom_live')
                    zoom_frames = gr.Gallery(label='Frames', columns=6, height=160, interactive=False,
                                             elem_id='zoom_frames')
                    videos = gr.File(label='mp4 and GIF (recipe inside)', file_count='multiple', interactive=False,
                                     height=100, elem_id='videos')
                with gr.Tab('Live', elem_id='live_tab'):
                    gr.Markdown('Your camera, dreamed live with the layer and options at the left: each frame small, '
                                'blended with the dream before so the patterns hold still. A dream queued on this '
                                'page goes first; the live view pauses for it.')
                    with gr.Row():
                        live_size = gr.Radio(list(SIZES), value=LIVE['size'], label='size', elem_id='live_size')
                        live_octaves = gr.Slider(1, 3, LIVE['octave_n'], step=1, label='octaves',
                                                 elem_id='live_octaves')
                        live_steps = gr.Slider(1, 10, LIVE['iter_n'], step=1, label='steps per octave',
                                               elem_id='live_steps')
                        live_blend = gr.Slider(0, 0.95, LIVE['blend'], step=0.05, label='blend (as video --blend)',
                                               elem_id='live_blend')
                    with gr.Row():
                        camera = gr.Image(sources=['webcam'], streaming=True, type='numpy', label='Camera',
                                          webcam_options=gr.WebcamOptions(mirror=False), elem_id='camera')
                        live_dream = gr.Image(label='Dreamed live', interactive=False, format='jpeg',
                                              elem_id='live_dream')
                    live_status = gr.Markdown('Start the camera (its button below the picture) to dream it live.',
                                              elem_id='live_status')
                    stop_live = gr.Button('Stop the live view', variant='stop', elem_id='stop_live')
                recipe = gr.JSON(label='Recipe', elem_id='recipe')

        options = [end, iter_n, octave_n, octave_scale, step_size, jitter, clip, seed, channel, tile, colors, lapnorm]

        def show_input(path):
            if not path:
                return None, None, 'Ready.'
            try:
                img = load_image(path, Path(path).name)
            except (ImageError, OSError) as e:
                return None, None, _line(e)
            return _preview(img), dict(background=_preview(img), layers=[], composite=None), \
                f'{Path(path).name}: {img.shape[1]}x{img.shape[0]}.'
        image.change(show_input, image, [shown, painted, status], api_visibility='private')

        def show_mask(path, upload, strokes):
            """The input dimmed where it will not dream, and the mask as a file; a bad mask is one line."""
            if not path:
                return None, None, ''
            try:
                found = p.mask(upload, strokes, path)
                if found is None:
                    return None, None, ''
                img = load_image(path, Path(path).name)
                weight = found[0].fitted(img.shape)[..., None]
            except (UserError, ValueError, OSError) as e:
                return None, None, _line(e)
            return _preview(img * (0.25 + 0.75 * weight)), found[1], ''
        for source in (painted.change, painted.input, mask.change):      # input: a stroke; change: a new input
            source(show_mask, [image, mask, painted], [mask_preview, mask_made, mask_status], api_visibility='private',
                   show_progress='hidden')
        sky.click(lambda: str(SKY), None, image, api_visibility='private')

        def pick_layer(evt: gr.SelectData):
            return thumbs[evt.index][1]
        gallery.select(pick_layer, None, end, api_visibility='private')

        def take_recipe(path, current):
            if not path:
                return [gr.update()] * (len(options) + 2)
            try:
                fields, source, said = p.from_recipe(path)
            except UserError as e:
                return [gr.update()] * (len(options) + 1) + [_line(e)]
            picked = gr.update()
            if source == SKY.name:
                picked = str(SKY)
            elif not current or Path(current).name != source:
                said += f'; upload {source} to dream it again'
            values = [fields.get(key, defaults[key]) for key in defaults]
            return values + [picked, said + '.']
        recipe_file.change(take_recipe, [recipe_file, image], options + [image, status], api_visibility='private')

        def on_page(events, progress):
            """Page.follow's events as (status, live image, images so far, result, recipe) for Gradio."""
            live_now, gallery_now = None, []
            for event in events:
                kind = event[0]
                if kind == 'octave':
                    (done, total), live_now, gallery_now, said = event[1:]
                    progress((done, total), desc='octaves', unit='octave')
                    yield said, live_now, gallery_now, None, None
                elif kind == 'done':
                    yield event[3], live_now, gallery_now, event[1], event[2]
                else:
                    yield event[1], live_now, gallery_now, None, None
                    if kind == 'error':
                        raise gr.Error(event[1], print_exception=False)

        def dream(image, layer, iter_n, octave_n, octave_scale, step_size, jitter, clip, seed, channel, tile,
                  colors='dream', lapnorm=0, guide=None, fmt='JPEG', mask=None, painted=None,
                  request: gr.Request = None, progress=gr.Progress()):
            """Dream on `image` with the notebook's options (and where `mask` is light, or `painted`);
            yields the live view as each octave is made."""
            yield from on_page(p.dream(image, guide, fmt, getattr(request, 'session_hash', None), layer=layer,
                                     iter_n=iter_n, octave_n=octave_n, octave_scale=octave_scale,
                                     step_size=step_size, jitter=jitter, clip=clip, seed=seed, channel=channel,
                                     tile=tile, colors=colors, lapnorm=lapnorm, mask=mask, painted=painted),
                               progress)

        run = go.click(dream, [image] + options + [guide, fmt, mask, painted], [status, live, octaves, result, recipe],
                       api_name='dream', concurrency_limit=None, show_progress='minimal')

        def zoom_frames_of(image, layer, iter_n, octave_n, octave_scale, step_size, jitter, clip, seed, channel,
                           tile, colors='dream', lapnorm=0, frames=10, scale=0.05, fps=10, keyframes=None,
                           mask=None, painted=None,
                           request: gr.Request = None, progress=gr.Progress()):
            """The notebook's zoom loop on `image`: each frame as it is made, then an mp4 and a looping GIF;
            `keyframes`, rows of frame, end, step_size, iter_n, octave_n, jitter, scale (blank: the options')."""
            yield from on_page(p.zoom(image, frames, scale, fps, getattr(request, 'session_hash', None), keyframes,
                                    layer=layer,
                                    iter_n=iter_n, octave_n=octave_n, octave_scale=octave_scale,
                                    step_size=step_size, jitter=jitter, clip=clip, seed=seed, channel=channel,
                                    tile=tile, colors=colors, lapnorm=lapnorm, mask=mask, painted=painted),
                               progress)

        run_zoom = go_zoom.click(zoom_frames_of, [image] + options + [frames, scale, fps, keyframes, mask, painted],
                                 [zoom_status, zoom_live, zoom_frames, videos, recipe], api_name='zoom',
                                 concurrency_limit=None, show_progress='minimal')

        def live_frame(frame, layer, iter_n, octave_n, octave_scale, step_size, jitter, clip, seed, channel, tile,
                       colors, lapnorm, size, live_octave_n, live_iter_n, blend, request: gr.Request = None):
            return p.live(frame, getattr(request, 'session_hash', None), size, blend, layer=layer,
                          iter_n=live_iter_n, octave_n=live_octave_n, octave_scale=octave_scale, step_size=step_size,
                          jitter=jitter, clip=clip, seed=seed, channel=channel, colors=colors, lapnorm=lapnorm)
        streaming = camera.stream(live_frame, [camera] + options + [live_size, live_octaves, live_steps, live_blend],
                                  [live_dream, live_status], stream_every=0.05, concurrency_limit=None,
                                  show_progress='hidden', api_visibility='private')

        def end_live(request: gr.Request):
            p.stop_live(request.session_hash)
            return 'Stopped: the device is free.'
        stop_live.click(end_live, None, live_status, js=STOP_CAMERA, cancels=[streaming], api_visibility='private',
                        queue=False)
        camera.clear(end_live, None, live_status, api_visibility='private', queue=False)

        def left(request: gr.Request):
            p.stop_live(request.session_hash)
        blocks.unload(left)                       # the visitor closed or reloaded the page

        def cancel(request: gr.Request):
            n = device.cancel(request.session_hash) + p.stop_live(request.session_hash)
            return STOPPING if n else 'Nothing to stop.'
        stop.click(cancel, None, status, js=STOP_CAMERA, cancels=[run, run_zoom, streaming], api_visibility='private',
                   queue=False)
    return blocks


def serve(port=7860, host='127.0.0.1', max_upload='50MB', warm=True, model=None):
    """Start the page (for bvlc_googlenet, or the ONNX file or model-zoo name `model`) and serve until
    interrupted."""
    port = number('port', port, int, 0)
    max_upload = parse_bytes('max_upload', max_upload)
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UserError("the page needs Gradio: pip install 'classicdream[web]'") from None
    if str(host) not in LOCAL:
        print(f'classicdream: serving on {host}:{port}, not only this machine: anyone who can reach it can '
              f'dream here and see the results', file=sys.stderr)
    from . import load_net
    net = load_net(model)
    say_assumed_preprocessing(net, model)
    device = Device()
    if flag('warm', warm) and model is None:
        warm_up(net)
    results = tempfile.mkdtemp(prefix='classicdream-serve-')
    try:
        blocks = page(net, device, results, max_upload, None if model is None else str(model))
        blocks.queue(default_concurrency_limit=None)
        print(f'classicdream: the page is at http://{"localhost" if str(host) in LOCAL else host}:{port}/',
              file=sys.stderr)
        blocks.launch(server_name=str(host), server_port=port, max_file_size=max_upload, ssr_mode=False,
                      allowed_paths=[str(DATA)], footer_links=['api'], quiet=True, show_error=False,
                      mcp_server=False)
    finally:
        shutil.rmtree(results, ignore_errors=True)


def warm_up(net):
    """Have the programs of the default dream of the notebook's sky built (or loaded) in the background,
    so that the first visitor, who most often dreams the defaults, finds them ready."""
    ask_for(net, load_image(SKY).shape)

