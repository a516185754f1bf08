"""shiftfs core (issue 3): the mission's examples, id mapping of stat and
of the create family, setattr, EOVERFLOW, the namespace operations.

Every test runs on tmpfs, ext4, xfs and btrfs lowers (the ``lower``
fixture)."""

import os
import socket
import stat

import pytest

from conftest import (BASE, RANGE, SHIFT_DOWN, SHIFT_UP, RENAME_EXCHANGE,
                      RENAME_NOREPLACE, RENAME_WHITEOUT, as_process,
                      container_map, errno_of, ids, linkat_fd,
                      lower_ids_all, mount_shiftfs, overflowgid, overflowuid,
                      renameat2)

import errno


def test_mission_a_stored_shifted_seen_at_base0(lower, mnt):
    """Files stored at 0x20000+100 show as 100; chown 100:100 through the
    mount stores 0x20000+100."""
    (lower / "d").mkdir()
    (lower / "d/f").write_text("data\n")
    (lower / "d/g").write_text("other\n")
    os.chown(lower / "d", BASE + 100, BASE + 100)
    os.chown(lower / "d/f", BASE + 100, BASE + 100)
    os.chown(lower / "d/g", BASE + 5, BASE + 6)
    mount_shiftfs(lower, mnt, SHIFT_DOWN)

    assert ids(mnt / "d") == (100, 100)
    assert ids(mnt / "d/f") == (100, 100)
    assert ids(mnt / "d/g") == (5, 6)
    st = os.statx(mnt / "d/f", os.STATX_UID | os.STATX_GID) \
        if hasattr(os, "statx") else os.stat(mnt / "d/f")
    assert (st.st_uid, st.st_gid) == (100, 100)
    assert (mnt / "d/f").read_text() == "data\n"

    os.chown(mnt / "d/g", 100, 100)
    assert ids(lower / "d/g") == (BASE + 100, BASE + 100)
    assert ids(mnt / "d/g") == (100, 100)
    os.chown(mnt / "d/g", 42, -1)
    assert ids(lower / "d/g") == (BASE + 42, BASE + 100)
    os.lchown(mnt / "d/g", -1, 7)
    assert ids(lower / "d/g") == (BASE + 42, BASE + 7)
    fd = os.open(mnt / "d/g", os.O_RDONLY)
    try:
        os.fchown(fd, 9, 9)
    finally:
        os.close(fd)
    assert ids(lower / "d/g") == (BASE + 9, BASE + 9)

    # host root (view 0 = disk 0x20000) creates: lands at 0x20000
    (mnt / "d/new").write_text("x")
    (mnt / "d/newdir").mkdir()
    assert ids(lower / "d/new") == (BASE, BASE)
    assert ids(lower / "d/newdir") == (BASE, BASE)


def _make_base0_image(lower):
    (lower / "etc").mkdir()
    (lower / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n"
                                      "user:x:1000:1000::/home/user:/bin/sh\n")
    os.chmod(lower / "etc/passwd", 0o644)
    (lower / "home").mkdir()
    (lower / "home/user").mkdir()
    (lower / "home/user/.profile").write_text("# profile\n")
    os.chown(lower / "home/user", 1000, 1000)
    os.chown(lower / "home/user/.profile", 1000, 1000)
    (lower / "tmp").mkdir()
    os.chmod(lower / "tmp", 0o1777)


