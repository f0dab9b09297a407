"""Keyframes for zoom and video (classicdream/keyframes.py): each frame's options in its recipe, a cross-fade
frame as the plain weighted dream it stands for, resumption to the same frames, bad files in one line, and
the page's keyframe table. 96x64 images, one octave of one step, two layers that fit that size."""
import json
from pathlib import Path

import numpy as np
import pytest

from classicdream.images import load_image, read_recipe, save_image
from conftest import FAST, assert_one_line_error, run
from test_serve import server  # noqa: F401 -- the page, for the table test
from test_video import clip  # noqa: F401 -- a 96x64 clip of 20 frames at 10 fps

A, B = 'inception_3b/output', 'inception_4c/output'


def keyframes_file(tmp_path, keys, name='keys.json'):
    path = tmp_path / name
    path.write_text(json.dumps(keys))
    return path


def frames_of(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob('*.jpg'))}


ZOOM_KEYS = [{'frame': 0, 'end': A, 'step_size': 1.0, 'jitter': 0, 'scale': 0.1},
             {'frame': 4, 'end': B, 'step_size': 2.0, 'jitter': 5}]


def test_each_frame_records_its_values_and_a_cross_fade_compiles_once(capsys, tmp_path, photo, monkeypatch):
    from classicdream.dream import octave_steps
    from classicdream import zoom as zoom_module
    programs = []                # how many octave-step programs the process holds after each frame
    save = zoom_module.save_image

    def counted(*args, **kwargs):
        save(*args, **kwargs)
        programs.append(len(octave_steps._futures))
    monkeypatch.setattr(zoom_module, 'save_image', counted)
    keys = keyframes_file(tmp_path, ZOOM_KEYS)
    out = tmp_path / 'frames'
    code, _, err = run(capsys, 'zoom', photo, '--frames=6', f'--outdir={out}', f'--keyframes={keys}',
                       '--scale=0.05', *FAST)
    assert code == 0, err
    recipes = [read_recipe(out / f'{i:04d}.jpg') for i in range(6)]
    assert [r['end'] for r in recipes] == [A, f'{A}:0.75,{B}:0.25', f'{A}:0.5,{B}:0.5', f'{A}:0.25,{B}:0.75', B, B]
    assert [r['step_size'] for r in recipes] == [1.0, 1.25, 1.5, 1.75, 2.0, 2.0]
    assert [r['jitter'] for r in recipes] == [0, 1, 3, 4, 5, 5]            # 1.25, 2.5, 3.75 rounded, halves up
    # the last keyframe leaves scale out: it is --scale's there
    assert [r['scale'] for r in recipes] == pytest.approx([0.1, 0.0875, 0.075, 0.0625, 0.05, 0.05], abs=1e-15)
    assert all(r['iter_n'] == 1 and r['octave_n'] == 1 and r['frame'] == i for i, r in enumerate(recipes))
    assert len({r['keyframes_sha256'] for r in recipes}) == 1
    # the weights are arguments of the compiled step: the cross-fade's later frames compile nothing new
    assert programs[3] == programs[2] == programs[1]


def test_a_cross_fade_frame_is_the_plain_weighted_dream(capsys, tmp_path, clip):  # noqa: F811
    """Video frames without blend are each dreamed from their own input with the seed, as `dream` dreams an
    image: frame 1, halfway between keyframes at A and B, is `dream --end=A:0.5,B:0.5` of that input."""
    from classicdream.video import open_clip, read_clip
    keys = keyframes_file(tmp_path, [{'frame': 0, 'end': A}, {'frame': 2, 'end': B, 'step_size': 2.5}])
    frames = tmp_path / 'frames'
    code, _, err = run(capsys, 'video', clip, '--stop=0.3', f'--out={tmp_path / "v.mp4"}', f'--outdir={frames}',
                       f'--keyframes={keys}', '--seed=3', *FAST)
    assert code == 0, err
    recipe = read_recipe(frames / '00001.jpg')
    assert recipe['end'] == f'{A}:0.5,{B}:0.5' and recipe['step_size'] == 2.0 and recipe['blend'] == 0.0
    assert [read_recipe(frames / f'{i:05d}.jpg')['end'] for i in (0, 2)] == [A, B]
    source = tmp_path / 'frame1.png'
    save_image(source, list(read_clip(open_clip(str(clip))))[1])
    code, _, err = run(capsys, 'dream', source, f'--out={tmp_path / "plain.jpg"}', f'--end={recipe["end"]}',
                       '--step_size=2', '--seed=3', *FAST)
    assert code == 0, err
    np.testing.assert_array_equal(load_image(tmp_path / 'plain.jpg'), load_image(frames / '00001.jpg'))


