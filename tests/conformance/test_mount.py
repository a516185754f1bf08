"""shiftfs mounting (issue 3): options, their validation through the
fsconfig log and the kernel log, mountinfo, who may mount, module
pinning, and the shift surviving bind, move and move_mount."""

import errno
import os
import time
from pathlib import Path

import pytest

from conftest import (BASE, RANGE, SHIFT_DOWN, CLONE_NEWNS, FsContext,
                      as_process, container_map, delete_module, errno_of,
                      ids, mount_shiftfs, mountinfo_line, move_mount_fd,
                      open_tree_clone, run, sys_mount, umount, unshare)


def fs_create(lower, options):
    """fsopen/fsconfig/CMD_CREATE; return (errno or 0, log messages)."""
    ctx = FsContext()
    try:
        err = 0
        try:
            for opt in options:
                ctx.option(opt)
            ctx.string("source", str(lower))
            ctx.create()
        except OSError as e:
            err = e.errno
        return err, ctx.messages()
    finally:
        ctx.close()


def fs_mount(lower, target, options):
    ctx = FsContext()
    try:
        for opt in options:
            ctx.option(opt)
        ctx.string("source", str(lower))
        ctx.create()
        mfd = ctx.fsmount()
    finally:
        ctx.close()
    try:
        move_mount_fd(mfd, target)
    finally:
        os.close(mfd)


def kmsg_tail(since):
    out = run("dmesg").stdout
    return out[since:] if since <= len(out) else out


def many(n, key="uidmap"):
    return [f"{key}={i * 10}:{i * 10}:10" for i in range(n)]


BAD_OPTIONS = {
    "malformed-two-fields": (["shift_uids", "uidmap=1:2"], "FROM:TO:COUNT"),
    "malformed-four-fields": (["shift_uids", "uidmap=1:2:3:4"],
                              "FROM:TO:COUNT"),
    "malformed-not-a-number": (["shift_uids", "uidmap=a:0:1"], "number"),
    "malformed-empty": (["shift_uids", "uidmap=:0:1"], "number"),
    "malformed-signed": (["shift_uids", "uidmap=-1:0:1"], "number"),
    "malformed-hex-without-digits": (["shift_uids", "uidmap=0x:0:1"],
                                     "number"),
    "malformed-too-big": (["shift_uids", "uidmap=4294967296:0:1"], "number"),
    "count-zero": (["shift_uids", "uidmap=0:0:0"], "COUNT is 0"),
    "gid-count-zero": (["shift_gids", "gidmap=0:0:0"], "COUNT is 0"),
    "wraps-disk": (["shift_uids", "uidmap=0xfffffff0:0:0x20"], "wraps"),
    "wraps-view": (["shift_uids", "uidmap=0:0xffffff00:0x1000"], "wraps"),
    "id-4294967295-disk": (["shift_uids", "uidmap=4294967295:0:1"],
                           "4294967295"),
    "id-4294967295-view": (["shift_uids", "uidmap=0:0xfffffff0:0x10"],
                           "4294967295"),
    "overlap-disk": (["shift_uids", "uidmap=0:0x20000:10",
                      "uidmap=5:0x30000:10"], "overlap"),
    "overlap-view": (["shift_uids", "uidmap=0:100:10", "uidmap=50:105:10"],
                     "overlap"),
    "gid-overlap": (["shift_gids", "gidmap=0:100:10", "gidmap=0:200:10"],
                    "overlap"),
    "too-many-extents": (["shift_uids"] + many(341), "340"),
    "uidmap-without-shift_uids": (["uidmap=0:0x20000:10"], "shift_uids"),
    "gidmap-without-shift_gids": (["gidmap=0:0x20000:10"], "shift_gids"),
    "shift_uids-without-map": (["shift_uids"], "uidmap"),
    "shift_gids-without-map": (["shift_gids"], "gidmap"),
    "uid-map-for-gids": (["shift_gids", "uidmap=0:0x20000:10"],
                         "shift_uids"),
    "userns-not-a-namespace": (["shift_uids", "userns=/etc/hostname"],
                               "namespace"),
    "userns-not-a-user-namespace": (["shift_uids",
                                     "userns=/proc/self/ns/net"],
                                    "user namespace"),
    "userns-missing": (["shift_uids", "userns=/nonexistent/ns"], "userns"),
    "userns-without-shift": (["userns=/proc/self/ns/user"], "userns"),
    "unknown-option": (["frobnicate"], "frobnicate"),
}


