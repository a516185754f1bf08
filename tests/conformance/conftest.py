"""Fixtures for the shiftfs conformance suite (run in the guest as root).

- ``lower``: a fresh, empty directory on each lower filesystem (tmpfs, and
  ext4, xfs, btrfs on loop images kept on a tmpfs), one per test.
- ``mnt``: an empty mount point, unmounted (lazily, recursively) after the
  test.
- ``sfs``: helpers around the new mount API (fsopen/fsconfig/fsmount,
  open_tree, move_mount) through ctypes, reading the fs_context log.
- ``as_process()``: run a function in a forked child with other
  credentials: another uid, or root of a new user namespace with a given
  map (written by us, as root, like newuidmap would).
"""

import ctypes
import errno
import json
import os
import shutil
import struct
import subprocess
import tempfile
import traceback
from pathlib import Path

import pytest

SCRATCH = Path("/run/shiftfs-conformance")
LOWER_FS = ["tmpfs", "ext4", "xfs", "btrfs"]
BASE = 0x20000           # the container range used throughout
RANGE = 0x10000

libc = ctypes.CDLL(None, use_errno=True)

# x86_64 syscall numbers
NR_open_tree = 428
NR_move_mount = 429
NR_fsopen = 430
NR_fsconfig = 431
NR_fsmount = 432
NR_delete_module = 176

FSOPEN_CLOEXEC = 0x1
FSCONFIG_SET_FLAG = 0
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6
FSMOUNT_CLOEXEC = 0x1
OPEN_TREE_CLONE = 0x1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 0x4
AT_FDCWD = -100
AT_RECURSIVE = 0x8000
AT_SYMLINK_FOLLOW = 0x400
AT_EMPTY_PATH = 0x1000
CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
RENAME_WHITEOUT = 4
MNT_DETACH = 2
MS_REC = 0x4000
MS_PRIVATE = 0x40000


def overflowuid() -> int:
    return int(Path("/proc/sys/fs/overflowuid").read_text())


def overflowgid() -> int:
    return int(Path("/proc/sys/fs/overflowgid").read_text())


def run(*cmd, check=True, **kw):
    return subprocess.run(cmd, check=check, capture_output=True, text=True,
                          **kw)


def shiftfs_loaded() -> bool:
    return any(line.split()[-1] == "shiftfs"
               for line in Path("/proc/filesystems").read_text().splitlines())


# ---------------------------------------------------------------- syscalls

def _check(ret, what):
    if ret < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")
    return ret


def renameat2(old, new, flags):
    return _check(libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD,
                                 os.fsencode(new), ctypes.c_uint(flags)),
                  "renameat2")


def linkat_fd(fd, new):
    """Give an O_TMPFILE file a name (linkat with AT_EMPTY_PATH needs
    CAP_DAC_READ_SEARCH; the /proc link with AT_SYMLINK_FOLLOW does not)."""
    return _check(libc.linkat(AT_FDCWD, os.fsencode(f"/proc/self/fd/{fd}"),
                              AT_FDCWD, os.fsencode(new), AT_SYMLINK_FOLLOW),
                  "linkat")


def sys_mount(src, target, fstype, data, flags=0):
    return _check(libc.mount(os.fsencode(src), os.fsencode(target),
                             os.fsencode(fstype) if fstype else None,
                             ctypes.c_ulong(flags),
                             os.fsencode(data) if data is not None else None),
                  "mount")


def umount(target):
    libc.umount2(os.fsencode(str(target)), MNT_DETACH)


def delete_module(name, flags=os.O_NONBLOCK):
    return _check(libc.syscall(NR_delete_module, os.fsencode(name), flags),
                  "delete_module")


def unshare(flags):
    return _check(libc.unshare(flags), "unshare")