def test_an_interrupted_zoom_resumes_to_the_same_frames(capsys, tmp_path, photo, monkeypatch):
    """The random stream is replayed frame by frame with each frame's own jitter (it changes here), so the
    resumed frames are the uninterrupted run's; other keyframes are refused, not continued."""
    import classicdream.zoom
    keys = keyframes_file(tmp_path, ZOOM_KEYS)
    whole, parts = tmp_path / 'whole', tmp_path / 'parts'
    args = ['zoom', photo, '--frames=5', f'--keyframes={keys}', *FAST]
    assert run(capsys, *args, f'--outdir={whole}')[0] == 0
    save = classicdream.zoom.save_image

    def interrupted(path, *rest):
        if path.name == '0003.jpg':
            raise KeyboardInterrupt
        save(path, *rest)
    monkeypatch.setattr(classicdream.zoom, 'save_image', interrupted)
    code, _, _ = run(capsys, *args, f'--outdir={parts}')
    assert code == 130 and len(frames_of(parts)) == 3
    monkeypatch.setattr(classicdream.zoom, 'save_image', save)
    other = keyframes_file(tmp_path, [dict(ZOOM_KEYS[0], step_size=1.1), ZOOM_KEYS[1]], 'other.json')
    code, _, err = run(capsys, *args[:3], f'--keyframes={other}', *FAST, f'--outdir={parts}')
    assert_one_line_error(code, err, 'frame 0002 was dreamed with another keyframes_sha256, step_size')
    code, stdout, err = run(capsys, *args, f'--outdir={parts}')
    assert code == 0 and stdout.split() == [str(parts / '0003.jpg'), str(parts / '0004.jpg')], err
    assert frames_of(parts) == frames_of(whole)


def test_a_weighted_end_cross_fades_layer_by_layer():
    """Each layer's weight goes linearly; whole numbers round halves up (Python's round would take 2.5 to 2)."""
    from classicdream.keyframes import options_at
    keys = [(0, dict(end=f'{A}:1,{B}:0.5', iter_n=1)), (2, dict(end=B, iter_n=4)),
            (4, dict(end=f'{B}:2,{A}:-1', iter_n=4))]
    assert options_at(keys, 1, None) == dict(end=f'{A}:0.5,{B}:0.75', iter_n=3)
    assert options_at(keys, 3, None) == dict(end=f'{B}:1.5,{A}:-0.5', iter_n=4)
    assert [options_at(keys, f, None)['end'] for f in (0, 2, 9)] == [f'{A}:1,{B}:0.5', B, f'{B}:2,{A}:-1']


@pytest.mark.parametrize('command, text, words', [
    ('zoom', 'frame 0: inception_3b/output', ['not a JSON file']),
    ('zoom', '{"frame": 0}', ['a list of objects']),
    ('zoom', '[]', ['a list of objects']),
    ('zoom', '[[0, "inception_3b/output"]]', ['keyframe 1 is not an object']),
    ('zoom', '[{"end": "inception_3b/output"}]', ['keyframe 1 says no frame']),
    ('zoom', '[{"frame": 1.5}]', ['keyframe 1: frame must be a whole number']),
    ('zoom', '[{"frame": -2}]', ['keyframe 1: frame must be at least 0']),
    ('zoom', '[{"frame": 4}, {"frame": 4}]', ['keyframe 2 (frame 4): frames must increase']),
    ('zoom', '[{"frame": 0, "octave_scale": 2}]', ["unknown field 'octave_scale'", 'may set frame, end, step_size']),
    ('zoom', '[{"frame": 0, "blend": 0.5}]', ['keyframe 1 (frame 0): blend is for video keyframes']),
    ('video', '[{"frame": 0, "scale": 0.1}]', ['keyframe 1 (frame 0): scale is for zoom keyframes', 'blend']),
    ('zoom', '[{"frame": 0}, {"frame": 9, "scale": 1.5}]', ['keyframe 2 (frame 9): scale must be below 1']),
    ('video', '[{"frame": 3, "blend": -1}]', ['keyframe 1 (frame 3): blend must be at least 0']),
    ('zoom', '[{"frame": 0, "iter_n": 0}]', ['keyframe 1 (frame 0): iter_n must be at least 1']),
    ('zoom', '[{"frame": 0, "step_size": "fast"}]', ['step_size must be a number']),
    ('zoom', '[{"frame": 0, "jitter": NaN}]', ['jitter must be a finite number']),
    ('zoom', '[{"frame": 0, "end": 3}]', ['keyframe 1 (frame 0): end must name a layer']),
    ('zoom', '[{"frame": 0}, {"frame": 20, "end": "inception_4c/outptu"}]',
     ['keyframe 2 (frame 20): unknown layer', 'did you mean inception_4c/output']),
    ('zoom', '[{"frame": 0, "end": "inception_5b/output", "octave_n": 4}]',
     ['keyframe 1 (frame 0): the smallest of 4 octaves', 'use --octave_n=3 or fewer']),
])
def test_a_bad_keyframes_file_is_one_line(capsys, tmp_path, photo, clip, command, text, words):  # noqa: F811
    keys = tmp_path / 'keys.json'
    keys.write_text(text)
    out = tmp_path / 'out'
    where = [photo, '--frames=2'] if command == 'zoom' else [clip, f'--out={tmp_path / "v.mp4"}']
    code, _, err = run(capsys, command, *where, f'--outdir={out}', f'--keyframes={keys}', *FAST)
    assert_one_line_error(code, err, f'{keys}: ', *words)
    assert not list(out.glob('*.jpg')) and not (tmp_path / 'v.mp4').exists()


