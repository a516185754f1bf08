"""Escapes, each tried and each refused.

- mounting shiftfs as an unprivileged host user, as root of a user
  namespace (mount(2) and fsopen), through a context handed into a user
  namespace (its CMD_CREATE), by reconfiguring a live mount from a
  container (fspick), and by remount with new maps as real root;
- a container chowning to, or writing files owned by, ids outside its
  range;
- a file made to appear owned by host root through the shift (a container
  creating a setuid file and chowning it to 0);
- a setuid-root binary reachable by unprivileged host users on the lower
  (shiftctl's reachability check refuses with exit 3);
- reading another container's private files through a shared lower.
"""

import ctypes
import errno
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import (BASE, FIGURES, NR_fsconfig, NR_fsopen, RANGE,
                      SHIFT_UP, FsContext, WORK, as_process, errno_of, ids,
                      libc, mount_shiftfs, mountinfo_line, note_finding,
                      nsexec_env, run, sys_mount, umount)

NR_fspick = 433
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6
FSCONFIG_CMD_RECONFIGURE = 7
OTHER = 0x30000
UNPRIV = 1000


def escape(name):
    FIGURES["escapes"]["tried"] += 1
    FIGURES["escapes"]["names"].append(name)


def refused():
    FIGURES["escapes"]["refused"] += 1


def cmap(base=BASE, count=RANGE):
    m = f"0 {base} {count}\n"
    return (m, m)


def _mount2(lower, target, opts):
    def fn():
        sys_mount(str(lower), str(target), "shiftfs", opts)
        return "mounted"
    return fn


def _fsopen():
    fd = libc.syscall(NR_fsopen, b"shiftfs", 1)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "fsopen")
    os.close(fd)
    return "opened"


def test_unprivileged_user_cannot_mount(tmpfs_lower, mnt):
    escape("mount(2) and fsopen as an unprivileged host user")
    opts = SHIFT_UP
    assert errno_of(as_process, _mount2(tmpfs_lower, mnt, opts),
                    uid=UNPRIV, gid=UNPRIV) == errno.EPERM
    assert errno_of(as_process, _fsopen, uid=UNPRIV,
                    gid=UNPRIV) == errno.EPERM
    assert not os.path.ismount(mnt)
    refused()


def test_userns_root_cannot_mount(tmpfs_lower, scratch):
    escape("mount(2) and fsopen as root of a user namespace")
    target = scratch / "userns-target"
    target.mkdir(exist_ok=True)
    os.chmod(target, 0o777)
    for opts in (SHIFT_UP, "shift_uids,uidmap=0:0:1",
                 f"shift_uids,uidmap=0:0:{RANGE},shift_gids,"
                 f"gidmap=0:0:{RANGE}"):
        assert errno_of(as_process, _mount2(tmpfs_lower, target, opts),
                        userns=cmap(), newns=True) == errno.EPERM
    assert errno_of(as_process, _fsopen, userns=cmap(),
                    newns=True) == errno.EPERM
    refused()


def test_context_handed_into_userns_cannot_create(tmpfs_lower):
    """Real root opens the context; a user-namespace root sets its own map
    and tries CMD_CREATE on it: EPERM (sget_fc wants CAP_SYS_ADMIN in the
    initial namespace)."""
    escape("fsopen context handed into a user namespace, CMD_CREATE there")
    ctx = FsContext()
    try:
        ctx.string("source", str(tmpfs_lower))

        def child():
            for k, v in (("uidmap", "0:0:65536"), ("gidmap", "0:0:65536")):
                libc.syscall(NR_fsconfig, ctx.fd, FSCONFIG_SET_STRING,
                             k.encode(), v.encode(), 0)
            libc.syscall(NR_fsconfig, ctx.fd, 0, b"shift_uids", None, 0)
            libc.syscall(NR_fsconfig, ctx.fd, 0, b"shift_gids", None, 0)
            r = libc.syscall(NR_fsconfig, ctx.fd, FSCONFIG_CMD_CREATE, None,
                             None, 0)
            return 0 if r == 0 else ctypes.get_errno()
        e = as_process(child, userns=cmap(), newns=True)
        assert e == errno.EPERM, errno.errorcode.get(e, e)
    finally:
        ctx.close()
    refused()


