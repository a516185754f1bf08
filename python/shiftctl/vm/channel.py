"""The result channel: framed records the guest writes to a virtio port.

Each record is

    SHIFTFS-FILE <nonce> <name> <length>\\n<length bytes>\\nSHIFTFS-END <nonce> <name>\\n

and the last one is the exit status:

    SHIFTFS-EXIT <nonce> <status>\\n

The nonce is chosen by the host per boot, so stale bytes or a command that
prints look-alike lines cannot forge a result.  A record that is cut short
(the guest died while writing) is dropped and reported as truncated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_HEADER = re.compile(rb"SHIFTFS-(FILE|EXIT) (\S+) (\S+)(?: (\d+))?\n")


@dataclass
class Result:
    status: int | None = None            # None: the guest never reported
    files: dict[str, bytes] = field(default_factory=dict)
    truncated: list[str] = field(default_factory=list)
    foreign: int = 0                     # records with another nonce

    @property
    def complete(self) -> bool:
        return self.status is not None and not self.truncated


def parse(data: bytes, nonce: str) -> Result:
    res = Result()
    pos = 0
    want = nonce.encode()
    while True:
        m = _HEADER.search(data, pos)
        if not m:
            break
        kind, rec_nonce, name = m.group(1), m.group(2), m.group(3)
        if rec_nonce != want:
            res.foreign += 1
            pos = m.end()
            continue
        if kind == b"EXIT":
            try:
                res.status = int(name)
            except ValueError:
                res.truncated.append("exit status")
            pos = m.end()
            continue
        length = int(m.group(4) or 0)
        body_start = m.end()
        body_end = body_start + length
        trailer = b"\nSHIFTFS-END " + want + b" " + name + b"\n"
        if data[body_end:body_end + len(trailer)] != trailer:
            res.truncated.append(name.decode(errors="replace"))
            pos = body_start
            continue
        res.files[name.decode(errors="replace")] = data[body_start:body_end]
        pos = body_end + len(trailer)
    return res


def frame(nonce: str, name: str, body: bytes) -> bytes:
    """The host-side encoder (the guest's shell does the same); for tests."""
    return (f"SHIFTFS-FILE {nonce} {name} {len(body)}\n".encode() + body
            + f"\nSHIFTFS-END {nonce} {name}\n".encode())


def frame_exit(nonce: str, status: int) -> bytes:
    return f"SHIFTFS-EXIT {nonce} {status}\n".encode()
