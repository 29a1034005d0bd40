# All set-up happens here, so that `make demo` and `make test` work on a fresh Debian machine.
PYTHON   ?= python3
VENV     := .venv
VPY      := $(VENV)/bin/python
PIP      := $(VPY) -m pip --disable-pip-version-check -q
SOURCES  := $(shell find sandbox components cli policies -type f \( -name '*.py' -o -name '*.toml' -o -name '*.json' -o -name '*.capnp' -o -name '*.c' \) 2>/dev/null) pyproject.toml setup.py

# PySide6 6.12.0 leaks references to None/True/False on CPython 3.11 (pyproject.toml says more).
GUI_DEPS := 'pyside6-essentials>=6.6,<6.12; python_version < "3.12"' 'pyside6-essentials>=6.6; python_version >= "3.12"' 'qasync>=0.27' 'segno>=1.5' 'pytest-qt>=4.4'

.PHONY: setup system-deps demo gui screenshots test test-unit test-functional bench fuzz crashtest clean

setup: $(VENV)/.stamp-install

# python-prctl compiles against libcap's headers; libseccomp's runtime library is loaded by pyseccomp.
# runc and systemd-analyze (package systemd) are what `CleanCoin-sandbox export` is checked
# against in the tests: an OCI runtime applying the exported seccomp profile, and systemd's
# own exposure score of the exported unit.
system-deps:
	@if [ ! -e /usr/include/sys/capability.h ] || ! ldconfig -p | grep -q 'libseccomp\.so' \
	    || ! command -v runc >/dev/null || ! command -v systemd-analyze >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "setup: installing libcap-dev, libseccomp2, runc and systemd with apt-get"; \
	    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q libcap-dev libseccomp2 runc systemd >/dev/null; \
	  else \
	    echo "setup: missing Debian packages. Run as root:"; \
	    echo "    sudo apt-get install -y libcap-dev libseccomp2 runc systemd"; \
	    echo "then run make again."; \
	    exit 1; \
	  fi; \
	fi
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "setup: Python 3.11 or newer is needed, found " + sys.version.split()[0])'
	@# The GUI tests' display servers (tests/gui/displays.py): Xvfb, weston (its headless backend,
	@# no GPU or seat) and libXtst for the X11 attack; and the libraries Qt's xcb platform plugin
	@# loads (a machine with Xvfb but without them fails the X11 tests: "could not load the Qt
	@# platform plugin xcb"). Optional: the tests skip without a display server.
	@if ! command -v Xvfb >/dev/null || ! command -v weston >/dev/null || ! ldconfig -p | grep -q 'libXtst\.so\.6' \
	    || ! ldconfig -p | grep -q 'libxcb-icccm\.so\.4' || ! ldconfig -p | grep -q 'libxcb-keysyms\.so\.1' \
	    || ! ldconfig -p | grep -q 'libxcb-cursor\.so\.0'; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "setup: installing xvfb, weston, libxtst6 and the Qt xcb plugin's libraries with apt-get (GUI tests on real displays)"; \
	    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q xvfb weston libxtst6 libxcb-icccm4 libxcb-keysyms1 libxcb-cursor0 >/dev/null \
	      || echo "setup: could not install xvfb/weston; the GUI display tests will be skipped"; \
	  else \
	    echo "setup: the GUI display tests need: sudo apt-get install -y xvfb weston libxtst6 libxcb-icccm4 libxcb-keysyms1 libxcb-cursor0 (skipped without)"; \
	  fi; \
	fi

$(VENV)/.stamp-deps: pyproject.toml | system-deps
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install 'python-bitcoinlib>=0.12' 'bitcoinrpc>=0.7'    # the `clients` extra
	$(PIP) install 'setuptools>=65' wheel
	$(PIP) install 'pyseccomp>=0.1.2' 'landlock>=1.0.0.dev5' 'python-prctl>=1.8.1' 'coincurve>=20' 'aiohttp>=3.9' 'cryptography>=41' 'setproctitle>=1.3' 'pycapnp>=2.0' 'pytest>=7' 'jsonschema>=4' 'python-bitcoinrpc>=1.0' 'hypothesis>=6.100' 'uvloop>=0.19'
	$(PIP) install $(GUI_DEPS)    # the `gui` extra (CleanCoin-qt, CleanCoin-gui) and pytest-qt
	@touch $@

