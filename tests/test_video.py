"""Dreaming a video clip, and running batches on a local Ray cluster, on a generated clip: ffmpeg's
testsrc with a sine tone, 96x64 at 10 fps for 2 s (20 frames), dreamed at one step per frame."""
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from classicdream.dreamer import Dreamer
from classicdream.images import load_image, read_recipe
from classicdream.video import open_clip
from conftest import FAST, assert_one_line_error, run

DREAM = [*FAST, '--blend=0.5', '--flow']


@pytest.fixture(scope='module')
def clip(tmp_path_factory):
    import imageio_ffmpeg
    path = tmp_path_factory.mktemp('clip') / 'testsrc.mkv'
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), '-loglevel', 'error', '-f', 'lavfi', '-i',
                    'testsrc=size=96x64:rate=10', '-f', 'lavfi', '-i', 'sine=frequency=440', '-t', '2',
                    '-pix_fmt', 'yuv420p', str(path)], check=True)
    return path


def probe(path):
    """ffmpeg's own account of a file: frame rate, size, duration, audio codec, and the decoded frames."""
    import imageio_ffmpeg
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        reader = imageio_ffmpeg.read_frames(str(path))
        meta = next(reader)
        w, h = meta['size']
        return meta, [np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in reader]


def frames_of(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob('*.jpg'))}


def test_video_keeps_frame_count_rate_size_and_sound(capsys, tmp_path, clip):
    out, frames = tmp_path / 'dream.mp4', tmp_path / 'frames'
    code, stdout, err = run(capsys, 'video', clip, f'--out={out}', f'--outdir={frames}', *DREAM)
    assert code == 0, err
    assert stdout.split() == [str(out)]
    meta_in, source = probe(clip)
    meta, video = probe(out)
    assert meta['fps'] == meta_in['fps'] == 10 and meta['size'] == (96, 64)
    assert abs(len(video) - len(source)) <= 1 and abs(meta['duration'] - meta_in['duration']) <= 0.1
    assert 'audio_codec' in meta
    assert len(frames_of(frames)) == 20 and read_recipe(frames / '00019.jpg')['blend'] == 0.5
    for i in (0, 10, 19):                                  # the video holds the dreams, in order
        dream = load_image(frames / f'{i:05d}.jpg')
        assert np.abs(np.float32(video[i]) - dream).mean() < 8
        assert np.abs(np.float32(video[i]) - np.float32(source[i])).mean() > 2


def test_video_resumes_to_the_same_frames(capsys, tmp_path, clip, monkeypatch):
    import classicdream.clip
    whole, parts = tmp_path / 'whole', tmp_path / 'parts'
    args = ['video', clip, *DREAM]
    assert run(capsys, *args, f'--outdir={whole}', f'--out={tmp_path / "whole.mp4"}')[0] == 0
    write = classicdream.clip.write_encoded

    def interrupted(path, data):
        if path.name == '00007.jpg':
            raise KeyboardInterrupt
        write(path, data)
    monkeypatch.setattr(classicdream.clip, 'write_encoded', interrupted)
    code, _, err = run(capsys, *args, f'--outdir={parts}', f'--out={tmp_path / "parts.mp4"}')
    assert code == 130 and len(frames_of(parts)) == 7 and not (tmp_path / 'parts.mp4').exists()
    monkeypatch.setattr(classicdream.clip, 'write_encoded', write)
    assert run(capsys, *args, f'--outdir={parts}', f'--out={tmp_path / "parts.mp4"}')[0] == 0
    assert frames_of(parts) == frames_of(whole)


def test_start_stop_and_fps_cut_and_resample(capsys, tmp_path, clip):
    out = tmp_path / 'cut.mp4'
    code, stdout, err = run(capsys, 'video', clip, f'--out={out}', f'--outdir={tmp_path / "f"}', '--start=0.5',
                            '--stop=1.5', '--fps=5', '--gif', *FAST)
    assert code == 0, err
    meta, video = probe(out)
    assert meta['fps'] == 5 and len(video) == 5 and abs(meta['duration'] - 1.0) <= 0.2
    assert 'audio_codec' in meta
    gif = tmp_path / 'cut.gif'                             # --gif: the same frames, looping, at the same rate
    assert stdout.split() == [str(out), str(gif)]
    with Image.open(gif) as im:
        assert (im.n_frames, im.info['loop'], im.info['duration']) == (5, 0, 200)
        im.seek(4)
        assert np.abs(np.float32(im.convert('RGB')) - load_image(tmp_path / 'f' / '00004.jpg')).mean() < 6