@pytest.mark.parametrize("name", sorted(BAD_OPTIONS))
def test_bad_option_is_einval_with_reason(tmpfs_lower, name):
    options, reason = BAD_OPTIONS[name]
    err, msgs = fs_create(tmpfs_lower, options)
    assert err == errno.EINVAL, (err, msgs)
    errors = [m for m in msgs if m.startswith("e ")]
    assert errors, msgs
    assert any(reason in m for m in errors), msgs
    assert all("\n" not in m.strip() for m in errors)


def test_340_extents_are_accepted(tmpfs_lower, mnt):
    opts = ["shift_uids"] + many(340)
    err, msgs = fs_create(tmpfs_lower, opts)
    assert err == 0, msgs
    fs_mount(tmpfs_lower, mnt, opts)
    line = mountinfo_line(mnt)
    assert line.count("uidmap=") == 340
    # binary search over many extents: spot checks
    for disk in (0, 1005, 3399):
        os.mkdir(tmpfs_lower / f"d{disk}")
        os.chown(tmpfs_lower / f"d{disk}", disk, 0)
        assert os.stat(mnt / f"d{disk}").st_uid == disk
    os.chown(tmpfs_lower / "d0", 3400, 0)
    assert os.stat(mnt / "d0").st_uid == int(
        Path("/proc/sys/fs/overflowuid").read_text())


def test_missing_lower_dir_is_einval(scratch):
    err, msgs = fs_create(scratch / "does-not-exist", [SHIFT_DOWN.split(",")[0],
                                                      SHIFT_DOWN.split(",")[2]])
    assert err == errno.EINVAL
    assert any(m.startswith("e ") and "does-not-exist" in m for m in msgs), \
        msgs


def test_lower_not_a_directory_is_einval(tmpfs_lower):
    (tmpfs_lower / "file").write_text("x")
    err, msgs = fs_create(tmpfs_lower / "file",
                          ["shift_uids", "uidmap=0:0x20000:10"])
    assert err == errno.EINVAL
    assert any(m.startswith("e ") for m in msgs), msgs


def test_bad_option_reason_reaches_kernel_log_and_mount8(tmpfs_lower, mnt):
    before = len(run("dmesg").stdout)
    r = run("mount", "-t", "shiftfs", "-o", "shift_uids,uidmap=0:0:0",
            str(tmpfs_lower), str(mnt), check=False)
    assert r.returncode != 0
    assert not os.path.ismount(mnt)
    assert "COUNT is 0" in kmsg_tail(before)
    assert errno_of(sys_mount, str(tmpfs_lower), str(mnt), "shiftfs",
                    "shift_gids,gidmap=1:2") == errno.EINVAL
    err, _ = fs_create(tmpfs_lower, ["shift_uids", "uidmap=5:5:0x10"
                                     ",bogus"])
    assert err == errno.EINVAL
    time.sleep(0.1)
    log = kmsg_tail(before)
    assert "shiftfs: " in log and "FROM:TO:COUNT" in log


