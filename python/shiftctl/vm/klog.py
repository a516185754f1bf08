"""Scan a guest kernel log for reports that fail a run whatever tests said."""

from __future__ import annotations

import re

# Each pattern is one kind of report; matched against single lines with the
# printk timestamp stripped.
PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    # specific reports first: they also contain "BUG:" or "WARNING:"
    ("KASAN", re.compile(r"KASAN: ")),
    ("UBSAN", re.compile(r"UBSAN: ")),
    ("lockdep", re.compile(r"possible circular locking dependency")),
    ("lockdep", re.compile(r"possible recursive locking detected")),
    ("lockdep", re.compile(r"inconsistent lock state")),
    ("lockdep", re.compile(r"suspicious RCU usage")),
    ("lockdep", re.compile(r"WARNING: (possible irq lock inversion|"
                           r"\S+-safe -> \S+-unsafe lock order|"
                           r"bad unlock balance|held lock freed|"
                           r"lock held when returning to user space|"
                           r"Nested lock was not taken)")),
    ("lockdep", re.compile(r"DEBUG_LOCKS_WARN_ON\(")),
    ("kmemleak", re.compile(r"kmemleak: \d+ new suspected memory leaks")),
    # kmemleak switched itself off: a clean scan would mean nothing
    ("kmemleak", re.compile(r"kmemleak: (Memory pool empty|Kernel memory "
                            r"leak detector disabled|Cannot allocate)")),
    ("list", re.compile(r"list_(add|del) corruption|list_add double add")),
    ("GPF", re.compile(r"general protection fault")),
    ("panic", re.compile(r"Kernel panic - not syncing")),
    ("hung", re.compile(r"blocked for more than \d+ seconds")),
    ("lockup", re.compile(r"soft lockup|hard LOCKUP|rcu_sched self-detected")),
    ("Oops", re.compile(r"\bOops\b")),
    ("BUG", re.compile(r"\bBUG: ")),
    ("BUG", re.compile(r"kernel BUG at ")),
    ("WARN", re.compile(r"\bWARNING: .*(at|CPU: \d+ PID)")),
    ("WARN", re.compile(r"------------\[ cut here \]------------")),
)

_TS = re.compile(r"^\s*(<\d+>)?\[\s*\d+\.\d+\]\s?")


def scan(text: str) -> list[tuple[str, str]]:
    """(kind, line) for every offending line, in order, without duplicates."""
    found: list[tuple[str, str]] = []
    seen: set[str] = set()
    for raw in text.splitlines():
        line = _TS.sub("", raw.rstrip("\r"))
        for kind, pat in PATTERNS:
            if pat.search(line):
                if line not in seen:
                    seen.add(line)
                    found.append((kind, line))
                break
    return found
