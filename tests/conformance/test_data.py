"""shiftfs data path (issue 5): read/write, O_DIRECT, mmap, splice,
copy_file_range, clones, fallocate, seek, fsync, suid stripping on write,
file locks against lower users, and the common ioctls.

Every test runs on tmpfs, ext4, xfs and btrfs lowers (the ``lower``
fixture); where a lower lacks a feature the test checks the lower itself
first and skips with the reason."""

import array
import errno
import fcntl
import hashlib
import mmap
import os
import stat
import struct

import pytest

from conftest import (BASE, SHIFT_DOWN, SHIFT_UP, as_process,
                      container_map, errno_of, mount_shiftfs)

MiB = 1 << 20


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def pattern(n, seed=1):
    return hashlib.shake_256(str(seed).encode()).digest(n)


def fstype(path):
    """The filesystem type of the mount holding path."""
    best, kind = "", None
    real = os.path.realpath(path)
    for line in open("/proc/self/mountinfo"):
        f = line.split()
        mp = f[4]
        if (real == mp or real.startswith(mp.rstrip("/") + "/")) \
                and len(mp) >= len(best):
            best, kind = mp, f[f.index("-") + 1]
    return kind


def shift_down(lower, mnt):
    """Mount lower (its root stored at BASE, like the rest of a shifted
    tree) with uidmap=BASE:0: host root owns the view's root."""
    for dirpath, dirnames, filenames in os.walk(lower):
        os.chown(dirpath, BASE, BASE)
        for n in filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            os.lchown(p, BASE + st.st_uid, BASE + st.st_gid)
    mount_shiftfs(lower, mnt, SHIFT_DOWN)


# ------------------------------------------------------------- read/write

def test_buffered_io_same_checksum_both_ways(lower, mnt):
    shift_down(lower, mnt)
    data = pattern(3 * MiB + 123)
    with open(mnt / "w", "wb") as f:
        f.write(data)
    assert sha(lower / "w") == hashlib.sha256(data).hexdigest()
    other = pattern(MiB + 7, seed=2)
    (lower / "r").write_bytes(other)
    assert sha(mnt / "r") == hashlib.sha256(other).hexdigest()
    # append, pwrite, truncate through the view land on the lower
    with open(mnt / "w", "ab") as f:
        f.write(b"tail")
    fd = os.open(mnt / "w", os.O_RDWR)
    try:
        os.pwrite(fd, b"HEAD", 0)
        assert os.pread(fd, 4, len(data)) == b"tail"
        os.ftruncate(fd, 1000)
    finally:
        os.close(fd)
    want = b"HEAD" + data[4:1000]
    assert (lower / "w").read_bytes() == want
    assert os.stat(mnt / "w").st_size == 1000


def _odirect_supported(path):
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_DIRECT, 0o644)
    except OSError as e:
        if e.errno == errno.EINVAL:
            return False
        raise
    os.close(fd)
    os.unlink(path)
    return True


def test_odirect_same_checksum_both_ways(lower, mnt):
    if not _odirect_supported(lower / ".probe"):
        pytest.skip(f"{fstype(lower)} lower does not support O_DIRECT")
    shift_down(lower, mnt)
    size = 2 * MiB
    buf = mmap.mmap(-1, size)           # page aligned
    buf.write(pattern(size, seed=3))
    fd = os.open(mnt / "d", os.O_RDWR | os.O_CREAT | os.O_DIRECT, 0o644)
    try:
        assert os.write(fd, buf) == size
        os.fsync(fd)
    finally:
        os.close(fd)
    assert sha(lower / "d") == hashlib.sha256(buf[:]).hexdigest()

    (lower / "e").write_bytes(pattern(size, seed=4))
    os.chown(lower / "e", BASE, BASE)
    out = mmap.mmap(-1, size)
    fd = os.open(mnt / "e", os.O_RDONLY | os.O_DIRECT)
    try:
        assert os.readv(fd, [out]) == size
    finally:
        os.close(fd)
    assert out[:] == pattern(size, seed=4)

    # O_DIRECT switched on with fcntl(F_SETFL) reaches the lower file
    fd = os.open(mnt / "e", os.O_RDWR)
    try:
        fl = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, fl | os.O_DIRECT)
        assert os.pwritev(fd, [buf], 0) == size
        assert sha(lower / "e") == hashlib.sha256(buf[:]).hexdigest()
        # unaligned O_DIRECT I/O gets what the lower gives it
        lfd = os.open(lower / "d", os.O_RDWR | os.O_DIRECT)
        try:
            want = errno_of(os.pwrite, lfd, b"x", 1)
        finally:
            os.close(lfd)
        assert errno_of(os.pwrite, fd, b"x", 1) == want
    finally:
        os.close(fd)


