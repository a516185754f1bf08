from shiftctl.vm import klog

CLEAN = """\
[    0.000000] Linux version 6.1.0-57-amd64
[    1.234567] shiftfs: loading out-of-tree module taints kernel.
[    2.000000] EXT4-fs (loop0): mounted filesystem with ordered data mode.
[    2.100000] BTRFS: device fsid 1234 devid 1 transid 6 /dev/loop1
"""


def kinds(text):
    return [k for k, _ in klog.scan(text)]


def test_clean_log():
    assert klog.scan(CLEAN) == []


def test_warn_and_cut_here():
    text = CLEAN + (
        "[    3.1] ------------[ cut here ]------------\n"
        "[    3.2] WARNING: CPU: 1 PID: 97 at fs/shiftfs/inode.c:12 "
        "shiftfs_getattr+0x1/0x2 [shiftfs]\n")
    assert kinds(text) == ["WARN", "WARN"]


def test_each_report_kind():
    samples = {
        "BUG": "[ 1.0] BUG: kernel NULL pointer dereference, address: 0",
        "Oops": "[ 1.0] Oops: 0002 [#1] PREEMPT SMP NOPTI",
        "KASAN": "[ 1.0] BUG: KASAN: use-after-free in shiftfs_lookup",
        "lockdep": "[ 1.0] WARNING: possible circular locking dependency "
                   "detected",
        "GPF": "[ 1.0] general protection fault, probably for non-canonical",
        "panic": "[ 1.0] Kernel panic - not syncing: Fatal exception",
    }
    for want, line in samples.items():
        found = kinds(line)
        assert found == [want], (line, found)
    assert kinds("[ 1.0] =============================\n"
                 "[ 1.0] WARNING: suspicious RCU usage\n"
                 "[ 1.0] 6.1.0 #1 Not tainted\n"
                 "[ 1.0] suspicious RCU usage") == ["lockdep", "lockdep"]


def test_without_timestamps_and_dedup():
    line = "BUG: unable to handle page fault for address: ffff"
    assert klog.scan(line + "\n" + line) == [("BUG", line)]


def test_benign_lookalikes():
    assert klog.scan("[ 1.0] ACPI BIOS Warning (bug): Incorrect checksum\n"
                     "[ 1.0] usb: debug bugs=off\n") == []