class FsContext:
    """An fsopen() context: set options, create, read the log."""

    def __init__(self, fstype="shiftfs"):
        self.fd = _check(libc.syscall(NR_fsopen, os.fsencode(fstype),
                                      FSOPEN_CLOEXEC), "fsopen")

    def _config(self, cmd, key, value):
        k = os.fsencode(key) if key is not None else None
        v = os.fsencode(value) if value is not None else None
        return _check(libc.syscall(NR_fsconfig, self.fd, cmd, k, v, 0),
                      f"fsconfig {key}={value}")

    def flag(self, key):
        return self._config(FSCONFIG_SET_FLAG, key, None)

    def string(self, key, value):
        return self._config(FSCONFIG_SET_STRING, key, value)

    def option(self, opt):
        key, eq, value = opt.partition("=")
        return self.string(key, value) if eq else self.flag(key)

    def create(self):
        return self._config(FSCONFIG_CMD_CREATE, None, None)

    def fsmount(self):
        return _check(libc.syscall(NR_fsmount, self.fd, FSMOUNT_CLOEXEC, 0),
                      "fsmount")

    def messages(self):
        out = []
        buf = ctypes.create_string_buffer(4096)
        while True:
            n = libc.read(self.fd, buf, 4096)
            if n <= 0:
                break
            out.append(buf.raw[:n].decode(errors="replace"))
        return out

    def close(self):
        os.close(self.fd)


def open_tree_clone(path):
    return _check(libc.syscall(NR_open_tree, AT_FDCWD, os.fsencode(str(path)),
                               OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC |
                               AT_RECURSIVE), "open_tree")


def move_mount_fd(fd, target):
    return _check(libc.syscall(NR_move_mount, fd, b"", AT_FDCWD,
                               os.fsencode(str(target)),
                               MOVE_MOUNT_F_EMPTY_PATH), "move_mount")


# ------------------------------------------------------- other credentials

def as_process(fn, *, uid=None, gid=None, groups=(), userns=None,
               newns=False):
    """Run ``fn()`` in a forked child and return what it returns (JSON).

    ``userns``: (uid_map, gid_map) strings; the child enters a new user
    namespace with those maps and becomes its root (then ``uid``/``gid``
    are ids inside it).  ``newns``: also a new mount namespace.
    Exceptions in the child come back as ``{"error": ...}`` and are raised.
    """
    rd, wr = os.pipe()
    go_r, go_w = os.pipe()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        result = {}
        try:
            os.close(rd)
            os.close(go_w)
            os.close(ready_r)
            if userns:
                unshare(CLONE_NEWUSER | (CLONE_NEWNS if newns else 0))
                os.write(ready_w, b"x")
                os.read(go_r, 1)
                os.setresgid(0, 0, 0)
                os.setresuid(0, 0, 0)
            elif newns:
                unshare(CLONE_NEWNS)
            if newns:
                # keep our mounts out of the parent's peer groups
                sys_mount("none", "/", None, None, MS_REC | MS_PRIVATE)
            if gid is not None:
                os.setgroups(list(groups))
                os.setresgid(gid, gid, gid)
            if uid is not None:
                os.setresuid(uid, uid, uid)
            result = {"value": fn()}
        except OSError as e:
            result = {"oserror": e.errno, "msg": str(e)}
        except BaseException:       # noqa: B036 - report everything
            result = {"error": traceback.format_exc()}
        try:
            os.write(wr, json.dumps(result).encode())
        finally:
            os._exit(0)
    os.close(wr)
    os.close(go_r)
    os.close(ready_w)
    try:
        if userns:
            if os.read(ready_r, 1) == b"x":
                Path(f"/proc/{pid}/uid_map").write_text(userns[0])
                Path(f"/proc/{pid}/gid_map").write_text(userns[1])
            os.write(go_w, b"g")
        data = b""
        while True:
            chunk = os.read(rd, 65536)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(rd)
        os.close(go_w)
        os.close(ready_r)
        os.waitpid(pid, 0)
    result = json.loads(data or b'{"error": "child died"}')
    if "error" in result:
        raise AssertionError("child failed:\n" + result["error"])
    if "oserror" in result:
        raise OSError(result["oserror"], result["msg"])
    return result["value"]


def container_map(base=BASE, count=RANGE):
    m = f"0 {base} {count}\n"
    return (m, m)


def errno_of(fn, *args, **kw):
    """Run fn; return 0 or the errno of the OSError it raised."""
    try:
        fn(*args, **kw)
    except OSError as e:
        return e.errno
    return 0


def ids(path):
    st = os.lstat(path)
    return (st.st_uid, st.st_gid)


