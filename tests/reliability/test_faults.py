"""Faults: the lower's device starts failing mid-workload (device-mapper
error target swapped in under ext4 over a loop device), the lower is
unmounted lazily under an open shiftfs file.  The caller sees EIO (or
EROFS once ext4 aborts its journal), never an oops or a hang; the harness
fails the run on any kernel-log report.  The module-unload checks are in
test_zz_module.py (they run last).
"""

import errno
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import (BASE, FIGURES, SHIFT_DOWN, mount_shiftfs, run,
                      umount)

DMNAME = "shiftfs-rel-flaky"


def fault(name):
    FIGURES["faults"]["tried"] += 1
    if name not in FIGURES["faults"]["names"]:
        FIGURES["faults"]["names"].append(name)


def survived():
    FIGURES["faults"]["survived"] += 1


@pytest.fixture
def dm_ext4(scratch):
    """ext4 on a device-mapper linear target over a loop device; yields
    (mountpoint, swap) where swap(table) replaces the live table."""
    if shutil.which("dmsetup") is None:
        pytest.skip("dmsetup not installed")
    for mod in ("dm-mod", "dm-flakey"):
        run("modprobe", mod, check=False)
    if not Path("/dev/mapper/control").exists():
        r = run("dmsetup", "mknodes", check=False)
        if not Path("/dev/mapper/control").exists():
            pytest.skip(f"no device-mapper in this kernel: {r.stderr}")
    env = dict(os.environ, DM_DISABLE_UDEV="1")
    img = scratch / "dm-ext4.img"
    with open(img, "wb") as f:
        f.truncate(128 << 20)
    loop = run("losetup", "-f", "--show", str(img)).stdout.strip()
    sectors = int(run("blockdev", "--getsz", loop).stdout)
    subprocess.run(["dmsetup", "remove", DMNAME], capture_output=True,
                   env=env)
    r = subprocess.run(["dmsetup", "create", DMNAME, "--noudevsync",
                        "--table", f"0 {sectors} linear {loop} 0"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    dev = f"/dev/mapper/{DMNAME}"
    if not Path(dev).exists():
        subprocess.run(["dmsetup", "mknodes"], env=env)
    run("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0", dev)
    mp = Path(tempfile.mkdtemp(prefix="dm-", dir=scratch))
    run("mount", "-t", "ext4", "-o", "errors=continue", dev, str(mp))

    def swap(table):
        for cmd in (["suspend", "--noflush", DMNAME],
                    ["load", DMNAME, "--table", table],
                    ["resume", DMNAME]):
            r = subprocess.run(["dmsetup", *cmd, "--noudevsync"]
                               if cmd[0] != "load" else ["dmsetup", *cmd],
                               capture_output=True, text=True, env=env)
            assert r.returncode == 0, (cmd, r.stderr)

    swap.sectors = sectors
    swap.loop = loop
    yield mp, swap
    run("umount", "-l", str(mp), check=False)
    for _ in range(20):
        r = subprocess.run(["dmsetup", "remove", DMNAME, "--noudevsync"],
                           capture_output=True, env=env)
        if r.returncode == 0:
            break
        time.sleep(0.5)
    run("losetup", "-d", loop, check=False)
    img.unlink()


def test_dm_error_mid_workload_gives_eio(dm_ext4, mnt):
    """Host root on a SHIFT_DOWN map: writers through shiftfs (fsync after each file) and a reader of
    files written before; at mid-run the table becomes 'error'.  The
    callers get EIO (EROFS after ext4 aborts), nothing else, and return."""
    mp, swap = dm_ext4
    lower = mp / "lower"
    lower.mkdir()
    os.chown(lower, BASE, BASE)
    mount_shiftfs(lower, mnt, SHIFT_DOWN)
    fault("dm-error mid-workload")
    # files that exist before the fault, to be read back after it
    for i in range(32):
        with open(mnt / f"old{i}", "wb") as f:
            f.write(os.urandom(64 << 10))
            os.fsync(f.fileno())
    errs, stop, done = [], threading.Event(), []

    def writer(k):
        n = 0
        while not stop.is_set():
            try:
                with open(mnt / f"w{k}-{n % 64}", "wb") as f:
                    f.write(os.urandom(32 << 10))
                    os.fsync(f.fileno())
            except OSError as e:
                errs.append(e.errno)
            n += 1
        done.append(n)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    time.sleep(2)
    assert not errs, f"errors before the fault: {errs[:5]}"
    swap(f"0 {swap.sectors} error")
    time.sleep(3)
    # reads of data not in the page cache
    Path("/proc/sys/vm/drop_caches").write_text("3\n")
    read_errs = []
    for i in range(32):
        try:
            with open(mnt / f"old{i}", "rb") as f:
                f.read()
        except OSError as e:
            read_errs.append(e.errno)
    stop.set()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive(), "a writer hung after the device failed"
    allerrs = errs + read_errs
    FIGURES["faults"]["eio_seen"] += allerrs.count(errno.EIO)
    assert errno.EIO in allerrs, f"no EIO seen: {set(allerrs)}"
    other = set(allerrs) - {errno.EIO, errno.EROFS}
    assert not other, f"unexpected errnos: {[errno.errorcode[e] for e in other]}"
    # stat and readdir through shiftfs still answer (cached or EIO)
    try:
        os.listdir(mnt)
    except OSError as e:
        assert e.errno in (errno.EIO, errno.EROFS)
    umount(mnt)
    assert not os.path.ismount(mnt)
    survived()


def test_dm_flakey_drop_writes_then_recover(dm_ext4, mnt):
    """dm-flakey that errors every I/O for 1 s out of every 3: a
    writer through shiftfs sees only success, EIO or EROFS."""
    mp, swap = dm_ext4
    lower = mp / "lower"
    lower.mkdir()
    os.chown(lower, BASE, BASE)
    mount_shiftfs(lower, mnt, SHIFT_DOWN)
    fault("dm-flakey up 2s / down 1s")
    swap(f"0 {swap.sectors} flakey {swap.loop} 0 2 1")
    errs, ok = [], 0
    t_end = time.monotonic() + 6
    n = 0
    while time.monotonic() < t_end:
        try:
            with open(mnt / f"f{n % 32}", "wb") as f:
                f.write(os.urandom(16 << 10))
                os.fsync(f.fileno())
            ok += 1
        except OSError as e:
            errs.append(e.errno)
        n += 1
    FIGURES["faults"]["eio_seen"] += errs.count(errno.EIO)
    assert set(errs) <= {errno.EIO, errno.EROFS}, set(errs)
    assert errs, "dm-flakey gave no error in 6 s"
    umount(mnt)
    survived()


def test_lower_lazily_unmounted_under_open_file(scratch, mnt):
    """umount -l of the lower's filesystem while a shiftfs file is open:
    the file keeps working (read, write, fsync, mmap), new lookups through
    the shiftfs mount still work, then it closes and unmounts cleanly."""
    import mmap
    fault("lower umount -l under an open file")
    img = scratch / "lazy.img"
    with open(img, "wb") as f:
        f.truncate(64 << 20)
    run("mkfs.ext4", "-q", "-F", str(img))
    mp = Path(tempfile.mkdtemp(prefix="lazy-", dir=scratch))
    run("mount", "-o", "loop", "-t", "ext4", str(img), str(mp))
    lower = mp / "lower"
    lower.mkdir()
    (lower / "keep").write_bytes(b"kept\n")
    os.chown(lower, BASE, BASE)
    mount_shiftfs(lower, mnt, SHIFT_DOWN)
    fd = os.open(mnt / "data", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"a" * 8192)
        run("umount", "-l", str(mp))
        assert not os.path.ismount(mp)
        os.pwrite(fd, b"b" * 4096, 4096)
        os.fsync(fd)
        assert os.pread(fd, 8192, 0) == b"a" * 4096 + b"b" * 4096
        m = mmap.mmap(fd, 8192)
        m[0:4] = b"MMAP"
        m.flush()
        m.close()
        assert os.pread(fd, 4, 0) == b"MMAP"
        assert (mnt / "keep").read_bytes() == b"kept\n"
        (mnt / "new").write_bytes(b"new\n")
        assert sorted(os.listdir(mnt)) == ["data", "keep", "lost+found",
                                           "new"] or \
            {"data", "keep", "new"} <= set(os.listdir(mnt))
    finally:
        os.close(fd)
    umount(mnt)
    # the ext4 superblock goes away with the last reference: check it
    # did by mounting the image again and reading what was written
    run("mount", "-o", "loop", "-t", "ext4", str(img), str(mp))
    try:
        data = (mp / "lower" / "data").read_bytes()
        assert data == b"MMAP" + b"a" * 4092 + b"b" * 4096
        assert (mp / "lower" / "new").read_bytes() == b"new\n"
        st = os.stat(mp / "lower" / "data")
        assert (st.st_uid, st.st_gid) == (BASE, BASE)
    finally:
        run("umount", str(mp), check=False)
        img.unlink()
    survived()


def test_shiftfs_lazily_unmounted_under_open_file(tmpfs_lower, mnt):
    """umount -l of the shiftfs mount itself under an open file and a
    process whose cwd is in it: both keep working, then it goes away."""
    fault("shiftfs umount -l under an open file and cwd")
    os.chown(tmpfs_lower, BASE, BASE)
    mount_shiftfs(tmpfs_lower, mnt, SHIFT_DOWN)
    (mnt / "d").mkdir()
    fd = os.open(mnt / "d" / "f", os.O_RDWR | os.O_CREAT, 0o644)
    p = subprocess.Popen(["sh", "-c", "sleep 2; cat f2; echo ok > f3"],
                         cwd=mnt / "d", stdout=subprocess.PIPE, text=True)
    (mnt / "d" / "f2").write_text("two\n")
    umount(mnt)
    assert not os.path.ismount(mnt)
    os.write(fd, b"still here")
    os.fsync(fd)
    os.close(fd)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 0 and out == "two\n"
    assert (tmpfs_lower / "d" / "f").read_bytes() == b"still here"
    assert (tmpfs_lower / "d" / "f3").read_text() == "ok\n"
    survived()
