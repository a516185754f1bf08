#!/bin/sh
# shiftfs harness, guest stage 1 (busybox, in the initramfs): load the
# modules that reach the host root, mount it read-only over virtio-9p with a
# tmpfs overlay on top, and switch_root into stage 2 (/job/stage2).
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

fail() {
	echo "shiftfs-initramfs: $*" >/dev/ttyS0
	echo o >/proc/sysrq-trigger
	sleep 5
	poweroff -f
}

while read -r mod; do
	insmod "/modules/$mod" || echo "shiftfs-initramfs: insmod $mod failed"
done </modules/order

mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 \
	hostroot /lower || fail "cannot mount the host root over 9p"
mount -t tmpfs -o mode=0755 upper /upper || fail "no tmpfs for the overlay"
mkdir -p /upper/u /upper/w
mount -t overlay -o lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w \
	guestroot /newroot || fail "cannot mount the root overlay"

mkdir -p /newroot/shiftfs-job
cp -a /job/. /newroot/shiftfs-job/ || fail "cannot copy the job"
umount /proc /sys
mount --move /dev /newroot/dev || fail "cannot move /dev"
exec switch_root /newroot /bin/sh /shiftfs-job/stage2
fail "switch_root failed"