def lower_ids_all(root):
    """Every (path, uid, gid) below root, root included."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [dirpath] + [os.path.join(dirpath, n)
                                 for n in dirnames + filenames]:
            st = os.lstat(name)
            out.append((name, st.st_uid, st.st_gid))
    return out


def mountinfo_line(target):
    target = os.path.realpath(str(target))
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == target:
            return line
    return None


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="session", autouse=True)
def _require_shiftfs():
    if os.geteuid() != 0:
        pytest.skip("the conformance suite runs as root in the guest")
    if not shiftfs_loaded():
        run("modprobe", "shiftfs", check=False)
    if not shiftfs_loaded():
        pytest.skip("shiftfs is not loaded")


@pytest.fixture(scope="session")
def scratch():
    SCRATCH.mkdir(parents=True, exist_ok=True)
    if not os.path.ismount(SCRATCH):
        run("mount", "-t", "tmpfs", "-o", "size=3g,mode=0755", "tmpfs",
            str(SCRATCH))
    yield SCRATCH


_FS_MOUNTS = {}


def _fs_root(fstype, scratch):
    """Mount (once per session) a filesystem of fstype; return its root."""
    if fstype in _FS_MOUNTS:
        return _FS_MOUNTS[fstype]
    root = scratch / f"fs-{fstype}"
    root.mkdir(exist_ok=True)
    if fstype == "tmpfs":
        run("mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", str(root))
    else:
        for mod in ("crc32c", "crc32c_generic", "loop", fstype):
            run("modprobe", mod, check=False)
        img = scratch / f"{fstype}.img"
        with open(img, "wb") as f:
            f.truncate(512 << 20)
        mkfs = {"ext4": ["mkfs.ext4", "-q", "-F"],
                "xfs": ["mkfs.xfs", "-q", "-f"],
                "btrfs": ["mkfs.btrfs", "-q", "-f"]}[fstype]
        r = run(*mkfs, str(img), check=False)
        if r.returncode:
            pytest.skip(f"{fstype}: mkfs failed: {r.stderr.strip()}")
        r = run("mount", "-o", "loop", "-t", fstype, str(img), str(root),
                check=False)
        if r.returncode:
            pytest.skip(f"{fstype}: cannot mount a loop image: "
                        f"{r.stderr.strip()}")
    _FS_MOUNTS[fstype] = root
    return root


@pytest.fixture(scope="session", autouse=True)
def _cleanup_session():
    yield
    for root in _FS_MOUNTS.values():
        umount(root)


@pytest.fixture(params=LOWER_FS)
def lower(request, scratch):
    """A fresh empty directory (mode 0755, owned by 0:0) on a lower fs."""
    root = _fs_root(request.param, scratch)
    d = Path(tempfile.mkdtemp(prefix="t-", dir=root))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def tmpfs_lower(scratch):
    """A fresh directory on tmpfs, for tests not about the lower fs."""
    root = _fs_root("tmpfs", scratch)
    d = Path(tempfile.mkdtemp(prefix="t-", dir=root))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def mnt(scratch):
    d = Path(tempfile.mkdtemp(prefix="mnt-", dir=scratch))
    yield d
    for _ in range(8):
        if not os.path.ismount(d):
            break
        umount(d)
    try:
        d.rmdir()
    except OSError:
        pass


def mount_shiftfs(lower, target, opts):
    """mount -t shiftfs -o OPTS LOWER TARGET; raise on failure."""
    r = run("mount", "-t", "shiftfs", "-o", opts, str(lower), str(target),
            check=False)
    if r.returncode:
        raise AssertionError(f"mount -o {opts} failed: {r.stderr.strip()}")


SHIFT_DOWN = (f"shift_uids,shift_gids,uidmap={BASE:#x}:0:{RANGE:#x},"
              f"gidmap={BASE:#x}:0:{RANGE:#x}")
SHIFT_UP = (f"shift_uids,shift_gids,uidmap=0:{BASE:#x}:{RANGE:#x},"
            f"gidmap=0:{BASE:#x}:{RANGE:#x}")


__all__ = [name for name in dir() if not name.startswith("_")] + [
    "struct", "errno"]
