"""cffi (ABI mode) bindings for the mount, namespace and module syscalls.

Only libc is loaded (``ffi.dlopen(None)``); the syscalls glibc 2.36 does not
wrap everywhere are called through ``syscall(2)`` with the architecture's
numbers.  Every failure raises :class:`ShiftctlError` with one line holding
the operation, the errno name and, for fsconfig/fsmount, the reason the
kernel wrote to the filesystem context's message log (``e shiftfs: ...``).
"""

from __future__ import annotations

import errno as _errno
import os
import platform
import cffi

from shiftctl.errors import ShiftctlError

ffi = cffi.FFI()
ffi.cdef(
    """
    long syscall(long number, ...);
    int mount(const char *source, const char *target, const char *fstype,
              unsigned long flags, const void *data);
    int umount2(const char *target, int flags);
    int unshare(int flags);
    int setns(int fd, int nstype);
    int prctl(int option, ...);
    struct mount_attr {
        uint64_t attr_set;
        uint64_t attr_clr;
        uint64_t propagation;
        uint64_t userns_fd;
    };
    """
)
_libc = ffi.dlopen(None)

# Syscall numbers.  The new mount API (424+) is numbered alike on all arches.
_NR_COMMON = {
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "pidfd_open": 434,
    "mount_setattr": 442,
}
_NR_ARCH = {
    "x86_64": {"finit_module": 313, "delete_module": 176, "pivot_root": 155},
    "aarch64": {"finit_module": 273, "delete_module": 106, "pivot_root": 41},
}
_machine = platform.machine()
NR: dict[str, int] = dict(_NR_COMMON, **_NR_ARCH.get(_machine, _NR_ARCH["x86_64"]))

# fsopen / fsmount / fsconfig
FSOPEN_CLOEXEC = 0x1
FSMOUNT_CLOEXEC = 0x1
FSCONFIG_SET_FLAG = 0
FSCONFIG_SET_STRING = 1
FSCONFIG_SET_BINARY = 2
FSCONFIG_SET_PATH = 3
FSCONFIG_SET_PATH_EMPTY = 4
FSCONFIG_SET_FD = 5
FSCONFIG_CMD_CREATE = 6
FSCONFIG_CMD_RECONFIGURE = 7

# move_mount
MOVE_MOUNT_F_SYMLINKS = 0x1
MOVE_MOUNT_F_AUTOMOUNTS = 0x2
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOVE_MOUNT_T_SYMLINKS = 0x10
MOVE_MOUNT_T_AUTOMOUNTS = 0x20
MOVE_MOUNT_T_EMPTY_PATH = 0x40

# open_tree
OPEN_TREE_CLONE = 0x1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_NO_AUTOMOUNT = 0x800
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000

# mount attributes (fsmount attr_flags, mount_setattr)
MOUNT_ATTR_RDONLY = 0x00000001
MOUNT_ATTR_NOSUID = 0x00000002
MOUNT_ATTR_NODEV = 0x00000004
MOUNT_ATTR_NOEXEC = 0x00000008
MOUNT_ATTR__ATIME = 0x00000070
MOUNT_ATTR_RELATIME = 0x00000000
MOUNT_ATTR_NOATIME = 0x00000010
MOUNT_ATTR_STRICTATIME = 0x00000020
MOUNT_ATTR_NODIRATIME = 0x00000080
MOUNT_ATTR_IDMAP = 0x00100000
MOUNT_ATTR_NOSYMFOLLOW = 0x00200000

# mount(2) flags
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_NOATIME = 0x400
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_STRICTATIME = 0x1000000

# umount2
MNT_FORCE = 0x1
MNT_DETACH = 0x2
UMOUNT_NOFOLLOW = 0x8

# namespaces
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# delete_module
O_NONBLOCK = os.O_NONBLOCK
O_TRUNC = os.O_TRUNC

# prctl
PR_SET_PDEATHSIG = 1


def _c(s: str | bytes | None):
    """A C string (or NULL) kept alive by the caller's reference."""
    if s is None:
        return ffi.NULL
    if isinstance(s, str):
        s = os.fsencode(s)
    return ffi.new("char[]", s)


def errno_name(err: int) -> str:
    return _errno.errorcode.get(err, f"errno {err}")


def fs_log(fd: int) -> list[str]:
    """Drain the messages the kernel queued on an fs context fd."""
    msgs: list[str] = []
    if fd < 0:
        return msgs
    for _ in range(64):
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        msgs.append(data.decode("utf-8", "replace").rstrip("\n"))
    return msgs


def _reason(msgs: list[str]) -> str:
    """The kernel's own reason from the log: error lines first."""
    errs = [m[2:] for m in msgs if m.startswith("e ")]
    if not errs:
        errs = [m[2:] if m[1:2] == " " else m for m in msgs]
    return "; ".join(errs)


