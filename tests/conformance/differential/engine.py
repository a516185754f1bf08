"""The differential engine: run one operation as one actor on a tree seen
through a mount, and capture everything that should be equal between
shiftfs and an upstream idmapped mount of the same map.

A case's tree is made by host root directly on the lower (disk ids).  The
mount shows disk id N as BASE + N (uidmap=0:BASE:COUNT), so the container
(a user namespace mapping 0..COUNT-1 to BASE) sees N.  An outcome is:

- ``ret``: what the operation returned, or ``E<NAME>`` for its errno;
- ``view``: uid, gid, mode (and ACL / capability xattrs) of every entry of
  the case dir as host root sees it through the mount;
- ``disk``: the same read on the lower, plus the raw security.capability.

Timestamps, inode numbers and devices are left out; operations that are
about times return booleans computed in the actor.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import stat
import struct
import traceback
from dataclasses import dataclass
from pathlib import Path

BASE = 0x20000
COUNT = 0x10000

libc = ctypes.CDLL(None, use_errno=True)

# capability numbers (linux/capability.h)
CAP = {"CHOWN": 0, "DAC_OVERRIDE": 1, "DAC_READ_SEARCH": 2, "FOWNER": 3,
       "FSETID": 4, "KILL": 5, "SETGID": 6, "SETUID": 7, "SETPCAP": 8,
       "LINUX_IMMUTABLE": 9, "NET_RAW": 13, "SYS_ADMIN": 21, "MKNOD": 27,
       "SETFCAP": 31}
ALL_CAPS = (1 << 41) - 1
PR_SET_KEEPCAPS = 8
PR_CAP_AMBIENT = 47


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def capset(mask: int) -> None:
    """Set effective = permitted = mask (inheritable empty)."""
    hdr = _CapHeader(0x20080522, 0)
    data = (_CapData * 2)()
    for i in range(2):
        word = (mask >> (32 * i)) & 0xFFFFFFFF
        data[i].effective = word
        data[i].permitted = word
        data[i].inheritable = 0
    if libc.capset(ctypes.byref(hdr), data) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"capset: {os.strerror(e)}")


@dataclass(frozen=True)
class Actor:
    """Who performs an operation."""

    name: str
    container: bool          # in the user namespace 0..COUNT-1 -> BASE
    uid: int                 # in its own namespace
    gid: int
    groups: tuple[int, ...] = ()
    caps: int | None = None  # None: what the uid gets by default
    fsuid: int | None = None  # a different fsuid (init-ns actors)

    def vid(self, n: int) -> int:
        """Container id n in this actor's own terms."""
        return n if self.container else BASE + n


def _caps(*names: str) -> int:
    m = 0
    for n in names:
        m |= 1 << CAP[n]
    return m


def _all_but(*names: str) -> int:
    return ALL_CAPS & ~_caps(*names)


ACTORS: tuple[Actor, ...] = (
    Actor("host-root", False, 0, 0),
    Actor("ct-root", True, 0, 0),
    Actor("ct-root-no-chown", True, 0, 0, caps=_all_but("CHOWN")),
    Actor("ct-root-no-fowner", True, 0, 0, caps=_all_but("FOWNER")),
    Actor("ct-root-no-fsetid", True, 0, 0, caps=_all_but("FSETID")),
    Actor("ct-root-no-dac", True, 0, 0,
          caps=_all_but("DAC_OVERRIDE", "DAC_READ_SEARCH")),
    Actor("ct-root-no-dac-override", True, 0, 0,
          caps=_all_but("DAC_OVERRIDE")),
    Actor("ct-user", True, 1000, 1000),
    Actor("ct-user-grp", True, 3000, 3000, groups=(1000,)),
    Actor("ct-user-chown", True, 1000, 1000, caps=_caps("CHOWN")),
    Actor("ct-user-fowner", True, 1000, 1000, caps=_caps("FOWNER")),
    Actor("ct-user-fsetid", True, 1000, 1000, caps=_caps("FSETID")),
    Actor("ct-user-dac-read-search", True, 3000, 3000,
          caps=_caps("DAC_READ_SEARCH")),
    Actor("host-unmapped", False, 5000, 5000),
    Actor("host-root-unmapped-fsuid", False, 0, 0, fsuid=5000),
)


class UsernsPool:
    """One user namespace (0..COUNT-1 -> BASE) shared by container actors."""

    def __init__(self) -> None:
        from shiftctl.idmap import Extent
        from shiftctl.userns import make_userns

        ext = [Extent(0, BASE, COUNT)]
        self.fd = make_userns(ext, ext)

    def close(self) -> None:
        os.close(self.fd)


def become(actor: Actor, userns_fd: int) -> None:
    """In a forked child: take on the actor's credentials."""
    if actor.container:
        from shiftctl import syscalls

        syscalls.setns(userns_fd, syscalls.CLONE_NEWUSER)
    if actor.caps is not None:
        libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0)
    os.setgroups(list(actor.groups))
    os.setresgid(actor.gid, actor.gid, actor.gid)
    os.setresuid(actor.uid, actor.uid, actor.uid)
    if actor.caps is not None:
        capset(actor.caps)
    if actor.fsuid is not None:
        libc.setfsuid(actor.fsuid)
        libc.setfsgid(actor.fsuid)


