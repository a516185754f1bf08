"""The module refuses to unload while busy (a mount, or a lazily detached
mount kept alive by an open file) with EBUSY; once the last user is gone
it unloads and loads again from $SHIFTFS_KO.  Runs last (file name)."""

import errno
import os
import time
from pathlib import Path

import pytest

from conftest import (BASE, FIGURES, SHIFT_DOWN, delete_module, errno_of,
                      mount_shiftfs, run, shiftfs_loaded, umount)


BUSY = (errno.EBUSY, errno.EAGAIN)


def shiftfs_mounts():
    return [ln for ln in Path("/proc/self/mountinfo").read_text()
            .splitlines() if " - shiftfs " in ln]


def test_module_busy_then_unload_and_reload(tmpfs_lower, mnt):
    ko = os.environ.get("SHIFTFS_KO")
    if not ko or not Path(ko).exists():
        pytest.skip("no $SHIFTFS_KO to reload from")
    FIGURES["faults"]["tried"] += 1
    FIGURES["faults"]["names"].append("rmmod while busy, then reload")
    assert not shiftfs_mounts(), shiftfs_mounts()
    os.chown(tmpfs_lower, BASE, BASE)
    mount_shiftfs(tmpfs_lower, mnt, SHIFT_DOWN)
    # delete_module(O_NONBLOCK) of a module in use gives EWOULDBLOCK
    # (EAGAIN); EBUSY is rmmod's wording (same as tests/conformance)
    assert errno_of(delete_module, "shiftfs") in BUSY
    assert run("rmmod", "shiftfs", check=False).returncode != 0
    fd = os.open(mnt / "f", os.O_RDWR | os.O_CREAT, 0o644)
    umount(mnt)                                   # detached, still alive
    assert errno_of(delete_module, "shiftfs") in BUSY
    os.write(fd, b"x")
    os.close(fd)
    # the superblock dies after the last fput (task work / RCU): retry
    for _ in range(50):
        e = errno_of(delete_module, "shiftfs")
        if e not in BUSY:
            break
        time.sleep(0.1)
    assert e == 0, f"delete_module: {errno.errorcode.get(e, e)}"
    assert not shiftfs_loaded()
    r = run("insmod", ko, check=False)
    assert r.returncode == 0, r.stderr
    assert shiftfs_loaded()
    mount_shiftfs(tmpfs_lower, mnt, SHIFT_DOWN)
    assert (mnt / "f").read_bytes() == b"x"
    umount(mnt)
    FIGURES["faults"]["survived"] += 1