def test_mountinfo_shows_options(tmpfs_lower, mnt):
    mount_shiftfs(tmpfs_lower, mnt,
                  "shift_uids,uidmap=0x20000:0:0x10000,uidmap=0:0x30000:5,"
                  "shift_gids,gidmap=7:8:9")
    line = mountinfo_line(mnt)
    assert line is not None
    fields = line.split(" - ")[1].split()
    assert fields[0] == "shiftfs"
    assert fields[1] == str(tmpfs_lower)
    opts = fields[2].split(",")
    # extents come back sorted by disk id, in decimal
    assert opts[opts.index("shift_uids") + 1:][:2] == [
        "uidmap=0:196608:5", "uidmap=131072:0:65536"]
    assert "shift_gids" in opts and "gidmap=7:8:9" in opts
    # a remount keeping the options (as mount(8) passes them) works,
    # one changing the shift does not
    r = run("mount", "-o", "remount,ro", str(mnt), check=False)
    assert r.returncode == 0, r.stderr
    assert errno_of(sys_mount, "none", str(mnt), None,
                    "shift_uids,uidmap=0:1:1", 0x20 | 0x1) == errno.EINVAL


def test_userns_option_takes_the_namespace_maps(lower, mnt):
    (lower / "etc").mkdir()
    (lower / "etc/f").write_text("x")
    os.chown(lower / "etc/f", 1000, 1001)
    r, w = os.pipe()
    # a long-lived process in a user namespace (0 -> BASE, 65536)
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            unshare(0x10000000)
            os.write(w, b"x")
            time.sleep(60)
        finally:
            os._exit(0)
    os.close(w)
    try:
        assert os.read(r, 1) == b"x"
        m = container_map()
        Path(f"/proc/{pid}/uid_map").write_text(m[0])
        Path(f"/proc/{pid}/gid_map").write_text(m[1])
        mount_shiftfs(lower, mnt,
                      f"shift_uids,shift_gids,userns=/proc/{pid}/ns/user")
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        os.close(r)
    assert ids(mnt / "etc/f") == (BASE + 1000, BASE + 1001)
    line = mountinfo_line(mnt)
    assert f"uidmap=0:{BASE}:{RANGE}" in line
    assert f"gidmap=0:{BASE}:{RANGE}" in line
    # the namespace is gone, the mount keeps its map; host root (view 0)
    # has no disk id under this map, so it cannot create
    assert errno_of(lambda: (mnt / "etc/new").write_text("x")) == \
        errno.EOVERFLOW
    assert not (lower / "etc/new").exists()


def test_unprivileged_user_gets_eperm(tmpfs_lower, mnt):
    def try_mount():
        return {
            "fsopen": errno_of(FsContext),
            "mount": errno_of(sys_mount, str(tmpfs_lower), str(mnt),
                              "shiftfs", "shift_uids,uidmap=0:0x20000:10"),
        }

    res = as_process(try_mount, uid=1000, gid=1000)
    assert res == {"fsopen": errno.EPERM, "mount": errno.EPERM}
    assert not os.path.ismount(mnt)


def test_user_namespace_root_gets_eperm(tmpfs_lower, scratch):
    target = scratch / "userns-target"
    target.mkdir(exist_ok=True)
    os.chmod(target, 0o777)

    def try_mount():
        res = {"fsopen": errno_of(FsContext)}
        res["mount"] = errno_of(sys_mount, str(tmpfs_lower), str(target),
                                "shiftfs", "shift_uids,uidmap=0:0x20000:10")
        # it can mount what user namespaces may mount, so this is no
        # blanket refusal
        res["tmpfs"] = errno_of(sys_mount, "tmpfs", str(target), "tmpfs",
                                "")
        return res

    res = as_process(try_mount, userns=container_map(), newns=True)
    assert res == {"fsopen": errno.EPERM, "mount": errno.EPERM, "tmpfs": 0}
    assert not os.path.ismount(target)


# The kernel refuses to unload a module whose refcount is held with
# EWOULDBLOCK (== EAGAIN) and rmmod(8) reports "is in use"; EBUSY is what it
# gives for a module that is not live.  Either means "busy" here.
BUSY = (errno.EBUSY, errno.EAGAIN)