# A regular (not editable) install: sandboxed children import from site-packages, which the
# shared base policy grants, and never from the source tree.
$(VENV)/.stamp-install: $(VENV)/.stamp-deps $(SOURCES)
	$(PIP) install --no-deps --no-build-isolation --force-reinstall .
	@rm -rf build *.egg-info
	@touch $@

demo: setup
	@$(VPY) -m cleancoin.cli.demo

# The graphical wallet on regtest in a datadir of its own (GUI= picks CleanCoin-qt instead).
GUI ?= CleanCoin-gui
GUI_DATADIR ?= $(HOME)/.cleancoin-gui-demo
gui: setup
	@mkdir -p $(GUI_DATADIR)
	$(VENV)/bin/$(GUI) -regtest -datadir=$(GUI_DATADIR)

# docs/images/gui-*.png: every screen rendered offscreen (tests/gui/test_screenshots.py).
screenshots: setup
	CLEANCOIN_SCREENSHOTS=docs/images QT_QPA_PLATFORM=offscreen $(VPY) -m pytest -q -p no:cacheprovider tests/gui/test_screenshots.py

test: setup
	@$(MAKE) --no-print-directory test-unit
	@$(MAKE) --no-print-directory test-functional

test-unit: setup
	$(VPY) -m pytest -q tests --ignore=tests/functional

# The functional suite (tests/functional/test_runner.py, in parallel) against each node
# executable; CleanCoinD is set explicitly so an exported one cannot swap them.
test-functional: setup
	CleanCoinD=CleanCoind $(VPY) tests/functional/test_runner.py
	CleanCoinD=CleanCoin-node $(VPY) tests/functional/test_runner.py

# The property-based tests of `make test` with many more examples (a night's run):
# FUZZ_EXAMPLES per test (default 5000). Failures are kept in ~/.cache/cleancoin-hypothesis and
# replayed first next time; nothing is written into the repository.
FUZZ_EXAMPLES ?= 5000
FUZZ_ENV := CLEANCOIN_HYPOTHESIS_PROFILE=fuzz CLEANCOIN_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES)
FUZZ_NET := tests/functional/test_fuzz_rpc.py tests/functional/test_fuzz_p2p.py tests/functional/test_fuzz_ipc.py
fuzz: setup
	$(FUZZ_ENV) $(VPY) -m pytest -q -p no:cacheprovider tests/test_fuzz_policy.py
	$(FUZZ_ENV) CleanCoinD=CleanCoind $(VPY) -m pytest -q -p no:cacheprovider $(FUZZ_NET)
	$(FUZZ_ENV) CleanCoinD=CleanCoin-node $(VPY) -m pytest -q -p no:cacheprovider $(FUZZ_NET)

# The kill -9 campaign (tests/functional/crash_campaign.py): CRASH_KILLS kills per node
# executable at random moments of a send/mine/encrypt/backup workload, 10 per datadir, with the
# invariants checked after each; at most CRASH_SECONDS per executable. Not part of `make test`
# (which runs three kills per executable in tests/functional/test_crash_campaign.py).
CRASH_KILLS ?= 80
CRASH_SECONDS ?= 900
crashtest: setup
	CleanCoinD=CleanCoind $(VPY) tests/functional/crash_campaign.py --kills $(CRASH_KILLS) --max-seconds $(CRASH_SECONDS)
	CleanCoinD=CleanCoin-node $(VPY) tests/functional/crash_campaign.py --kills $(CRASH_KILLS) --max-seconds $(CRASH_SECONDS)

bench: setup
	$(VPY) -m pytest -q -s tests/bench -p no:cacheprovider

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
