"""Id maps: parsing, validation and conversion between the two backends.

An :class:`Extent` ``FROM:TO:COUNT`` means what shiftfs's ``uidmap=`` means:
the id FROM+i stored on disk is seen through the mount as TO+i.

Accepted spellings:

* ``F:T:C`` (``--uidmap``/``--gidmap``, shiftfs's own option), decimal or
  0x-hex;
* util-linux's ``X-mount.idmap`` form, a space separated list of
  ``u:F:T:C``, ``g:F:T:C``, ``b:F:T:C`` or a bare ``F:T:C`` (= ``b:``).
  util-linux writes each entry to the idmapping namespace's uid_map/gid_map
  as the line ``F T C``, whatever its manual page says about which column is
  which, and the kernel then shows disk id F+i as T+i: the same meaning as
  shiftfs's ``uidmap=F:T:C``.

Direction, upstream (Documentation/filesystems/idmappings.rst): an idmapped
mount shows an inode's i_uid k (fs idmapping = the initial one, so k is the
id on disk) as ``make_kuid(mnt_userns, k)``: k read as an id *inside* the
mount's user namespace, mapped out to the host.  A uid_map line ``A B C`` maps
namespace id A+i to host id B+i, so disk A+i is seen as B+i.  Hence the
shiftfs extent F:T:C is the uid_map line ``F T C`` (see :func:`userns_lines`),
and a namespace's uid_map read back line by line gives shiftfs extents
unchanged (:func:`parse_proc_map`).
"""

from __future__ import annotations

from dataclasses import dataclass

from shiftctl.errors import EXIT_USAGE, ShiftctlError

MAX_EXTENTS = 340
ID_MAX = 0xFFFFFFFF          # (uid_t)-1 is never a valid id
IDENTITY_COUNT = 0xFFFFFFFF  # the initial namespace's "0 0 4294967295"


class MapError(ShiftctlError):
    exit_code = EXIT_USAGE


@dataclass(frozen=True, order=True)
class Extent:
    """Disk ids [first, first+count) are seen as [target, target+count)."""

    first: int
    target: int
    count: int

    def __str__(self) -> str:
        return f"{self.first}:{self.target}:{self.count}"

    @property
    def disk_end(self) -> int:
        return self.first + self.count

    @property
    def view_end(self) -> int:
        return self.target + self.count

    def to_view(self, disk_id: int) -> int | None:
        if self.first <= disk_id < self.disk_end:
            return self.target + disk_id - self.first
        return None

    def to_disk(self, view_id: int) -> int | None:
        if self.target <= view_id < self.view_end:
            return self.first + view_id - self.target
        return None


def parse_id(text: str, what: str = "id") -> int:
    t = text.strip()
    try:
        if t.lower().startswith("0x"):
            v = int(t[2:], 16)
        elif t.isdigit():
            v = int(t, 10)
        else:
            raise ValueError
    except ValueError:
        raise MapError(f"bad {what} {text!r}: want a decimal or 0x-hex number") from None
    if v > ID_MAX:
        raise MapError(f"bad {what} {text!r}: larger than 4294967295")
    return v


def parse_extent(text: str) -> Extent:
    """``F:T:C`` -> Extent (no u:/g: prefix)."""
    parts = text.strip().split(":")
    if len(parts) != 3:
        raise MapError(f"bad map {text!r}: want FROM:TO:COUNT")
    f, t, c = (parse_id(p, w) for p, w in zip(parts, ("FROM", "TO", "COUNT")))
    ext = Extent(f, t, c)
    check_extent(ext, text)
    return ext


def check_extent(ext: Extent, text: str | None = None) -> None:
    label = text if text is not None else str(ext)
    if ext.count == 0:
        raise MapError(f"bad map {label!r}: COUNT is 0")
    if ext.disk_end - 1 >= ID_MAX or ext.view_end - 1 >= ID_MAX:
        raise MapError(f"bad map {label!r}: runs past 4294967294")


