# Two commands for a newcomer on Debian 12 (as root): `make run` and `make test`.
# Each step leaves a stamp, so a second run does no needless work.

SHELL := /bin/bash
PY := /usr/bin/python3
VENV := .venv
STAMPS := .make
DEB_PACKAGES := qemu-utils nbdkit python3-libnbd libnbd-bin python3-venv \
	mariadb-server openssh-server golang-go golang-github-vmware-govmomi-dev tmux procps \
	fdisk e2fsprogs ntfs-3g dosfstools mtools \
	xfsprogs exfatprogs

.PHONY: setup run test test-fast lint bench screenshots clean

setup: $(STAMPS)/deb $(VENV)/.installed

# Install only the Debian packages that are missing; re-run when this list changes.
$(STAMPS)/deb: Makefile
	@mkdir -p $(STAMPS)
	@missing=$$(for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed$$' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
		echo "Installing Debian packages: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@touch $@

# The venv sees Debian's site-packages so that `import nbd` (python3-libnbd) works.
$(VENV)/.installed: pyproject.toml $(STAMPS)/deb
	@test -x $(VENV)/bin/python || $(PY) -m venv --system-site-packages $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

run: setup
	$(VENV)/bin/sendense run

# The lint first, then the whole suite, slow tests included (about 6 minutes on 2 cores).
test: lint
	$(VENV)/bin/python -m pytest -q

# Everyday loop: skips the tests marked slow.
test-fast: setup
	$(VENV)/bin/python -m pytest -m "not slow" -q

# Style, format, types, and the layers of pyproject.toml's import-linter contracts.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

bench: setup
	$(VENV)/bin/python -m bench

screenshots: setup
	$(VENV)/bin/python -m sendense_tui.screenshots

clean:
	rm -rf $(VENV) $(STAMPS) build *.egg-info
