# Two commands do all set-up on a fresh Debian/Ubuntu machine with Python 3.10+:
#   make run    -- create .venv, install, run a small local campaign (python run.py)
#   make test   -- install the test requirements (and, as root, Debian's psi4, nwchem,
#                  xtb, redis-server and Slurm + munge), lint (ruff), then run the whole test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# HTEX starts interchange.py and process_worker_pool.py from PATH: put the venv first.
export PATH := $(abspath $(VENV))/bin:$(PATH)
APT_PACKAGES ?= psi4 nwchem xtb redis-server slurmctld slurmd slurm-client munge
# Programs that tell whether APT_PACKAGES are installed (Slurm's daemons are in /usr/sbin)
APT_PROGRAMS ?= psi4 nwchem xtb redis-server slurmctld slurmd sbatch munged
ARGS ?=
PYTEST_ARGS ?=

.PHONY: install system-deps run lint test test-fast bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

# Optional programs used by tests and benchmarks (psi4, NWChem, native xtb, Redis, and a Slurm of emulated nodes
# for tests/slurm). Installed with apt-get when running as root; otherwise the tests that need them are skipped
# (with CI set, the Slurm tests fail instead of being skipped).
system-deps:
	@missing=""; \
	for p in $(APT_PROGRAMS); do command -v $$p >/dev/null 2>&1 || [ -x /usr/sbin/$$p ] || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing Debian packages for:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	  else \
	    echo "Not root: skipping apt-get install of$$missing (tests that need them will be skipped)"; \
	  fi; \
	fi; \
	if [ "$$(id -u)" != "0" ]; then echo "Not root: the Slurm tests (tests/slurm) will be skipped"; fi

run: install
	$(PY) run.py $(ARGS)

lint: install
	$(VENV)/bin/ruff check .

test: install system-deps lint
	$(PY) -m pytest -ra $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -ra -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
