"""Every command in README.md and docs/*.md runs, so the docs cannot drift from the code.

What runs: every fenced block of README.md and docs/*.md whose info string is `sh`, `bash` or `console`
(one command a line; blank lines and `#` comment lines skipped; a trailing `# ...` comment is dropped;
a `\\` at the end of a line continues it; a `$ ` prompt is dropped), and every `python` block (executed
as a whole). A fence without an info string fails, so no command can hide from this test.

Skips: a block whose previous non-blank line is `<!-- doctest: skip (REASON) -->` is reported as skipped
with REASON. Keep them for what a test machine cannot do quickly: a GPU, the internet, Ray, a browser, a
server that runs until stopped, or minutes of work (make bench, make reference, make test itself). Any
other block must pass: a command that exits non-zero fails the test.

Where: each block gets a fresh, empty working folder holding the files the docs name, all small:
  sky.jpg, sky1024px.jpg, photo.jpg, path/to/photo.jpg   a 96x64 crop of the notebook's sky
  flowers.jpg                                            a 96x64 crop of the notebook's flowers (the guide)
  photos/                                                a folder of two such images
  mask.png                                               a 96x64 mask: the right half white, the left black
  clip.mp4                                               3 frames of 96x64 at 10 fps, with sound
  keys.json                                              the keyframes of docs/command-line.md's example
The project's .venv/bin is first on PATH, so `classicdream` and `python` are the project's. Lines that
start with `make`, or run a script under bench/, run from the checkout (as the docs mean them), with the
file names above turned into their paths in the working folder; every other line runs in the working
folder.

Small settings, added at the end of the line (the last value of an option wins, with fire as with make):
  classicdream dream|guide|zoom|atlas|video|visualize (also python -m classicdream ...):
                         --iter_n=1 --octave_n=1 --quiet
      zoom               and --frames=2
      atlas              and --layers=inception_3b/output,inception_4c/output where no --layers is given
      visualize          and --size=64 where no --img is given
      (nothing is added to a line with --help)
  make dream             ITER_N=1 OCTAVE_N=1, and OUT=<working folder>/make_dream.jpg where no OUT is given
  python bench/step_profile.py   --height=64 --width=96 --steps=1
  python blocks          classicdream.deepdream's iter_n and octave_n default to 1
How: `classicdream ...` lines run in this process (tests/conftest.py's `run`, sharing compiled programs
between them); `make`, `python ...`, `bash ...` lines and lines with an environment assignment before the
command (`NAME=value classicdream ...`) run in bash in a subprocess.
"""
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import ROOT, run

DOCS = [ROOT / 'README.md', *sorted((ROOT / 'docs').glob('*.md'))]
SHELL = {'sh', 'bash', 'console'}
DREAMING = {'dream', 'guide', 'zoom', 'atlas', 'video', 'visualize'}
SMALL = ['--iter_n=1', '--octave_n=1', '--quiet']
PLACEHOLDERS = ['path/to/photo.jpg', 'sky1024px.jpg', 'sky.jpg', 'photo.jpg', 'flowers.jpg', 'photos/',
                'clip.mp4', 'mask.png', 'keys.json']
KEYS = [{'frame': 0, 'end': 'inception_3b/output'}, {'frame': 40, 'end': 'inception_4c/output', 'step_size': 2.0}]
SKIP = re.compile(r'<!--\s*doctest:\s*skip\s*\((.+)\)\s*-->')
FENCE = re.compile(r'^(\s*)(```+|~~~+)\s*([^\s`]*)')


def blocks():
    """(file, line, language, code, skip reason or None) for every fenced block of the docs."""
    found = []
    for path in DOCS:
        lines = path.read_text().splitlines()
        i = 0
        while i < len(lines):
            m = FENCE.match(lines[i])
            if not m:
                i += 1
                continue
            indent, fence, lang = m.groups()
            start = i
            body = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(fence):
                body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i].lstrip())
                i += 1
            i += 1
            previous = next((lines[j].strip() for j in range(start - 1, -1, -1) if lines[j].strip()), '')
            skip = SKIP.fullmatch(previous)
            found.append((path.relative_to(ROOT).as_posix(), start + 1, lang, '\n'.join(body),
                          skip.group(1) if skip else None))
    return found


