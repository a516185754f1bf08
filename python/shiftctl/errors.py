"""User-facing errors: one line on stderr, a documented exit code.

Exit codes of ``shiftctl`` (all commands but ``run``):

====  ==========================================================
code  meaning
====  ==========================================================
0     success
1     an operation failed (a syscall error, with its errno name and
      the kernel's reason; a missing lease; a test failure)
2     bad command line or bad map / option syntax (click's code)
3     refused by a safety check: the lower directory (or, for maps that
      show a non-root disk id as root, the mount point) is reachable by
      unprivileged host users; ``--force`` overrides
4     no free id range left, or the requested range is in use
5     not supported here: ``--backend idmapped`` on a filesystem/kernel
      that cannot idmap (mount_setattr EINVAL)
====  ==========================================================

``shiftctl run`` returns the command's status instead: its exit code, or
128+N when it was killed by signal N.  Failures of ``run`` itself, before
or around the command, use the container-runtime convention: 125 (the
message says why; e.g. refused, no range), 126 the command could not be
executed, 127 the command was not found.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1      # an operation failed (syscall error, test failure)
EXIT_USAGE = 2        # bad command line (click's own code)
EXIT_REFUSED = 3      # refused by a safety check (e.g. reachable lower)
EXIT_NO_RANGE = 4     # no free id range left / requested range busy
EXIT_UNSUPPORTED = 5  # the lower cannot be idmapped on this kernel
EXIT_RUN_FAILED = 125     # `shiftctl run`: setup failed before CMD ran
EXIT_CANNOT_EXEC = 126    # `shiftctl run`: CMD not executable
EXIT_NOT_FOUND = 127      # `shiftctl run`: CMD not found


class ShiftctlError(Exception):
    """An error meant for the user: printed as one line, no traceback."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code