def test_mission_b_base0_image_for_a_container(lower, mnt):
    """A base-0 tree mounted with uidmap=0:0x20000:0x10000 used by a process
    in a user namespace mapping 0..65535 to 0x20000."""
    _make_base0_image(lower)
    mount_shiftfs(lower, mnt, SHIFT_UP)

    # the host sees the container's ids
    assert ids(mnt / "etc/passwd") == (BASE, BASE)
    assert ids(mnt / "home/user") == (BASE + 1000, BASE + 1000)

    def as_container_root():
        st = os.stat(mnt / "etc/passwd")
        out = {"passwd": [st.st_uid, st.st_gid],
               "home": list(ids(mnt / "home/user"))}
        with open(mnt / "etc/passwd", "a") as f:   # root owns its passwd
            f.write("extra:x:1001:1001::/:/bin/sh\n")
        (mnt / "etc/new").write_text("made by container root\n")
        (mnt / "etc/newdir").mkdir()
        os.symlink("passwd", mnt / "etc/link")
        os.mkfifo(mnt / "etc/fifo")
        (mnt / "etc/chowned").write_text("x")
        os.chown(mnt / "etc/chowned", 1000, 1000)
        # container root may work on files of its uid 1000 (CAP_DAC_OVERRIDE
        # and CAP_FOWNER in its namespace, valid over mapped view ids)
        (mnt / "home/user/byroot").write_text("x")
        os.chmod(mnt / "home/user/.profile", 0o600)
        out["profile"] = list(ids(mnt / "home/user/.profile"))
        return out

    res = as_process(as_container_root, userns=container_map())
    assert res["passwd"] == [0, 0]
    assert res["home"] == [1000, 1000]
    assert res["profile"] == [1000, 1000]

    def as_container_user():
        (mnt / "home/user/mine").write_text("x")
        os.mkdir(mnt / "home/user/mydir")
        e = errno_of(lambda: (mnt / "etc/notmine").write_text("x"))
        return {"ids": list(ids(mnt / "home/user/mine")), "etc": e}

    res = as_process(as_container_user, userns=container_map(), uid=1000,
                     gid=1000)
    assert res["ids"] == [1000, 1000]
    assert res["etc"] == errno.EACCES

    # what the container wrote landed at base 0 on the lower
    assert ids(lower / "etc/new") == (0, 0)
    assert ids(lower / "etc/newdir") == (0, 0)
    assert ids(lower / "etc/link") == (0, 0)
    assert ids(lower / "etc/fifo") == (0, 0)
    assert ids(lower / "etc/chowned") == (1000, 1000)
    assert ids(lower / "home/user/byroot") == (0, 0)
    assert ids(lower / "home/user/mine") == (1000, 1000)
    assert ids(lower / "home/user/mydir") == (1000, 1000)
    assert stat.S_IMODE(os.stat(lower / "home/user/.profile").st_mode) == 0o600
    assert "extra:x:1001" in (lower / "etc/passwd").read_text()
    assert not (lower / "etc/notmine").exists()
    high = [(p, u, g) for p, u, g in lower_ids_all(lower)
            if u >= RANGE or g >= RANGE]
    assert high == []


def test_container_root_has_no_power_outside_its_range(lower, mnt):
    """Disk ids outside the map show as overflow ids, and a container root
    (capabilities only in its namespace) cannot change those files."""
    (lower / "d").mkdir(mode=0o777)
    os.chmod(lower / "d", 0o777)
    (lower / "d/foreign").write_text("secret\n")
    os.chmod(lower / "d/foreign", 0o600)
    os.chown(lower / "d/foreign", RANGE + 5, RANGE + 5)     # unmapped
    mount_shiftfs(lower, mnt, SHIFT_UP)

    assert ids(mnt / "d/foreign") == (overflowuid(), overflowgid())

    def attempt():
        return {
            "read": errno_of(lambda: (mnt / "d/foreign").read_text()),
            "chmod": errno_of(os.chmod, mnt / "d/foreign", 0o666),
            "chown": errno_of(os.chown, mnt / "d/foreign", 0, 0),
            "write": errno_of(lambda: open(mnt / "d/foreign", "a")),
            "ids": list(ids(mnt / "d/foreign")),
        }

    res = as_process(attempt, userns=container_map())
    assert res["read"] == errno.EACCES
    assert res["chmod"] in (errno.EPERM, errno.EOVERFLOW)
    assert res["chown"] in (errno.EPERM, errno.EOVERFLOW)
    assert res["write"] == errno.EACCES
    assert res["ids"] == [overflowuid(), overflowgid()]
    st = os.stat(lower / "d/foreign")
    assert (st.st_uid, st.st_gid) == (RANGE + 5, RANGE + 5)
    assert stat.S_IMODE(st.st_mode) == 0o600


def test_unmapped_disk_ids_show_overflow(lower, mnt):
    (lower / "a").write_text("a")
    os.chown(lower / "a", 7, 8)                 # below the map
    (lower / "b").write_text("b")
    os.chown(lower / "b", BASE + RANGE, BASE + 3)   # just past the map
    mount_shiftfs(lower, mnt, SHIFT_DOWN)
    assert ids(mnt / "a") == (overflowuid(), overflowgid())
    assert ids(mnt / "b") == (overflowuid(), 3)
    names = sorted(os.listdir(mnt))
    assert names == ["a", "b"]


def test_unmapped_caller_gets_eoverflow_and_nothing_is_created(lower, mnt):
    (lower / "d").mkdir()
    os.chmod(lower / "d", 0o777)
    os.chown(lower / "d", BASE + 100, BASE + 100)
    (lower / "d/f").write_text("x")
    os.chmod(lower / "d/f", 0o666)
    os.chown(lower / "d/f", BASE + 100, BASE + 100)
    mount_shiftfs(lower, mnt, SHIFT_DOWN)
    d = mnt / "d"

    def unmapped():
        res = {}
        res["creat"] = errno_of(lambda: os.close(
            os.open(d / "c", os.O_CREAT | os.O_WRONLY, 0o644)))
        res["mkdir"] = errno_of(os.mkdir, d / "m")
        res["mkfifo"] = errno_of(os.mkfifo, d / "p")
        res["symlink"] = errno_of(os.symlink, "f", d / "s")
        res["link"] = errno_of(os.link, d / "f", d / "l")
        res["rename"] = errno_of(os.rename, d / "f", d / "f2")
        res["tmpfile"] = errno_of(lambda: os.close(
            os.open(d, os.O_TMPFILE | os.O_RDWR, 0o600)))
        # existing files are still usable
        with open(d / "f", "a") as f:
            f.write("y")
        return res

    # view uid/gid 70000 has no disk id (the map covers view 0..65535)
    res = as_process(unmapped, uid=70000, gid=70000)
    assert res == {k: errno.EOVERFLOW for k in res}, res
    assert sorted(os.listdir(lower / "d")) == ["f"]
    assert (lower / "d/f").read_text() == "xy"


