"""Is a directory reachable by unprivileged host users?

Why it matters: through a base-0 shift (``uidmap=0:BASE:65536``) the
container's root writes files owned by uid 0 *on disk*.  A setuid binary it
makes there is setuid root for anyone on the host who can get to the lower
directory and exec it.  The same holds the other way round
(``uidmap=BASE:0:65536``): files the container owns on disk are seen as root's
through the mount, so then the mount point must be out of reach.

The rule: a path is out of reach when at least one directory on the way from
``/`` to it, the path itself included, is owned by root and has neither the
group nor the other execute (search) bit: no non-root user can resolve a name
below it (the ACL mask lives in the group bits, so named ACL entries cannot
grant search either).  A directory owned by a non-root user never shields
anything, nor does a root-owned one with g+x (members of its group may not be
root).  Besides the path itself, every other place the same filesystem
directory is mounted (bind mounts, from /proc/self/mountinfo) must be out of
reach too.  Not covered: other mount namespaces, open file descriptors
held by non-root processes, and NFS exports of the directory.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Callable

from shiftctl import mountinfo
from shiftctl.mountinfo import MountEntry


@dataclass
class Reach:
    path: str
    reachable: bool
    guard: str | None          # the directory that shields it, if any
    detail: str = ""


StatFn = Callable[[str], os.stat_result]


def components(path: str) -> list[str]:
    """'/a/b/c' -> ['/', '/a', '/a/b', '/a/b/c']."""
    path = os.path.normpath(path)
    out = ["/"]
    cur = ""
    for part in path.strip("/").split("/"):
        if not part:
            continue
        cur += "/" + part
        out.append(cur)
    return out


def shields(st: os.stat_result) -> bool:
    return (stat.S_ISDIR(st.st_mode) and st.st_uid == 0
            and (st.st_mode & 0o011) == 0)


def check_path(path: str, stat_fn: StatFn = os.stat) -> Reach:
    """Reachability of an absolute, symlink-free PATH."""
    for comp in components(path):
        try:
            st = stat_fn(comp)
        except OSError as err:
            return Reach(path, True, None, f"cannot stat {comp}: {err.strerror}")
        if shields(st):
            return Reach(path, False, comp)
    return Reach(path, True, None)


def _containing_mount(entries: list[MountEntry], path: str) -> MountEntry | None:
    best: MountEntry | None = None
    best_len = -1
    for e in entries:
        mp = e.mount_point
        if path == mp or path.startswith(mp.rstrip("/") + "/") or mp == "/":
            if len(mp) >= best_len:       # later entries stack on earlier
                best, best_len = e, len(mp)
    return best


def aliases(path: str, entries: list[MountEntry]) -> list[str]:
    """Other paths under which the directory at PATH is mounted."""
    m = _containing_mount(entries, path)
    if m is None:
        return []
    rel = path[len(m.mount_point):].lstrip("/") if m.mount_point != "/" else path.lstrip("/")
    fs_path = os.path.normpath(os.path.join(m.root, rel))
    out: list[str] = []
    for e in entries:
        if e.dev != m.dev or e.mount_id == m.mount_id:
            continue
        root = e.root.rstrip("/") or "/"
        if fs_path == root or root == "/" or fs_path.startswith(root + "/"):
            sub = fs_path[len(root):].lstrip("/") if root != "/" else fs_path.lstrip("/")
            alt = os.path.normpath(os.path.join(e.mount_point, sub))
            if alt != path and alt not in out:
                out.append(alt)
    return out


def check(path: str, entries: list[MountEntry] | None = None,
          stat_fn: StatFn = os.stat) -> list[Reach]:
    """Check PATH and its mount aliases; returns the reachable ones."""
    real = os.path.realpath(path)
    if entries is None:
        try:
            entries = mountinfo.read()
        except OSError:
            entries = []
    bad: list[Reach] = []
    for p in [real] + aliases(real, entries):
        try:
            stat_fn(p)
        except OSError:
            continue          # alias hidden or gone: not a way in
        r = check_path(p, stat_fn)
        if r.reachable:
            bad.append(r)
    return bad


def explain(what: str, path: str, bad: list[Reach]) -> str:
    where = ", ".join(r.path for r in bad)
    return (f"refusing: {what} {path} is reachable by unprivileged users (via {where}); "
            f"a setuid file made through the shift would be setuid root for them. "
            f"Put it under a root-owned directory without group/other search "
            f"permission (chmod 0700), or use --force")