def errname(e: int) -> str:
    return "E" + (errno.errorcode.get(e, str(e))[1:]
                  if errno.errorcode.get(e, "").startswith("E")
                  else str(e))


class Worker:
    """A long-lived child that has become `actor` and runs operations on
    request (a fork per operation is far too slow under TCG).  Requests and
    replies are JSON lines over two pipes."""

    def __init__(self, actor: Actor, userns_fd: int, ops: dict) -> None:
        self.actor = actor
        req_r, self._req_w = os.pipe()
        self._rep_r, rep_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            os.close(self._req_w)
            os.close(self._rep_r)
            self._serve(req_r, rep_w, userns_fd, ops)
        os.close(req_r)
        os.close(rep_w)
        self._rep = os.fdopen(self._rep_r, "rb")
        self._req = os.fdopen(self._req_w, "wb")

    def _serve(self, req_r: int, rep_w: int, userns_fd: int, ops: dict):
        code = 0
        try:
            os.umask(0o022)
            become(self.actor, userns_fd)
            req = os.fdopen(req_r, "rb")
            rep = os.fdopen(rep_w, "wb")
            for line in req:
                name, path = json.loads(line)
                if name is None:        # quit
                    break
                try:
                    out = {"ret": ops[name](path, self.actor.vid,
                                            self.actor.name)}
                except OSError as e:
                    out = {"ret": errname(e.errno)}
                except BaseException:   # noqa: B036 - report, keep serving
                    out = {"crash": traceback.format_exc()}
                rep.write(json.dumps(out, default=repr).encode() + b"\n")
                rep.flush()
        except BaseException:           # noqa: B036
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)

    def call(self, name: str, path: str):
        self._req.write(json.dumps([name, path]).encode() + b"\n")
        self._req.flush()
        line = self._rep.readline()
        if not line:
            raise AssertionError(f"actor {self.actor.name}: worker died")
        res = json.loads(line)
        if "crash" in res:
            raise AssertionError(f"actor {self.actor.name} crashed:\n"
                                 f"{res['crash']}")
        return res["ret"]

    def close(self) -> None:
        # an explicit quit: later workers inherited our pipe's write end,
        # so EOF alone would never reach this one
        try:
            self._req.write(json.dumps([None, None]).encode() + b"\n")
            self._req.flush()
        except OSError:
            pass
        self._req.close()
        self._rep.close()
        os.waitpid(self.pid, 0)


# ------------------------------------------------------------- capturing

XATTRS = ("system.posix_acl_access", "system.posix_acl_default",
          "security.capability")


def decode_acl(raw: bytes) -> list:
    if len(raw) < 4:
        return ["short"]
    out = []
    for off in range(4, len(raw) - 7, 8):
        tag, perm, ident = struct.unpack_from("<HHI", raw, off)
        out.append([tag, perm, ident if tag in (2, 8) else None])
    return out


def decode_cap(raw: bytes) -> list:
    if len(raw) < 4:
        return ["short"]
    magic = struct.unpack_from("<I", raw)[0]
    words = list(struct.unpack_from("<" + "I" * ((len(raw) - 4) // 4), raw, 4))
    return [hex(magic), words]


def _xattrs(path: str) -> dict:
    out = {}
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        return {} if e.errno == errno.EOPNOTSUPP else {"list": errname(e.errno)}
    for name in XATTRS:
        if name not in names:
            continue
        try:
            raw = os.getxattr(path, name, follow_symlinks=False)
        except OSError as e:
            if e.errno in (errno.ENODATA, errno.EOPNOTSUPP):
                continue
            out[name] = errname(e.errno)
            continue
        out[name] = decode_cap(raw) if name.endswith("capability") \
            else decode_acl(raw)
    return out


def _entry(path: str, st: os.stat_result) -> list:
    mode = st.st_mode
    if stat.S_ISREG(mode):
        # the template's data files are tiny; the binaries' sizes depend on
        # the host's coreutils build and would tie the reference to it
        extra: object = st.st_size if st.st_size < 4096 else "large"
    elif stat.S_ISLNK(mode):
        extra = os.readlink(path)
    elif stat.S_ISCHR(mode):
        extra = [os.major(st.st_rdev), os.minor(st.st_rdev)]
    else:
        extra = None
    return [st.st_uid, st.st_gid, oct(mode), extra,
            {} if stat.S_ISLNK(mode) else _xattrs(path)]


def snapshot(root: Path) -> dict:
    """rel path -> [uid, gid, mode, size-or-target, xattrs] under root."""
    top = str(root)
    out = {".": _entry(top, os.lstat(top))}
    todo = [("", top)]
    while todo:
        rel, path = todo.pop()
        try:
            entries = list(os.scandir(path))
        except OSError as e:
            out[rel or "."] = errname(e.errno)
            continue
        for de in entries:
            r = f"{rel}/{de.name}" if rel else de.name
            try:
                st = de.stat(follow_symlinks=False)
            except OSError as e:
                out[r] = errname(e.errno)
                continue
            out[r] = _entry(de.path, st)
            if stat.S_ISDIR(st.st_mode):
                todo.append((r, de.path))
    return dict(sorted(out.items()))


def outcome(worker: Worker, op: str, view: Path, lower: Path) -> dict:
    ret = worker.call(op, str(view))
    return {"ret": ret, "view": snapshot(view), "disk": snapshot(lower)}