def test_chown_to_unmapped_id_is_eoverflow(lower, mnt):
    (lower / "f").write_text("x")
    os.chown(lower / "f", BASE + 1, BASE + 1)
    mount_shiftfs(lower, mnt, SHIFT_DOWN)
    assert errno_of(os.chown, mnt / "f", RANGE + 1, -1) == errno.EOVERFLOW
    assert errno_of(os.chown, mnt / "f", -1, RANGE + 1) == errno.EOVERFLOW
    assert ids(lower / "f") == (BASE + 1, BASE + 1)


@pytest.mark.parametrize("which", ["uids", "gids"])
def test_shifting_one_kind_leaves_the_other_raw(lower, mnt, which):
    (lower / "f").write_text("x")
    os.chown(lower / "f", BASE + 11, BASE + 22)
    # the mount root must be in range to create in it
    os.chown(lower, BASE, 0) if which == "uids" else os.chown(lower, 0, BASE)
    if which == "uids":
        mount_shiftfs(lower, mnt, f"shift_uids,uidmap={BASE}:0:{RANGE}")
        assert ids(mnt / "f") == (11, BASE + 22)
        os.chown(mnt / "f", 33, 44)
        assert ids(lower / "f") == (BASE + 33, 44)
        (mnt / "n").write_text("x")
        assert ids(lower / "n") == (BASE, 0)
    else:
        mount_shiftfs(lower, mnt, f"shift_gids,gidmap={BASE}:0:{RANGE}")
        assert ids(mnt / "f") == (BASE + 11, 22)
        os.chown(mnt / "f", 33, 44)
        assert ids(lower / "f") == (33, BASE + 44)
        (mnt / "n").write_text("x")
        assert ids(lower / "n") == (0, BASE)


def test_setattr_through_the_mount(lower, mnt):
    (lower / "f").write_bytes(b"0123456789")
    os.chown(lower / "f", BASE + 1000, BASE + 1000)
    mount_shiftfs(lower, mnt, SHIFT_DOWN)
    os.chmod(mnt / "f", 0o640)
    os.truncate(mnt / "f", 4)
    os.utime(mnt / "f", (1000000000, 1000000000))
    st = os.stat(lower / "f")
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert st.st_size == 4
    assert int(st.st_mtime) == 1000000000
    assert os.stat(mnt / "f").st_size == 4
    assert (mnt / "f").read_bytes() == b"0123"

    def owner():
        os.chmod(mnt / "f", 0o600)
        os.utime(mnt / "f", (2000000000, 2000000000))
        return errno_of(os.chown, mnt / "f", 5, -1)

    # the owner (view 1000) may chmod and set times but not give it away
    assert as_process(owner, uid=1000, gid=1000) == errno.EPERM
    st = os.stat(lower / "f")
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert int(st.st_mtime) == 2000000000
    assert st.st_uid == BASE + 1000


def test_chown_strips_setuid(lower, mnt):
    (lower / "f").write_text("x")
    os.chown(lower / "f", BASE + 1, BASE + 1)
    os.chmod(lower / "f", 0o4755)
    mount_shiftfs(lower, mnt, SHIFT_DOWN)
    os.chown(mnt / "f", 2, 2)
    assert not os.stat(lower / "f").st_mode & stat.S_ISUID


def test_setgid_directory_inheritance(lower, mnt):
    (lower / "sg").mkdir()
    os.chown(lower / "sg", BASE + 10, BASE + 20)
    os.chmod(lower / "sg", 0o2777)
    mount_shiftfs(lower, mnt, SHIFT_DOWN)

    def create():
        (mnt / "sg/f").write_text("x")
        os.mkdir(mnt / "sg/sub")
        return 0

    as_process(create, uid=30, gid=40)
    assert ids(lower / "sg/f") == (BASE + 30, BASE + 20)
    assert ids(lower / "sg/sub") == (BASE + 30, BASE + 20)
    assert os.stat(lower / "sg/sub").st_mode & stat.S_ISGID


