# UniSeg3D-ROS: one-command set-up. `make test` and `make demo` create .venv,
# install every dependency (torch pinned to the CPU build by the constraints
# file), build the uniseg3d_msgs interface package, then run. Re-running is
# cheap: each step is guarded by a stamp file that depends on its inputs.

VENV      ?= .venv
PY        := $(VENV)/bin/python
PIP       := $(PY) -m pip --disable-pip-version-check
CONSTRAIN := -c requirements/constraints.txt
DEPS      := $(VENV)/.deps-stamp
SYSDEPS   := $(VENV)/.sysdeps-stamp
MSGS      := install/.msgs-stamp
PYTEST_ARGS ?=

.PHONY: setup test demo lint format clean bench

setup: $(SYSDEPS) $(DEPS) $(MSGS)

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install -q -U pip wheel setuptools

$(SYSDEPS): scripts/system_deps.sh | $(PY)
	bash scripts/system_deps.sh
	touch $@

$(DEPS): Makefile requirements/base.txt requirements/ros-build.txt requirements/constraints.txt setup.py | $(PY)
	$(PIP) install -q $(CONSTRAIN) -r requirements/base.txt -r requirements/ros-build.txt
	# open_clip is never imported (it needs torchvision): only its BPE vocabulary and model
	# configs are read by uniseg3d_model.clip_text, so its dependencies are not installed.
	$(PIP) install -q --no-deps open-clip-torch==3.3.0
	$(PIP) install -q $(CONSTRAIN) --no-deps --no-build-isolation -e .
	touch $@

$(MSGS): $(DEPS) scripts/build_msgs.sh msg/CMakeLists.txt msg/package.xml $(wildcard msg/msg/*.msg msg/srv/*.srv msg/action/*.action) \
         compat/tf2_msgs/CMakeLists.txt compat/tf2_msgs/package.xml $(wildcard compat/tf2_msgs/msg/*.msg)
	bash scripts/build_msgs.sh
	touch $@

test: setup
	. scripts/env.sh && $(PY) -m ruff check .
	. scripts/env.sh && $(PY) -m pytest $(PYTEST_ARGS)

demo: setup
	. scripts/env.sh && $(PY) -m uniseg3d_ros.tools.demo

bench: setup
	$(PIP) install -q $(CONSTRAIN) -r requirements/bench.txt
	. scripts/env.sh && for b in bench/bench_*.py; do $(PY) $$b || exit 1; done

lint: setup
	$(PY) -m ruff check .

format: setup
	$(PY) -m ruff format .

clean:
	rm -rf build install log .pytest_cache .ruff_cache
