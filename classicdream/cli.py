"""The command line (python-fire): dream, guide, visualize, zoom, video, atlas, serve, layers, models, convert.

Every user mistake (a bad file, a bad parameter, an unknown layer, an output path that cannot be
written) ends as one line on stderr and exit status 2: no traceback, and no file of the user's is
overwritten: an output path is written only if it is new or holds an earlier classicdream result.
"""
import copy
import os
import sys
from pathlib import Path

import fire

from .dream import check_octaves, for_display, objective_guide, random_state
from .dreamer import Dreamer, UserError, flag, number, parse_size, slug
from .images import load_image, same_file, save_image
from .objectives import CLASS_END, class_head, find_class, noise_image, objective_class, synset_words
from .outputs import check_video_output, output, output_folder

GUIDE_END = 'inception_3b/output'          # the notebook's guided dream's layer


def _paths(*names):
    """Fire reads arguments as Python literals (1e3 becomes 1000.0, None None); file names stay as typed."""
    return fire.decorators.SetParseFns(**dict.fromkeys(names, str))


def _cluster_options(cluster, workers):
    """--cluster and --workers, checked; --workers alone makes no sense."""
    if workers is not None:
        if cluster is None:
            raise UserError('--workers goes with --cluster')
        workers = number('workers', workers, int, 1, allow_equal=True)
    if cluster is not None and not (str(cluster) in ('local', 'auto') or str(cluster).startswith('ray://')):
        raise UserError(f'--cluster must be local, auto or ray://HOST:PORT, got {cluster!r}')
    return cluster, workers


def _dream_options(doc):
    return doc + '''

Options (the notebook's defaults):
  --end=inception_4c/output  the layer whose activations are amplified (see `classicdream layers`);
                several at once, weighted: --end=inception_4c/output:1,inception_3b/output:0.5
  --iter_n=10 --octave_n=4 --octave_scale=1.4 --step_size=1.5 --jitter=32 --clip=True
  --seed=0      the notebook's np.random.seed; --seed=random picks one and records it in the output
  --colors=original   keep the input's colours (its chroma, the dream's luminance); =histogram matches
                each colour channel's histogram to the input's (not for visualize)
  --mask=PATH   dream only where the mask image is light (white: fully, grey: partly, black: not);
                scaled to the image, whose aspect ratio it must have
  --lapnorm=4   normalise each step's gradient over a Laplacian pyramid of 4 levels, as TensorFlow's
                deepdream tutorial does: smoother, larger patterns (0: the notebook's step)
  --model=PATH.onnx   dream with another ONNX CNN (torch.onnx, tf2onnx, the ONNX model zoo): see
                `classicdream layers --model=PATH.onnx` for its layers, and give one as --end
  --preprocess=caffe|torch|tf   the input that model wants (default: its metadata's, else the
                notebook's Caffe mean): torchvision's mean and std, or Keras' [-1, 1]
  --quiet       no progress bar'''


