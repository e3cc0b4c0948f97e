# molmo2_ros developer targets. Everything lives in this checkout:
#   .venv/     Python venv with the PyPI ROS 2 wheels (the ROS "underlay") and the core requirements
#   build/     colcon build space (and colcon logs in build/log)
#   install/   colcon install space with the generated molmo2_ros.msg/.srv/.action (the "overlay")
#
#   make setup   venv + requirements (only when requirements/*.txt changed), wheel path repair,
#                pip install -e . (ROS-free core), colcon build (only when sources changed)
#   make build   colcon build now, whatever changed
#   make test    setup, then the whole pytest suite inside the ROS environment (scripts/with_ros)
#   make clean   remove build/ and install/ (keeps .venv); make distclean also removes .venv

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := setup
.DELETE_ON_ERROR:

ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
PYTHON ?= python3
VENV := $(ROOT)/.venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
PYTEST_ARGS ?=

REQUIREMENTS := requirements/ros.txt requirements/core.txt
REQ_STAMP := $(VENV)/.molmo2_requirements.stamp
EDITABLE_STAMP := $(VENV)/.molmo2_editable.stamp
# Stamps of the colcon build live in install/, so removing install/ forces a rebuild.
BUILD_STAMP := install/.molmo2_build.stamp
SOURCE_LIST := install/.molmo2_sources.txt

# What the colcon build depends on. Deleting or adding a file changes SOURCE_LIST, which triggers a build too.
BUILD_SOURCES := CMakeLists.txt package.xml $(sort $(shell cd $(ROOT) && find molmo2_ros msg srv action launch config scripts \
	-name __pycache__ -prune -o -type f ! -name '*.pyc' ! -name '*~' ! -name '.*' -print 2>/dev/null))

# pip prints one harmless warning per configured-but-missing find-links location; hide those lines.
PIP_FILTER := { grep -v -E 'Location .* is ignored' || true; }

# The environment colcon needs: the venv is the ROS prefix (AMENT_PREFIX_PATH), its bin/ comes first on PATH,
# and nothing from a previously sourced ROS workspace leaks in.
COLCON_ENV := env -u CMAKE_PREFIX_PATH -u COLCON_PREFIX_PATH -u PYTHONPATH -u AMENT_CURRENT_PREFIX \
	VIRTUAL_ENV=$(VENV) PATH="$(VENV)/bin:$$PATH" AMENT_PREFIX_PATH=$(VENV)
COLCON_LOG := build/colcon_build.log

.PHONY: setup build test demo browser bench soak clean distclean fix-wheels check-tools

setup: $(REQ_STAMP) fix-wheels $(EDITABLE_STAMP) $(BUILD_STAMP)
	@echo "setup: ready (run tests with 'make test', commands with 'scripts/with_ros CMD')"

# --- venv and requirements -------------------------------------------------------------------------------
$(PY):
	$(PYTHON) -m venv $(VENV)

$(REQ_STAMP): $(REQUIREMENTS) | $(PY)
	@echo "setup: installing requirements into $(VENV) (a few minutes on a fresh venv)"
	$(PIP) install --progress-bar off -r requirements/ros.txt -r requirements/core.txt 2>&1 | $(PIP_FILTER)
	@touch $@

# The ROS wheels' CMake exports name the wheel builder's include folders; point them at ours (idempotent).
fix-wheels: $(REQ_STAMP)
	@$(PY) scripts/fix_ros_wheels.py --prefix $(VENV) | tail -n 1

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
	@mkdir -p build
	@echo "setup: colcon build of molmo2_ros (log: $(COLCON_LOG))"
	@start=$$(date +%s); \
	if cd $(ROOT) && $(COLCON_ENV) $(VENV)/bin/colcon --log-base build/log build \
		--base-paths $(ROOT) --build-base build --install-base install \
		--event-handlers console_direct+ \
		--cmake-args -DPython3_EXECUTABLE=$(PY) -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release \
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

# --- tests -----------------------------------------------------------------------------------------------
test: setup
	scripts/with_ros $(PY) -m pytest test -q -ra $(PYTEST_ARGS)

# Debian's Chromium and chromedriver: test/test_report.py opens the HTML report in a real headless browser.
# Installs only when missing (needs root: CI does it, .ci/run calls this target).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ apt-get update && apt-get install -y --no-install-recommends chromium chromium-driver; }

# --- demo and benchmarks ---------------------------------------------------------------------------------
# make demo [ORACLE=1] [MODEL=allenai/Molmo2-4B DEVICE=cuda]: scenario bag -> replay -> eval -> video (MP4, GIF)
# and report.html in out/demo; the last line is a JSON summary.
DEMO_OUT ?= out/demo
demo: setup
	rm -rf $(DEMO_OUT)
	$(VENV)/bin/molmo2-ros demo --out $(DEMO_OUT) $(if $(filter 1,$(ORACLE)),--use-oracle) \
		$(if $(MODEL),--model $(MODEL)) $(if $(DEVICE),--device $(DEVICE))

# Benchmarks print a table and write bench/out/*.json (measurements, not timed tests).
# The engine bench runs torch on one thread: ratios stay stable when other work shares this 2-core machine.
bench: setup
	scripts/with_ros $(PY) -m bench.bench_engine --threads 1
	scripts/with_ros $(PY) -m bench.bench_node --seconds 60

# Soak: 30 Hz 640x480 camera -> live node (tiny model, CPU) for SOAK_S seconds; last line: JSON summary.
soak: setup
	SOAK_S=$${SOAK_S:-1800} scripts/with_ros $(PY) scripts/soak.py

clean:
	rm -rf build install log
	find $(ROOT)/molmo2_ros $(ROOT)/test -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) $(ROOT)/*.egg-info .pytest_cache

.PHONY: FORCE
FORCE:
