#!/bin/sh
# shiftfs harness, guest stage 2 (the host's /bin/sh on the overlay root):
# set up the system, load the modules and shiftfs.ko, run the job's command
# with its output on /dev/hvc0, then send the result files and the exit
# status over the result port and power off.
# shellcheck disable=SC1091
. /shiftfs-job/env
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LC_ALL=C.UTF-8

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=0755 tmpfs /run
# A fresh /tmp, unless the checkout or the cache lives under the host's.
case "$SHIFTFS_CWD:$SHIFTFS_MODDIR:$SHIFTFS_KO" in
*/tmp/*|/tmp/*) ;;
*) mount -t tmpfs -o mode=1777 tmpfs /tmp ;;
esac
mkdir -p /scratch
mount -t tmpfs -o mode=0755 scratch /scratch
mount -t tmpfs tmpfs /var/tmp 2>/dev/null
mount -t configfs configfs /sys/kernel/config 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
hostname shiftfs-guest
ip link set lo up 2>/dev/null

OUT=/dev/hvc0
log() { echo "shiftfs-guest: $*" >"$OUT"; }

port=
for p in /sys/class/virtio-ports/*; do
	[ "$(cat "$p/name" 2>/dev/null)" = "shiftfs.result" ] && port=/dev/${p##*/}
done
[ -n "$port" ] || log "no result port"

mkdir -p "/lib/modules/$SHIFTFS_KREL" /results
mount --bind "$SHIFTFS_MODDIR" "/lib/modules/$SHIFTFS_KREL"
# crc32c first: ext4, xfs and btrfs soft-depend on it
modprobe crc32c_generic 2>/dev/null || modprobe crc32c_cryptoapi 2>/dev/null
modprobe -a crc32c loop ext4 xfs btrfs overlay fuse 2>/dev/null
for m in $SHIFTFS_EXTRA_MODULES; do
	modprobe "$m" || log "modprobe $m failed"
done
if [ -n "$SHIFTFS_KO" ]; then
	insmod "$SHIFTFS_KO" || log "insmod $SHIFTFS_KO failed"
fi

cd "$SHIFTFS_CWD" 2>/dev/null || cd /
/bin/sh /shiftfs-job/cmd </dev/null >"$OUT" 2>&1
status=$?
cd /

send() {
	printf 'SHIFTFS-FILE %s %s %s\n' "$SHIFTFS_NONCE" "$1" \
		"$(wc -c <"$2")"
	cat "$2"
	printf '\nSHIFTFS-END %s %s\n' "$SHIFTFS_NONCE" "$1"
}
# Debug kernels (SHIFTFS_KMEMLEAK=1): scan twice, 6 s apart (kmemleak
# reports an object only once it is 5 s old), and send the report.
if [ "$SHIFTFS_KMEMLEAK" = 1 ]; then
	kml=/sys/kernel/debug/kmemleak
	if echo scan 2>/dev/null >"$kml"; then
		sleep 6
		echo scan >"$kml"
		cat "$kml" >/results/kmemleak.txt 2>&1
	else
		echo "SHIFTFS-KMEMLEAK-UNAVAILABLE no $kml to scan" \
			>/results/kmemleak.txt
	fi
fi
dmesg >/run/shiftfs-dmesg 2>&1
if [ -n "$port" ]; then
	{
		send dmesg /run/shiftfs-dmesg
		for f in /results/*; do
			[ -f "$f" ] && send "${f##*/}" "$f"
		done
		printf 'SHIFTFS-EXIT %s %s\n' "$SHIFTFS_NONCE" "$status"
	} >"$port"
fi
sync
# Power off.  Nothing may be exec'd from here on: the 9p root goes away
# while the kernel shuts devices down, and init must not exit (a panic).
echo o >/proc/sysrq-trigger
while :; do
	read -r _ </dev/console 2>/dev/null || :
done
