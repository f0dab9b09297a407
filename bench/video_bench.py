"""`make bench-video`: frames per second of `classicdream video`, here and on a local Ray cluster.

A 10-frame 1024x576 clip (ffmpeg's testsrc2 with a tone) is dreamed with the notebook's defaults twice,
each in a fresh process: sequentially, then with --cluster=local --workers=2. Frames are independent
(no --blend), so the cluster can spread them all; a one-frame run first fills the compile cache, so
neither timing includes compiling. Prints key=value lines: video_fps_sequential=, video_fps_cluster2=,
scaling_efficiency= (cluster fps / (workers x sequential fps)). Options: --frames=10 --size=1024x576
--workers=2, and dream options passed through (e.g. --iter_n=2 for a quick look).
"""
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_clip(path, frames, size, fps=10):
    import imageio_ffmpeg
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), '-loglevel', 'error', '-f', 'lavfi', '-i',
                    f'testsrc2=size={size}:rate={fps}', '-f', 'lavfi', '-i', 'sine=frequency=440',
                    '-frames:v', str(frames), '-pix_fmt', 'yuv420p', '-shortest', str(path)], check=True)


def timed(args):
    """Wall seconds of one `classicdream video` command in a fresh process."""
    start = time.perf_counter()
    subprocess.run([sys.executable, '-m', 'classicdream', 'video', *args, '--quiet'], check=True)
    return time.perf_counter() - start


def main(frames=10, size='1024x576', workers=2, *dream_options):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip = tmp / 'clip.mp4'
        make_clip(clip, frames, size)

        def run(name, *extra):
            return timed([str(clip), f'--out={tmp / name}.mp4', f'--outdir={tmp / name}', *dream_options, *extra])
        run('warm', '--stop=0.1')            # one frame
        sequential = frames / run('sequential')
        cluster = frames / run('cluster', '--cluster=local', f'--workers={workers}')
    print(f'frames={frames}\nsize={size}\nworkers={workers}\noptions={" ".join(dream_options) or "defaults"}')
    print(f'video_fps_sequential={sequential:.4f}\nvideo_fps_cluster{workers}={cluster:.4f}')
    print(f'scaling_efficiency={cluster / (workers * sequential):.3f}')


if __name__ == '__main__':
    options = dict(a[2:].split('=', 1) for a in sys.argv[1:] if a.split('=')[0] in ('--frames', '--size', '--workers'))
    rest = [a for a in sys.argv[1:] if a.split('=')[0] not in ('--frames', '--size', '--workers')]
    main(int(options.get('frames', 10)), options.get('size', '1024x576'), int(options.get('workers', 2)), *rest)
