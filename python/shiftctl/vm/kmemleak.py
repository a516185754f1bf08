"""The kmemleak report a debug-kernel guest sends back, and its verdict.

At the end of a run on a debug kernel, scripts/guest-stage2.sh scans twice
(an object must be 5 s old before kmemleak reports it) and sends the
contents of /sys/kernel/debug/kmemleak as RESULT, or UNAVAILABLE when
kmemleak cannot scan (disabled, e.g. after its pool ran out).  Every
suspected leak fails the run; the ones with a shiftfs frame are named so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

RESULT = "kmemleak.txt"
UNAVAILABLE = "SHIFTFS-KMEMLEAK-UNAVAILABLE"
MODULE = "shiftfs"

_OBJECT = re.compile(r"^unreferenced object (0x[0-9a-f]+) \(size (\d+)\):")
_COMM = re.compile(r'^\s+comm "(.*)", pid (\d+)')
_FRAME = re.compile(r"^\s+\[<[0-9a-fA-Fx]+>\]\s+(\S.*?)\s*$")


@dataclass
class Leak:
    address: str
    size: int
    comm: str = "?"
    pid: int = 0
    backtrace: list[str] = field(default_factory=list)

    @property
    def involves_module(self) -> bool:
        """A frame in shiftfs: `[shiftfs]` (loaded) or a shiftfs_ symbol."""
        return any(f.endswith(f"[{MODULE}]") or f.startswith(f"{MODULE}_")
                   for f in self.backtrace)

    def summary(self, frames: int = 4) -> str:
        where = " <- ".join(f.split(" [")[0] for f in self.backtrace[:frames])
        return (f"unreferenced object {self.address} (size {self.size}), "
                f"comm {self.comm!r} pid {self.pid}: {where or '?'}")


def parse(text: str) -> list[Leak]:
    """The leaks of a /sys/kernel/debug/kmemleak read, in order."""
    leaks: list[Leak] = []
    in_trace = False
    for line in text.splitlines():
        m = _OBJECT.match(line)
        if m:
            leaks.append(Leak(address=m.group(1), size=int(m.group(2))))
            in_trace = False
            continue
        if not leaks:
            continue
        leak = leaks[-1]
        m = _COMM.match(line)
        if m:
            leak.comm, leak.pid = m.group(1), int(m.group(2))
        elif line.strip().startswith("backtrace"):
            in_trace = True
        elif in_trace:
            m = _FRAME.match(line)
            if m:
                leak.backtrace.append(m.group(1))
    return leaks


def findings(report: bytes | None) -> list[tuple[str, str]]:
    """(kind, line) like klog.scan: one per leak, or why there is no scan."""
    if report is None:
        return [("kmemleak", "no kmemleak report came back from the guest")]
    text = report.decode(errors="replace")
    if UNAVAILABLE in text:
        detail = text.replace(UNAVAILABLE, "").strip().splitlines()
        return [("kmemleak", "kmemleak could not scan"
                 + (f": {detail[0]}" if detail else ""))]
    found = []
    for leak in parse(text):
        kind = f"kmemleak ({MODULE})" if leak.involves_module else "kmemleak"
        found.append((kind, leak.summary()))
    return found
