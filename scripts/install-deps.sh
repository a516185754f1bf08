#!/bin/sh
# Install the Debian packages the project needs on the host (and so in the
# guest, which runs the host's root).  Only missing packages are installed;
# the host's apt sources are used as they are (bookworm), never changed.
set -eu
PKGS="qemu-system-x86 debootstrap busybox-static kmod cpio zstd xz-utils
bc flex bison libelf-dev libssl-dev dwarves make gcc gcc-12 libc6-dev
acl attr libcap2-bin xfsprogs btrfs-progs e2fsprogs util-linux iproute2
python3 python3-venv fdisk dmsetup bindfs fuse-overlayfs fuse3
dkms systemd-container crun stress-ng fio linux-perf"
missing=
for p in $PKGS; do
	dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null |
		grep -q '^install ok installed$' || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "[deps] installing:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >&2
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing >&2