class Commands:
    """classicdream: Google's 2015 DeepDream notebook, faithfully, in JAX (bvlc_googlenet via ONNX).

    classicdream dream IMG [--out=PATH] [options]      dream on an image
    classicdream dream DIR [--outdir=OUT]              dream on every image in a folder (resumable)
    classicdream dream --noise=WxH [options]           dream on seeded noise
    classicdream guide IMG GUIDE [--out=PATH]          dream guided by another image's features
    classicdream visualize --class=NAME [--out=PATH]   what the net thinks a class looks like
    classicdream zoom IMG --frames=N [--mp4=PATH]      the notebook's zooming frames, and a video
    classicdream video SRC [--out=PATH] [--blend=0.5]  dream every frame of a video, keep its sound
    classicdream atlas IMG [--layers=A,B,...]          the same image dreamed at every layer, on one sheet
    classicdream serve [--port=7860]                   the dream page in the browser (classicdream[web])
    classicdream layers                                every layer you can dream on, with its shape
    classicdream models                                build models/bvlc_googlenet.onnx
    classicdream convert DEPLOY WEIGHTS OUT            convert any Caffe net to ONNX
    """

    @_paths('img', 'out', 'outdir', 'model', 'mask')
    def dream(self, img=None, out=None, outdir=None, end=None, channel=None, noise=None, tile=None,
              colors=None, lapnorm=0, model=None, preprocess=None, mask=None, cluster=None, workers=None, iter_n=10,
              octave_n=4, octave_scale=1.4, step_size=1.5, jitter=32, clip=True, seed=0, quiet=False):
        d = Dreamer(end, iter_n, octave_n, octave_scale, step_size, jitter, clip, seed, quiet, channel, tile, colors,
                    lapnorm, model, preprocess, mask)
        cluster, workers = _cluster_options(cluster, workers)
        if noise is not None and img is not None:
            raise UserError('give an image or --noise=WxH, not both')
        if noise is None and img is None:
            raise UserError('give an image, a folder of images, or --noise=WxH')
        if img is not None and os.path.isdir(str(img)):
            if out is not None:
                raise UserError(f'{img} is a folder: give --outdir for its dreams, not --out')
            from .folder import dream_folder
            return dream_folder(d, Path(str(img)), Path(str(outdir)) if outdir else None, cluster, workers)
        if cluster is not None:
            raise UserError('--cluster is for a folder of images (or an atlas, or a video), not one image')
        if outdir is not None:
            raise UserError('--outdir is for a folder of images; give --out for one image')
        rng = random_state(d.seed)
        if noise is not None:
            h, w = parse_size('noise', noise)
            name, inputs, base = f'noise{w}x{h}', [], noise_image(h, w, rng)
        else:
            name, inputs, base = Path(str(img)).name, [img], load_image(img)
        out = output(out, d.default_name(name), inputs)
        d = d.fitted(base.shape)
        result = d.dream(base, rng, label=name)
        save_image(out, d.finished(result, base), d.recipe(command='dream', input=name))
        print(out)

    @_paths('img', 'guide', 'out', 'model', 'mask')
    def guide(self, img, guide, out=None, end=None, tile=None, colors=None, lapnorm=0, model=None,
              preprocess=None, mask=None, iter_n=10, octave_n=4, octave_scale=1.4, step_size=1.5, jitter=32, clip=True,
              seed=0, quiet=False):
        end = GUIDE_END if end is None and model is None else end      # the notebook's guide layer
        d = Dreamer(end, iter_n, octave_n, octave_scale, step_size, jitter, clip, seed, quiet, tile=tile,
                    colors=colors, lapnorm=lapnorm, model=model, preprocess=preprocess, mask=mask)
        if d.weights:
            raise UserError('guide dreams at one --end layer')
        base, guide_img = load_image(img), load_image(guide)
        out = output(out, d.default_name(img, guide), [img, guide])
        check_octaves(d.net, guide_img.shape, 1, 1.0, d.end)
        objective = objective_guide(d.net, guide_img, d.end, d.prep)
        d = d.fitted(base.shape)
        result = d.dream(base, random_state(d.seed), objective, label=Path(str(img)).name)
        save_image(out, d.finished(result, base),
                   d.recipe(command='guide', input=Path(str(img)).name, guide=Path(str(guide)).name))
        print(out)

    @_paths('out', 'img', 'model')
    def visualize(self, out=None, img=None, size=224, lapnorm=0, model=None, preprocess=None, iter_n=20, octave_n=4,
                  octave_scale=1.4, step_size=1.5, jitter=32, clip=True, seed=0, quiet=False, **options):
        if options.pop('help', False):          # fire hands --help to a command that takes **options
            print('usage: classicdream visualize --class=NAME [--out=PATH] [--img=PATH] [options]\n')
            print(Commands.visualize.__doc__)
            return
        klass = options.pop('class', None)
        if options:
            raise UserError(f'unknown option --{next(iter(options))}; see classicdream visualize --help')
        if klass is None:
            raise UserError('say which class: --class=NAME or --class=INDEX (e.g. --class=ladybug)')
        model = None if model is None else str(model)
        d = Dreamer(CLASS_END if model is None else None, iter_n, octave_n, octave_scale, step_size, jitter, clip,
                    seed, quiet, lapnorm=lapnorm, model=model, preprocess=preprocess)
        try:
            head = class_head(d.net)
        except ValueError as e:
            raise UserError(f'{model}: {e}') from None
        d = d.at(head.end)
        synsets = synset_words()
        if head.weights.shape[0] == len(synsets):           # ImageNet's 1000 classes, in their usual order
            index = find_class(klass, synsets)
            label = synsets[index][1][0]
        else:
            index = number('class', klass, int, 0, allow_equal=True)
            label = f'class {index}'
        rng = random_state(d.seed)
        if img is not None:
            name, inputs, base = Path(str(img)).name, [img], load_image(img)
        else:
            h, w = parse_size('size', size)
            name, inputs, base = f'noise{w}x{h}', [], noise_image(h, w, rng)
        out = output(out, f'class{index}_{slug(label)}_s{d.seed}.jpg', inputs)
        d = d.fitted(base.shape)
        result = d.dream(base, rng, objective_class(d.net, index), label=label)
        save_image(out, for_display(result, d.clip),
                   d.recipe(command='visualize', input=name, class_index=index, class_name=label))
        print(out)

    @_paths('img', 'outdir', 'mp4', 'gif', 'model', 'mask', 'keyframes')
    def zoom(self, img, frames, scale=0.05, outdir=None, mp4=None, gif=None, fps=25, end=None, colors=None,
             lapnorm=0, model=None, preprocess=None, mask=None, iter_n=10, octave_n=4, octave_scale=1.4,
             step_size=1.5, jitter=32, clip=True, seed=0, quiet=False, keyframes=None):
        d = Dreamer(end, iter_n, octave_n, octave_scale, step_size, jitter, clip, seed, quiet, colors=colors,
                    lapnorm=lapnorm, model=model, preprocess=preprocess, mask=mask)
        from .keyframes import frame_plan, read_keyframes
        from .zoom import zoom, zoom_options, zoom_recipe
        frames, scale, fps = zoom_options(frames, scale, fps)
        keyframes = None if keyframes is None else read_keyframes(keyframes, 'zoom')
        if mp4 is not None:
            check_video_output(str(mp4))
        if gif is not None:
            check_video_output(str(gif), '--gif', '.gif')
        outdir = Path(outdir or f'frames/{slug(Path(str(img)).stem)}')
        name, frame = Path(str(img)).name, load_image(img)
        plan = frame_plan(d, keyframes, frames, frame.shape, scale=scale)
        paths = zoom(plan, frame, name, outdir, lambda i, path: print(path),
                     None if d.quiet else lambda line: print(line, file=sys.stderr))
        recipe = zoom_recipe(plan, name, fps)
        if mp4 is not None:
            from .video import write_mp4
            print(write_mp4(paths, mp4, fps, recipe))
        if gif is not None:
            from .video import write_gif
            print(write_gif(paths, gif, fps, recipe))

    @_paths('src', 'out', 'outdir', 'model', 'mask', 'keyframes')
    def video(self, src, out=None, outdir=None, blend=0.0, flow=False, start=0, stop=None, fps=None, gif=False,
              cluster=None, workers=None, end=None, channel=None, tile=None, colors=None, lapnorm=0,
              model=None, preprocess=None, mask=None, iter_n=10, octave_n=4, octave_scale=1.4, step_size=1.5,
              jitter=32, clip=True, seed=0, quiet=False, keyframes=None):
        from .clip import check_blend, dream_clip
        from .keyframes import frame_plan, read_keyframes
        from .cluster import runner
        from .video import open_clip, write_mp4
        d = Dreamer(end, iter_n, octave_n, octave_scale, step_size, jitter, clip, seed, quiet, channel, tile, colors,
                    lapnorm, model, preprocess, mask)
        cluster, workers = _cluster_options(cluster, workers)
        blend = check_blend(blend)
        keyframes = None if keyframes is None else read_keyframes(keyframes, 'video')
        flow = flag('flow', flow)
        start = number('start', start, float, 0, allow_equal=True)
        stop = None if stop is None else number('stop', stop, float, 0)
        fps = None if fps is None else number('fps', fps, float, 0)
        name = Path(str(src)).name
        if out is None:
            os.makedirs('dreams', exist_ok=True)
        out = str(out or Path('dreams') / d.default_name(name, ext='mp4'))
        check_video_output(out, '--out')
        gif = str(Path(out).with_suffix('.gif')) if flag('gif', gif) else None
        if gif:
            check_video_output(gif, '--gif', '.gif')
        if same_file(out, str(src)):
            raise UserError(f'{out}: the output would overwrite the input; choose another --out')
        source = open_clip(str(src), start, stop, fps)
        tool = copy.copy(d)
        tool.quiet = True                               # one bar, of frames, rather than one per dream
        plan = frame_plan(tool, keyframes, source.frames, (*source.size[::-1], 3), blend=blend)
        if flow and not any(frame.extras['blend'] for frame in plan):
            raise UserError('--flow moves the previous dream before blending: give --blend too')
        outdir = Path(outdir or f'frames/{slug(Path(out).stem)}')
        output_folder(outdir)
        options = dict(command='video', input=name, start=start, stop=stop, fps=source.fps, flow=flow)
        bar = None
        if not d.quiet:
            from tqdm import tqdm
            bar = tqdm(total=source.frames, unit='frame', file=sys.stderr, desc=name)
        try:
            with runner(cluster, tool, workers) as pool:
                paths, failed = dream_clip(plan, source, outdir, options, pool, flow, pool.size,
                                           bar and (lambda i: bar.update()))
        finally:
            if bar:
                bar.close()
        if failed:
            raise UserError(f'{len(failed)} of {source.frames} frames failed, the first: frame {failed[0][0]}: '
                            f'{failed[0][1]}')
        recipe = plan[0].dreamer.recipe(frames=source.frames, **options, **plan[0].extras)
        print(write_mp4(paths, out, source.fps, recipe, audio=source))
        if gif:
            from .video import write_gif
            print(write_gif(paths, gif, source.fps, recipe))

    @_paths('img', 'outdir', 'model')
    def atlas(self, img, layers=None, outdir=None, thumb=256, cluster=None, workers=None, colors=None, lapnorm=0,
              model=None, preprocess=None, iter_n=10, octave_n=4, octave_scale=1.4, step_size=1.5, jitter=32,
              clip=True, seed=0, quiet=False):
        from .atlas import atlas, layer_list
        cluster, workers = _cluster_options(cluster, workers)
        layers = layer_list(layers) if layers is not None else None
        d = Dreamer(None, iter_n, octave_n, octave_scale, step_size, jitter, clip, seed, quiet, colors=colors,
                    lapnorm=lapnorm, model=model, preprocess=preprocess)
        thumb = number('thumb', thumb, int, 16, allow_equal=True)
        atlas(d, img, layers, outdir, thumb, cluster, workers)

    @_paths('model')
    def serve(self, port=7860, host='127.0.0.1', max_upload='50MB', warm=True, model=None):
        """The dream page: http://localhost:7860/ (pip install 'classicdream[web]').

        Upload an image, pick a layer and the notebook's options, watch each octave as it is made, and
        download the file `classicdream dream` would write. Visitors' dreams run one at a time, in turn.
          --host=127.0.0.1   only this machine; --host=0.0.0.0 serves every network (said on stderr)
          --max_upload=50MB  larger uploads are refused
          --warm=True        build the default dream's programs at start, for the first visitor
          --model=PATH.onnx  the page dreams with another ONNX CNN (see dream --help)"""
        from .serve import serve
        serve(port, host, max_upload, warm, model)

    @_paths('model')
    def layers(self, height=None, width=None, model=None):
        """Every layer you can dream on (--end), in network order, with its output shape for one input
        (default: the size the net declares, else 224x224); the default --end is marked, and a layer that
        cannot be dreamed says why.

        In-place ReLUs are listed after their convolution: --end=conv gives the pre-ReLU values, as
        pycaffe's forward(end=...) did in the notebook; --end=its ReLU the values after it."""
        from . import load_net
        net = load_net(model)
        size = [None if v is None else number(name, v, int, 1, True) for name, v in (('height', height),
                                                                                     ('width', width))]
        described = net.describe(*size)
        for layer, _, blob in net.layers[1:]:
            found = described[layer]
            if isinstance(found, tuple):
                note = f'  (in place on {blob})' if layer != blob else ''
                note += '  (default --end)' if layer == net.default_end else ''
                print(f'{layer:40s} {"x".join(map(str, found))}{note}')
            else:
                print(f'{layer:40s} -  cannot be dreamed: {found}')

    def models(self, force=False):
        """Build models/bvlc_googlenet.onnx from the first source present (your caffemodel, the local
        mirror, or a hash-checked download) and say which one was used."""
        from .models import build
        print(build(force=flag('force', force)))

    def convert(self, deploy, weights, out):
        """Convert a Caffe net to ONNX: DEPLOY.prototxt WEIGHTS.caffemodel (or Caffe-layout .npz) OUT.onnx.
        Tensor names are Caffe's blob names; works for other Caffe GoogLeNets (Places205/365) too."""
        from .convert import convert
        print(f'{out} (sha256 {convert(deploy, weights, out)})')