def test_namespace_operations(lower, mnt):
    (lower / "d").mkdir()
    os.chown(lower / "d", BASE, BASE)
    mount_shiftfs(lower, mnt, SHIFT_DOWN)
    d = mnt / "d"

    (d / "a").write_text("a")
    (d / "b").write_text("b")
    os.mkdir(d / "dir")
    os.symlink("a", d / "sym")
    assert os.readlink(d / "sym") == "a"
    assert (d / "sym").read_text() == "a"
    os.link(d / "a", d / "hard")
    assert os.stat(d / "a").st_nlink == 2
    assert os.stat(d / "hard").st_ino == os.stat(d / "a").st_ino
    os.mkfifo(d / "fifo")
    os.mknod(d / "sock", stat.S_IFSOCK | 0o600)
    assert stat.S_ISSOCK(os.lstat(lower / "d/sock").st_mode)
    assert stat.S_ISFIFO(os.lstat(lower / "d/fifo").st_mode)
    # an overlayfs whiteout: a 0/0 character device
    os.mknod(d / "wh", stat.S_IFCHR | 0o000, os.makedev(0, 0))
    st = os.lstat(lower / "d/wh")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert (st.st_uid, st.st_gid) == (BASE, BASE)

    # rename and its flags
    os.rename(d / "b", d / "b2")
    assert (lower / "d/b2").read_text() == "b"
    assert errno_of(renameat2, d / "a", d / "b2", RENAME_NOREPLACE) == \
        errno.EEXIST
    renameat2(d / "a", d / "b2", RENAME_EXCHANGE)
    assert (lower / "d/a").read_text() == "b"
    assert (lower / "d/b2").read_text() == "a"
    renameat2(d / "b2", d / "moved", RENAME_WHITEOUT)
    st = os.lstat(lower / "d/b2")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert (st.st_uid, st.st_gid) == (BASE, BASE)
    os.rename(d / "moved", d / "dir/inside")
    assert (lower / "d/dir/inside").read_text() == "a"

    # readdir sees the lower's entries and inode numbers
    names = sorted(os.listdir(d))
    assert names == sorted(os.listdir(lower / "d"))
    for e in os.scandir(d):
        assert e.inode() == os.lstat(lower / "d" / e.name).st_ino

    # unlink and rmdir
    os.unlink(d / "hard")
    assert os.stat(d / "a").st_nlink == 1
    assert errno_of(os.rmdir, d / "dir") == errno.ENOTEMPTY
    os.unlink(d / "dir/inside")
    os.rmdir(d / "dir")
    assert not (lower / "d/dir").exists()
    assert errno_of(os.stat, d / "dir") == errno.ENOENT

    # O_TMPFILE, then linked in
    fd = os.open(d, os.O_TMPFILE | os.O_RDWR, 0o640)
    try:
        os.write(fd, b"tmp")
        linkat_fd(fd, d / "fromtmp")
    finally:
        os.close(fd)
    assert (lower / "d/fromtmp").read_bytes() == b"tmp"
    assert ids(lower / "d/fromtmp") == (BASE, BASE)

    # a unix socket bound through the mount
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(str(d / "bound"))
    finally:
        s.close()
    assert stat.S_ISSOCK(os.lstat(lower / "d/bound").st_mode)


def test_lower_changes_are_seen(lower, mnt):
    (lower / "f").write_text("x")
    os.chown(lower / "f", BASE + 1, BASE + 1)
    mount_shiftfs(lower, mnt, SHIFT_DOWN)
    assert ids(mnt / "f") == (1, 1)
    os.chown(lower / "f", BASE + 2, BASE + 3)
    os.chmod(lower / "f", 0o600)
    assert ids(mnt / "f") == (2, 3)
    assert stat.S_IMODE(os.stat(mnt / "f").st_mode) == 0o600
    os.unlink(lower / "f")
    assert errno_of(os.stat, mnt / "f") == errno.ENOENT
    (lower / "f").write_text("again")
    assert (mnt / "f").read_text() == "again"


def test_data_passes_through(lower, mnt):
    os.chown(lower, BASE, BASE)
    mount_shiftfs(lower, mnt, SHIFT_DOWN)
    data = os.urandom(1 << 20)
    (mnt / "big").write_bytes(data)
    assert (lower / "big").read_bytes() == data
    with open(mnt / "big", "r+b") as f:
        f.seek(4096)
        f.write(b"hello")
        f.flush()
        os.fsync(f.fileno())
        assert f.seek(0, os.SEEK_END) == len(data)
    assert (lower / "big").read_bytes()[4096:4101] == b"hello"
    import mmap
    with open(mnt / "big", "r+b") as f:
        m = mmap.mmap(f.fileno(), 8192)
        m[0:4] = b"mmap"
        m.flush()
        m.close()
    assert (lower / "big").read_bytes()[:4] == b"mmap"
    st = os.statvfs(mnt)
    assert st.f_blocks == os.statvfs(lower).f_blocks