def commands(code):
    """The command lines of a shell block: continuations joined, comments and prompts dropped."""
    joined, current = [], ''
    for line in code.splitlines():
        if line.rstrip().endswith('\\'):
            current += line.rstrip()[:-1] + ' '
            continue
        joined.append(current + line)
        current = ''
    if current:
        joined.append(current)
    out = []
    for line in joined:
        line = line.strip()
        if line.startswith('$ '):
            line = line[2:]
        words = shlex.split(line, comments=True)
        if words:
            out.append(words)
    return out


def make_files(work, shared):
    """The small files the docs' commands name, in the working folder."""
    sky = Image.open(shared / 'images' / 'sky1024px.jpg').crop((0, 0, 96, 64))
    flowers = Image.open(shared / 'images' / 'flowers.jpg').convert('RGB').resize((96, 64))
    for name in ['sky.jpg', 'sky1024px.jpg', 'photo.jpg', 'path/to/photo.jpg', 'photos/a.jpg']:
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        sky.save(work / name, quality=95)
    flowers.save(work / 'flowers.jpg', quality=95)
    flowers.save(work / 'photos' / 'b.jpg', quality=95)
    mask = Image.new('L', (96, 64))
    mask.paste(255, (48, 0, 96, 64))
    mask.save(work / 'mask.png')
    (work / 'keys.json').write_text(json.dumps(KEYS))
    import imageio_ffmpeg
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), '-loglevel', 'error', '-f', 'lavfi', '-i',
                    'testsrc=size=96x64:rate=10', '-f', 'lavfi', '-i', 'sine=frequency=440', '-t', '0.3',
                    '-pix_fmt', 'yuv420p', str(work / 'clip.mp4')], check=True)


def has(words, option):
    return any(w == option or w.startswith(option + '=') for w in words)


def small(words, work):
    """The same command with the small settings (see the module's docstring)."""
    env = []
    while words and re.fullmatch(r'[A-Za-z_][A-Za-z0-9_]*=.*', words[0]):
        env, words = env + [words[0]], words[1:]
    cli = None
    if words[:1] == ['classicdream']:
        cli = words[1:]
    elif words[:3] in (['python', '-m', 'classicdream'], ['python3', '-m', 'classicdream']):
        cli = words[3:]
    extra = []
    if cli and cli[0] in DREAMING and not has(cli, '--help'):
        extra = list(SMALL)
        if cli[0] == 'zoom':
            extra.append('--frames=2')
        if cli[0] == 'atlas' and not has(cli, '--layers'):
            extra.append('--layers=inception_3b/output,inception_4c/output')
        if cli[0] == 'visualize' and not has(cli, '--img'):
            extra.append('--size=64')
    elif words[:2] == ['make', 'dream']:
        extra = ['ITER_N=1', 'OCTAVE_N=1']
        if not any(w.startswith('OUT=') for w in words):
            extra.append(f'OUT={work}/make_dream.jpg')
    elif words[:2] in (['python', 'bench/step_profile.py'], ['python3', 'bench/step_profile.py']):
        extra = ['--height=64', '--width=96', '--steps=1']
    return env, words + extra


def from_checkout(words):
    return words[:1] == ['make'] or any(w.startswith('bench/') for w in words[:3])


def absolute(words, work):
    """File names of the working folder as its paths, for a command run from the checkout."""
    out = []
    for w in words:
        for name in PLACEHOLDERS:
            if w == name or w.endswith('=' + name):
                w = w[:len(w) - len(name)] + str(work / name)
                break
        out.append(w)
    return out


def shell(assignments, words, cwd):
    path = f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    line = shlex.join(assignments + words)
    env = {k: v for k, v in os.environ.items() if k not in ('MAKEFLAGS', 'MFLAGS', 'MAKELEVEL')}  # not make test's
    result = subprocess.run(['bash', '-c', line], cwd=cwd, capture_output=True, text=True, timeout=600,
                            env=dict(env, PATH=path, VIRTUAL_ENV=str(ROOT / '.venv')))
    return result.returncode, result.stdout, result.stderr, line