Commands.dream.__doc__ = _dream_options('''Dream on IMG with the notebook's deepdream() and write the result.

The default output is dreams/<image>_<layer>_s<seed>.jpg (never the input); the file carries its
recipe (parameters, seed, model sha256, version) as a JPEG comment or PNG text chunk.
  --channel=42       amplify one channel of --end (or several: --channel=42,43), not the whole layer
  --noise=WxH        start from seeded noise (mid-grey 100 + uniform [0,1)) instead of an image
  --tile=512         compute octaves larger than 512x512 in tiles, to bound memory on big images;
                     without it a dream too big for memory is tiled automatically, --tile=0 never tiles
  IMG a folder:      dream every image in it into --outdir (default dreams/<folder>/); images
                     already done with the same recipe are skipped, failures reported per file
  --cluster=local|auto|ray://HOST:PORT   with a folder: one Ray task per image, on workers that keep the
                     net loaded (needs classicdream[cluster]); --workers=N (default: one per GPU)''')
Commands.guide.__doc__ = _dream_options('''Dream on IMG guided by GUIDE (the notebook's objective_guide).

At each position the dream follows the guide's feature that matches best, at --end (default
inception_3b/output, as in the notebook).''')
Commands.visualize.__doc__ = _dream_options('''Ask the net what an ImageNet class looks like: from seeded noise (or
--img), maximise the class's pre-softmax score (loss3/classifier) with the dream's jitter and octaves.

  --class=ladybug    a name from ImageNet's synset_words.txt, its wnid, or an index 0..999
  --size=224         noise size, WxH or N; --img=PATH starts from an image instead
The default output is dreams/class<index>_<name>_s<seed>.jpg; --iter_n defaults to 20 here.''')
Commands.zoom.__doc__ = _dream_options('''The notebook's zoom loop: dream, save frame, zoom in by --scale, repeat.

Frames are written as OUTDIR/0000.jpg, 0001.jpg, ... (default frames/<image>/). Resumable: run the
same command again and it continues after the last frame, with the same random stream.
  --frames=N   number of frames     --scale=0.05   zoom per frame (the notebook's s)
  --mp4=PATH   then encode frames 0..N-1 as an H.264 video (--fps=25)
  --gif=PATH   and/or as a looping GIF at the same frame rate
  --keyframes=FILE.json   options that change along the frames, the layer cross-fading:
               [{"frame": 0, "end": "inception_3b/output"}, {"frame": 40, "end": "inception_4c/output"}]
               (end, step_size, iter_n, octave_n, jitter, scale; docs/command-line.md)''')