def test_rmmod_is_ebusy_while_mounted(tmpfs_lower, mnt):
    mount_shiftfs(tmpfs_lower, mnt, SHIFT_DOWN)
    assert errno_of(delete_module, "shiftfs") in BUSY
    assert Path("/sys/module/shiftfs").is_dir()
    refs = int(Path("/sys/module/shiftfs/refcnt").read_text())
    assert refs >= 1
    r = run("rmmod", "shiftfs", check=False)
    assert r.returncode != 0
    assert "in use" in r.stderr
    assert Path("/sys/module/shiftfs").is_dir()


def test_rmmod_is_ebusy_with_a_detached_mount(tmpfs_lower):
    ctx = FsContext()
    try:
        ctx.flag("shift_uids")
        ctx.string("uidmap", "0:0x20000:10")
        ctx.string("source", str(tmpfs_lower))
        ctx.create()
        mfd = ctx.fsmount()
    finally:
        ctx.close()
    try:
        assert errno_of(delete_module, "shiftfs") in BUSY
    finally:
        os.close(mfd)


def _prepare_shifted(lower):
    os.chown(lower, BASE, BASE)
    (lower / "f").write_text("x")
    os.chown(lower / "f", BASE + 100, BASE + 200)


def test_bind_mount_keeps_the_shift(tmpfs_lower, mnt, scratch):
    _prepare_shifted(tmpfs_lower)
    mount_shiftfs(tmpfs_lower, mnt, SHIFT_DOWN)
    bind = scratch / "bind"
    bind.mkdir(exist_ok=True)
    run("mount", "--bind", str(mnt), str(bind))
    try:
        assert ids(bind / "f") == (100, 200)
        (bind / "g").write_text("y")
        assert ids(tmpfs_lower / "g") == (BASE, BASE)
        assert "shift_uids" in mountinfo_line(bind)
    finally:
        umount(bind)


def test_mount_move_keeps_the_shift(tmpfs_lower, mnt, scratch):
    _prepare_shifted(tmpfs_lower)
    src = scratch / "move-src"
    src.mkdir(exist_ok=True)
    mount_shiftfs(tmpfs_lower, src, SHIFT_DOWN)
    run("mount", "--make-private", str(src), check=False)
    r = run("mount", "--move", str(src), str(mnt), check=False)
    if r.returncode:
        umount(src)
        raise AssertionError(r.stderr)
    assert not os.path.ismount(src)
    assert ids(mnt / "f") == (100, 200)
    os.chown(mnt / "f", 1, 2)
    assert ids(tmpfs_lower / "f") == (BASE + 1, BASE + 2)


def test_move_mount_into_another_mount_namespace_keeps_the_shift(
        tmpfs_lower, mnt, scratch):
    _prepare_shifted(tmpfs_lower)
    mount_shiftfs(tmpfs_lower, mnt, SHIFT_DOWN)
    fd = open_tree_clone(mnt)
    target = scratch / "otherns"
    target.mkdir(exist_ok=True)
    os.set_inheritable(fd, True)

    def in_new_ns():
        move_mount_fd(fd, target)
        res = {"ids": list(ids(target / "f"))}
        (target / "fromns").write_text("z")
        res["mounted"] = os.path.ismount(target)
        return res

    try:
        res = as_process(in_new_ns, newns=True)
    finally:
        os.close(fd)
    assert res == {"ids": [100, 200], "mounted": True}
    assert ids(tmpfs_lower / "fromns") == (BASE, BASE)
    # it went to the other namespace, not to ours
    assert not os.path.ismount(target)


def test_fsmount_and_move_mount(tmpfs_lower, mnt):
    _prepare_shifted(tmpfs_lower)
    fs_mount(tmpfs_lower, mnt, SHIFT_DOWN.split(","))
    assert ids(mnt / "f") == (100, 200)
    assert mountinfo_line(mnt).split(" - ")[1].split()[0] == "shiftfs"
