"""The dream page (`classicdream serve`), as visitors use it: a real server process, real headless Chromium
(Debian's chromium + chromium-driver, driven by Selenium), Gradio's own client for scripts, raw HTTP for
what no page would send. The device queue is tested on its own with the real net."""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from classicdream.images import read_recipe
from classicdream.jobs import Cancelled, Device

from conftest import assert_one_line_error, run

CHROMIUM, CHROMEDRIVER = shutil.which('chromium'), shutil.which('chromedriver')
MAX_UPLOAD = 2 ** 20                                    # the test server's --max_upload, 1 MB


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _start(tmp, *args, host='127.0.0.1'):
    port = _free_port()
    log = open(tmp / f'serve-{port}.log', 'w+')
    proc = subprocess.Popen([sys.executable, '-m', 'classicdream', 'serve', f'--port={port}', *args],
                            cwd=tmp, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED='1'))
    url = f'http://{host}:{port}/'
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise AssertionError(f'serve exited {proc.returncode}: {log.read()}')
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return proc, url, port, log
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise AssertionError('serve did not answer within 180 s')


@pytest.fixture(scope='module')
def server(tmp_path_factory):
    """One page for the module's visitors, started as a user would (not warmed: CI's time is short)."""
    tmp = tmp_path_factory.mktemp('serve')
    proc, url, port, log = _start(tmp, '--warm=False', '--max_upload=1MB')
    yield url, port, log
    proc.terminate()
    proc.wait(30)


@pytest.fixture
def browser(tmp_path):
    """A headless Chromium visitor (Selenium), with its downloads in tmp_path/'downloads'."""
    if not (CHROMIUM and CHROMEDRIVER):
        message = "no chromium/chromedriver: `make browser` installs Debian's chromium and chromium-driver"
        if os.environ.get('CI'):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    drivers = []

    def open_page(url, *flags):
        """The page in a new Chromium, with extra command-line `flags` (a fake camera)."""
        downloads = tmp_path / f'downloads{len(drivers)}'
        downloads.mkdir()
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                     '--disable-background-networking', '--disable-component-update', '--disable-sync',
                     '--disable-dev-shm-usage', '--window-size=1400,1300',
                     f'--user-data-dir={tmp_path}/profile{len(drivers)}', *flags):
            options.add_argument(flag)
        options.add_experimental_option('prefs', {'download.default_directory': str(downloads),
                                                  'download.prompt_for_download': False})
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        drivers.append(driver)
        driver.get(url)
        Visitor(driver).wait(lambda: driver.find_elements('css selector', '#dream'), 60)
        driver.execute_script(WATCH)
        return Visitor(driver, downloads)
    yield open_page
    for driver in drivers:
        driver.quit()


# Every change of the live image, the status line and the progress text, with the browser's clock: the
# page's live view is checked from what the browser showed, however fast the octaves go by.
WATCH = '''
window.seen = [];
const note = () => {
  const img = document.querySelector('#live img');
  const status = document.querySelector('#status .prose, #status');
  const progress = document.querySelector('.progress-text');
  const now = {live: img ? img.src : '', status: status ? status.innerText : '',
               progress: progress ? progress.innerText : ''};
  const last = window.seen[window.seen.length - 1];
  if (!last || last.live !== now.live || last.status !== now.status || last.progress !== now.progress)
    window.seen.push(Object.assign({t: Date.now()}, now));
};
new MutationObserver(note).observe(document.body, {subtree: true, childList: true, attributes: true,
                                                   characterData: true});
'''


class Visitor:
    def __init__(self, driver, downloads=None):
        self.driver, self.downloads = driver, downloads

    def wait(self, condition, timeout=240):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f'timed out; the page says: {self.status()!r}')

    def find(self, css):
        return self.driver.find_element('css selector', css)

    def status(self):
        return self.driver.execute_script("return document.querySelector('#status').innerText")

    def upload(self, path, field='image'):
        for clear in self.driver.find_elements('css selector', f'#{field} button[aria-label=Clear]'):
            clear.click()                                 # a file is there already: take it away first
        self.wait(lambda: self.driver.find_elements('css selector', f'#{field} input[type=file]'), 10)
        self.find(f'#{field} input[type=file]').send_keys(str(path))

    def set_number(self, name, value):
        from selenium.webdriver.common.keys import Keys
        box = self.find(f'#{name} input[type=number]')
        box.send_keys(Keys.CONTROL, 'a')
        box.send_keys(str(value), Keys.TAB)

    def number(self, name):
        return float(self.find(f'#{name} input[type=number]').get_attribute('value'))

    def dream(self, **numbers):
        for name, value in numbers.items():
            self.set_number(name, value)
        time.sleep(0.5)                                   # the page takes the new values
        self.find('#dream').click()

    def result_link(self):
        return self.driver.find_elements('css selector', '#result a')

    def download(self):
        link = self.wait(self.result_link)[0]
        name = link.get_attribute('download')
        link.click()
        path = self.downloads / name
        self.wait(lambda: path.exists() and not list(self.downloads.glob('*.crdownload')), 30)
        return path

    def seen(self):
        return self.driver.execute_script('return window.seen')

    def seen_live(self):
        return self.driver.execute_script('return window.seenLive')


