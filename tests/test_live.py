"""The live view's loop without a browser (classicdream/live.py): the real net on the real device queue.

A camera faster than the device keeps the newest frame and drops the rest; a dream queued meanwhile goes
before the next live frame; closing frees the device; blending holds a still scene stiller than no blending.
The page's Live tab in a real browser with a fake camera is in test_serve.py."""
import threading

import numpy as np
import pytest
from PIL import Image

from classicdream.dreamer import Dreamer
from classicdream.jobs import Device
from classicdream.live import LiveDreamer, LiveFeed, fitted_frame

SIZE = (120, 160)                          # small frames: the loop is what is tested, not the speed


@pytest.fixture(scope='module')
def camera(shared):
    """Camera frames of a still scene: a 640x480 crop of the notebook's sky, as a webcam gives it (uint8)."""
    return np.asarray(Image.open(shared / 'images' / 'sky1024px.jpg').convert('RGB'))[:480, :640]


def dreamer(net, **changes):
    options = dict(end='inception_3b/output', iter_n=2, octave_n=1, octave_scale=1.4, step_size=1.5, jitter=32,
                   clip=True, seed=0, quiet=True)
    return Dreamer(**{**options, **changes}).using(net)


def held_device():
    """A Device whose first job holds it until the test lets go."""
    device, go = Device(), threading.Event()
    device.submit(lambda job: go.wait(60))
    return device, go


def test_a_frame_is_fitted_to_the_live_size_with_its_aspect(camera):
    assert fitted_frame(camera, (240, 320)).shape == (240, 320, 3)
    assert fitted_frame(camera[:, :360], (240, 320)).shape == (240, 180, 3)      # taller: the height decides
    assert fitted_frame(np.dstack([camera, camera[..., :1]]), (240, 320)).shape == (240, 320, 3)   # RGBA
    assert fitted_frame(camera, (240, 320)).dtype == np.float32
    with pytest.raises(ValueError, match='H x W x 3'):
        fitted_frame(camera[..., 0], (240, 320))


def test_a_burst_faster_than_the_device_keeps_the_newest_frame(net, camera):
    frames = [fitted_frame(np.roll(camera, 8 * i, axis=1), SIZE) for i in range(10)]
    device, go = held_device()
    feed = LiveFeed(device)
    live = LiveDreamer(dreamer(net))
    for frame in frames:                  # all arrive while the device is busy
        feed.offer(live, frame)
    go.set()
    assert feed.wait(1, 120) == 2
    feed.wait(2, 1)
    assert (feed.dreamed, feed.dropped) == (2, 8)       # the first went to the device, the last waited
    reference = LiveDreamer(dreamer(net))
    reference.dream(frames[0])
    assert np.array_equal(feed.latest, reference.dream(frames[-1]))    # and it is the newest frame's dream


def test_a_queued_dream_goes_before_the_next_live_frame(net, camera):
    frame = fitted_frame(camera, SIZE)
    device, go = held_device()
    feed = LiveFeed(device)
    live = LiveDreamer(dreamer(net))
    feed.offer(live, frame)               # on the device's queue, behind the held job
    queued = device.submit(lambda job: feed.dreamed)       # another visitor's dream: how many live frames ran
    feed.offer(live, frame)               # waits for the first live frame to finish
    assert feed.behind() == 1             # the held job is ahead of the live frame
    go.set()
    events = list(queued.events(poll=0.05))
    assert events[-1] == ('done', 1)      # one live frame before it, none after it had been asked for
    assert feed.wait(1, 60) == 2          # then the live view went on


def test_closing_frees_the_device_at_once(net, camera):
    frame = fitted_frame(camera, SIZE)
    device, go = held_device()
    feed = LiveFeed(device)
    live = LiveDreamer(dreamer(net))
    feed.offer(live, frame)
    feed.offer(live, frame)
    feed.close()
    after = device.submit(lambda job: 'ran')
    assert device.ahead(after) == 2       # the held job, and the cancelled live frame, dropped when reached
    go.set()
    assert list(after.events(poll=0.05))[-1] == ('done', 'ran')
    assert feed.dreamed == 0
    feed.offer(live, frame)               # a closed feed takes no more frames
    assert device.ahead(device.submit(lambda job: None)) in (0, None)


