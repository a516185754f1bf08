"""Turn ``-o``, ``--uidmap``, ``--gidmap`` and ``--userns`` into a mount spec.

The spec lists the fsconfig(2) calls for shiftfs (in order: source, flags,
maps, userns, anything else verbatim) and the mount attributes for
fsmount(2)/mount_setattr(2).  The idmapped backend uses the same spec.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from shiftctl import idmap, syscalls
from shiftctl.idmap import Extent, MapError

# generic mount options -> (attributes to set, to clear)
MOUNT_ATTRS: dict[str, tuple[int, int]] = {
    "ro": (syscalls.MOUNT_ATTR_RDONLY, 0),
    "rw": (0, syscalls.MOUNT_ATTR_RDONLY),
    "nosuid": (syscalls.MOUNT_ATTR_NOSUID, 0),
    "suid": (0, syscalls.MOUNT_ATTR_NOSUID),
    "nodev": (syscalls.MOUNT_ATTR_NODEV, 0),
    "dev": (0, syscalls.MOUNT_ATTR_NODEV),
    "noexec": (syscalls.MOUNT_ATTR_NOEXEC, 0),
    "exec": (0, syscalls.MOUNT_ATTR_NOEXEC),
    "noatime": (syscalls.MOUNT_ATTR_NOATIME, syscalls.MOUNT_ATTR__ATIME),
    "relatime": (syscalls.MOUNT_ATTR_RELATIME, syscalls.MOUNT_ATTR__ATIME),
    "strictatime": (syscalls.MOUNT_ATTR_STRICTATIME, syscalls.MOUNT_ATTR__ATIME),
    "nodiratime": (syscalls.MOUNT_ATTR_NODIRATIME, 0),
    "nosymfollow": (syscalls.MOUNT_ATTR_NOSYMFOLLOW, 0),
}

FLAG = "flag"
STRING = "string"


@dataclass
class MountSpec:
    shift_uids: bool = False
    shift_gids: bool = False
    uidmap: list[Extent] = field(default_factory=list)
    gidmap: list[Extent] = field(default_factory=list)
    userns: str | None = None
    attr_flags: int = 0
    extra: list[tuple[str, str, str | None]] = field(default_factory=list)

    def fs_params(self, lower: str) -> list[tuple[str, str, str | None]]:
        """The fsconfig calls, in order: (FLAG|STRING, key, value)."""
        p: list[tuple[str, str, str | None]] = [(STRING, "source", lower)]
        if self.shift_uids:
            p.append((FLAG, "shift_uids", None))
        if self.shift_gids:
            p.append((FLAG, "shift_gids", None))
        p += [(STRING, "uidmap", str(e)) for e in self.uidmap]
        p += [(STRING, "gidmap", str(e)) for e in self.gidmap]
        if self.userns:
            p.append((STRING, "userns", self.userns))
        return p + self.extra

    def option_string(self) -> str:
        """The same mount as a `mount -t shiftfs -o` string (for messages)."""
        return ",".join(k if v is None else f"{k}={v}" for _, k, v in self.fs_params("")[1:])


def userns_path(arg: str) -> str:
    """--userns PID|PATH -> a path to a user namespace file."""
    a = arg.strip()
    if a.isdigit():
        return f"/proc/{int(a)}/ns/user"
    if not a:
        raise MapError("--userns: empty")
    return os.path.abspath(a)


def build(opts: list[str], uidmaps: list[str], gidmaps: list[str],
          userns: str | None, idmaps: list[str] | None = None) -> MountSpec:
    spec = MountSpec()
    set_attr = clr_attr = 0
    explicit_flags = False
    for chunk in opts:
        for opt in (o.strip() for o in chunk.split(",")):
            if not opt:
                continue
            key, eq, val = opt.partition("=")
            if key in MOUNT_ATTRS and not eq:
                s, c = MOUNT_ATTRS[key]
                clr_attr |= c
                set_attr = (set_attr & ~c) | s
                if key == "rw":
                    set_attr &= ~syscalls.MOUNT_ATTR_RDONLY
                continue
            if key == "shift_uids" and not eq:
                spec.shift_uids = explicit_flags = True
            elif key == "shift_gids" and not eq:
                spec.shift_gids = explicit_flags = True
            elif key == "uidmap" and eq:
                spec.uidmap += idmap.parse_uidmap_option(val, "u")
            elif key == "gidmap" and eq:
                spec.gidmap += idmap.parse_uidmap_option(val, "g")
            elif key == "userns" and eq:
                spec.userns = userns_path(val)
            elif key == "X-mount.idmap" and eq:
                _add_xmount(spec, val)
            else:
                spec.extra.append((STRING, key, val) if eq else (FLAG, key, None))
    for u in uidmaps:
        spec.uidmap += idmap.parse_uidmap_option(u, "u")
    for g in gidmaps:
        spec.gidmap += idmap.parse_uidmap_option(g, "g")
    for i in idmaps or []:
        _add_xmount(spec, i)
    if userns is not None:
        if spec.userns:
            raise MapError("--userns given twice (also in -o userns=)")
        spec.userns = userns_path(userns)
    if spec.userns and (spec.uidmap or spec.gidmap):
        raise MapError("--userns and explicit uid/gid maps are exclusive")
    if spec.uidmap:
        spec.shift_uids = True
    if spec.gidmap:
        spec.shift_gids = True
    if spec.userns and not explicit_flags:
        spec.shift_uids = spec.shift_gids = True
    idmap.validate(spec.uidmap, "uidmap")
    idmap.validate(spec.gidmap, "gidmap")
    spec.attr_flags = set_attr
    return spec


def _add_xmount(spec: MountSpec, val: str) -> None:
    if val.startswith("/"):
        if spec.userns:
            raise MapError("more than one user namespace given")
        spec.userns = val
        return
    u, g = idmap.parse_xmount_idmap(val)
    spec.uidmap += u
    spec.gidmap += g


def range_spec(base: int, count: int) -> MountSpec:
    """A base-0 image shown at host ids BASE.. (``shiftctl run``, ``--pick``)."""
    e = Extent(0, base, count)
    return MountSpec(shift_uids=True, shift_gids=True, uidmap=[e], gidmap=[e])
