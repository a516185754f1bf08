#!/bin/sh
# make dkms-remove: undo scripts/dkms-install.sh for every kernel: dkms
# remove --all (the installed modules go, depmod is rerun) and the sources
# in /usr/src/shiftfs-VERSION.  Needs root and dkms.
set -eu
cd "$(dirname "$0")/.."
NAME=shiftfs
VER=$(sed -n 's/^PACKAGE_VERSION="\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' dkms.conf)
[ -n "$VER" ] || { echo "dkms-remove: no PACKAGE_VERSION in dkms.conf" >&2; exit 1; }
if [ -n "$(dkms status -m "$NAME" -v "$VER" 2>/dev/null)" ]; then
	dkms remove "$NAME/$VER" --all
fi
rm -rf "/usr/src/$NAME-$VER"