def test_a_layer_too_deep_between_keyframes_names_the_frame(capsys, tmp_path, photo):
    """A deep layer fades out while the octaves rise: the frames where both hold are refused, by number."""
    deep = 'inception_5b/output'              # takes 3 octaves of 96x64, not 4
    keys = keyframes_file(tmp_path, [{'frame': 0, 'end': deep, 'octave_n': 1}, {'frame': 4, 'end': A, 'octave_n': 5}])
    code, _, err = run(capsys, 'zoom', photo, '--frames=5', f'--outdir={tmp_path / "out"}', f'--keyframes={keys}',
                       '--iter_n=1', '--quiet')
    assert_one_line_error(code, err, f'{keys}: frame 3: the smallest of 4 octaves', deep)
    assert not (tmp_path / 'out').exists() or not list((tmp_path / 'out').iterdir())


def test_the_pages_keyframe_table_gives_the_clis_frames(server, photo, tmp_path, capsys):  # noqa: F811
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError
    from classicdream.serve import KEYFRAME_COLUMNS
    url, _, _ = server
    client = Client(url, verbose=False)
    rows = [['0', A, '', '', '', '', '0.1'], ['', '', '', '', '', '', ''], ['2', B, '2', '', '', '', '']]
    status, _, frames, _, recipe = client.predict(
        handle_file(str(photo)), iter_n=1, octave_n=1, frames=3, fps=5, api_name='/zoom',
        keyframes={'headers': KEYFRAME_COLUMNS, 'data': rows})
    assert status.startswith('Done') and len(frames) == 3 and 'keyframes_sha256' in recipe
    keys = keyframes_file(tmp_path, [{'frame': 0, 'end': A, 'scale': 0.1}, {'frame': 2, 'end': B, 'step_size': 2}])
    out = tmp_path / 'cli'
    code, _, err = run(capsys, 'zoom', photo, '--frames=3', f'--outdir={out}', f'--keyframes={keys}', *FAST)
    assert code == 0, err
    assert [Path(f['image']).read_bytes() for f in frames] == [(out / f'{i:04d}.jpg').read_bytes() for i in range(3)]
    with pytest.raises(AppError) as e:
        client.predict(handle_file(str(photo)), iter_n=1, octave_n=1, frames=3, api_name='/zoom',
                       keyframes={'headers': KEYFRAME_COLUMNS, 'data': [['0', '', '', '0', '', '', '']]})
    assert str(e.value).startswith('classicdream: error: keyframes: keyframe 1 (frame 0): iter_n must be at least 1')


def test_the_pages_progress_counts_each_frames_own_octaves(net, tmp_path):
    """Keyframes change octave_n along a zoom: the page's progress and status count each frame's own."""
    from classicdream.serve import Page

    class Job:
        def events(self):
            image = np.zeros((4, 4, 3), np.float32)
            yield 'octave', 0, (4, 4), image
            yield 'frame', 0, 'frame0.jpg'
            for octave in range(3):
                yield 'octave', octave, (4, 4), image
            yield 'frame', 1, 'frame1.jpg'

        def cancel(self):
            pass
    events = list(Page(net, None, tmp_path).follow(Job(), None, [1, 3], {}, []))
    assert [e[1] for e in events] == [(1, 4), (1, 4), (2, 4), (3, 4), (4, 4), (4, 4)]
    assert events[4][-1].startswith('Frame 2 of 2, octave 3 of 3 done')
    assert events[5][-1].startswith('Frame 2 of 2 done')