def test_each_frame_starts_from_the_last_dream_blended_with_the_frame(net, camera):
    frames = [fitted_frame(np.roll(camera, 4 * i, axis=0), SIZE) for i in range(3)]
    live, by_hand = LiveDreamer(dreamer(net), 0.5), dreamer(net)
    out = [live.dream(frame) for frame in frames]
    previous = None
    for frame, got in zip(frames, out):
        start = frame if previous is None else np.float32(0.5) * previous + np.float32(0.5) * frame
        previous = np.float32(np.clip(by_hand.dream(start, np.random.RandomState(0)), 0, 255))
        assert np.array_equal(got, np.uint8(previous))
    other = LiveDreamer(dreamer(net), 0.5)
    other.dream(fitted_frame(camera, (100, 160)))      # another size: no blend with it
    assert np.array_equal(other.dream(frames[0]), out[0])


def test_blending_holds_a_still_scene_stiller_than_dreaming_each_frame_afresh(net, camera):
    """A camera on a still scene gives frames that differ by sensor noise alone. Dreamed afresh, each frame's
    patterns start again from the noise; blended, they carry on from the last dream, so successive dreamed
    frames change less, while the dream grows stronger (its distance from the scene)."""
    rng = np.random.RandomState(0)
    still = fitted_frame(camera, SIZE)
    frames = [np.float32(np.clip(still + rng.normal(0, 2, still.shape), 0, 255)) for _ in range(10)]
    change, strength = {}, {}
    for blend in (0.0, 0.5, 0.8):
        live = LiveDreamer(dreamer(net, end='inception_4c/output'), blend)
        out = [np.float32(live.dream(frame)) for frame in frames]
        change[blend] = np.mean([np.abs(b - a).mean() for a, b in zip(out[5:], out[6:])])
        strength[blend] = np.abs(out[-1] - still).mean()
    assert change[0.5] < 0.85 * change[0.0] and change[0.8] < 0.75 * change[0.0], change
    assert change[0.5] / strength[0.5] < 0.75 * change[0.0] / strength[0.0], (change, strength)
    assert change[0.8] / strength[0.8] < 0.5 * change[0.0] / strength[0.0], (change, strength)


def test_frames_per_second_count_the_last_seconds():
    feed = LiveFeed(Device())
    assert feed.fps() is None
    feed._times.extend([10.0, 10.25, 10.5, 10.75, 11.0])
    assert feed.fps(now=11.0) == pytest.approx(4.0)
    assert feed.fps(now=13.4) == pytest.approx(4.0)     # 10.5, 10.75 and 11.0 are in the window
    assert feed.fps(now=20.0) is None


def page_options(**changes):
    """The page's left column as the Live tab sends it (strings and numbers, as Gradio gives them)."""
    return {**dict(layer='inception_3a/output', iter_n=3, octave_n=1, octave_scale=1.4, step_size=1.5, jitter=32,
                   clip=True, seed='0', channel='', colors='dream', lapnorm=0), **changes}


def test_the_first_frames_show_the_camera_while_the_programs_build(net, camera, tmp_path):
    from classicdream.serve import Page
    page = Page(net, Device(), tmp_path)
    image, status = page.live(camera, 'visitor', '320x240', 0.5, **page_options())
    assert status.startswith('Building the programs for 320x240 live frames'), status
    assert np.array_equal(image, np.uint8(fitted_frame(camera, (240, 320))))       # the camera, as it is
    for _ in range(600):
        image, status = page.live(camera, 'visitor', '320x240', 0.5, **page_options())
        if status.startswith('Live:'):
            break
    assert status.startswith('Live: ') and '1 octave x 3 steps at inception_3a/output, blend 0.5' in status, status
    assert image.shape == (240, 320, 3) and np.abs(np.float32(image) - fitted_frame(camera, (240, 320))).mean() > 1
    assert page.stop_live('visitor') and not page.stop_live('visitor')


@pytest.mark.parametrize('size, blend, changes, words', [
    ('1x1', 0.5, {}, 'the live size must be 320x240 or 640x480'),
    ('320x240', 1, {}, 'blend must be below 1'),
    ('320x240', 0.5, {'layer': 'no_such_layer'}, 'no_such_layer'),
    ('320x240', 0.5, {'octave_n': 3, 'octave_scale': 10}, 'the smallest of 3 octaves'),
])
def test_bad_live_options_are_one_line(net, camera, tmp_path, size, blend, changes, words):
    from classicdream.serve import Page
    image, status = Page(net, Device(), tmp_path).live(camera, 'visitor', size, blend, **page_options(**changes))
    assert image is None and status.startswith('classicdream: error:') and words in status, status
    assert len(status.splitlines()) == 1