def _nowait_io(path, data):
    """RWF_NOWAIT pwritev then preadv on path, buffered and (where the
    lower has it) direct: each call's result, or the errno it raised."""
    out = []
    for flags in (0, os.O_DIRECT):
        try:
            fd = os.open(path, os.O_RDWR | flags)
        except OSError as e:
            out.append(("open", flags, e.errno))
            continue
        try:
            buf = mmap.mmap(-1, len(data))
            buf.write(data)
            for op in (os.pwritev, os.preadv):
                try:
                    res = op(fd, [buf], 0, os.RWF_NOWAIT)
                except OSError as e:
                    res = errno.errorcode[e.errno]
                out.append((op.__name__, flags, res))
        finally:
            os.close(fd)
    return out


def test_nowait_io_matches_lower(lower, mnt):
    """preadv2/pwritev2 with RWF_NOWAIT get what the lower file gives
    them (the view offers FMODE_NOWAIT exactly when the lower does), and
    the bytes written that way reach the lower."""
    shift_down(lower, mnt)
    data = pattern(64 << 10, seed=9)
    for name in ("l", "v"):
        (lower / name).write_bytes(pattern(64 << 10, seed=10))
        os.chown(lower / name, BASE, BASE)
    os.sync()       # clean pages: both files start in the same state
    want = _nowait_io(lower / "l", data)
    assert _nowait_io(mnt / "v", data) == want
    assert sha(lower / "v") == sha(lower / "l")


def test_mmap_same_checksum_both_ways(lower, mnt):
    shift_down(lower, mnt)
    size = MiB
    with open(mnt / "m", "wb") as f:
        f.truncate(size)
    data = pattern(size, seed=5)
    with open(mnt / "m", "r+b") as f:
        m = mmap.mmap(f.fileno(), size)
        m[:] = data
        m.flush()
        m.close()
    assert sha(lower / "m") == hashlib.sha256(data).hexdigest()
    # a shared mapping through the view sees writes made on the lower
    with open(mnt / "m", "rb") as f:
        m = mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ)
        with open(lower / "m", "r+b") as g:
            g.write(b"LOWER")
        assert m[:5] == b"LOWER"
        m.close()


def test_splice_sendfile_copy_file_range(lower, mnt):
    shift_down(lower, mnt)
    data = pattern(MiB + 99, seed=6)
    (mnt / "src").write_bytes(data)
    n = len(data)
    # copy_file_range between two shiftfs files
    with open(mnt / "src", "rb") as s, open(mnt / "cfr", "wb") as d:
        done = 0
        while done < n:
            r = os.copy_file_range(s.fileno(), d.fileno(), n - done)
            assert r > 0
            done += r
    assert sha(lower / "cfr") == sha(lower / "src")
    # sendfile (splice read) out of shiftfs, into a file on the lower
    with open(mnt / "src", "rb") as s, open(lower / "sf", "wb") as d:
        done = 0
        while done < n:
            r = os.sendfile(d.fileno(), s.fileno(), done, n - done)
            assert r > 0
            done += r
    assert sha(lower / "sf") == sha(lower / "src")
    # splice through a pipe into shiftfs (splice write)
    rp, wp = os.pipe()
    try:
        with open(lower / "src", "rb") as s, open(mnt / "sp", "wb") as d:
            done = 0
            while done < n:
                k = os.splice(s.fileno(), wp, min(65536, n - done))
                assert k > 0
                done += k
                while k:
                    k -= os.splice(rp, d.fileno(), k)
    finally:
        os.close(rp)
        os.close(wp)
    assert sha(lower / "sp") == sha(lower / "src")


FICLONE = 0x40049409


def test_clone_shares_extents_where_the_lower_can(lower, mnt):
    (lower / "probe-a").write_bytes(b"x" * 4096)
    with open(lower / "probe-a", "rb") as s, open(lower / "probe-b", "wb") as d:
        e = errno_of(fcntl.ioctl, d.fileno(), FICLONE, s.fileno())
    if e in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL, errno.EXDEV):
        pytest.skip(f"{fstype(lower)} lower cannot clone (reflink): "
                    f"{os.strerror(e)}")
    assert e == 0
    shift_down(lower, mnt)
    data = pattern(256 * 1024, seed=7)
    (mnt / "a").write_bytes(data)
    with open(mnt / "a", "rb") as s, open(mnt / "b", "wb") as d:
        fcntl.ioctl(d.fileno(), FICLONE, s.fileno())
    assert (lower / "b").read_bytes() == data
    assert os.stat(mnt / "b").st_size == len(data)