def _cli_dream(capsys, tmp_path, image, *options):
    out = tmp_path / f'cli_{len(list(tmp_path.glob("cli_*")))}.jpg'
    code, _, err = run(capsys, 'dream', image, f'--out={out}', '--quiet', *options)
    assert code == 0, err
    return out.read_bytes()


def test_page_dreams_what_the_cli_dreams(server, browser, shared, tmp_path, capsys):
    url, _, _ = server
    page = browser(url)
    flowers = shared / 'images' / 'flowers.jpg'
    page.upload(flowers)
    page.wait(lambda: '320x240' in page.status(), 60)
    page.dream(iter_n=1, octave_n=2)
    downloaded = page.download()
    seen = page.seen()
    done = next(i for i, s in enumerate(seen) if s['status'].startswith('Done'))
    lives = [s['live'] for s in seen[:done + 1] if s['live']]
    assert len(set(lives)) >= 2, 'the live view should show octave 1, then octave 2'
    assert any('Octave 1 of 2 done' in s['status'] for s in seen[:done])
    assert any('1/2' in s['progress'] for s in seen[:done]), 'a progress bar should count the octaves'
    assert len(page.driver.find_elements('css selector', '#octaves img')) >= 2
    page.driver.save_screenshot(str(tmp_path / 'page.png'))
    # the same bytes as the command line, recipe and all
    assert downloaded.name == 'flowers_inception_4c-output_s0.jpg'
    assert downloaded.read_bytes() == _cli_dream(capsys, tmp_path, flowers, '--iter_n=1', '--octave_n=2')
    recipe = read_recipe(downloaded)
    assert (recipe['input'], recipe['iter_n'], recipe['octave_n'], recipe['seed']) == ('flowers.jpg', 1, 2, 0)

    # dream again from the recipe: a fresh page takes the downloaded file's options
    again = browser(url)
    again.upload(downloaded, 'recipe_file')
    again.wait(lambda: 'Recipe of' in again.status(), 60)
    assert 'upload flowers.jpg' in again.status()
    assert (again.number('iter_n'), again.number('octave_n')) == (1, 2)


def test_a_painted_mask_gives_the_clis_dream_with_that_mask(server, browser, shared, tmp_path, capsys):
    """A stroke of the brush over the input is the mask: the preview dims the rest, the mask is offered as a
    file, and the dream is byte for byte `classicdream dream --mask=` that file."""
    from selenium.webdriver.common.action_chains import ActionChains
    url, _, _ = server
    page = browser(url)
    flowers = shared / 'images' / 'flowers.jpg'
    page.upload(flowers)
    page.wait(lambda: '320x240' in page.status(), 60)
    page.find('#mask_section button').click()
    editor = page.wait(lambda: page.driver.find_elements('css selector', '#painted canvas'), 30)
    page.driver.execute_script('arguments[0].scrollIntoView()', page.find('#painted'))
    page.find('#painted button[aria-label=Brush]').click()
    ActionChains(page.driver).move_to_element_with_offset(editor[-1], -60, 0).click_and_hold() \
        .move_by_offset(60, 10).move_by_offset(60, -10).release().perform()
    link = page.wait(lambda: page.driver.find_elements('css selector', '#mask_made a'), 60)[0]
    assert page.driver.find_elements('css selector', '#mask_preview img')
    mask = page.downloads / link.get_attribute('download')
    link.click()
    page.wait(lambda: mask.exists() and not list(page.downloads.glob('*.crdownload')), 30)
    painted = np.asarray(Image.open(mask))
    assert mask.name == 'flowers_mask.png' and painted.shape == (240, 320)
    assert 0.01 < (painted > 0).mean() < 0.3                 # the stroke, and only the stroke
    page.driver.execute_script('window.scrollTo(0, 0)')
    page.dream(iter_n=1, octave_n=2)
    downloaded = page.download()
    assert downloaded.name == 'flowers_inception_4c-output_mask-flowers_mask_s0.jpg'
    assert read_recipe(downloaded)['mask'] == 'flowers_mask.png'
    assert downloaded.read_bytes() == _cli_dream(capsys, tmp_path, flowers, '--iter_n=1', '--octave_n=2',
                                                 f'--mask={mask}')
    page.driver.save_screenshot(str(tmp_path / 'mask.png'))


