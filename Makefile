# All set-up happens here, so that `make demo` and `make test` work on a fresh Debian machine.
PYTHON   ?= python3
VENV     := .venv
VPY      := $(VENV)/bin/python
PIP      := $(VPY) -m pip --disable-pip-version-check -q
SOURCES  := $(shell find sandbox components cli policies -type f \( -name '*.py' -o -name '*.toml' -o -name '*.json' -o -name '*.capnp' \) 2>/dev/null) pyproject.toml

.PHONY: setup system-deps demo test test-unit test-functional bench clean

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

$(VENV)/.stamp-deps: pyproject.toml | system-deps
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install 'setuptools>=65' wheel
	$(PIP) install 'pyseccomp>=0.1.2' 'landlock>=1.0.0.dev5' 'python-prctl>=1.8.1' 'coincurve>=20' 'aiohttp>=3.9' 'cryptography>=41' 'pycapnp>=2.0' 'pytest>=7' 'jsonschema>=4' 'python-bitcoinrpc>=1.0'
	@touch $@

# A regular (not editable) install: sandboxed children import from site-packages, which the
# shared base policy grants, and never from the source tree.
$(VENV)/.stamp-install: $(VENV)/.stamp-deps $(SOURCES)
	$(PIP) install --no-deps --no-build-isolation --force-reinstall .
	@rm -rf build *.egg-info
	@touch $@

demo: setup
	@$(VPY) -m cleancoin.cli.demo

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

bench: setup
	$(VPY) -m pytest -q -s tests/bench -p no:cacheprovider

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