def test_fallocate_seek_fsync(lower, mnt):
    shift_down(lower, mnt)
    fd = os.open(mnt / "fa", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.posix_fallocate(fd, 0, 4 * MiB)
        assert os.fstat(fd).st_size == 4 * MiB
        assert os.stat(lower / "fa").st_size == 4 * MiB
        os.pwrite(fd, b"data", 3 * MiB)
        os.fsync(fd)
        os.fdatasync(fd)
        assert os.lseek(fd, 0, os.SEEK_END) == 4 * MiB
        assert os.lseek(fd, 10, os.SEEK_SET) == 10
        assert os.read(fd, 4) == b"\0" * 4
        # SEEK_DATA/SEEK_HOLE answer what the lower answers
        with open(lower / "fa", "rb") as g:
            for whence in (os.SEEK_DATA, os.SEEK_HOLE):
                want = errno_of(os.lseek, g.fileno(), 0, whence) or \
                    os.lseek(g.fileno(), 0, whence)
                got = errno_of(os.lseek, fd, 0, whence) or \
                    os.lseek(fd, 0, whence)
                assert got == want
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    assert (lower / "fa").read_bytes()[3 * MiB:3 * MiB + 4] == b"data"


# --------------------------------------------------------- suid stripping

def test_write_by_non_owner_strips_suid_sgid(lower, mnt):
    """A container user writing a setuid/setgid file it does not own
    clears both bits (view rules), and the lower file loses them."""
    (lower / "s").write_bytes(b"#!/bin/sh\n")
    os.chown(lower / "s", 1000, 1000)
    os.chmod(lower / "s", 0o6777)
    (lower / "k").write_bytes(b"keep\n")
    os.chmod(lower / "k", 0o6777)
    mount_shiftfs(lower, mnt, SHIFT_UP)

    def as_other_user():
        with open(mnt / "s", "ab") as f:
            f.write(b"echo hi\n")
        return stat.S_IMODE(os.stat(mnt / "s").st_mode)

    mode = as_process(as_other_user, userns=container_map(), uid=2000,
                      gid=2000)
    assert mode == 0o777
    assert stat.S_IMODE(os.stat(lower / "s").st_mode) == 0o777
    assert (lower / "s").read_bytes() == b"#!/bin/sh\necho hi\n"

    # host root has CAP_FSETID: its write keeps the bits (as on the lower)
    with open(mnt / "k", "ab") as f:
        f.write(b"more\n")
    assert stat.S_IMODE(os.stat(lower / "k").st_mode) == 0o6777


def test_truncate_and_fallocate_by_non_owner_strip_suid(lower, mnt):
    (lower / "t").write_bytes(b"x" * 100)
    os.chown(lower / "t", 1000, 1000)
    os.chmod(lower / "t", 0o6777)
    mount_shiftfs(lower, mnt, SHIFT_UP)

    def as_other_user():
        fd = os.open(mnt / "t", os.O_RDWR)
        try:
            os.posix_fallocate(fd, 0, 8192)
        finally:
            os.close(fd)
        return stat.S_IMODE(os.stat(mnt / "t").st_mode)

    assert as_process(as_other_user, userns=container_map(), uid=2000,
                      gid=2000) == 0o777
    assert stat.S_IMODE(os.stat(lower / "t").st_mode) == 0o777


# ------------------------------------------------------------------ locks

F_OFD_GETLK, F_OFD_SETLK = 36, 37


def flock_struct(ltype, start=0, length=0):
    return struct.pack("hhqqi4x", ltype, os.SEEK_SET, start, length, 0)


def getlk(fd, cmd=fcntl.F_GETLK, ltype=fcntl.F_WRLCK):
    r = fcntl.fcntl(fd, cmd, flock_struct(ltype))
    t, _, start, length, pid = struct.unpack("hhqqi4x", r)
    return t, pid


def _holder(path, how, ready_w, go_r):
    """Child: take a lock on path, report, wait, exit (dropping it)."""
    fd = os.open(path, os.O_RDWR)
    if how == "posix":
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    elif how == "ofd":
        fcntl.fcntl(fd, F_OFD_SETLK, flock_struct(fcntl.F_WRLCK))
    else:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(ready_w, b"r")
    os.read(go_r, 1)
    os._exit(0)


def hold_lock(path, how):
    """Fork a process holding a lock of kind how on path; returns a
    release() that ends it."""
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            _holder(path, how, ready_w, go_r)
        finally:
            os._exit(1)
    os.close(ready_w)
    os.close(go_r)
    assert os.read(ready_r, 1) == b"r", "lock holder failed"

    def release():
        os.write(go_w, b"g")
        os.waitpid(pid, 0)
        os.close(go_w)
        os.close(ready_r)
    release.pid = pid
    return release


def try_lock(path, how):
    fd = os.open(path, os.O_RDWR)
    try:
        if how == "posix":
            return errno_of(fcntl.lockf, fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if how == "ofd":
            return errno_of(fcntl.fcntl, fd, F_OFD_SETLK,
                            flock_struct(fcntl.F_WRLCK))
        return errno_of(fcntl.flock, fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


@pytest.mark.parametrize("how", ["posix", "ofd", "flock"])
def test_locks_conflict_between_lower_and_shiftfs_users(lower, mnt, how):
    (lower / "l").write_bytes(b"lock me")
    os.chmod(lower / "l", 0o666)
    shift_down(lower, mnt)
    busy = errno.EAGAIN if how != "flock" else errno.EWOULDBLOCK

    for holder, other in ((lower / "l", mnt / "l"), (mnt / "l", lower / "l")):
        release = hold_lock(holder, how)
        try:
            assert try_lock(other, how) in (busy, errno.EACCES)
            if how == "posix":
                fd = os.open(other, os.O_RDWR)
                try:
                    t, pid = getlk(fd)
                finally:
                    os.close(fd)
                assert t == fcntl.F_WRLCK and pid == release.pid
            if how == "ofd":
                fd = os.open(other, os.O_RDWR)
                try:
                    t, pid = getlk(fd, F_OFD_GETLK)
                finally:
                    os.close(fd)
                assert t == fcntl.F_WRLCK and pid == -1
        finally:
            release()
        # the holder is gone: its lock went with it
        assert try_lock(other, how) == 0


def test_posix_lock_released_by_closing_any_fd(lower, mnt):
    (lower / "l").write_bytes(b"x")
    shift_down(lower, mnt)
    fd = os.open(mnt / "l", os.O_RDWR)
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def other():
        return try_lock(lower / "l", "posix")

    assert as_process(other) in (errno.EAGAIN, errno.EACCES)
    # POSIX: closing another descriptor of the file drops the lock
    os.close(os.open(mnt / "l", os.O_RDONLY))
    assert as_process(other) == 0
    os.close(fd)

    # an flock stays with its open file until that file is closed
    fd = os.open(mnt / "l", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    dup = os.dup(fd)
    os.close(fd)
    assert as_process(lambda: try_lock(lower / "l", "flock")) == \
        errno.EWOULDBLOCK
    os.close(dup)
    assert as_process(lambda: try_lock(lower / "l", "flock")) == 0


def test_lease_on_shiftfs_file(lower, mnt):
    (lower / "le").write_bytes(b"x")
    shift_down(lower, mnt)
    fd = os.open(mnt / "le", os.O_RDONLY)
    try:
        F_SETLEASE, F_GETLEASE = 1024, 1025
        fcntl.fcntl(fd, F_SETLEASE, fcntl.F_RDLCK)
        assert fcntl.fcntl(fd, F_GETLEASE) == fcntl.F_RDLCK
        fcntl.fcntl(fd, F_SETLEASE, fcntl.F_UNLCK)
    finally:
        os.close(fd)


# ----------------------------------------------------------------- ioctls

FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
FS_IOC_GETVERSION = 0x80087601
FS_IOC_FSGETXATTR = 0x801C581F
FS_IOC_FSSETXATTR = 0x401C5820
FS_IOC_FIEMAP = 0xC020660B
FS_NOATIME_FL = 0x80
FS_XFLAG_NOATIME = 0x40


def ioctl_int(path, req, value=None):
    fd = os.open(path, os.O_RDONLY)
    try:
        buf = array.array("l" if req in (FS_IOC_GETFLAGS, FS_IOC_SETFLAGS,
                                         FS_IOC_GETVERSION) else "i",
                          [value or 0])
        fcntl.ioctl(fd, req, buf, True)
        return buf[0] & 0xFFFFFFFF
    finally:
        os.close(fd)


def outcome(fn, *a):
    try:
        return ("ok", fn(*a))
    except OSError as e:
        return ("err", e.errno)


def test_getflags_setflags_getversion_like_the_lower(lower, mnt):
    (lower / "f").write_bytes(b"x")
    (lower / "g").write_bytes(b"x")
    shift_down(lower, mnt)
    assert outcome(ioctl_int, mnt / "f", FS_IOC_GETFLAGS) == \
        outcome(ioctl_int, lower / "f", FS_IOC_GETFLAGS)
    assert outcome(ioctl_int, mnt / "f", FS_IOC_GETVERSION) == \
        outcome(ioctl_int, lower / "f", FS_IOC_GETVERSION)
    lo = outcome(ioctl_int, lower / "g", FS_IOC_GETFLAGS)
    if lo[0] == "err":
        pytest.skip(f"{fstype(lower)} lower has no FS_IOC_GETFLAGS: "
                    f"{os.strerror(lo[1])}")
    flags = ioctl_int(mnt / "f", FS_IOC_GETFLAGS)
    r = outcome(ioctl_int, mnt / "f", FS_IOC_SETFLAGS, flags | FS_NOATIME_FL)
    want = outcome(ioctl_int, lower / "g", FS_IOC_SETFLAGS,
                   lo[1] | FS_NOATIME_FL)
    assert r[0] == want[0]
    if r[0] == "ok":
        assert ioctl_int(lower / "f", FS_IOC_GETFLAGS) & FS_NOATIME_FL
        assert ioctl_int(mnt / "f", FS_IOC_GETFLAGS) & FS_NOATIME_FL
    # chattr/lsattr see the same through the view
    assert os.system(f"lsattr -d {mnt}/f >/dev/null 2>&1") == \
        os.system(f"lsattr -d {lower}/f >/dev/null 2>&1")


def fsxattr(path, set_xflags=None):
    fd = os.open(path, os.O_RDONLY)
    try:
        buf = bytearray(28)
        fcntl.ioctl(fd, FS_IOC_FSGETXATTR, buf, True)
        if set_xflags is not None:
            struct.pack_into("I", buf, 0, set_xflags)
            fcntl.ioctl(fd, FS_IOC_FSSETXATTR, bytes(buf))
            return None
        return struct.unpack_from("I", buf, 0)[0]
    finally:
        os.close(fd)


def test_fsgetxattr_fssetxattr_like_the_lower(lower, mnt):
    (lower / "f").write_bytes(b"x")
    (lower / "g").write_bytes(b"x")
    shift_down(lower, mnt)
    lo = outcome(fsxattr, lower / "g")
    assert outcome(fsxattr, mnt / "f") == outcome(fsxattr, lower / "f")
    if lo[0] == "err":
        pytest.skip(f"{fstype(lower)} lower has no FS_IOC_FSGETXATTR: "
                    f"{os.strerror(lo[1])}")
    want = outcome(fsxattr, lower / "g", lo[1] | FS_XFLAG_NOATIME)
    got = outcome(fsxattr, mnt / "f", lo[1] | FS_XFLAG_NOATIME)
    assert got[0] == want[0]
    assert fsxattr(lower / "f") == fsxattr(lower / "g")
    assert fsxattr(mnt / "f") == fsxattr(lower / "f")


def fiemap_extents(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        # struct fiemap: start, length, flags, mapped, count, reserved
        hdr = struct.pack("QQIIII", 0, 0xFFFFFFFFFFFFFFFF, 1, 0, 32, 0)
        buf = bytearray(hdr + bytes(56 * 32))
        fcntl.ioctl(fd, FS_IOC_FIEMAP, buf, True)
        n = struct.unpack_from("I", buf, 20)[0]
        out = []
        for i in range(n):
            logical, physical, length = struct.unpack_from("QQQ", buf,
                                                           32 + 56 * i)
            out.append((logical, physical, length))
        return out
    finally:
        os.close(fd)


def test_fiemap_like_the_lower_and_unknown_ioctls_enotty(lower, mnt):
    (lower / "f").write_bytes(pattern(256 * 1024, seed=9))
    os.sync()
    shift_down(lower, mnt)
    assert outcome(fiemap_extents, mnt / "f") == \
        outcome(fiemap_extents, lower / "f")
    fd = os.open(mnt / "f", os.O_RDONLY)
    try:
        for req in (0x1234, 0x80047601 ^ 0x100, 0x5401):    # TCGETS too
            assert errno_of(fcntl.ioctl, fd, req, bytearray(64), True) == \
                errno.ENOTTY
    finally:
        os.close(fd)
