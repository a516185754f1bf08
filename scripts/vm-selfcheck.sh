#!/bin/sh
# The harness's own checks, in real guests: a failing guest test must make
# `vm test` exit non-zero, and a guest that panics must fail within the
# timeout rather than hang.
set -u
SHIFTCTL=$1
KERNEL=${2:-6.1}
fail() { echo "vm-selfcheck: FAIL: $*" >&2; exit 1; }

echo "vm-selfcheck: a deliberately failing guest test" >&2
if "$SHIFTCTL" vm test --kernel "$KERNEL" --suite tests/selftest; then
	fail "vm test exited 0 with a failing test"
fi

echo "vm-selfcheck: a guest that panics (timeout 120s)" >&2
start=$(date +%s)
if "$SHIFTCTL" vm run --kernel "$KERNEL" --timeout 120 -- \
	sh -c 'echo c > /proc/sysrq-trigger; sleep 600'; then
	fail "vm run exited 0 after a panic"
fi
took=$(( $(date +%s) - start ))
[ "$took" -lt 120 ] || fail "the panic took ${took}s to be noticed"

echo "vm-selfcheck: a guest that hangs (timeout 20s)" >&2
start=$(date +%s)
if "$SHIFTCTL" vm run --kernel "$KERNEL" --timeout 20 -- sleep 600; then
	fail "vm run exited 0 for a hung guest"
fi
took=$(( $(date +%s) - start ))
[ "$took" -lt 60 ] || fail "the hang took ${took}s to end"

echo "vm-selfcheck: exit status passes through" >&2
"$SHIFTCTL" vm run --kernel "$KERNEL" --timeout 120 -- sh -c 'exit 7'
rc=$?
[ "$rc" -eq 7 ] || fail "vm run exited $rc, wanted 7"
echo "vm-selfcheck: 4 passed, 0 failed"
