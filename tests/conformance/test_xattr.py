"""shiftfs xattrs (issue 5): pass-through, POSIX ACLs translated both ways
(checked on the lower's raw xattr), default ACLs and umask as the lower
does them, file capabilities with v3 rootids, and the privilege rules of
trusted.* and security.*.

Every test runs on tmpfs, ext4, xfs and btrfs lowers."""

import errno
import os
import stat
import struct
import subprocess

import pytest

from conftest import (BASE, RANGE, SHIFT_DOWN, SHIFT_UP, as_process,
                      container_map, errno_of, ids, mount_shiftfs)

ACL_USER_OBJ, ACL_USER, ACL_GROUP_OBJ, ACL_GROUP, ACL_MASK, ACL_OTHER = (
    0x01, 0x02, 0x04, 0x08, 0x10, 0x20)
UNDEF = 0xFFFFFFFF
ACCESS = "system.posix_acl_access"
DEFAULT = "system.posix_acl_default"
CAPS = "security.capability"


def acl_xattr(entries):
    return struct.pack("<I", 2) + b"".join(
        struct.pack("<HHI", t, p, i) for t, p, i in entries)


def acl_entries(value):
    (ver,) = struct.unpack_from("<I", value)
    assert ver == 2
    return [struct.unpack_from("<HHI", value, 4 + 8 * i)
            for i in range((len(value) - 4) // 8)]


def acl_with(*extra, mask=7):
    return acl_xattr([(ACL_USER_OBJ, 6, UNDEF), *[e for e in extra
                                                  if e[0] == ACL_USER],
                      (ACL_GROUP_OBJ, 4, UNDEF),
                      *[e for e in extra if e[0] == ACL_GROUP],
                      (ACL_MASK, mask, UNDEF), (ACL_OTHER, 0, UNDEF)])


def named(entries):
    return sorted((t, i) for t, _, i in entries if t in (ACL_USER, ACL_GROUP))


def run(*cmd):
    return subprocess.run(cmd, capture_output=True, text=True)


# ----------------------------------------------------------- pass-through

def need_user_xattrs(path):
    e = errno_of(os.setxattr, path, "user.probe", b"1")
    if e == errno.EOPNOTSUPP:
        pytest.skip(f"this kernel's {fstype(path)} lower has no user.* "
                    "xattrs")
    assert e == 0
    os.removexattr(path, "user.probe")


def fstype(path):
    best, kind = "", None
    real = os.path.realpath(path)
    for line in open("/proc/self/mountinfo"):
        f = line.split()
        if (real == f[4] or real.startswith(f[4].rstrip("/") + "/")) \
                and len(f[4]) >= len(best):
            best, kind = f[4], f[f.index("-") + 1]
    return kind


def test_user_and_trusted_xattrs_pass_through(lower, mnt):
    (lower / "f").write_text("x")
    need_user_xattrs(lower / "f")
    os.chown(lower / "f", BASE + 1000, BASE + 1000)
    os.setxattr(lower / "f", "user.fromlower", b"L")
    mount_shiftfs(lower, mnt, SHIFT_DOWN)
    assert os.getxattr(mnt / "f", "user.fromlower") == b"L"
    os.setxattr(mnt / "f", "user.fromview", b"V" * 300)
    assert os.getxattr(lower / "f", "user.fromview") == b"V" * 300
    os.setxattr(mnt / "f", "trusted.t", b"T")
    assert os.getxattr(lower / "f", "trusted.t") == b"T"
    names = set(os.listxattr(mnt / "f"))
    assert {"user.fromlower", "user.fromview", "trusted.t"} <= names
    os.removexattr(mnt / "f", "user.fromlower")
    assert errno_of(os.getxattr, lower / "f", "user.fromlower") == \
        errno.ENODATA
    assert errno_of(os.getxattr, mnt / "f", "user.none") == errno.ENODATA
    # XATTR_CREATE / XATTR_REPLACE semantics are the lower's
    assert errno_of(os.setxattr, mnt / "f", "user.fromview", b"x",
                    os.XATTR_CREATE) == errno.EEXIST
    assert errno_of(os.setxattr, mnt / "f", "user.absent", b"x",
                    os.XATTR_REPLACE) == errno.ENODATA


def test_trusted_and_security_keep_their_privilege_rules(lower, mnt):
    (lower / "f").write_text("x")
    need_user_xattrs(lower / "f")
    os.chmod(lower / "f", 0o666)
    os.setxattr(lower / "f", "trusted.secret", b"S")
    mount_shiftfs(lower, mnt, SHIFT_UP)

    def container_root():
        return {
            "set_trusted": errno_of(os.setxattr, mnt / "f", "trusted.x",
                                    b"1"),
            "get_trusted": errno_of(os.getxattr, mnt / "f",
                                    "trusted.secret"),
            "list": sorted(os.listxattr(mnt / "f")),
            "set_security": errno_of(os.setxattr, mnt / "f",
                                     "security.shiftfs-test", b"1"),
            "set_user": errno_of(os.setxattr, mnt / "f", "user.ok", b"1"),
        }

    res = as_process(container_root, userns=container_map())
    assert res["set_trusted"] == errno.EPERM
    assert res["get_trusted"] in (errno.ENODATA, errno.EPERM)
    # listing trusted.* is the lower's decision (btrfs lists them to
    # anyone): the container sees what an unprivileged lower user sees
    plain = as_process(lambda: os.listxattr(lower / "f"), uid=12345,
                       gid=12345)
    assert ("trusted.secret" in res["list"]) == ("trusted.secret" in plain)
    # other security.* need CAP_SYS_ADMIN over the superblock; before 6.2
    # an LSM with an inode_setxattr hook (Debian 6.1: integrity) bypasses
    # that commoncap check, on shiftfs as on any filesystem
    if tuple(int(x) for x in os.uname().release.split(".")[:2]) >= (6, 2):
        assert res["set_security"] in (errno.EPERM, errno.EOPNOTSUPP)
    assert res["set_user"] == 0
    assert errno_of(os.getxattr, lower / "f", "trusted.x") == errno.ENODATA
    assert os.getxattr(lower / "f", "user.ok") == b"1"

    def container_other_user():
        return errno_of(os.setxattr, mnt / "f", "user.other", b"1")
    # user.* needs write permission on the view (0666: granted)
    assert as_process(container_other_user, userns=container_map(),
                      uid=1000, gid=1000) == 0


# ------------------------------------------------------------- POSIX ACLs

def test_acl_round_trip_from_a_container(lower, mnt):
    """Container root sets an ACL naming its uid 1000 and gid 2000: the
    lower holds 1000/2000 (base 0), the host sees BASE+N, the container
    sees N, getfacl agrees."""
    (lower / "f").write_text("x")
    os.chmod(lower / "f", 0o640)
    mount_shiftfs(lower, mnt, SHIFT_UP)

    def container_root():
        os.setxattr(mnt / "f", ACCESS,
                    acl_with((ACL_USER, 6, 1000), (ACL_GROUP, 4, 2000)))
        r = run("setfacl", "-m", "u:1001:r", str(mnt / "f"))
        assert r.returncode == 0, r.stderr
        g = run("getfacl", "-n", "-p", str(mnt / "f"))
        return {"raw": named(acl_entries(os.getxattr(mnt / "f", ACCESS))),
                "getfacl": g.stdout}

    res = as_process(container_root, userns=container_map())
    assert res["raw"] == [[ACL_USER, 1000], [ACL_USER, 1001],
                          [ACL_GROUP, 2000]]
    assert "user:1000:rw-" in res["getfacl"]
    assert "group:2000:r--" in res["getfacl"]

    disk = named(acl_entries(os.getxattr(lower / "f", ACCESS)))
    assert disk == [(ACL_USER, 1000), (ACL_USER, 1001), (ACL_GROUP, 2000)]
    host = named(acl_entries(os.getxattr(mnt / "f", ACCESS)))
    assert host == [(ACL_USER, BASE + 1000), (ACL_USER, BASE + 1001),
                    (ACL_GROUP, BASE + 2000)]
    # the mode's group bits are the mask, on both sides
    assert stat.S_IMODE(os.stat(mnt / "f").st_mode) == \
        stat.S_IMODE(os.stat(lower / "f").st_mode)

    # host root with setfacl on the view: BASE+7 lands as 7
    r = run("setfacl", "-m", f"u:{BASE + 7}:rwx", str(mnt / "f"))
    assert r.returncode == 0, r.stderr
    assert (ACL_USER, 7) in named(acl_entries(os.getxattr(lower / "f",
                                                          ACCESS)))
    r = run("getfacl", "-n", str(lower / "f"))
    assert "user:7:rwx" in r.stdout

    os.removexattr(mnt / "f", ACCESS)
    assert errno_of(os.getxattr, lower / "f", ACCESS) == errno.ENODATA


def test_acl_unmapped_entries(lower, mnt):
    """On set, a view id without a disk id is refused and nothing changes;
    on get, a disk id outside the map does not show as a mapped id."""
    (lower / "f").write_text("x")
    (lower / "g").write_text("x")
    os.setxattr(lower / "g", ACCESS,
                acl_with((ACL_USER, 6, 1000), (ACL_USER, 6, RANGE + 5),
                         (ACL_GROUP, 4, RANGE + 6)))
    mount_shiftfs(lower, mnt, SHIFT_UP)
    # host root names view uid 5: no disk id under uidmap=0:BASE:RANGE
    e = errno_of(os.setxattr, mnt / "f", ACCESS,
                 acl_with((ACL_USER, 6, 5)))
    assert e == errno.EOVERFLOW
    assert errno_of(os.getxattr, lower / "f", ACCESS) == errno.ENODATA

    got = named(acl_entries(os.getxattr(mnt / "g", ACCESS)))
    assert (ACL_USER, BASE + 1000) in got
    others = [i for t, i in got if i != BASE + 1000]
    assert len(others) == 2
    assert all(not (BASE <= i < BASE + RANGE) for i in others)
    assert all(i in (UNDEF, 65534) for i in others)


def test_acl_grants_access_by_view_ids(lower, mnt):
    (lower / "f").write_text("secret")
    os.chmod(lower / "f", 0o600)
    os.setxattr(lower / "f", ACCESS, acl_with((ACL_USER, 4, 1000)))
    mount_shiftfs(lower, mnt, SHIFT_UP)

    def read_as():
        return errno_of(lambda: (mnt / "f").read_text())

    assert as_process(read_as, userns=container_map(), uid=1000,
                      gid=1000) == 0
    assert as_process(read_as, userns=container_map(), uid=1001,
                      gid=1001) == errno.EACCES
    # host uid BASE+1000 is the same user
    assert as_process(read_as, uid=BASE + 1000, gid=BASE + 1000) == 0
    assert as_process(read_as, uid=1000, gid=1000) == errno.EACCES


def test_default_acl_and_umask_like_the_lower(lower, mnt):
    """A new file in a directory with a default ACL gets the ACL and a mode
    from it (umask ignored), exactly as on the lower; without a default
    ACL the umask applies."""
    for d in ("a", "b"):
        (lower / d).mkdir()
        os.chmod(lower / d, 0o777)
        os.setxattr(lower / d, DEFAULT,
                    acl_xattr([(ACL_USER_OBJ, 7, UNDEF), (ACL_USER, 7, 1000),
                               (ACL_GROUP_OBJ, 5, UNDEF),
                               (ACL_MASK, 7, UNDEF), (ACL_OTHER, 5, UNDEF)]))
    (lower / "plain").mkdir()
    os.chmod(lower / "plain", 0o777)
    mount_shiftfs(lower, mnt, SHIFT_UP)

    def create():
        os.umask(0o077)
        for base in (mnt,):
            os.close(os.open(base / "a/new", os.O_CREAT | os.O_WRONLY,
                             0o666))
            os.mkdir(base / "a/sub", 0o777)
            os.close(os.open(base / "plain/new", os.O_CREAT | os.O_WRONLY,
                             0o666))
        return [stat.S_IMODE(os.stat(mnt / p).st_mode)
                for p in ("a/new", "a/sub", "plain/new")]

    modes = as_process(create, userns=container_map())

    old = os.umask(0o077)
    try:
        os.close(os.open(lower / "b/new", os.O_CREAT | os.O_WRONLY, 0o666))
        os.mkdir(lower / "b/sub", 0o777)
    finally:
        os.umask(old)
    assert modes[0] == stat.S_IMODE(os.stat(lower / "b/new").st_mode)
    assert modes[1] == stat.S_IMODE(os.stat(lower / "b/sub").st_mode)
    assert modes[2] == 0o600
    assert acl_entries(os.getxattr(lower / "a/new", ACCESS)) == \
        acl_entries(os.getxattr(lower / "b/new", ACCESS))
    assert acl_entries(os.getxattr(lower / "a/sub", DEFAULT)) == \
        acl_entries(os.getxattr(lower / "b/sub", DEFAULT))
    assert ids(lower / "a/new") == (0, 0)


# --------------------------------------------------------- file capabilities

VFS_CAP_REVISION_2 = 0x02000000
VFS_CAP_REVISION_3 = 0x03000000
VFS_CAP_FLAGS_EFFECTIVE = 1
CAP_NET_RAW = 13


def cap_v2(bit=CAP_NET_RAW):
    return struct.pack("<IIIII", VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE,
                       1 << bit, 0, 0, 0)


def cap_v3(rootid, bit=CAP_NET_RAW):
    return struct.pack("<IIIIII",
                       VFS_CAP_REVISION_3 | VFS_CAP_FLAGS_EFFECTIVE,
                       1 << bit, 0, 0, 0, rootid)


def cap_rootid(value):
    magic = struct.unpack_from("<I", value)[0]
    if magic & 0xFF000000 == VFS_CAP_REVISION_2:
        return ("v2", None)
    return ("v3", struct.unpack_from("<I", value, 20)[0])


def test_fscap_v3_rootid_from_a_container(lower, mnt):
    """setcap in a container stores a v3 whose rootid is the container's
    root (disk 0 under a base-0 image); the host reads rootid BASE, the
    container reads it as its own (v2), getcap shows it."""
    (lower / "f").write_text("#!/bin/sh\n")
    os.chmod(lower / "f", 0o755)
    (lower / "g").write_text("#!/bin/sh\n")
    os.chmod(lower / "g", 0o755)
    mount_shiftfs(lower, mnt, SHIFT_UP)

    def container_root():
        r = run("setcap", "cap_net_raw+ep", str(mnt / "f"))
        assert r.returncode == 0, r.stderr
        os.setxattr(mnt / "g", CAPS, cap_v3(0))
        out = {"f": cap_rootid(os.getxattr(mnt / "f", CAPS)),
               "g": cap_rootid(os.getxattr(mnt / "g", CAPS)),
               "getcap": run("getcap", str(mnt / "f")).stdout}
        return out

    res = as_process(container_root, userns=container_map())
    assert res["f"] == ["v2", None] and res["g"] == ["v2", None]
    assert "cap_net_raw" in res["getcap"]
    # the lower holds a v3 with rootid 0: the image stays base 0
    # (host root reads a v3 with rootid 0 as a v2: the same thing)
    for p in ("f", "g"):
        assert cap_rootid(os.getxattr(lower / p, CAPS)) in \
            (("v3", 0), ("v2", None))
    # host root reads it through the view as owned by BASE
    assert cap_rootid(os.getxattr(mnt / "f", CAPS)) == ("v3", BASE)
    r = run("getcap", "-n", str(mnt / "f"))
    assert f"[rootid={BASE}]" in r.stdout

    # a second container with another range cannot use it, a container
    # user cannot set one
    def container_user():
        return errno_of(os.setxattr, mnt / "g", CAPS, cap_v3(0))
    assert as_process(container_user, userns=container_map(), uid=1000,
                      gid=1000) == errno.EPERM

    def container_root_remove():
        os.removexattr(mnt / "g", CAPS)
    as_process(container_root_remove, userns=container_map())
    assert errno_of(os.getxattr, lower / "g", CAPS) == errno.ENODATA


def test_fscap_v2_on_disk_and_v2_by_host_root(lower, mnt):
    """A v2 on disk reads as v3 rootid BASE on the host through
    uidmap=0:BASE (as on an idmapped mount); a v2 written by host root
    through uidmap=BASE:0 is stored as v3 rootid BASE."""
    (lower / "img").mkdir()
    (lower / "img/f").write_text("x")
    os.setxattr(lower / "img/f", CAPS, cap_v2())
    (lower / "stored").mkdir()
    (lower / "stored/g").write_text("x")
    os.chown(lower / "stored", BASE, BASE)
    os.chown(lower / "stored/g", BASE, BASE)
    os.chmod(mnt, 0o755)        # the container walks into mnt/up
    up = mnt / "up"
    down = mnt / "down"
    up.mkdir()
    down.mkdir()
    try:
        mount_shiftfs(lower / "img", up, SHIFT_UP)
        mount_shiftfs(lower / "stored", down, SHIFT_DOWN)
        assert cap_rootid(os.getxattr(up / "f", CAPS)) == ("v3", BASE)
        assert cap_rootid(os.getxattr(lower / "img/f", CAPS)) == ("v2", None)

        def container_root():
            return cap_rootid(os.getxattr(up / "f", CAPS))
        assert as_process(container_root, userns=container_map()) == \
            ["v2", None]

        os.setxattr(down / "g", CAPS, cap_v2())
        assert cap_rootid(os.getxattr(lower / "stored/g", CAPS)) == \
            ("v3", BASE)
        assert cap_rootid(os.getxattr(down / "g", CAPS)) == ("v2", None)
        # host root's view 0 has no disk id under uidmap=0:BASE
        (lower / "img/h").write_text("x")
        assert errno_of(os.setxattr, up / "h", CAPS, cap_v2()) == \
            errno.EINVAL
    finally:
        for m in (up, down):
            subprocess.run(["umount", "-l", str(m)], capture_output=True)


def test_fscap_killed_by_write(lower, mnt):
    (lower / "f").write_text("x")
    os.chmod(lower / "f", 0o777)
    os.setxattr(lower / "f", CAPS, cap_v3(0))
    mount_shiftfs(lower, mnt, SHIFT_UP)

    def write_as_user():
        with open(mnt / "f", "a") as f:
            f.write("y")
    as_process(write_as_user, userns=container_map(), uid=1000, gid=1000)
    assert errno_of(os.getxattr, lower / "f", CAPS) == errno.ENODATA
