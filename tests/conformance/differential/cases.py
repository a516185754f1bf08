"""The cases: one lower tree template, and operations on it.

Ids in the template are disk ids; through the mount (uidmap=0:BASE:COUNT)
the container sees them unchanged and the host sees BASE + id.  An
operation gets the case dir through the mount, ``vid`` (container id n ->
the actor's own terms) and the actor's name; it returns something JSON-able
or raises OSError (recorded as its errno).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import stat
import struct
import subprocess
from pathlib import Path

libc = ctypes.CDLL(None, use_errno=True)

UNMAPPED_DISK = 70000        # a disk id outside 0..COUNT-1: shows as overflow
ID_BIN = shutil.which("id") or "/usr/bin/id"
CAT_BIN = shutil.which("cat") or "/bin/cat"

ACL_USER_OBJ, ACL_USER, ACL_GROUP_OBJ, ACL_GROUP, ACL_MASK, ACL_OTHER = (
    1, 2, 4, 8, 0x10, 0x20)


def acl_xattr(entries: list[tuple[int, int, int]]) -> bytes:
    """posix_acl_xattr bytes: version 2, then (tag, perm, id) entries."""
    raw = struct.pack("<I", 2)
    for tag, perm, ident in sorted(entries, key=lambda e: (e[0], e[2])):
        raw += struct.pack("<HHI", tag, perm, ident & 0xFFFFFFFF)
    return raw


def std_acl(user_perm: int = 6, extra=()) -> bytes:
    return acl_xattr([(ACL_USER_OBJ, 6, 0xFFFFFFFF),
                      (ACL_GROUP_OBJ, 4, 0xFFFFFFFF),
                      (ACL_MASK, 7, 0xFFFFFFFF),
                      (ACL_OTHER, 0, 0xFFFFFFFF), *extra])


def cap_v2(permitted: int, effective: bool = True) -> bytes:
    return struct.pack("<IIIII", 0x02000000 | int(effective),
                       permitted & 0xFFFFFFFF, 0, permitted >> 32, 0)


def cap_v3(permitted: int, rootid: int, effective: bool = True) -> bytes:
    return cap_v2(permitted, effective) + struct.pack("<I", rootid)


NET_RAW = 1 << 13


BINARIES = (("exe_suid", ID_BIN, 0o4755, 0, 0),
            ("exe_sgid", ID_BIN, 0o2755, 0, 1000),
            ("exe_user_suid", ID_BIN, 0o4755, 1000, 1000),
            ("capf", CAT_BIN, 0o755, 0, 0))


def binaries(parent: Path) -> Path:
    """parent/.bin: the executables of the template, made once."""
    masters = parent / ".bin"
    if (masters / "capf").exists():
        return masters
    masters.mkdir(exist_ok=True)
    for rel, src, mode, uid, gid in BINARIES:
        shutil.copyfile(src, masters / rel)
        os.chown(masters / rel, uid, gid)
        os.chmod(masters / rel, mode)
    os.setxattr(masters / "capf", "security.capability", cap_v2(NET_RAW))
    return masters


def make_tree(d: Path) -> None:
    """The template, made by host root on the lower (disk ids)."""
    def f(rel, mode, uid, gid, data=b"data\n"):
        p = d / rel
        p.write_bytes(data)
        os.chown(p, uid, gid)
        os.chmod(p, mode)

    def dr(rel, mode, uid, gid):
        p = d / rel
        p.mkdir()
        os.chown(p, uid, gid)
        os.chmod(p, mode)

    d.mkdir()
    os.chmod(d, 0o755)
    f("rootf", 0o644, 0, 0)
    f("userf", 0o644, 1000, 1000)
    f("user600", 0o600, 1000, 1000)
    f("otherf", 0o640, 2000, 2000)
    f("grpf", 0o664, 0, 1000)
    f("unmapped", 0o644, UNMAPPED_DISK, UNMAPPED_DISK)
    f("suid_w", 0o6777, 0, 0)
    f("user_suid", 0o6755, 1000, 1000)
    # The binaries are hard links to masters made once per lower (no case
    # changes them): copying them for every case is too slow under TCG.
    masters = binaries(d.parent)
    for rel in ("exe_suid", "exe_sgid", "exe_user_suid", "capf"):
        os.link(masters / rel, d / rel)
    dr("sub", 0o755, 1000, 1000)
    f("sub/x", 0o644, 1000, 1000)
    dr("empty", 0o755, 1000, 1000)
    dr("sticky", 0o1777, 0, 0)
    f("sticky/u1000", 0o644, 1000, 1000)
    f("sticky/u2000", 0o666, 2000, 2000)
    os.symlink("../rootf", d / "sticky/ulink")
    os.lchown(d / "sticky/ulink", 2000, 2000)
    dr("sgid", 0o2775, 0, 1000)
    dr("dacl", 0o775, 0, 0)
    os.setxattr(d / "dacl", "system.posix_acl_default",
                acl_xattr([(ACL_USER_OBJ, 7, 0xFFFFFFFF),
                           (ACL_USER, 7, 1000),
                           (ACL_GROUP_OBJ, 5, 0xFFFFFFFF),
                           (ACL_MASK, 7, 0xFFFFFFFF),
                           (ACL_OTHER, 5, 0xFFFFFFFF)]))
    f("acl", 0o640, 0, 0)
    os.setxattr(d / "acl", "system.posix_acl_access",
                std_acl(extra=[(ACL_USER, 6, 1000), (ACL_GROUP, 4, 2000)]))
    os.symlink("rootf", d / "link")
    os.lchown(d / "link", 0, 0)


# ---------------------------------------------------------------- helpers

def st3(p) -> list:
    st = os.lstat(p)
    return [st.st_uid, st.st_gid, oct(st.st_mode)]


def fd_op(path, flags, fn):
    fd = os.open(path, flags)
    try:
        return fn(fd)
    finally:
        os.close(fd)


def renameat2(old, new, flags):
    if libc.renameat2(-100, os.fsencode(old), -100, os.fsencode(new),
                      ctypes.c_uint(flags)) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return 0


def run_out(*cmd) -> list:
    p = subprocess.run(cmd, capture_output=True, text=True)
    return [p.returncode, p.stdout.strip()]


def create(path, mode=0o644, flags=0):
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | flags, mode)
    os.close(fd)
    return st3(path)


def xget(path, name):
    raw = os.getxattr(path, name, follow_symlinks=False)
    return list(raw)


def capeff(d) -> list:
    code, out = run_out(f"{d}/capf", "/proc/self/status")
    return [code] + [ln for ln in out.splitlines()
                     if ln.startswith(("CapEff", "CapPrm"))]


def tmpfile_link(d):
    fd = os.open(d, os.O_TMPFILE | os.O_WRONLY, 0o640)
    try:
        os.write(fd, b"tmp")
        before = os.fstat(fd)
        if libc.linkat(-100, os.fsencode(f"/proc/self/fd/{fd}"), -100,
                       os.fsencode(f"{d}/tmpnamed"), 0x400) != 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
        return [before.st_uid, before.st_gid, oct(before.st_mode)]
    finally:
        os.close(fd)


def protected(kind: str, value: int):
    Path(f"/proc/sys/fs/protected_{kind}").write_text(f"{value}\n")


# ------------------------------------------------------------- operations
# name -> op(d, vid, who).  Keep names stable: they key the reference file.

OPS = {
    # stat family
    "stat-ids": lambda d, vid, who: [st3(f"{d}/{n}") for n in (
        "rootf", "userf", "unmapped", "sub", "link", "sgid", "sticky")],
    "stat-follow": lambda d, vid, who: (lambda s: [s.st_uid, s.st_gid])(
        os.stat(f"{d}/link")),
    "readdir": lambda d, vid, who: sorted(os.listdir(d)),
    # chmod
    "chmod-root-file": lambda d, vid, who: os.chmod(f"{d}/rootf", 0o600),
    "chmod-user-file": lambda d, vid, who: os.chmod(f"{d}/userf", 0o600),
    "chmod-setuid": lambda d, vid, who: os.chmod(f"{d}/userf", 0o4755),
    "chmod-setgid-not-member": lambda d, vid, who:
        os.chmod(f"{d}/otherf", 0o2755),
    "chmod-setgid-owner": lambda d, vid, who: os.chmod(f"{d}/userf", 0o2755),
    "chmod-sticky-dir": lambda d, vid, who: os.chmod(f"{d}/sub", 0o1777),
    "chmod-unmapped-owner": lambda d, vid, who:
        os.chmod(f"{d}/unmapped", 0o600),
    # chown
    "chown-user-to-2000": lambda d, vid, who:
        os.chown(f"{d}/userf", vid(2000), vid(2000)),
    "chown-group-only": lambda d, vid, who:
        os.chown(f"{d}/userf", -1, vid(2000)),
    "chown-group-member": lambda d, vid, who:
        os.chown(f"{d}/grpf", -1, vid(1000)),
    "chown-owner-noop": lambda d, vid, who:
        os.chown(f"{d}/userf", vid(1000), -1),
    "chown-both-minus-one": lambda d, vid, who: os.chown(f"{d}/userf", -1, -1),
    "chown-root-to-user": lambda d, vid, who:
        os.chown(f"{d}/rootf", vid(1000), vid(1000)),
    "lchown-symlink": lambda d, vid, who:
        os.lchown(f"{d}/link", vid(1000), vid(1000)),
    "fchown": lambda d, vid, who: fd_op(f"{d}/userf", os.O_RDONLY,
                                        lambda fd: os.fchown(fd, vid(0),
                                                             vid(0))),
    "fchownat-nofollow": lambda d, vid, who: fd_op(
        d, os.O_RDONLY | os.O_DIRECTORY,
        lambda fd: os.chown("sub", vid(2000), -1, dir_fd=fd,
                            follow_symlinks=False)),
    "chown-unmapped-owner": lambda d, vid, who:
        os.chown(f"{d}/unmapped", vid(0), vid(0)),
    "chown-to-unmapped-id": lambda d, vid, who:
        os.chown(f"{d}/userf", vid(UNMAPPED_DISK), -1),
    "chown-strips-suid": lambda d, vid, who:
        os.chown(f"{d}/user_suid", vid(1000), vid(1000)),
    # open
    "open-rdonly-root": lambda d, vid, who:
        fd_op(f"{d}/rootf", os.O_RDONLY, lambda fd: os.read(fd, 9).decode()),
    "open-wronly-root": lambda d, vid, who:
        fd_op(f"{d}/rootf", os.O_WRONLY, lambda fd: 0),
    "open-rdonly-600": lambda d, vid, who:
        fd_op(f"{d}/user600", os.O_RDONLY, lambda fd: 0),
    "open-rdwr-600": lambda d, vid, who:
        fd_op(f"{d}/user600", os.O_RDWR, lambda fd: 0),
    "open-other-group": lambda d, vid, who:
        fd_op(f"{d}/otherf", os.O_RDONLY, lambda fd: 0),
    "open-create-excl": lambda d, vid, who: create(f"{d}/new"),
    "open-create-exists": lambda d, vid, who: create(f"{d}/rootf"),
    "open-trunc": lambda d, vid, who:
        fd_op(f"{d}/userf", os.O_WRONLY | os.O_TRUNC, lambda fd: 0),
    "open-create-in-sub": lambda d, vid, who: create(f"{d}/sub/new"),
    "open-tmpfile": lambda d, vid, who: fd_op(
        d, os.O_TMPFILE | os.O_WRONLY,
        lambda fd: (lambda s: [s.st_uid, s.st_gid, oct(s.st_mode)])(
            os.fstat(fd))),
    "open-tmpfile-link": lambda d, vid, who: tmpfile_link(d),
    "create-in-sgid-dir": lambda d, vid, who: create(f"{d}/sgid/new"),
    "create-sgid-mode-in-sgid-dir": lambda d, vid, who:
        create(f"{d}/sgid/new", 0o2755),
    "create-in-default-acl-dir": lambda d, vid, who:
        create(f"{d}/dacl/new", 0o666),
    "open-unmapped-owner-rdonly": lambda d, vid, who:
        fd_op(f"{d}/unmapped", os.O_RDONLY, lambda fd: 0),
    "open-unmapped-owner-wronly": lambda d, vid, who:
        fd_op(f"{d}/unmapped", os.O_WRONLY, lambda fd: 0),
    # mkdir, mknod, symlink, link
    "mkdir": lambda d, vid, who: (os.mkdir(f"{d}/nd", 0o755),
                                  st3(f"{d}/nd"))[1],
    "mkdir-in-sgid-dir": lambda d, vid, who: (os.mkdir(f"{d}/sgid/nd", 0o755),
                                              st3(f"{d}/sgid/nd"))[1],
    "mkdir-in-default-acl-dir": lambda d, vid, who:
        (os.mkdir(f"{d}/dacl/nd", 0o777), st3(f"{d}/dacl/nd"))[1],
    "mknod-fifo": lambda d, vid, who:
        (os.mkfifo(f"{d}/fifo", 0o644), st3(f"{d}/fifo"))[1],
    "mknod-whiteout": lambda d, vid, who:
        (os.mknod(f"{d}/wh", stat.S_IFCHR | 0o000, os.makedev(0, 0)),
         st3(f"{d}/wh"))[1],
    "mknod-chardev": lambda d, vid, who:
        os.mknod(f"{d}/null", stat.S_IFCHR | 0o666, os.makedev(1, 3)),
    "symlink": lambda d, vid, who: (os.symlink("rootf", f"{d}/sl"),
                                    st3(f"{d}/sl"))[1],
    "link-own": lambda d, vid, who: os.link(f"{d}/userf", f"{d}/hl"),
    "link-root-file": lambda d, vid, who: os.link(f"{d}/rootf", f"{d}/hl"),
    # rename, unlink, rmdir
    "rename": lambda d, vid, who: os.rename(f"{d}/userf", f"{d}/renamed"),
    "rename-noreplace": lambda d, vid, who:
        renameat2(f"{d}/userf", f"{d}/rootf", 1),
    "rename-exchange": lambda d, vid, who:
        renameat2(f"{d}/userf", f"{d}/rootf", 2),
    "rename-whiteout": lambda d, vid, who:
        renameat2(f"{d}/userf", f"{d}/wo", 4),
    "rename-in-sticky-other": lambda d, vid, who:
        os.rename(f"{d}/sticky/u2000", f"{d}/sticky/moved"),
    "unlink-root-file": lambda d, vid, who: os.unlink(f"{d}/rootf"),
    "unlink-sticky-own": lambda d, vid, who: os.unlink(f"{d}/sticky/u1000"),
    "unlink-sticky-other": lambda d, vid, who: os.unlink(f"{d}/sticky/u2000"),
    "rmdir-empty": lambda d, vid, who: os.rmdir(f"{d}/empty"),
    "rmdir-nonempty": lambda d, vid, who: os.rmdir(f"{d}/sub"),
    # truncate
    "truncate-user": lambda d, vid, who: os.truncate(f"{d}/userf", 2),
    "truncate-root": lambda d, vid, who: os.truncate(f"{d}/rootf", 2),
    "ftruncate-suid": lambda d, vid, who: fd_op(
        f"{d}/suid_w", os.O_WRONLY, lambda fd: (os.ftruncate(fd, 1),
                                                st3(f"{d}/suid_w"))[1]),
    "write-strips-suid": lambda d, vid, who: fd_op(
        f"{d}/suid_w", os.O_WRONLY, lambda fd: (os.write(fd, b"x"),
                                                st3(f"{d}/suid_w"))[1]),
    # utimes
    "utime-now-root-file": lambda d, vid, who: os.utime(f"{d}/rootf"),
    "utime-now-other-writable": lambda d, vid, who:
        os.utime(f"{d}/sticky/u2000"),
    "utime-explicit-user": lambda d, vid, who:
        (os.utime(f"{d}/userf", ns=(10**9, 2 * 10**9)),
         os.stat(f"{d}/userf").st_mtime_ns)[1],
    "utime-explicit-root-file": lambda d, vid, who:
        os.utime(f"{d}/rootf", ns=(10**9, 2 * 10**9)),
    "utime-unmapped-owner": lambda d, vid, who:
        os.utime(f"{d}/unmapped", ns=(10**9, 10**9)),
    # access
    "access-w-root": lambda d, vid, who: os.access(f"{d}/rootf", os.W_OK),
    "access-r-600": lambda d, vid, who: os.access(f"{d}/user600", os.R_OK),
    "access-x-suid": lambda d, vid, who: os.access(f"{d}/exe_suid", os.X_OK),
    "access-eaccess-w-user": lambda d, vid, who:
        os.access(f"{d}/userf", os.W_OK, effective_ids=True),
    "access-unmapped": lambda d, vid, who:
        os.access(f"{d}/unmapped", os.R_OK | os.W_OK),
    # xattrs: ACLs, fscaps, user, trusted
    "get-acl": lambda d, vid, who: xget(f"{d}/acl", "system.posix_acl_access"),
    "get-default-acl": lambda d, vid, who:
        xget(f"{d}/dacl", "system.posix_acl_default"),
    "set-acl-owner": lambda d, vid, who: os.setxattr(
        f"{d}/userf", "system.posix_acl_access",
        std_acl(extra=[(ACL_USER, 7, vid(2000))])),
    "set-acl-not-owner": lambda d, vid, who: os.setxattr(
        f"{d}/rootf", "system.posix_acl_access",
        std_acl(extra=[(ACL_USER, 7, vid(1000))])),
    "set-acl-unmapped-entry": lambda d, vid, who: os.setxattr(
        f"{d}/userf", "system.posix_acl_access",
        std_acl(extra=[(ACL_USER, 7, vid(UNMAPPED_DISK))])),
    "remove-acl": lambda d, vid, who:
        os.removexattr(f"{d}/acl", "system.posix_acl_access"),
    "get-fscap": lambda d, vid, who: xget(f"{d}/capf", "security.capability"),
    "set-fscap-v2": lambda d, vid, who: os.setxattr(
        f"{d}/userf", "security.capability", cap_v2(NET_RAW)),
    "set-fscap-v3-rootid0": lambda d, vid, who: os.setxattr(
        f"{d}/userf", "security.capability", cap_v3(NET_RAW, vid(0))),
    "remove-fscap": lambda d, vid, who:
        os.removexattr(f"{d}/capf", "security.capability"),
    "user-xattr": lambda d, vid, who: (os.setxattr(f"{d}/userf", "user.k",
                                                   b"v"),
                                       xget(f"{d}/userf", "user.k"))[1],
    "trusted-xattr": lambda d, vid, who: os.setxattr(f"{d}/userf",
                                                     "trusted.k", b"v"),
    # exec
    "exec-suid": lambda d, vid, who: run_out(f"{d}/exe_suid", "-u"),
    "exec-sgid": lambda d, vid, who: run_out(f"{d}/exe_sgid", "-g"),
    "exec-user-suid": lambda d, vid, who: run_out(f"{d}/exe_user_suid", "-u"),
    "exec-fscap": lambda d, vid, who: capeff(d),
}

# Cases that flip a sysctl first (host root does it, it is global).
SYSCTL = {
    "protected-symlink-follow": ("symlinks", 1, lambda d, vid, who:
                                 fd_op(f"{d}/sticky/ulink", os.O_RDONLY,
                                       lambda fd: 0)),
    "protected-hardlink-other": ("hardlinks", 1, lambda d, vid, who:
                                 os.link(f"{d}/otherf", f"{d}/hl")),
    "unprotected-hardlink-other": ("hardlinks", 0, lambda d, vid, who:
                                   os.link(f"{d}/otherf", f"{d}/hl")),
}


# ------------------------------------------------- deliberate divergences
# Each rule names a known, documented difference from an idmapped mount
# (README "Deliberate divergences").  A rule matches only when both sides
# refused and the lower ended up the same, so it can never hide a
# difference in what an operation did.

UNMAPPED_ACTORS = ("host-unmapped", "host-root-unmapped-fsuid")


ACL_KEYS = ("system.posix_acl_access", "system.posix_acl_default")


def _acl_view_shifted(snap: dict, base: int) -> dict:
    """A snapshot with the ACL_USER/ACL_GROUP ids of its xattrs + base."""
    out = {}
    for rel, ent in snap.items():
        if isinstance(ent, list) and len(ent) == 5 and ent[4]:
            x = dict(ent[4])
            for k in ACL_KEYS:
                if isinstance(x.get(k), list):
                    x[k] = [[t, p, (i + base if i is not None else None)]
                            for t, p, i in x[k]]
            ent = ent[:4] + [x]
        out[rel] = ent
    return out


def divergence(case: str, actor: str, got: dict, want: dict) -> str | None:
    """The reasons, when got/want differ only by documented divergences."""
    reasons = []
    if os.uname().release.startswith("6.1.") and got["view"] != want["view"]:
        from differential.engine import BASE
        if got["view"] == _acl_view_shifted(want["view"], BASE):
            want = dict(want, view=got["view"])
            reasons.append(
                "6.1's idmapped mounts return POSIX ACL xattrs with the disk "
                "ids untranslated (before the VFS ACL rework of 6.2); shiftfs "
                "translates them as SPEC.md says and as idmapped mounts do "
                "on 6.12 and 7.2")
            if case in ("get-acl", "get-default-acl") and \
                    isinstance(got["ret"], list) and \
                    isinstance(want["ret"], list):
                want = dict(want, ret=got["ret"])
    if got["disk"] != want["disk"] or got["view"] != want["view"]:
        return None
    g, w = got["ret"], want["ret"]
    if g != w:
        if not (isinstance(g, str) and isinstance(w, str)):
            return None
        if actor in UNMAPPED_ACTORS and w == "EOVERFLOW" and \
                g in ("EACCES", "EPERM"):
            reasons.append(
                "caller with unmapped fsuid: an idmapped mount checks the "
                "caller's mapping before permission (EOVERFLOW), shiftfs "
                "checks permission first (EACCES/EPERM); both refuse")
        elif case == "set-acl-unmapped-entry" and w == "EINVAL" and \
                g in ("EOVERFLOW", "EPERM"):
            reasons.append(
                "ACL entry with no disk id: SPEC.md asks for EOVERFLOW, an "
                "idmapped mount gives EINVAL (and checks it before "
                "ownership, so a non-owner sees EINVAL there, EPERM here); "
                "both refuse")
        else:
            return None
    return "; ".join(reasons) or None