@pytest.mark.parametrize('make, args, words', [
    (lambda p: p.write_text('not a video'), [], ['not a video']),
    (lambda p: Image.new('RGB', (96, 64)).save(p, format='PNG'), [], ['one picture']),
    (None, ['--blend=1'], ['--blend']),
    (None, ['--flow'], ['--blend']),
    (None, ['--start=1', '--stop=0.5'], ['--stop']),
    (None, ['--workers=2'], ['--cluster']),
    (None, ['--cluster=yarn'], ['--cluster']),
])
def test_bad_video_input_is_one_line(capsys, tmp_path, clip, make, args, words):
    src = clip
    if make:
        src = tmp_path / 'input.mkv'
        make(src)
    code, _, err = run(capsys, 'video', src, f'--out={tmp_path / "o.mp4"}', f'--outdir={tmp_path / "f"}',
                       *args, *FAST)
    assert_one_line_error(code, err, *words)
    assert not (tmp_path / 'o.mp4').exists()


def test_cli_and_a_plain_dream_do_not_import_ray_opencv_or_gradio(tmp_path, photo):
    script = ('import sys; from classicdream.cli import main\n'
              f'try: main(["dream", {str(photo)!r}, "--out={tmp_path / "o.jpg"}", "--iter_n=1", "--octave_n=1",'
              ' "--quiet"])\nexcept SystemExit as e: assert not e.code\n'
              'print(sorted(m for m in sys.modules if m.split(".")[0] in ("ray", "cv2", "gradio", "selenium")))')
    done = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == '[]' and (tmp_path / 'o.jpg').exists()


# ---------------------------------------------------------------- a local Ray cluster (2 workers, 2 cores)

def test_cluster_folder_gives_the_sequential_dreams(capsys, tmp_path, shared):
    photos = tmp_path / 'photos'
    photos.mkdir()
    sky = Image.open(shared / 'images' / 'sky1024px.jpg')
    for i in range(3):
        sky.crop((100 * i, 0, 100 * i + 96, 64)).save(photos / f'{i}.jpg', quality=95)
    code, _, err = run(capsys, 'dream', photos, f'--outdir={tmp_path / "here"}', *FAST)
    assert code == 0, err
    code, stdout, err = run(capsys, 'dream', photos, f'--outdir={tmp_path / "ray"}', '--cluster=local',
                            '--workers=2', *FAST)
    assert code == 0, err
    assert sorted(stdout.split()) == sorted(str(tmp_path / 'ray' / f'{i}.jpg') for i in range(3))
    assert frames_of(tmp_path / 'ray') == frames_of(tmp_path / 'here')     # bit for bit (see README)


class DiesOnce(Dreamer):
    """A dreamer whose worker process exits abruptly in the middle of its first task (once per marker)."""
    marker = None

    def encoded(self, img, recipe, *args, **kwargs):
        if not os.path.exists(self.marker):
            open(self.marker, 'w').close()
            os._exit(1)
        return super().encoded(img, recipe, *args, **kwargs)


def test_cluster_video_survives_a_killed_worker(tmp_path, clip, net):
    """A worker killed mid-frame is restarted and its frames retried: every frame is written exactly once
    and equals what the same plan (two parts of 10 frames, the second warmed up) gives in this process."""
    from ray import cloudpickle
    from classicdream.clip import dream_clip
    from classicdream.cluster import Cluster, runner
    from classicdream.keyframes import frame_plan
    cloudpickle.register_pickle_by_value(sys.modules[__name__])       # workers cannot import the tests
    source = open_clip(str(clip))
    here, there = tmp_path / 'here', tmp_path / 'there'
    here.mkdir()
    there.mkdir()
    d = DiesOnce('inception_4c/output', 1, 1, 1.4, 1.5, 32, True, 0, True)
    d.marker = str(tmp_path / 'died')
    open(d.marker, 'w').close()                                     # not here
    plan = frame_plan(d, None, source.frames, (*source.size[::-1], 3), blend=0.5)
    with runner(None, d) as pool:
        expected, failed = dream_clip(plan, source, here, dict(command='video'), pool, flow=True, pieces=2)
    assert not failed
    os.unlink(d.marker)
    written = []
    with Cluster('local', d, workers=2) as pool:
        paths, failed = dream_clip(plan, source, there, dict(command='video'), pool, flow=True, pieces=2,
                                   progress=written.append)
    assert os.path.exists(d.marker) and not failed                   # a worker did die, and nothing failed
    assert sorted(written) == list(range(20))
    assert frames_of(there) == frames_of(here)
