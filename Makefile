# pi0_ros — two commands do all the setup:
#   make demo   set up if needed, then run the policy on the simulated ALOHA (see README)
#   make test   set up if needed, then run the whole test suite
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.pi0_ros-setup-stamp
SETUP_INPUTS := tools/setup_venv.sh tools/build_interfaces.sh tools/build_extra_interfaces.sh \
                requirements/lock.txt setup.py package.xml CMakeLists.txt $(wildcard msg/*.msg srv/*.srv) \
                $(wildcard tools/interfaces/*/CMakeLists.txt tools/interfaces/*/package.xml \
                           tools/interfaces/*/msg/*.msg tools/interfaces/*/action/*.action)
# Keep DDS discovery on this machine (tests, demo); override for a real robot network.
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST
export MUJOCO_GL ?= egl
PYTEST_ARGS ?=

.PHONY: setup test test-fast demo bench colcon-check clean

setup: $(STAMP)

$(STAMP): $(SETUP_INPUTS)
	bash tools/setup_venv.sh $(VENV)
	@touch $@

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/pi0-ros demo

bench: setup
	$(VENV)/bin/pi0-ros bench model --preset tiny --cameras 2 --json
	$(VENV)/bin/pi0-ros bench pipeline --embodiment trossen_bimanual --duration 30 --json

# Build the package the ROS way (colcon + ament_cmake) against the PyPI wheels.
colcon-check: setup
	bash tools/colcon_check.sh $(VENV)

clean:
	rm -rf build install log outputs