def test_two_visitors_share_the_device_in_turn(server, browser, shared, tmp_path):
    url, _, _ = server
    first, second = browser(url), browser(url)
    first.find('#sky').click()
    first.wait(lambda: '1024x575' in first.status(), 60)
    first.dream(iter_n=20, octave_n=2)
    first.wait(lambda: not first.status().startswith(('sky1024px', 'Ready')), 60)
    # a bad upload on the second page while the first dreams: one line there, the first goes on
    bad = tmp_path / 'holiday.jpg'
    bad.write_bytes(b'\xff\xd8 this is no JPEG')
    second.upload(bad)
    second.wait(lambda: 'holiday.jpg' in second.status(), 60)
    assert second.status().startswith('classicdream: error: holiday.jpg: not an image file'), second.status()
    assert len(second.status().strip().splitlines()) == 1
    second.upload(shared / 'images' / 'flowers.jpg')
    second.wait(lambda: '320x240' in second.status(), 60)
    second.dream(iter_n=1, octave_n=1)
    second_file, first_file = second.download(), first.download()
    assert any(s['status'].startswith('Waiting: 1 dream ahead') for s in second.seen()), \
        'the second visitor should see its place in the queue'
    assert read_recipe(first_file)['input'] == 'sky1024px.jpg' and read_recipe(first_file)['iter_n'] == 20
    assert read_recipe(second_file)['input'] == 'flowers.jpg'
    # one at a time: the second dream's first octave came after the first dream was done
    ends = {name: next(s['t'] for s in page.seen() if s['status'].startswith(prefix))
            for name, page, prefix in (('first done', first, 'Done'), ('second starts', second, 'Octave 1'))}
    assert ends['second starts'] >= ends['first done'] - 1000      # two browsers' clocks are one machine's


def test_stop_frees_the_device_at_the_next_octave(server, browser, shared):
    url, _, _ = server
    page = browser(url)
    page.find('#sky').click()
    page.wait(lambda: '1024x575' in page.status(), 60)
    page.dream(iter_n=10, octave_n=4)
    page.wait(lambda: 'Octave 1 of 4 done' in page.status())
    page.find('#stop').click()
    page.wait(lambda: 'Stopping at the end of this octave' in page.status(), 30)
    assert not page.result_link()
    page.upload(shared / 'images' / 'flowers.jpg')
    page.wait(lambda: '320x240' in page.status(), 60)
    page.dream(iter_n=1, octave_n=1)         # the sky's dream ends after its octave: then this one runs
    page.wait(lambda: page.status().startswith('Done'), 120)
    assert page.result_link()[0].get_attribute('download') == 'flowers_inception_4c-output_s0.jpg'


def _fake_camera(path, still, seconds=2, fps=10):
    """A .y4m that Chromium plays as the camera (--use-file-for-fake-video-capture): `still`, an image file,
    as a clip of a still scene, which Chromium loops."""
    import imageio_ffmpeg
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), '-loglevel', 'error', '-loop', '1', '-i', str(still), '-t',
                    str(seconds), '-r', str(fps), '-pix_fmt', 'yuv420p', str(path)], check=True)
    return path


def test_live_tab_dreams_the_camera_and_stop_frees_the_device(server, browser, shared, tmp_path):
    """A visitor's camera (Chromium's fake one, playing a still 640x480 crop of the sky) dreamed live: frames
    come back dreamed, the frames per second show, another visitor's dream queued meanwhile completes (the
    live view pausing for it), and Stop ends the stream."""
    from gradio_client import Client, handle_file
    url, _, _ = server
    scene = tmp_path / 'scene.png'
    Image.open(shared / 'images' / 'sky1024px.jpg').convert('RGB').crop((0, 0, 640, 480)).save(scene)
    camera = _fake_camera(tmp_path / 'camera.y4m', scene)
    page = browser(url, '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
                   f'--use-file-for-fake-video-capture={camera}')
    page.driver.execute_script(WATCH_LIVE)
    next(tab for tab in page.driver.find_elements('css selector', 'button[role=tab]') if tab.text == 'Live').click()
    page.wait(lambda: [b for b in page.driver.find_elements('css selector', '#camera button')
                       if 'Access Webcam' in b.text], 30)[0].click()
    page.wait(lambda: page.driver.find_elements('css selector', '#camera button.capture-button'), 30)[0].click()
    live = lambda: page.driver.execute_script(LIVE_STATUS)  # noqa: E731
    page.wait(lambda: re.search(r'Live: [\d.]+ frames per second, 320x240', live()), 300)

    src = page.driver.execute_script("return document.querySelector('#live_dream img').src")
    dreamed = np.asarray(Image.open(urllib.request.urlopen(src)).convert('RGB'), np.float32)
    seen_by_camera = np.asarray(Image.open(scene).resize((320, 240), Image.BILINEAR), np.float32)
    assert dreamed.shape == (240, 320, 3)
    difference = np.abs(dreamed - seen_by_camera).mean()
    assert 1 < difference < 30, difference             # the camera's scene, dreamed

    # another visitor's dream, queued while the stream runs: it completes, the live view pausing for it. It is
    # long enough (20 steps on the full sky: seconds, even with its programs on disk) for the live frame's
    # answer, which waits LIVE_WAIT_S, to find it still on the device
    client = Client(url, verbose=False)
    status, *_ = client.predict(handle_file(str(shared / 'images' / 'sky1024px.jpg')), iter_n=20, octave_n=1,
                                api_name='/dream')
    assert status.startswith('Done'), status
    page.wait(lambda: any(text.startswith('Paused: 1 dream queued') for text in page.seen_live()), 30)
    page.wait(lambda: live().startswith('Live:'), 60)              # and the live view went on

    page.find('#stop_live').click()
    page.wait(lambda: live() == 'Stopped: the device is free.', 30)
    last = page.driver.execute_script("return document.querySelector('#live_dream img').src")
    page.wait(lambda: page.driver.find_elements('css selector', '#camera button.capture-button') and 'Record' in
              page.find('#camera button.capture-button').text, 10)           # the camera is off
    time.sleep(3)
    assert live() == 'Stopped: the device is free.'
    assert page.driver.execute_script("return document.querySelector('#live_dream img').src") == last
    page.driver.save_screenshot(str(tmp_path / 'live.png'))


# The Live tab's status line (its text alone, not Gradio's timer beside it), and every text it showed, in order.
LIVE_STATUS = "return document.querySelector('#live_status [data-testid=markdown]').innerText.trim()"
WATCH_LIVE = '''
window.seenLive = [];
new MutationObserver(() => {
  const status = document.querySelector('#live_status [data-testid=markdown]');
  const text = status ? status.innerText.trim() : '';
  if (window.seenLive[window.seenLive.length - 1] !== text) window.seenLive.push(text);
}).observe(document.body, {subtree: true, childList: true, characterData: true});
'''


def test_scripts_dream_through_gradio_client(server, shared, tmp_path, capsys):
    from gradio_client import Client, handle_file
    url, _, _ = server
    client = Client(url, verbose=False)
    flowers = shared / 'images' / 'flowers.jpg'
    status, _, octaves, path, recipe = client.predict(handle_file(str(flowers)), iter_n=1, octave_n=2, seed='3',
                                                      layer='inception_3b/output', api_name='/dream')
    assert status.startswith('Done') and len(octaves) == 2
    assert recipe['seed'] == 3 and recipe['end'] == 'inception_3b/output'
    assert Path(path).read_bytes() == _cli_dream(capsys, tmp_path, flowers, '--iter_n=1', '--octave_n=2',
                                                 '--seed=3', '--end=inception_3b/output')
    _, _, _, path, recipe = client.predict(handle_file(str(flowers)), iter_n=1, octave_n=1, seed='random',
                                           fmt='PNG', api_name='/dream')
    assert path.endswith(f'_s{recipe["seed"]}.png') and read_recipe(path) == recipe


