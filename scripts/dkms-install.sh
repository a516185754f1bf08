#!/bin/sh
# make dkms-install: install shiftfs with DKMS for one kernel.
#
#   scripts/dkms-install.sh [KVER]      KVER defaults to $(uname -r)
#
# Copies dkms.conf and the kmod/ sources to /usr/src/shiftfs-VERSION (the
# version is dkms.conf's PACKAGE_VERSION), then runs dkms add, build and
# install.  An earlier registration of the same version is removed first, so
# the command can be repeated after changing kmod/.  The kernel's headers must
# be at /lib/modules/KVER/build (Debian: apt install linux-headers-KVER);
# KSRC=DIR passes --kernelsourcedir DIR to dkms instead.  Needs root and dkms.
set -eu
cd "$(dirname "$0")/.."
KVER=${1:-$(uname -r)}
NAME=shiftfs
VER=$(sed -n 's/^PACKAGE_VERSION="\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' dkms.conf)
[ -n "$VER" ] || { echo "dkms-install: no PACKAGE_VERSION in dkms.conf" >&2; exit 1; }
SRC=/usr/src/$NAME-$VER
command -v dkms >/dev/null || { echo "dkms-install: dkms is not installed (apt install dkms)" >&2; exit 1; }

if [ -n "$(dkms status -m "$NAME" -v "$VER" 2>/dev/null)" ]; then
	dkms remove "$NAME/$VER" --all
fi
rm -rf "$SRC"
mkdir -p "$SRC/kmod"
cp dkms.conf "$SRC/"
cp kmod/Kbuild kmod/Makefile kmod/*.c kmod/*.h "$SRC/kmod/"

set -- ${KSRC:+--kernelsourcedir "$KSRC"}
dkms add "$NAME/$VER"
dkms build "$NAME/$VER" -k "$KVER" "$@"
dkms install "$NAME/$VER" -k "$KVER" "$@"
