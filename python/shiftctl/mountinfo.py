"""Read /proc/self/mountinfo; pick out shiftfs and idmapped mounts."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from shiftctl.idmap import Extent

_ESC = re.compile(r"\\([0-7]{3})")


def unescape(s: str) -> str:
    """Undo the kernel's octal escapes (\\040 space, \\011 tab, \\012, \\134)."""
    return _ESC.sub(lambda m: chr(int(m.group(1), 8)), s)


@dataclass
class MountEntry:
    mount_id: int
    parent_id: int
    dev: str
    root: str
    mount_point: str
    mount_options: list[str]
    optional: list[str]
    fstype: str
    source: str
    super_options: list[str]

    @property
    def idmapped(self) -> bool:
        return "idmapped" in self.mount_options


def parse_line(line: str) -> MountEntry | None:
    parts = line.rstrip("\n").split(" ")
    try:
        sep = parts.index("-", 6)
    except ValueError:
        return None
    if len(parts) < sep + 3 or sep < 6:
        return None
    try:
        mid, pid = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    return MountEntry(
        mount_id=mid,
        parent_id=pid,
        dev=parts[2],
        root=unescape(parts[3]),
        mount_point=unescape(parts[4]),
        mount_options=parts[5].split(","),
        optional=parts[6:sep],
        fstype=parts[sep + 1],
        source=unescape(parts[sep + 2]),
        super_options=split_options(" ".join(parts[sep + 3:])),
    )


def split_options(s: str) -> list[str]:
    return [o for o in s.split(",") if o] if s else []


def parse(text: str) -> list[MountEntry]:
    return [e for e in (parse_line(l) for l in text.splitlines()) if e]


def read(path: str = "/proc/self/mountinfo") -> list[MountEntry]:
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return parse(f.read())


# ----------------------------------------------------- shiftfs' options


def _num(s: str) -> int:
    s = s.strip()
    return int(s, 16) if s.lower().startswith("0x") else int(s, 10)


def parse_map_value(value: str) -> list[Extent]:
    """One uidmap= value; tolerant of several extents joined by ';' or ' '."""
    out: list[Extent] = []
    for item in re.split(r"[;\s/]+", unescape(value)):
        if not item:
            continue
        f = item.split(":")
        if len(f) != 3:
            continue
        try:
            out.append(Extent(_num(f[0]), _num(f[1]), _num(f[2])))
        except ValueError:
            continue
    return out


@dataclass
class ShiftMount:
    target: str
    lower: str
    backend: str                    # "shiftfs" or "idmapped"
    mount_id: int
    shift_uids: bool = False
    shift_gids: bool = False
    uidmap: list[Extent] = field(default_factory=list)
    gidmap: list[Extent] = field(default_factory=list)
    userns: str | None = None
    options: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["uidmap"] = [[e.first, e.target, e.count] for e in self.uidmap]
        d["gidmap"] = [[e.first, e.target, e.count] for e in self.gidmap]
        return d


_LOWER_KEYS = ("lowerdir", "lower", "source")


def shift_mount(e: MountEntry) -> ShiftMount:
    """Interpret a shiftfs entry's super options (tolerant of spellings)."""
    m = ShiftMount(target=e.mount_point, lower=e.source, backend="shiftfs",
                   mount_id=e.mount_id, options=list(e.super_options))
    for opt in e.super_options:
        key, _, val = opt.partition("=")
        key = key.strip().lower()
        if key in ("shift_uids", "shiftuids"):
            m.shift_uids = True
        elif key in ("shift_gids", "shiftgids"):
            m.shift_gids = True
        elif key in ("uidmap", "uid_map"):
            m.uidmap.extend(parse_map_value(val))
        elif key in ("gidmap", "gid_map"):
            m.gidmap.extend(parse_map_value(val))
        elif key == "userns":
            m.userns = unescape(val)
        elif key in _LOWER_KEYS and val:
            m.lower = unescape(val)
    if m.uidmap:
        m.shift_uids = True
    if m.gidmap:
        m.shift_gids = True
    return m


def shift_mounts(entries: Iterable[MountEntry], include_idmapped: bool = False
                 ) -> list[ShiftMount]:
    out: list[ShiftMount] = []
    for e in entries:
        if e.fstype == "shiftfs" or e.fstype.startswith("shiftfs."):
            out.append(shift_mount(e))
        elif include_idmapped and e.idmapped:
            out.append(ShiftMount(target=e.mount_point,
                                  lower=e.root if e.root != "/" else e.source,
                                  backend="idmapped", mount_id=e.mount_id,
                                  options=list(e.mount_options)))
    return out


def top_mount_at(entries: list[MountEntry], path: str) -> MountEntry | None:
    """The mount visible at PATH: the one at PATH nothing else is stacked on."""
    at = [e for e in entries if e.mount_point == path]
    parents = {e.parent_id for e in at}
    tops = [e for e in at if e.mount_id not in parents]
    return tops[-1] if tops else (at[-1] if at else None)