def parse_uidmap_option(text: str, kind: str) -> list[Extent]:
    """A ``--uidmap`` (kind 'u') or ``--gidmap`` ('g') value.

    ``F:T:C`` or, for convenience, a util-linux entry whose type matches
    (``u:F:T:C`` for --uidmap, ``g:...`` for --gidmap, ``b:...`` for either).
    Several may be given separated by spaces or commas.
    """
    out: list[Extent] = []
    for item in text.replace(",", " ").split():
        if item[:2] in ("u:", "g:", "b:"):
            if item[0] not in (kind, "b"):
                opt = "--uidmap" if kind == "u" else "--gidmap"
                raise MapError(f"bad map {item!r}: {item[0]}: entry given to {opt}")
            item = item[2:]
        out.append(parse_extent(item))
    if not out:
        raise MapError("empty map")
    return out


def parse_xmount_idmap(text: str) -> tuple[list[Extent], list[Extent]]:
    """util-linux ``X-mount.idmap`` entries -> (uid extents, gid extents)."""
    uids: list[Extent] = []
    gids: list[Extent] = []
    items = text.replace("\\040", " ").split()
    if not items:
        raise MapError("empty idmap")
    for item in items:
        kind = "b"
        if item[:2] in ("u:", "g:", "b:"):
            kind, item = item[0], item[2:]
        elif item.count(":") != 2:
            raise MapError(f"bad idmap entry {item!r}: want [u:|g:|b:]FROM:TO:COUNT")
        ext = parse_extent(item)
        if kind in ("u", "b"):
            uids.append(ext)
        if kind in ("g", "b"):
            gids.append(ext)
    return uids, gids


def validate(extents: list[Extent], what: str = "uidmap") -> list[Extent]:
    """Reject what the kernel rejects: >340 extents, overlaps either side."""
    if len(extents) > MAX_EXTENTS:
        raise MapError(f"{what}: {len(extents)} extents, at most {MAX_EXTENTS}")
    for e in extents:
        check_extent(e)
    by_disk = sorted(extents, key=lambda e: e.first)
    for a, b in zip(by_disk, by_disk[1:]):
        if b.first < a.disk_end:
            raise MapError(f"{what}: extents {a} and {b} overlap on disk ids")
    by_view = sorted(extents, key=lambda e: e.target)
    for a, b in zip(by_view, by_view[1:]):
        if b.target < a.view_end:
            raise MapError(f"{what}: extents {a} and {b} overlap on mapped ids")
    return extents


def to_view(extents: list[Extent], disk_id: int) -> int | None:
    for e in extents:
        v = e.to_view(disk_id)
        if v is not None:
            return v
    return None


def to_disk(extents: list[Extent], view_id: int) -> int | None:
    for e in extents:
        d = e.to_disk(view_id)
        if d is not None:
            return d
    return None


# -------------------------------------------------- user namespace idmaps


def userns_lines(extents: list[Extent]) -> str:
    """uid_map/gid_map text for a user namespace used as a mount idmapping.

    Extent F:T:C (disk F+i seen as T+i) is the line "F T C": namespace id F+i
    is host id T+i, and an idmapped mount shows disk id k as the host id that
    k is inside the namespace.
    """
    return "".join(f"{e.first} {e.target} {e.count}\n" for e in extents)


def identity() -> list[Extent]:
    return [Extent(0, 0, IDENTITY_COUNT)]


def parse_proc_map(text: str) -> list[Extent]:
    """/proc/PID/uid_map text -> extents (columns: inside, outside, count)."""
    out: list[Extent] = []
    for line in text.splitlines():
        f = line.split()
        if len(f) != 3:
            continue
        try:
            out.append(Extent(int(f[0]), int(f[1]), int(f[2])))
        except ValueError:
            continue
    return out


def is_identity(extents: list[Extent]) -> bool:
    return len(extents) == 1 and extents[0] == Extent(0, 0, IDENTITY_COUNT)


def format_map(extents: list[Extent]) -> str:
    return " ".join(str(e) for e in extents)