Commands.video.__doc__ = _dream_options('''Dream every frame of a video SRC (any file ffmpeg reads), keeping its sound.

The dreams are encoded as H.264 at SRC's frame rate and size in --out=PATH.mp4 (default
dreams/<video>_<layer>_s<seed>.mp4); the frames go to --outdir (default frames/<out name>/) with
their recipe. Resumable: run the same command again and it continues.
  --blend=0.5        start each frame from 0.5 * the previous dream + 0.5 * the frame (less flicker)
  --flow             move the previous dream along the optical flow first (classicdream[flow])
  --start=S --stop=S seconds of SRC to dream (--end stays the layer); --fps=N resamples
  --gif              a looping GIF beside the mp4 (OUT.gif), at the same frame rate
  --keyframes=FILE.json   options that change along the frames, as for zoom (blend instead of scale)
  --cluster=local|auto|ray://HOST:PORT   dream on Ray workers (classicdream[cluster]); --workers=N
  --channel=42 --tile=512   as for dream''')
Commands.atlas.__doc__ = _dream_options('''The layer tour: dream IMG at each layer and lay the dreams out on one
labelled contact sheet, OUTDIR/atlas.jpg (default atlas/<image>/), beside the single dreams.

  --layers=A,B,...   the layers (default: every ReLU and concat output from conv1 to inception_5b)
  --thumb=256        width of each picture on the sheet
  --cluster=local|auto|ray://HOST:PORT   one Ray task per layer (classicdream[cluster]); --workers=N
Resumable: dreams already in OUTDIR with the same recipe are not dreamed again.''')


def main(argv=None):
    from .caffe import CaffeFormatError
    from .models import ModelError
    try:
        fire.Fire(Commands, command=argv, name='classicdream')
    except BrokenPipeError:                 # `classicdream layers | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except (UserError, CaffeFormatError, ModelError, ValueError, OSError) as e:
        print(f'classicdream: error: {e}', file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print('classicdream: interrupted', file=sys.stderr)
        sys.exit(130)