BLOCKS = blocks()


@pytest.mark.parametrize('where,line,lang,code,skip',
                         [b for b in BLOCKS if b[2] in SHELL | {'python'}],
                         ids=[f'{b[0]}:{b[1]}' for b in BLOCKS if b[2] in SHELL | {'python'}])
def test_block_runs(where, line, lang, code, skip, tmp_path, shared, capsys, monkeypatch):
    if skip:
        pytest.skip(skip)
    work = tmp_path / 'work'
    work.mkdir()
    make_files(work, shared)
    monkeypatch.chdir(work)
    if lang == 'python':
        import classicdream
        full = classicdream.deepdream

        def deepdream(*args, **kwargs):                  # the small settings, as for the command line
            kwargs.setdefault('iter_n', 1)
            kwargs.setdefault('octave_n', 1)
            return full(*args, **kwargs)
        monkeypatch.setattr(classicdream, 'deepdream', deepdream)
        exec(compile(code, f'{where}:{line}', 'exec'), {'__name__': '__doc__'})
        return
    assert commands(code), f'{where}:{line}: an empty shell block'
    for words in commands(code):
        env, words = small(words, work)
        if not env and words[0] == 'classicdream':
            code_, out, err = run(capsys, *words[1:])
            line_ = shlex.join(words)
        elif from_checkout(words):
            code_, out, err, line_ = shell(env, absolute(words, work), ROOT)
        else:
            code_, out, err, line_ = shell(env, words, work)
        assert code_ == 0, f'{where}:{line}: `{line_}` exited {code_}\n{out[-2000:]}\n{err[-4000:]}'


def test_every_fence_says_its_language():
    """A fence without an info string would hide its commands from test_block_runs."""
    bare = [f'{where}:{line}' for where, line, lang, code, skip in BLOCKS if not lang]
    assert not bare, f'fenced blocks without a language: {bare}'


def test_skip_markers_stand_before_a_runnable_block():
    """A marker is read only right before a fence: one anywhere else is a mistake, not a skip."""
    marked = {(where, line) for where, line, lang, code, skip in BLOCKS if skip}
    for path in DOCS:
        lines = path.read_text().splitlines()
        for i, text in enumerate(lines):
            if SKIP.fullmatch(text.strip()):
                after = next((j for j in range(i + 1, len(lines)) if lines[j].strip()), None)
                rel = path.relative_to(ROOT).as_posix()
                assert after is not None and (rel, after + 1) in marked, f'{rel}:{i + 1}: marker before no block'


def anchor(heading):
    """GitHub's anchor for a heading."""
    return re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')


def test_links_and_pictures_resolve():
    """Every relative link and picture of the docs names a file of the checkout (and a heading there)."""
    broken = []
    for path in DOCS:
        text = path.read_text()
        for target in re.findall(r'\]\(([^)\s]+)\)', text):
            if re.match(r'[a-z]+://|mailto:', target):
                continue
            file, _, frag = target.partition('#')
            dest = (path.parent / file).resolve() if file else path
            if not dest.exists():
                broken.append(f'{path.name}: {target}')
            elif frag and dest.suffix == '.md':
                headings = re.findall(r'^#+ (.+)$', dest.read_text(), flags=re.M)
                if frag not in {anchor(h) for h in headings}:
                    broken.append(f'{path.name}: {target} (no such heading)')
    assert not broken, broken


def test_readme_is_a_front_door():
    """README ≤ 200 lines; the depth is in docs/."""
    assert len((ROOT / 'README.md').read_text().splitlines()) <= 200


def test_the_keyframes_file_is_the_one_the_docs_show():
    """keys.json in the working folder is the JSON that docs/command-line.md shows before its commands."""
    shown = [json.loads(code) for where, _, lang, code, _ in BLOCKS if where == 'docs/command-line.md' and lang == 'json']
    assert shown == [KEYS]