def test_container_cannot_reconfigure_live_mount(tmpfs_lower, mnt):
    """A container with the mount in reach: fspick + a new uidmap +
    CMD_RECONFIGURE is refused; the map stays."""
    escape("fspick/reconfigure of a live mount from a user namespace")
    mount_shiftfs(tmpfs_lower, mnt, SHIFT_UP)
    before = mountinfo_line(mnt).split(" - ")[1]

    def child():
        fd = libc.syscall(NR_fspick, -100, os.fsencode(str(mnt)), 0)
        if fd < 0:
            return ["fspick", ctypes.get_errno()]
        libc.syscall(NR_fsconfig, fd, FSCONFIG_SET_STRING, b"uidmap",
                     b"0:0:65536", 0)
        r = libc.syscall(NR_fsconfig, fd, FSCONFIG_CMD_RECONFIGURE, None,
                         None, 0)
        e = 0 if r == 0 else ctypes.get_errno()
        os.close(fd)
        return ["reconfigure", e]
    what, e = as_process(child, userns=cmap(), newns=True)
    assert e in (errno.EPERM, errno.EINVAL), (what, e)
    assert mountinfo_line(mnt).split(" - ")[1] == before
    refused()


def test_remount_cannot_change_the_map(tmpfs_lower, mnt):
    """Real root: mount -o remount with other maps fails (EINVAL, 'the
    shift cannot be changed by a remount'); the same maps, or a bare
    remount,ro, are accepted; the view's ids never change."""
    escape("remount with new maps (real root)")
    (tmpfs_lower / "f").write_text("x")
    mount_shiftfs(tmpfs_lower, mnt, SHIFT_UP)
    before_ids = ids(mnt / "f")
    before = mountinfo_line(mnt).split(" - ")[1]
    for opts in ("remount,shift_uids,shift_gids,uidmap=0:0:65536,"
                 "gidmap=0:0:65536",
                 f"remount,shift_uids,uidmap=0:{OTHER:#x}:{RANGE:#x},"
                 f"shift_gids,gidmap=0:{BASE:#x}:{RANGE:#x}",
                 "remount,shift_uids,uidmap=0:0x20000:0x10001,shift_gids,"
                 "gidmap=0:0x20000:0x10000"):
        r = run("mount", "-o", opts, str(tmpfs_lower), str(mnt), check=False)
        assert r.returncode != 0, f"remount accepted {opts}"
        assert ids(mnt / "f") == before_ids
        assert mountinfo_line(mnt).split(" - ")[1] == before
    r = run("mount", "-o", "remount," + SHIFT_UP, str(tmpfs_lower), str(mnt),
            check=False)
    assert r.returncode == 0, r.stderr
    assert ids(mnt / "f") == before_ids
    refused()


@pytest.fixture
def shared(tmpfs_lower, mnt):
    """SHIFT_UP mount; lower has a dir and a file owned by an id outside
    the map (0x50000), and a dir the container owns."""
    (tmpfs_lower / "own").mkdir()
    (tmpfs_lower / "foreign").mkdir()
    (tmpfs_lower / "foreign.txt").write_text("foreign\n")
    for p in ("foreign", "foreign.txt"):
        os.chown(tmpfs_lower / p, 0x50000, 0x50000)
    os.chmod(tmpfs_lower / "foreign", 0o755)
    os.chmod(tmpfs_lower / "foreign.txt", 0o644)
    mount_shiftfs(tmpfs_lower, mnt, SHIFT_UP)
    yield tmpfs_lower, mnt


def test_container_cannot_chown_outside_range(shared):
    escape("container chowns to ids outside its range")
    lower, mnt = shared
    (lower / "own" / "f").write_text("x")          # disk 0 = container root
    f = str(mnt / "own" / "f")

    def child(uid):
        return errno_of(os.chown, f, uid, uid)
    # not mapped in the container's namespace: the VFS says EINVAL
    assert as_process(lambda: child(70000), userns=cmap()) == errno.EINVAL
    # mapped in a bigger namespace but with no disk id: EOVERFLOW
    e = as_process(lambda: child(0x10005), userns=cmap(BASE, 2 * RANGE))
    assert e == errno.EOVERFLOW, errno.errorcode.get(e, e)
    # host root chowning to a view id with no disk id: EOVERFLOW too
    assert errno_of(os.chown, f, 0, 0) == errno.EOVERFLOW
    st = os.lstat(lower / "own" / "f")
    assert (st.st_uid, st.st_gid) == (0, 0)
    refused()


