#!/usr/bin/env bash
# Issue 18's GPU checks, prepared so that each device call is one command that does a whole part.
#
#   here:        bash bench/gpu.sh prepare PART      stages .device/ (git-ignored) for that part
#   the device:  run(command='bash bench/gpu.sh PART', carry=['.device'], timeout_s=600)
#
# A device call carries at most 64 MiB, and the model (26 MB) with all of shared/reference (69 MB)
# is more, so the fixtures travel in three parts, each with the model mirror and the images:
#   suite   every test, with steps_sky.npz (tests of the other fixtures skip:
#           $CLASSICDREAM_FIXTURES_CARRIED); test modules needing packages the device lacks and that do
#           not fit a call (Gradio and Chromium, Ray, imageio-ffmpeg: the mp4 tests, Jupyter) are left out, named below
#   parity  test_parity.py and test_buckets.py with blobs_sky224 and blobs_noise181x253
#   bench   test_parity.py and test_dream.py with blobs_flowers224 and the reference dreams, then `make bench`'s rows (CPU and GPU, PyTorch beside
#           them where it runs), bench/gpu_memory.py (the estimate against the device's peak) and
#           bench/live_bench.py (the page's live view: live_fps_gpu_320x240= and _640x480=)
# Logs and results come back under $OUT. The device has JAX with CUDA, numpy, scipy, Pillow, onnx and
# pytest; python-fire (and termcolor, its one need) travel as wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
part=${2:-${1:-}}
case $part in suite|parity|bench) ;; *) echo "usage: bash bench/gpu.sh [prepare] suite|parity|bench" >&2; exit 2;; esac
fixtures() {
  case $1 in
    suite) echo steps_sky.npz;;
    parity) echo blobs_sky224.npz blobs_noise181x253.npz;;
    bench) echo blobs_flowers224.npz dreams;;
  esac
}

if [ "${1:-}" = prepare ]; then
  shared=${CLASSICDREAM_SHARED:-../shared}
  grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >>.git/info/exclude
  rm -rf .device && mkdir -p .device/shared/reference .device/whl
  cp -r "$shared/models" "$shared/images" .device/shared/
  cp "$shared/reference/README.md" .device/shared/reference/
  for f in $(fixtures "$part"); do cp -r "$shared/reference/$f" .device/shared/reference/; done
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    -d .device/whl fire==0.7.1 termcolor==3.3.0
  du -sh .device
  exit 0
fi

: "${OUT:?run this part on the device (bench/gpu.sh prepare $part here first)}"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .device/whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 CLASSICDREAM_SHARED=$PWD/.device/shared \
  CLASSICDREAM_MIRROR=$PWD/.device/shared/models CLASSICDREAM_FIXTURES_CARRIED=1 \
  CLASSICDREAM_JAX_CACHE=/tmp/classicdream-jax
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c 'import jax; print("jax", jax.__version__, jax.devices())' | tee -a "$OUT/gpu.txt"
python3 -m classicdream models
pytest=(run python3 -m pytest -q -p no:cacheprovider -rs --junitxml="$OUT/junit-$part.xml")
run() { "$@" || echo "exit status $? of: $*" >>"$OUT/failed.txt"; }   # a failing step leaves the others to run
case $part in
  suite)
    "${pytest[@]}" --ignore=tests/test_serve.py --ignore=tests/test_video.py \
      --ignore=tests/test_example_notebook.py --ignore=tests/test_cluster_nodes.py --deselect=tests/test_dream.py::test_full_dream_is_statistically_one_of_caffes \
      -k 'not cluster and not mp4' tests \
      2>&1 | tee "$OUT/suite.log";;
  parity)
    "${pytest[@]}" tests/test_parity.py tests/test_buckets.py 2>&1 | tee "$OUT/parity.log";;
  bench)
    "${pytest[@]}" tests/test_parity.py tests/test_dream.py 2>&1 | tee "$OUT/parity-dreams.log"
    run python3 bench/bench.py 2>&1 | tee "$OUT/bench.log"
    cp bench/RESULTS.md "$OUT/RESULTS.md"
    run python3 bench/gpu_memory.py 2>&1 | tee "$OUT/memory.log"
    run python3 bench/live_bench.py 2>&1 | tee "$OUT/live.log";;
esac
