"""Run a command as a container process: in a new user namespace with
given maps, as a given uid/gid inside it (full capabilities in that
namespace when the uid is 0, as a container's root has).

    python -m shiftctl.nsexec [--map 0:131072:65536] [--uid 0] [--gid 0] -- CMD...

--map F:T:C is a namespace line: inside id F+i is host id T+i (the same
spelling as shiftfs's uidmap= with the container range as TO).  Used by the
benchmarks and the guest tests; needs real root.
"""

from __future__ import annotations

import argparse
import os
import sys

from shiftctl import syscalls
from shiftctl.idmap import parse_extent
from shiftctl.userns import make_userns


def enter(maps: list[str], uid: int = 0, gid: int = 0) -> None:
    """Move this process into a new user namespace as uid/gid inside it."""
    extents = [parse_extent(m) for m in maps]
    fd = make_userns(extents, extents)
    try:
        syscalls.setns(fd, syscalls.CLONE_NEWUSER)
    finally:
        os.close(fd)
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m shiftctl.nsexec")
    ap.add_argument("--map", action="append", default=[])
    ap.add_argument("--uid", type=int, default=0)
    ap.add_argument("--gid", type=int, default=0)
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args(argv)
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    if not cmd:
        ap.error("no command")
    enter(a.map or ["0:131072:65536"], a.uid, a.gid)
    try:
        os.execvp(cmd[0], cmd)
    except OSError as err:
        print(f"nsexec: {cmd[0]}: {err.strerror}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main())
