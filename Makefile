# classicdream — `make dream IMG=photo.jpg` sets everything up on first use; `make test` runs the tests.
# Each command installs what it needs, once (a stamp file in the venv per part): `make dream` the package
# alone (`pip install -e .`), `make serve` the web extra, `make test` the test extra, `make bench` the bench
# extra.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
MODEL  := models/bvlc_googlenet.onnx

# Options passed through to `classicdream dream` when set: make dream IMG=sky.jpg END=inception_3b/output SEED=1
# Their values reach the command through the environment, verbatim: make expands none of them ($(value)),
# and the shell only substitutes "$$VAR", so quotes, $, backticks and spaces in a file name stay text.
DREAM_VARS := IMG OUT END SEED ITER_N OCTAVE_N OCTAVE_SCALE STEP_SIZE JITTER TILE PORT
$(foreach v,$(DREAM_VARS),$(eval override $v := $$(value $v)))
export $(DREAM_VARS)
DREAM_OPTS = $(if $(IMG),--img="$$IMG") $(if $(OUT),--out="$$OUT") $(if $(END),--end="$$END") \
	$(if $(SEED),--seed="$$SEED") $(if $(ITER_N),--iter_n="$$ITER_N") $(if $(OCTAVE_N),--octave_n="$$OCTAVE_N") \
	$(if $(OCTAVE_SCALE),--octave_scale="$$OCTAVE_SCALE") $(if $(STEP_SIZE),--step_size="$$STEP_SIZE") \
	$(if $(JITTER),--jitter="$$JITTER") $(if $(TILE),--tile="$$TILE")

.PHONY: setup setup-web setup-test setup-bench browser models test dream serve clean reference bench bench-video bench-live

setup: $(VENV)/.installed
setup-web: $(VENV)/.web
setup-test: $(VENV)/.test
setup-bench: $(VENV)/.bench

# The package and what dreaming needs: all that `make dream` installs.
$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

# An extra on top of it, each once: web (the page), test (the suite's tools, torch and Ray among them).
$(VENV)/.web $(VENV)/.test: $(VENV)/.%: setup.cfg | setup
	$(PY) -m pip install -q -e '.[$*]'
	touch $@

# Debian's Chromium and its driver, for the page's browser tests (tests/test_serve.py), where missing.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  command -v apt-get >/dev/null || { echo 'no apt-get: install Chromium and chromedriver yourself' >&2; exit 1; }; \
	  $(if $(filter 0,$(shell id -u)),,sudo) apt-get update -q && \
	  $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -q chromium chromium-driver; }

models: $(MODEL)

$(MODEL): | setup
	$(PY) -m classicdream models

test: models $(VENV)/.test
	$(PY) -m pytest $(PYTEST_ARGS)

dream: models
	@test -n "$$IMG" || { echo 'usage: make dream IMG=path/to/image.jpg [OUT=... END=... SEED=...]' >&2; exit 2; }
	$(PY) -m classicdream dream $(DREAM_OPTS)

# The dream page at http://localhost:7860/ (PORT=... to change it)
serve: models $(VENV)/.web
	$(PY) -m classicdream serve $(if $(PORT),--port="$$PORT")

# Real Caffe (CPU) and a bvlc_googlenet.caffemodel, built once into $CLASSICDREAM_CACHE/caffe (~/.cache/classicdream).
reference:
	bash bench/build_caffe.sh

# classicdream against the 2015 notebook on that Caffe (classicdream alone until `make reference`), and against
# PyTorch eager on the same loop: the `bench` extra (torch's CPU wheel) first; without it, no PyTorch rows.
bench: models $(VENV)/.bench
	$(PY) bench/bench.py

$(VENV)/.bench: setup.cfg | setup
	$(PY) -m pip install -q -e '.[bench]' && touch $@ || echo 'make bench: the bench extra (torch) did not install' >&2

# Frames per second of `classicdream video` on a 10-frame 1024x576 clip: sequential and on 2 local Ray workers.
bench-video: models
	$(PY) bench/video_bench.py

# Frames per second of the page's live view (bench/live_bench.py): a generated camera at 320x240 and 640x480.
bench-live: models
	$(PY) bench/live_bench.py

clean:
	rm -rf $(VENV) $(MODEL) .pytest_cache
