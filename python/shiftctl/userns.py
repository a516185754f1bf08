"""Build a user namespace from id maps and hand back an fd to it.

Used as the idmapping of an upstream idmapped mount.  A child forks,
unshares CLONE_NEWUSER and waits; the parent (real root) writes the child's
uid_map/gid_map, opens /proc/CHILD/ns/user and lets the child exit.  The
namespace lives on as long as the fd (or a mount using it) does.
"""

from __future__ import annotations

import os

from shiftctl import syscalls
from shiftctl.errors import ShiftctlError
from shiftctl.idmap import Extent, identity, userns_lines


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    except OSError as err:
        raise ShiftctlError(f"writing {path}: {err.strerror}: {text.strip()!r}") from None
    finally:
        os.close(fd)


def make_userns(uidmap: list[Extent] | None, gidmap: list[Extent] | None) -> int:
    """An O_CLOEXEC fd of a new user namespace with these maps.

    An absent map is the identity (ids pass through, like shiftfs without
    shift_uids / shift_gids).
    """
    uids = uidmap or identity()
    gids = gidmap or identity()
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(ready_r)
            os.close(go_w)
            try:
                syscalls.unshare(syscalls.CLONE_NEWUSER)
                os.write(ready_w, b"k")
            except Exception as err:  # noqa: BLE001 - report to the parent
                os.write(ready_w, b"E" + str(err).encode()[:4000])
            os.close(ready_w)
            os.read(go_r, 1)
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(go_r)
    try:
        msg = os.read(ready_r, 4096)
        if not msg.startswith(b"k"):
            raise ShiftctlError(msg[1:].decode() or "user namespace child died")
        _write(f"/proc/{pid}/uid_map", userns_lines(uids))
        _write(f"/proc/{pid}/gid_map", userns_lines(gids))
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(ready_r)
        os.close(go_w)          # child's read returns: it exits
        os.waitpid(pid, 0)
