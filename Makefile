# shiftfs toolkit.  The two commands: `make vm-test` and `make test`.
SHELL := /bin/bash
KERNELS ?= 6.1
MATRIX := 6.1 6.12 7.2
PYTHON ?= python3
VENV := build/venv
SHIFTCTL := $(VENV)/bin/shiftctl
KDIR ?= /lib/modules/$(shell uname -r)/build
PYTEST_ARGS ?=

.PHONY: all deps venv unit vm-test vm-selfcheck test module checkpatch kconfig-check bench bench-smoke vm-reliability \
	vm-debug \
	dkms-install dkms-remove ship-prepare vm-ship \
	clean \
	clean-cache

all: vm-test

build/.deps: scripts/install-deps.sh
	@mkdir -p build
	sh scripts/install-deps.sh
	@touch $@

deps: build/.deps

$(VENV)/.stamp: python/pyproject.toml | build/.deps
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -e python pytest
	@touch $@

venv: $(VENV)/.stamp

# Host unit tests: no VM, no shiftfs needed.
unit: venv
	$(VENV)/bin/pytest -q -p no:cacheprovider tests/unit

# Build, boot and run the conformance suite in QEMU for each of $(KERNELS).
vm-test: deps venv ship-prepare
	$(SHIFTCTL) vm test $(addprefix --kernel ,$(KERNELS)) -- $(PYTEST_ARGS)

# The harness must fail when a guest test fails and when the guest panics.
vm-selfcheck: deps venv
	sh scripts/vm-selfcheck.sh $(SHIFTCTL) $(firstword $(KERNELS))

# Everything CI runs: unit tests, kernel style, the in-tree build, the
# harness self-check, a benchmark smoke run, the suite on the full matrix.
test: unit
	$(MAKE) checkpatch
	$(MAKE) kconfig-check
	$(MAKE) vm-selfcheck KERNELS=6.1
	$(MAKE) bench-smoke KERNELS=6.1
	$(MAKE) vm-test KERNELS="$(MATRIX)"

# Kernel coding style: checkpatch.pl from Debian's linux-source (cached).
checkpatch: deps venv
	$(SHIFTCTL) vm checkpatch $(sort $(wildcard kmod/*.c kmod/*.h))

# Kconfig.patch on Debian's 6.1 linux-source; kmod/ built in-tree as fs/shiftfs.
kconfig-check: deps venv
	$(SHIFTCTL) vm kconfig-check

# The benchmarks (not tests: they never fail on speed).  One boot per kernel.
bench: deps venv
	$(SHIFTCTL) vm bench $(addprefix --kernel ,$(KERNELS)) --readme

# One round at small sizes: keeps the benchmark working (part of make test).
bench-smoke: deps venv
	$(SHIFTCTL) vm bench --kernel $(firstword $(KERNELS)) --smoke --fs tmpfs

# Reliability lane: stress-ng + fio load, shiftfsx, dm faults, the
# bad-input corpus, escapes (tests/reliability), then the host-side crash
# test (a guest reset after sync, rebooted).  /results/reliability.json
# comes back as build/reliability-<kernel>.json.
RELIABILITY_ARGS ?=
vm-reliability: deps venv
	$(SHIFTCTL) vm test $(addprefix --kernel ,$(KERNELS)) --timeout 2400 \
		--suite tests/reliability -- -rfEsxX --ignore=tests/reliability/host \
		$(RELIABILITY_ARGS)
	for k in $(KERNELS); do \
		SHIFTFS_REL_CRASH_KERNEL=$$k $(VENV)/bin/python -m pytest \
			-p no:cacheprovider -q tests/reliability/host || exit 1; \
	done

# Debug-kernel lane (not in `make test`: too slow for CI, see README):
# Debian's 6.1 linux-source with KASAN, lockdep, kmemleak and DEBUG_LIST,
# built once into the cache (shiftctl vm fetch --kernel 6.1-debug), then
# tests/conformance, the reliability load suite and the rest of
# tests/reliability on it, one boot each, a kmemleak scan at the end of
# each.  The host crash test is not run.
DEBUG_ARGS ?=
vm-debug: deps venv ship-prepare
	$(SHIFTCTL) vm debug $(DEBUG_ARGS)

# DKMS: copy dkms.conf and kmod/ to /usr/src/shiftfs-VERSION; dkms add,
# build, install for KVER (default: the running kernel).  Needs root, dkms.
KVER ?= $(shell uname -r)
dkms-install: deps
	sh scripts/dkms-install.sh $(KVER)

# dkms remove shiftfs/VERSION --all, and the sources in /usr/src.
dkms-remove:
	sh scripts/dkms-remove.sh

# The base-0 Debian image (debootstrap --variant=minbase bookworm) the ship
# tests boot under systemd-nspawn and crun; made once into the cache.
ship-prepare: deps
	sh scripts/prepare-ship.sh

# The shipping lane: DKMS install/modprobe/mount/remove in the guest (slow:
# the module compiles under TCG), nspawn and crun on 6.1 and 6.12.
vm-ship: deps venv ship-prepare
	SHIFTFS_TEST_DKMS=1 $(SHIFTCTL) vm test --kernel 6.1 --kernel 6.12 \
		--timeout 3000 -- -k ship -rfEs

# Build the module against any kernel build tree.
module:
	$(MAKE) -C kmod KDIR=$(abspath $(KDIR))

clean:
	rm -rf build
	$(MAKE) -C kmod clean KDIR=$(abspath $(KDIR)) 2>/dev/null || true

# The fetched kernels, apt state and chroots (~1.5 GB); refetched on demand.
clean-cache:
	rm -rf "$${SHIFTFS_CACHE:-$${XDG_CACHE_HOME:-$$HOME/.cache}/shiftfs}"