def test_zoom_gives_the_clis_frames_mp4_and_gif(server, shared, tmp_path, capsys):
    from gradio_client import Client, handle_file
    url, _, _ = server
    flowers = shared / 'images' / 'flowers.jpg'
    status, _, frames, (mp4, gif), recipe = Client(url, verbose=False).predict(
        handle_file(str(flowers)), iter_n=1, octave_n=2, frames=3, fps=5, api_name='/zoom')
    assert status.startswith('Done') and len(frames) == 3 and recipe['frames'] == 3
    assert [Path(p).name for p in (mp4, gif)] == [f'flowers_inception_4c-output_s0.{e}' for e in ('mp4', 'gif')]
    out = tmp_path / 'cli'
    code, _, err = run(capsys, 'zoom', flowers, '--frames=3', '--iter_n=1', '--octave_n=2', '--fps=5',
                       f'--outdir={out}', f'--gif={tmp_path / "cli.gif"}', '--quiet')
    assert code == 0, err
    assert Path(gif).read_bytes() == (tmp_path / 'cli.gif').read_bytes()
    assert [Path(f['image']).read_bytes() for f in frames] == [(out / f'{i:04d}.jpg').read_bytes() for i in range(3)]


def test_the_page_dreams_with_another_onnx_model(shared, tmp_path, capsys):
    from gradio_client import Client, handle_file
    from test_onnx_models import _residual_model
    model = tmp_path / 'tiny_resnet.onnx'
    _residual_model(model)
    proc, url, _, _ = _start(tmp_path, '--warm=False', f'--model={model}')
    try:
        flowers = shared / 'images' / 'flowers.jpg'
        status, _, _, path, recipe = Client(url, verbose=False).predict(handle_file(str(flowers)), iter_n=1,
                                                                        octave_n=2, api_name='/dream')
    finally:
        proc.terminate()
        proc.wait(30)
    assert status.startswith('Done') and recipe['model'] == 'tiny_resnet.onnx'
    from classicdream.graph import Net
    first = Net(str(model)).default_end
    assert recipe['end'] == first                            # the model's own default layer, as the CLI's
    assert Path(path).read_bytes() == _cli_dream(capsys, tmp_path, flowers, f'--model={model}', f'--end={first}',
                                                 '--iter_n=1', '--octave_n=2')


def _upload(url, data, name):
    """POST a file to Gradio's upload route as a browser does; (HTTP status, body)."""
    boundary = 'classicdreamtest'
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
            f'Content-Type: application/octet-stream\r\n\r\n').encode() + data + f'\r\n--{boundary}--\r\n'.encode()
    request = urllib.request.Request(url + 'gradio_api/upload', body,
                                     {'Content-Type': f'multipart/form-data; boundary={boundary}'})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _call(url, data):
    """Run the /dream endpoint with raw JSON data; its closing event (kind, data)."""
    request = urllib.request.Request(url + 'gradio_api/call/dream', json.dumps({'data': data}).encode(),
                                     {'Content-Type': 'application/json'})
    event = json.load(urllib.request.urlopen(request))['event_id']
    stream = urllib.request.urlopen(url + f'gradio_api/call/dream/{event}').read().decode()
    kind, data = [line.split(': ', 1)[1] for line in stream.strip().splitlines()[-2:]]
    return kind, json.loads(data)


def _options(image, **changes):
    options = dict(layer='inception_4c/output', iter_n=1, octave_n=1, octave_scale=1.4, step_size=1.5, jitter=32,
                   clip=True, seed='0', channel='', tile='', colors='dream', lapnorm=0, guide=None, fmt='JPEG', mask=None,
                   painted=None)
    options.update(changes)
    return [image, *options.values()]


