"""Progress lines for long steps (downloads, debootstrap, builds, boots)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager


def say(msg: str) -> None:
    print(f"[shiftctl] {msg}", file=sys.stderr, flush=True)


@contextmanager
def step(what: str) -> Iterator[None]:
    say(f"{what} ...")
    t0 = time.monotonic()
    try:
        yield
    except BaseException:
        say(f"{what}: failed after {time.monotonic() - t0:.1f}s")
        raise
    say(f"{what}: done in {time.monotonic() - t0:.1f}s")
