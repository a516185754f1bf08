"""The host id-range allocator: leases of aligned ranges for containers.

A lease is a small JSON file ``STATE_DIR/leases/BASE-COUNT.lease`` naming
its owner process by pid *and* start time (field 22 of /proc/PID/stat, so a
recycled pid does not keep a dead lease alive).  A lease is live while

* its owner process is alive (same pid, same start time, not a zombie), or
* some process holds an flock on the lease file (``shiftctl run`` does for
  the container's whole life), or
* it records a mount (``shiftctl mount --pick``) that is still mounted.

Any other lease is stale and is removed (reclaimed) by the next ``pick``.

Who owns a lease made by ``shiftctl range pick`` run from a shell or a
manager?  shiftctl itself exits at once, so by default the owner is its
*parent* process (the caller: the shell, the manager); ``--owner-pid PID``
names another.  Note that under ``sudo`` the parent is sudo, which exits with
shiftctl: pass ``--owner-pid $$`` (or the manager's pid) there.

A range is free when it lies inside [0x80000, 0x6fff0000), starts on a
65536 boundary and overlaps none of: /etc/subuid and /etc/subgid entries,
live leases, the host side of every live user namespace's uid_map/gid_map
(/proc/*/uid_map of processes that are not zombies, except the initial
namespace's identity map) and both
sides of every shiftfs mount's uidmap/gidmap in /proc/self/mountinfo.  The
scan and the claim happen under one exclusive flock (``STATE_DIR/lock``), so
concurrent picks never hand out the same range.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from dataclasses import asdict, dataclass
from typing import Iterator

from shiftctl import idmap, mountinfo
from shiftctl.errors import EXIT_NO_RANGE, EXIT_USAGE, ShiftctlError

RANGE_START = 0x00080000
RANGE_END = 0x6FFF0000          # exclusive
ALIGN = 0x10000
DEFAULT_SIZE = 0x10000
DEFAULT_STATE_DIR = "/run/shiftctl"

Interval = tuple[int, int]      # [start, end)


def default_state_dir() -> str:
    return os.environ.get("SHIFTCTL_STATE_DIR") or DEFAULT_STATE_DIR


@dataclass
class Lease:
    base: int
    count: int
    owner_pid: int
    owner_start: int | None
    owner_name: str | None = None
    created: float = 0.0
    mount: str | None = None
    mount_id: int | None = None

    @property
    def end(self) -> int:
        return self.base + self.count

    @property
    def filename(self) -> str:
        return f"{self.base}-{self.count}.lease"

    def to_json(self) -> dict:
        return asdict(self)


def parse_range(text: str, count: str | None = None) -> tuple[int, int | None]:
    """'BASE', 'BASE COUNT', 'BASE:COUNT' (decimal or 0x) -> (base, count)."""
    t = text.strip()
    if count is None and (":" in t or " " in t):
        t, _, count = t.replace(" ", ":", 1).partition(":")
    try:
        base = idmap.parse_id(t, "range base")
        cnt = idmap.parse_id(count, "range count") if count not in (None, "") else None
    except ShiftctlError as err:
        raise ShiftctlError(str(err), EXIT_USAGE) from None
    return base, cnt


def merge(intervals: list[Interval]) -> list[Interval]:
    out: list[Interval] = []
    for s, e in sorted(intervals):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def first_fit(busy: list[Interval], size: int, start: int = RANGE_START,
              end: int = RANGE_END, align: int = ALIGN) -> int | None:
    def up(x: int) -> int:
        return (x + align - 1) // align * align

    base = up(start)
    for s, e in merge(busy):
        if e <= base:
            continue
        if base + size <= s:
            break
        base = up(max(base, e))
    return base if base + size <= end else None


class Allocator:
    def __init__(self, state_dir: str | None = None, proc_root: str = "/proc",
                 etc_dir: str = "/etc", mountinfo_path: str | None = None) -> None:
        self.state_dir = state_dir or default_state_dir()
        self.lease_dir = os.path.join(self.state_dir, "leases")
        self.proc_root = proc_root
        self.etc_dir = etc_dir
        self.mountinfo_path = mountinfo_path or os.path.join(proc_root, "self", "mountinfo")

    # ------------------------------------------------------------ locking

    def _ensure_dirs(self) -> None:
        try:
            os.makedirs(self.lease_dir, mode=0o755, exist_ok=True)
        except OSError as err:
            raise ShiftctlError(f"state dir {self.state_dir}: {err.strerror}") from None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self._ensure_dirs()
        fd = os.open(os.path.join(self.state_dir, "lock"),
                     os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # -------------------------------------------------------- processes

    def start_time(self, pid: int) -> int | None:
        """Start time of a live (non-zombie) process, or None."""
        try:
            with open(os.path.join(self.proc_root, str(pid), "stat")) as f:
                data = f.read()
        except OSError:
            return None
        fields = data[data.rfind(")") + 2:].split()
        try:
            if fields[0] in ("Z", "X", "x"):
                return None
            return int(fields[19])
        except (IndexError, ValueError):
            return None

    # ---------------------------------------------------------- leases

    def _read(self, path: str) -> Lease | None:
        try:
            with open(path) as f:
                d = json.load(f)
            return Lease(**{k: d.get(k) for k in Lease.__dataclass_fields__})
        except (OSError, ValueError, TypeError):
            return None

    def leases(self) -> list[Lease]:
        try:
            names = sorted(os.listdir(self.lease_dir))
        except FileNotFoundError:
            return []
        out = []
        for n in names:
            if n.endswith(".lease"):
                lease = self._read(os.path.join(self.lease_dir, n))
                if lease is not None and isinstance(lease.base, int):
                    out.append(lease)
        return out

    def _lock_held(self, lease: Lease) -> bool:
        try:
            fd = os.open(os.path.join(self.lease_dir, lease.filename),
                         os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return False
        except OSError as err:
            return err.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
        finally:
            os.close(fd)

    def _mounted(self, lease: Lease) -> bool:
        if not lease.mount:
            return False
        for e in self._mounts():
            if e.mount_point == lease.mount and (lease.mount_id is None
                                                 or e.mount_id == lease.mount_id):
                return True
        return False

    def is_live(self, lease: Lease) -> bool:
        st = self.start_time(lease.owner_pid) if lease.owner_pid else None
        if st is not None and (lease.owner_start is None or st == lease.owner_start):
            return True
        return self._lock_held(lease) or self._mounted(lease)

    def _write(self, lease: Lease) -> None:
        path = os.path.join(self.lease_dir, lease.filename)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(lease.to_json(), f)
            f.write("\n")
        os.rename(tmp, path)

    def _remove(self, lease: Lease) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.lease_dir, lease.filename))

    # -------------------------------------------------------- the scan

    def _mounts(self) -> list[mountinfo.MountEntry]:
        try:
            return mountinfo.read(self.mountinfo_path)
        except OSError:
            return []

    def subid_intervals(self) -> list[Interval]:
        out: list[Interval] = []
        for name in ("subuid", "subgid"):
            try:
                with open(os.path.join(self.etc_dir, name)) as f:
                    lines = f.read().splitlines()
            except OSError:
                continue
            for line in lines:
                parts = line.strip().split(":")
                if len(parts) != 3 or line.lstrip().startswith("#"):
                    continue
                try:
                    s, c = int(parts[1]), int(parts[2])
                except ValueError:
                    continue
                if c > 0:
                    out.append((s, s + c))
        return out

    def userns_intervals(self) -> list[Interval]:
        """Host ids used by the maps of live user namespaces."""
        out: list[Interval] = []
        seen: set[tuple[int, int]] = set()
        try:
            pids = [p for p in os.listdir(self.proc_root) if p.isdigit()]
        except OSError:
            return out
        for pid in pids:
            base = os.path.join(self.proc_root, pid)
            if self.start_time(int(pid)) is None:
                continue        # gone, or a zombie: it can make no files
            try:
                st = os.stat(os.path.join(base, "ns", "user"))
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    continue
                seen.add(key)
            except OSError:
                pass
            for name in ("uid_map", "gid_map"):
                try:
                    with open(os.path.join(base, name)) as f:
                        exts = idmap.parse_proc_map(f.read())
                except OSError:
                    continue
                if idmap.is_identity(exts):
                    continue
                out += [(e.target, e.target + e.count) for e in exts]
        return out

    def mount_intervals(self) -> list[Interval]:
        out: list[Interval] = []
        for m in mountinfo.shift_mounts(self._mounts()):
            for e in m.uidmap + m.gidmap:
                out += [(e.first, e.disk_end), (e.target, e.view_end)]
        return out

    def busy(self, live: list[Lease]) -> list[Interval]:
        return merge(self.subid_intervals() + self.userns_intervals()
                     + self.mount_intervals() + [(l.base, l.end) for l in live])

    def _live_and_reclaim(self) -> list[Lease]:
        live = []
        for lease in self.leases():
            if self.is_live(lease):
                live.append(lease)
            else:
                self._remove(lease)
        return live

    # ------------------------------------------------------ operations

    def _owner(self, owner_pid: int) -> int:
        st = self.start_time(owner_pid)
        if st is None:
            raise ShiftctlError(f"owner process {owner_pid} does not exist")
        return st

    def pick(self, size: int = DEFAULT_SIZE, owner_pid: int | None = None,
             owner_name: str | None = None, mount: str | None = None) -> Lease:
        check_size(size)
        pid = owner_pid if owner_pid is not None else os.getppid()
        with self.locked():
            start = self._owner(pid)
            live = self._live_and_reclaim()
            base = first_fit(self.busy(live), size)
            if base is None:
                raise ShiftctlError(
                    f"no free range of {size} ids left in "
                    f"{RANGE_START:#x}-{RANGE_END:#x}", EXIT_NO_RANGE)
            lease = Lease(base, size, pid, start, owner_name, time.time(), mount)
            self._write(lease)
            return lease

    def claim(self, base: int, size: int = DEFAULT_SIZE, owner_pid: int | None = None,
              owner_name: str | None = None, mount: str | None = None) -> Lease:
        """Lease one given range (``run --range BASE``)."""
        check_size(size)
        if base < RANGE_START or base + size > RANGE_END:
            raise ShiftctlError(f"range {base:#x}+{size:#x} is outside "
                                f"{RANGE_START:#x}-{RANGE_END:#x}", EXIT_NO_RANGE)
        pid = owner_pid if owner_pid is not None else os.getppid()
        with self.locked():
            start = self._owner(pid)
            live = self._live_and_reclaim()
            for s, e in self.busy(live):
                if s < base + size and base < e:
                    raise ShiftctlError(f"range {base} {size} is in use "
                                        f"(ids {s}-{e - 1} are taken)", EXIT_NO_RANGE)
            lease = Lease(base, size, pid, start, owner_name, time.time(), mount)
            self._write(lease)
            return lease

    def update(self, lease: Lease) -> None:
        with self.locked():
            self._write(lease)

    def find(self, base: int, count: int | None = None) -> Lease:
        for lease in self.leases():
            if lease.base == base and (count is None or lease.count == count):
                return lease
        what = f"{base} {count}" if count is not None else str(base)
        raise ShiftctlError(f"no lease for range {what}")

    def release(self, base: int, count: int | None = None) -> Lease:
        with self.locked():
            lease = self.find(base, count)
            self._remove(lease)
            return lease

    def release_quiet(self, lease: Lease) -> None:
        """Drop LEASE if it is still there (for cleanup paths)."""
        with contextlib.suppress(ShiftctlError, OSError):
            with self.locked():
                cur = self._read(os.path.join(self.lease_dir, lease.filename))
                if cur is not None and cur.owner_pid == lease.owner_pid \
                        and cur.owner_start == lease.owner_start:
                    self._remove(cur)

    def release_mount(self, target: str) -> list[Lease]:
        """Leases recorded for a mount at TARGET (``shiftctl umount``)."""
        out = []
        with self.locked():
            for lease in self.leases():
                if lease.mount == target:
                    self._remove(lease)
                    out.append(lease)
        return out

    def listing(self) -> list[tuple[Lease, bool]]:
        with self.locked():
            return [(l, self.is_live(l)) for l in self.leases()]

    def hold(self, lease: Lease) -> int:
        """flock the lease file (shared) and return the fd: the lease stays live
        while the fd is open, in this process or its children."""
        fd = os.open(os.path.join(self.lease_dir, lease.filename), os.O_RDONLY | os.O_CLOEXEC)
        fcntl.flock(fd, fcntl.LOCK_SH)
        return fd


def check_size(size: int) -> None:
    if size <= 0 or size > RANGE_END - RANGE_START:
        raise ShiftctlError(f"bad range size {size}", EXIT_USAGE)
