"""Make and remove the mounts: shiftfs through the new mount API, or the
same mapping as an upstream idmapped mount."""

from __future__ import annotations

import errno
import os
import platform
import re

from shiftctl import idmap, mountinfo, reach, syscalls
from shiftctl.errors import EXIT_REFUSED, EXIT_UNSUPPORTED, ShiftctlError
from shiftctl.idmap import Extent
from shiftctl.mountopts import FLAG, MountSpec
from shiftctl.syscalls import SyscallError
from shiftctl.userns import make_userns

BACKENDS = ("shiftfs", "idmapped")


# ------------------------------------------------------------ safety check


def _userns_maps(path: str) -> tuple[list[Extent] | None, list[Extent] | None]:
    m = re.fullmatch(r"/proc/(\d+)/ns/user", path)
    if not m:
        return None, None
    out: list[list[Extent] | None] = []
    for kind in ("uid_map", "gid_map"):
        try:
            with open(f"/proc/{m.group(1)}/{kind}") as f:
                out.append(idmap.parse_proc_map(f.read()))
        except OSError:
            out.append(None)
    return out[0], out[1]


def _root_from_nonroot(extents: list[Extent] | None) -> bool:
    """Does some disk id other than 0 show as 0 (or is the map unknown)?"""
    if extents is None:
        return True
    d = idmap.to_disk(extents, 0)
    return d is not None and d != 0


def safety_check(lower: str, target: str, spec: MountSpec) -> None:
    """Refuse (EXIT_REFUSED) a mount that lets non-root users run a setuid-root
    file made through the shift; see shiftctl.reach."""
    entries = _entries()
    bad = reach.check(lower, entries)
    if bad:
        raise ShiftctlError(reach.explain("lower directory", lower, bad), EXIT_REFUSED)
    if spec.userns:
        uids, gids = _userns_maps(spec.userns)
    else:
        uids = spec.uidmap if spec.shift_uids else []
        gids = spec.gidmap if spec.shift_gids else []
    if _root_from_nonroot(uids) or _root_from_nonroot(gids):
        parent = os.path.dirname(os.path.realpath(target)) or "/"
        bad = reach.check(parent, entries)
        if bad:
            raise ShiftctlError(
                reach.explain("mount point's directory", parent, bad)
                + " (this map shows files of a non-root disk id as root's)",
                EXIT_REFUSED)


def _entries() -> list[mountinfo.MountEntry]:
    try:
        return mountinfo.read()
    except OSError:
        return []


def _fstype_of(path: str) -> str:
    entries = _entries()
    real = os.path.realpath(path)
    best, blen = None, -1
    for e in entries:
        mp = e.mount_point
        if (real == mp or mp == "/" or real.startswith(mp.rstrip("/") + "/")) and len(mp) >= blen:
            best, blen = e, len(mp)
    return best.fstype if best else "?"


# -------------------------------------------------------- detached mounts


def shiftfs_fd(lower: str, spec: MountSpec) -> int:
    """A detached shiftfs mount (an fsmount fd) of LOWER."""
    if not os.path.isdir(lower):
        raise ShiftctlError(f"lower directory {lower}: not a directory")
    fd = syscalls.fsopen("shiftfs")
    try:
        for kind, key, val in spec.fs_params(os.path.abspath(lower)):
            if kind == FLAG:
                syscalls.fsconfig(fd, syscalls.FSCONFIG_SET_FLAG, key)
            else:
                syscalls.fsconfig(fd, syscalls.FSCONFIG_SET_STRING, key, val or "")
        syscalls.fsconfig(fd, syscalls.FSCONFIG_CMD_CREATE)
        return syscalls.fsmount(fd, syscalls.FSMOUNT_CLOEXEC, spec.attr_flags)
    finally:
        os.close(fd)


def idmapped_fd(lower: str, spec: MountSpec) -> int:
    """A detached idmapped bind mount of LOWER with the spec's maps."""
    if not os.path.isdir(lower):
        raise ShiftctlError(f"lower directory {lower}: not a directory")
    for kind, key, _ in spec.extra:
        raise ShiftctlError(f"option {key!r} means nothing to --backend idmapped")
    if spec.userns:
        try:
            nsfd = os.open(spec.userns, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as err:
            raise ShiftctlError(f"user namespace {spec.userns}: {err.strerror}") from None
    else:
        nsfd = make_userns(spec.uidmap if spec.shift_uids else None,
                           spec.gidmap if spec.shift_gids else None)
    try:
        tfd = syscalls.open_tree(syscalls.AT_FDCWD, os.path.abspath(lower),
                                 syscalls.OPEN_TREE_CLONE | syscalls.OPEN_TREE_CLOEXEC)
        try:
            syscalls.mount_setattr(tfd, "", syscalls.AT_EMPTY_PATH,
                                   attr_set=syscalls.MOUNT_ATTR_IDMAP | spec.attr_flags,
                                   userns_fd=nsfd)
        except SyscallError as err:
            os.close(tfd)
            if err.errno == errno.EINVAL:
                raise ShiftctlError(
                    f"cannot idmap {lower}: its filesystem ({_fstype_of(lower)}) does not "
                    f"support idmapped mounts on kernel {platform.release()}, or it is "
                    f"already idmapped (mount_setattr: EINVAL)", EXIT_UNSUPPORTED) from None
            raise
        return tfd
    finally:
        os.close(nsfd)


def detached(lower: str, spec: MountSpec, backend: str) -> int:
    if backend == "shiftfs":
        return shiftfs_fd(lower, spec)
    if backend == "idmapped":
        return idmapped_fd(lower, spec)
    raise ShiftctlError(f"unknown backend {backend!r}")


def attach(mfd: int, target: str) -> None:
    syscalls.move_mount(mfd, "", syscalls.AT_FDCWD, target,
                        syscalls.MOVE_MOUNT_F_EMPTY_PATH)


def mount(lower: str, target: str, spec: MountSpec, backend: str = "shiftfs",
          force: bool = False) -> mountinfo.MountEntry | None:
    """Mount LOWER on TARGET; returns the new mountinfo entry."""
    if not os.path.isdir(target):
        raise ShiftctlError(f"mount point {target}: not a directory")
    if not force:
        safety_check(lower, target, spec)
    mfd = detached(lower, spec, backend)
    try:
        attach(mfd, target)
    finally:
        os.close(mfd)
    return mountinfo.top_mount_at(_entries(), os.path.realpath(target))


def umount(target: str, lazy: bool = False, force: bool = False) -> mountinfo.MountEntry:
    real = os.path.realpath(target)
    top = mountinfo.top_mount_at(_entries(), real)
    if top is None:
        raise ShiftctlError(f"{target}: not a mount point")
    if not force and top.fstype != "shiftfs" and not top.idmapped:
        raise ShiftctlError(f"{target}: a {top.fstype} mount, not shiftfs or idmapped "
                            f"(use --force to unmount it anyway)")
    syscalls.umount2(real, syscalls.MNT_DETACH if lazy else 0)
    return top
