#!/bin/sh
# Host side of the ship tests (tests/conformance/test_ship_*.py): make the
# base-0 Debian image they boot under systemd-nspawn and crun, once, into the
# cache.  The guest has no network, so it has to exist before the boot.
#
#   $CACHE/images/bookworm-minbase.tar   debootstrap --variant=minbase bookworm
#
# CACHE is $SHIFTFS_CACHE, else $XDG_CACHE_HOME/shiftfs, else ~/.cache/shiftfs
# (python/shiftctl/vm/paths.py).  A second run does nothing; remove the tar to
# remake it.  DEBOOTSTRAP_MIRROR overrides the mirror.  Needs root.
set -eu
CACHE=${SHIFTFS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/shiftfs}
SUITE=${SHIP_SUITE:-bookworm}
MIRROR=${DEBOOTSTRAP_MIRROR:-http://deb.debian.org/debian}
IMG=$CACHE/images/$SUITE-minbase.tar

[ -s "$IMG" ] && exit 0
mkdir -p "$CACHE/images"
tmp=$(mktemp -d "$CACHE/images/.$SUITE-minbase.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "[ship] debootstrap --variant=minbase $SUITE -> $IMG" >&2
start=$(date +%s)
debootstrap --variant=minbase "$SUITE" "$tmp/root" "$MIRROR" >"$tmp/log" 2>&1 || {
	tail -n 30 "$tmp/log" >&2
	exit 1
}
# no downloaded .debs, no apt lists: the guest has no network anyway
rm -rf "$tmp/root/var/cache/apt/archives/"*.deb "$tmp/root/var/lib/apt/lists/"*_*
tar -C "$tmp/root" --numeric-owner --xattrs --acls -cf "$tmp/img.tar" .
mv "$tmp/img.tar" "$IMG"
echo "[ship] image ready in $(($(date +%s) - start))s: $(du -h "$IMG" | cut -f1)" >&2