def test_container_cannot_touch_foreign_files(shared):
    escape("container writes/chowns/creates in files owned outside its range")
    lower, mnt = shared
    ov = int(Path("/proc/sys/fs/overflowuid").read_text())
    assert ids(mnt / "foreign.txt") == (ov, ov)

    def child():
        return {
            "write": errno_of(lambda: open(mnt / "foreign.txt", "w").close()),
            "chown": errno_of(os.chown, mnt / "foreign.txt", 0, 0),
            "chmod": errno_of(os.chmod, mnt / "foreign.txt", 0o666),
            "create": errno_of(lambda: open(mnt / "foreign" / "n",
                                            "w").close()),
            "rename": errno_of(os.rename, mnt / "foreign.txt",
                               mnt / "own" / "stolen"),
        }
    r = as_process(child, userns=cmap())
    assert r["write"] == errno.EACCES, r
    # an idmapped mount gives EPERM; shiftfs may say EOVERFLOW (the
    # overflow owner has no disk id) - refused either way, as in
    # tests/conformance
    assert r["chown"] in (errno.EPERM, errno.EOVERFLOW), r
    assert r["chmod"] in (errno.EPERM, errno.EOVERFLOW), r
    if r["chmod"] == errno.EOVERFLOW:
        note_finding("chmod of an overflow-owned file by a container root: "
                     "shiftfs EOVERFLOW, an idmapped mount gives EPERM")
    assert r["create"] == errno.EACCES, r
    # rename out of a dir the container owns is allowed by POSIX (the
    # root dir is the container's); the file keeps its foreign owner
    if r["rename"] == 0:
        os.rename(mnt / "own" / "stolen", mnt / "foreign.txt")
    st = os.lstat(lower / "foreign.txt")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == \
        (0x50000, 0x50000, 0o644)
    assert (lower / "foreign.txt").read_text() == "foreign\n"
    assert not (lower / "foreign" / "n").exists()
    refused()


def test_no_host_root_setuid_through_the_shift(shared):
    """A container makes a setuid file and tries to give it to host root:
    through the mount it is owned by the container's root (0x20000),
    never by 0, and a host user running it gets euid 0x20000."""
    escape("container makes a setuid file appear owned by host root")
    lower, mnt = shared
    src = Path("/usr/bin/id").read_bytes()
    target = mnt / "own" / "suid-id"

    def child():
        with open(target, "wb") as f:
            f.write(src)
        e = errno_of(os.chown, target, 0, 0)      # its own root: fine
        os.chmod(target, 0o4755)                  # (chown strips S_ISUID)
        return e
    assert as_process(child, userns=cmap()) == 0
    st = os.stat(target)
    assert st.st_uid == BASE and st.st_uid != 0
    # not mapped to anything host-root-like: chown to host 0 in a wider ns
    # is impossible (host 0 is never in a container's map); as host root
    # through the mount it has no disk id
    assert errno_of(os.chown, target, 0, -1) == errno.EOVERFLOW
    os.chmod(mnt / "own", 0o755)
    r = subprocess.run(["setpriv", f"--reuid={UNPRIV}", f"--regid={UNPRIV}",
                        "--clear-groups", str(target), "-u"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) == BASE, r.stdout
    # but on the lower it is setuid disk-uid 0: that is what the
    # reachability check is for (next test)
    lst = os.lstat(lower / "own" / "suid-id")
    assert lst.st_uid == 0 and lst.st_mode & stat.S_ISUID
    note_finding("a container's setuid file is setuid uid 0 on a base-0 "
                 "lower: only the reachability check keeps host users "
                 "from running it from the lower")
    refused()


def shiftctl(*args):
    return subprocess.run([sys.executable, "-m", "shiftctl", *args],
                          capture_output=True, text=True, env=nsexec_env())


def test_shiftctl_refuses_reachable_lower(scratch):
    """A base-0 lower under world-searchable directories: shiftctl mount
    refuses with exit 3 and mounts nothing; under a 0700 root-owned guard
    it mounts; a host user cannot reach the setuid file made there."""
    escape("setuid-root binary on a lower reachable by host users")
    base = WORK / "reach"
    open_lower = base / "open" / "image"
    guarded = base / "guard" / "image"
    tgt = base / "target"
    for d in (open_lower, guarded, tgt):
        d.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o755)
    os.chmod(base / "open", 0o755)
    os.chmod(base / "guard", 0o700)
    state = ["--state-dir", str(base / "state")]
    maps = ["--uidmap", f"0:{BASE:#x}:{RANGE:#x}",
            "--gidmap", f"0:{BASE:#x}:{RANGE:#x}"]
    r = shiftctl("mount", *maps, *state, str(open_lower), str(tgt))
    assert r.returncode == 3, (r.returncode, r.stderr)
    assert "reachable" in r.stderr and "Traceback" not in r.stderr
    assert not os.path.ismount(tgt)
    r = shiftctl("mount", *maps, *state, str(guarded), str(tgt))
    if r.returncode == 3 and "mount point" in r.stderr:
        os.chmod(base, 0o700)          # the mount point must be guarded too
        r = shiftctl("mount", *maps, *state, str(guarded), str(tgt))
    assert r.returncode == 0, r.stderr
    try:
        def child():
            with open(tgt / "suid", "wb") as f:
                f.write(b"#!/bin/sh\nid -u\n")
            os.chmod(tgt / "suid", 0o4755)
            return 0
        as_process(child, userns=cmap())
        assert os.lstat(guarded / "suid").st_uid == 0
        e = as_process(lambda: errno_of(os.stat, guarded / "suid"),
                       uid=UNPRIV, gid=UNPRIV)
        assert e == errno.EACCES
    finally:
        shiftctl("umount", *state, str(tgt))
        umount(tgt)
        os.chmod(base, 0o755)
    refused()