def test_bad_input_is_one_line_and_the_server_goes_on(server, shared, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError
    url, port, log = server
    client = Client(url, verbose=False)
    flowers = (shared / 'images' / 'flowers.jpg').read_bytes()
    big = Image.new('1', (40000, 40000))                  # 1.6 gigapixels in a 190 kB file
    files = {'empty.jpg': b'', 'notes.jpg': b'shopping: eggs, flour', 'cut.jpg': flowers[:len(flowers) // 2]}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    big.save(tmp_path / 'huge.png', optimize=True)
    expected = {'empty.jpg': 'file is empty', 'notes.jpg': 'not an image file', 'cut.jpg': 'truncated or corrupt',
                'huge.png': 'image too large'}
    for name, words in expected.items():
        with pytest.raises(AppError) as e:
            client.predict(handle_file(str(tmp_path / name)), iter_n=1, octave_n=1, api_name='/dream')
        assert str(e.value).startswith(f'classicdream: error: {name}: {words}'), str(e.value)
        assert '\n' not in str(e.value) and '/tmp' not in str(e.value)
    (tmp_path / 'flowers.jpg').write_bytes(flowers)
    for options, words in ((dict(layer='inception_9z/output'), "unknown layer 'inception_9z/output'"),
                           (dict(channel='42,x'), '--channel must be a number'),
                           (dict(tile='10'), 'a tile of 10 pixels is too small')):
        with pytest.raises(AppError) as e:
            client.predict(handle_file(str(tmp_path / 'flowers.jpg')), api_name='/dream', **options)
        assert str(e.value).startswith('classicdream: error:') and words in str(e.value), str(e.value)
    # what only a hand-made request sends: NaN, and a path on the server's disk
    status, uploaded = _upload(url, flowers, 'flowers.jpg')
    assert status == 200
    image = {'path': uploaded[0], 'orig_name': 'flowers.jpg', 'meta': {'_type': 'gradio.FileData'}}
    kind, data = _call(url, _options(image, octave_scale=float('nan')))
    assert kind == 'error' and data['error'] == 'classicdream: error: --octave_scale must be a finite number, got nan'
    secret = tmp_path / 'secret.jpg'
    secret.write_bytes(flowers)
    log_size = os.path.getsize(log.name)
    kind, _ = _call(url, _options({'path': str(secret), 'meta': {'_type': 'gradio.FileData'}}))
    assert kind == 'error'
    log.seek(log_size)
    assert 'was not uploaded by a user' in log.read(), 'Gradio should refuse a path it did not receive'
    # uploads over --max_upload are refused before they reach the page
    status, body = _upload(url, b'\xff' * (MAX_UPLOAD + 1), 'big.jpg')
    assert status == 413 and 'maximum allowed size' in body
    # and the server goes on serving
    status, _, _, path, _ = client.predict(handle_file(str(tmp_path / 'flowers.jpg')), iter_n=1, octave_n=1,
                                           api_name='/dream')
    assert status.startswith('Done') and Path(path).stat().st_size > 0


def test_serves_only_this_machine_unless_told(server, tmp_path):
    _, port, _ = server
    listening = [line.split()[1] for name in ('/proc/net/tcp', '/proc/net/tcp6') if os.path.exists(name)
                 for line in open(name).read().splitlines()[1:] if line.split()[3] == '0A']     # LISTEN
    assert f'0100007F:{port:04X}' in listening                                          # 127.0.0.1
    assert not [a for a in listening if a.endswith(f':{port:04X}') and not a.startswith('0100007F')]
    # 127.0.0.2 is loopback too, but not the default: the warning is due
    proc, _, _, log = _start(tmp_path, '--warm=False', '--host=127.0.0.2', host='127.0.0.2')
    proc.terminate()
    proc.wait(30)
    log.seek(0)
    assert 'not only this machine' in log.read()


def test_serve_refuses_bad_options(capsys):
    assert_one_line_error(*run(capsys, 'serve', '--max_upload=lots')[::2], '--max_upload')
    assert_one_line_error(*run(capsys, 'serve', '--port=-1')[::2], '--port')


def test_device_runs_in_turn_and_cancels_at_the_next_octave(net, photo):
    import io
    import threading
    from classicdream.dreamer import Dreamer
    from classicdream.images import load_image
    img = load_image(photo)
    d = Dreamer('inception_3b/output', 1, 3, 1.2, 1.5, 32, True, 0, True).using(net)
    device, proceed = Device(), threading.Event()

    def held(job):                            # the first dream waits after each octave until the test says
        return d.encoded(img, {}, on_octave=lambda *args: (job.on_octave(*args), proceed.wait(60)))
    first = device.submit(held, owner='a')
    second = device.submit(lambda job: d.encoded(img, {}, on_octave=job.on_octave), owner='b')
    assert device.ahead(second) == 1
    events = []
    for event in first.events(poll=0.05):
        events.append(event)
        if event[0] == 'octave':
            assert device.cancel('a') == 1
            proceed.set()
    assert [e[0] for e in events if e[0] != 'stopping'] == ['octave', 'failed']
    assert isinstance(events[-1][1], Cancelled)
    assert str(events[-1][1]) == 'cancelled after octave 2'
    events = list(second.events(poll=0.05))
    assert [e[0] for e in events if e[0] != 'waiting'] == ['octave', 'octave', 'octave', 'done']
    octaves = [e for e in events if e[0] == 'octave']
    assert [e[3].shape[:2] for e in octaves] == [e[2] for e in octaves]
    assert octaves[-1][2] == img.shape[:2]
    final = np.asarray(Image.open(io.BytesIO(events[-1][1])), np.float32)
    assert np.abs(final - np.clip(octaves[-1][3], 0, 255)).mean() < 2    # the last octave is the dream