class SyscallError(ShiftctlError):
    """A failed syscall: carries the errno for callers that branch on it."""

    def __init__(self, op: str, err: int, detail: str = "", reason: str = "") -> None:
        self.op = op
        self.errno = err
        self.reason = reason
        msg = f"{op}: {errno_name(err)} ({os.strerror(err)})"
        if detail:
            msg = f"{op} {detail}: {errno_name(err)} ({os.strerror(err)})"
        if reason:
            msg += f": {reason}"
        super().__init__(msg)


def _check(ret: int, op: str, detail: str = "", log_fd: int = -1) -> int:
    if ret < 0:
        err = ffi.errno
        reason = _reason(fs_log(log_fd)) if log_fd >= 0 else ""
        raise SyscallError(op, err, detail, reason)
    return int(ret)


def _sys(name: str, *args) -> int:
    return _libc.syscall(ffi.cast("long", NR[name]), *args)


def _l(v: int):
    return ffi.cast("long", v)


# ---------------------------------------------------------------- mount API


def fsopen(fstype: str, flags: int = FSOPEN_CLOEXEC) -> int:
    name = _c(fstype)
    ret = _sys("fsopen", name, _l(flags))
    if ret < 0 and ffi.errno == _errno.ENODEV:
        raise SyscallError("fsopen", _errno.ENODEV, repr(fstype),
                           f"filesystem type {fstype} not available (module not loaded?)")
    return _check(ret, "fsopen", repr(fstype))


def fsconfig(fd: int, cmd: int, key: str | None = None,
             value: str | bytes | None = None, aux: int = 0) -> None:
    k = _c(key)
    v = _c(value) if value is not None else ffi.NULL
    ret = _sys("fsconfig", _l(fd), _l(cmd), k, v, _l(aux))
    if cmd == FSCONFIG_CMD_CREATE:
        detail = "create"
    elif cmd == FSCONFIG_SET_FLAG:
        detail = f"{key}"
    elif cmd == FSCONFIG_SET_FD:
        detail = f"{key}=<fd {aux}>"
    else:
        detail = f"{key}={value!s}" if isinstance(value, str) else f"{key}"
    _check(ret, "fsconfig", detail, log_fd=fd)


def fsmount(fd: int, flags: int = FSMOUNT_CLOEXEC, attr_flags: int = 0) -> int:
    ret = _sys("fsmount", _l(fd), _l(flags), _l(attr_flags))
    return _check(ret, "fsmount", log_fd=fd)


def move_mount(from_fd: int, from_path: str, to_fd: int, to_path: str,
               flags: int) -> None:
    fp, tp = _c(from_path), _c(to_path)
    ret = _sys("move_mount", _l(from_fd), fp, _l(to_fd), tp, _l(flags))
    _check(ret, "move_mount", f"to {to_path}" if to_path else "")


def open_tree(dfd: int, path: str, flags: int) -> int:
    p = _c(path)
    ret = _sys("open_tree", _l(dfd), p, _l(flags))
    return _check(ret, "open_tree", path)


def mount_setattr(dfd: int, path: str, flags: int, attr_set: int = 0,
                  attr_clr: int = 0, propagation: int = 0,
                  userns_fd: int = 0) -> None:
    p = _c(path)
    attr = ffi.new("struct mount_attr *")
    attr.attr_set = attr_set
    attr.attr_clr = attr_clr
    attr.propagation = propagation
    attr.userns_fd = userns_fd
    ret = _sys("mount_setattr", _l(dfd), p, _l(flags), attr,
               ffi.cast("size_t", ffi.sizeof("struct mount_attr")))
    _check(ret, "mount_setattr", path)


def pidfd_open(pid: int, flags: int = 0) -> int:
    ret = _sys("pidfd_open", _l(pid), _l(flags))
    return _check(ret, "pidfd_open", str(pid))


# ---------------------------------------------------------- classic mounts


def mount(source: str | None, target: str, fstype: str | None,
          flags: int = 0, data: str | None = None) -> None:
    s, t, f, d = _c(source), _c(target), _c(fstype), _c(data)
    ret = _libc.mount(s, t, f, flags, d)
    _check(ret, "mount", f"{source or fstype or ''} on {target}")


def umount2(target: str, flags: int = 0) -> None:
    t = _c(target)
    _check(_libc.umount2(t, flags), "umount", target)


def pivot_root(new_root: str, put_old: str) -> None:
    n, o = _c(new_root), _c(put_old)
    _check(_sys("pivot_root", n, o), "pivot_root", new_root)


# --------------------------------------------------------------- namespaces


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare", hex(flags))


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(fd, nstype), "setns", str(fd))


def set_pdeathsig(sig: int) -> None:
    _check(_libc.prctl(ffi.cast("int", PR_SET_PDEATHSIG),
                       ffi.cast("unsigned long", sig)), "prctl(PR_SET_PDEATHSIG)")


# ------------------------------------------------------------------ modules


def finit_module(fd: int, params: str = "", flags: int = 0) -> None:
    p = _c(params)
    _check(_sys("finit_module", _l(fd), p, _l(flags)), "finit_module")


def delete_module(name: str, flags: int = O_NONBLOCK) -> None:
    n = _c(name)
    _check(_sys("delete_module", n, _l(flags)), "delete_module", name)