def test_containers_on_shared_lower_cannot_read_each_other(tmpfs_lower,
                                                           scratch):
    """Two containers share one lower, each with its own disk range:
    A (host 0x20000) sees disk 0x20000+N as 0x20000+N, B (host 0x30000)
    disk 0x30000+N.  A's 0600 file is overflow-owned for B: unreadable,
    unwritable, not chownable."""
    escape("container reads another container's files on a shared lower")
    ma, mb = scratch / "shared-a", scratch / "shared-b"
    for m in (ma, mb):
        m.mkdir(exist_ok=True)
    for sub, owner in (("a", BASE), ("b", OTHER)):
        (tmpfs_lower / sub).mkdir()
        os.chown(tmpfs_lower / sub, owner, owner)
        os.chmod(tmpfs_lower / sub, 0o755)
    mount_shiftfs(tmpfs_lower, ma, f"shift_uids,shift_gids,"
                  f"uidmap={BASE:#x}:{BASE:#x}:{RANGE:#x},"
                  f"gidmap={BASE:#x}:{BASE:#x}:{RANGE:#x}")
    mount_shiftfs(tmpfs_lower, mb, f"shift_uids,shift_gids,"
                  f"uidmap={OTHER:#x}:{OTHER:#x}:{RANGE:#x},"
                  f"gidmap={OTHER:#x}:{OTHER:#x}:{RANGE:#x}")
    try:
        def a():
            with open(ma / "a" / "secret", "w") as f:
                f.write("A's secret\n")
            os.chmod(ma / "a" / "secret", 0o600)
            return 0
        as_process(a, userns=cmap(BASE))
        assert os.lstat(tmpfs_lower / "a" / "secret").st_uid == BASE

        def b():
            sec = mb / "a" / "secret"
            return {"read": errno_of(lambda: open(sec).read()),
                    "write": errno_of(lambda: open(sec, "a").close()),
                    "chown": errno_of(os.chown, sec, 0, 0),
                    "chmod": errno_of(os.chmod, sec, 0o644),
                    "unlink": errno_of(os.unlink, sec),
                    "stat": errno_of(os.stat, sec)}
        r = as_process(b, userns=cmap(OTHER))
        assert r["read"] == errno.EACCES, r
        assert r["write"] == errno.EACCES, r
        assert r["chown"] in (errno.EPERM, errno.EOVERFLOW), r
        assert r["chmod"] in (errno.EPERM, errno.EOVERFLOW), r
        assert r["unlink"] in (errno.EACCES, errno.EPERM,
                               errno.EOVERFLOW), r
        if r["unlink"] == errno.EOVERFLOW:
            note_finding("unlink in a dir whose owner has no id in the view "
                         "(shared lower, other container): shiftfs "
                         "EOVERFLOW, an idmapped mount gives EACCES")
        st = os.lstat(tmpfs_lower / "a" / "secret")
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (BASE, 0o600)
    finally:
        umount(ma)
        umount(mb)
    note_finding("two containers whose shiftfs maps cover the SAME disk "
                 "range (e.g. both base-0 on one lower) share ownership: "
                 "each one's root owns the other's files; isolation on a "
                 "shared lower needs disjoint disk ranges (tested)")
    refused()
