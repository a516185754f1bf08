"""Per-kernel results: JUnit counts, the kernel-log verdict, the table."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Counts:
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    errors: int = 0

    @property
    def total(self) -> int:
        return self.passed + self.failed + self.skipped + self.errors


def junit_counts(xml: bytes) -> Counts:
    """Counts from a pytest JUnit XML document (one or more testsuites)."""
    root = ET.fromstring(xml)
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    c = Counts()
    for s in suites:
        tests = int(s.get("tests", 0))
        failures = int(s.get("failures", 0))
        errors = int(s.get("errors", 0))
        skipped = int(s.get("skipped", 0))
        c.failed += failures
        c.errors += errors
        c.skipped += skipped
        c.passed += tests - failures - errors - skipped
    return c


@dataclass
class Row:
    kernel: str
    release: str
    version: str
    counts: Counts = field(default_factory=Counts)
    seconds: float = 0.0
    klog_clean: bool = True
    status: int | None = None
    note: str = ""
    console: Path | None = None     # the guest's console log, if kept

    @property
    def ok(self) -> bool:
        return (self.status == 0 and self.klog_clean and self.counts.failed == 0
                and self.counts.errors == 0 and self.counts.total > 0)


HEADER = ("kernel", "version", "passed", "failed", "skipped", "seconds",
          "klog clean", "result")


def table(rows: list[Row]) -> str:
    lines = [HEADER]
    for r in rows:
        lines.append((
            r.kernel, f"{r.release} ({r.version})", str(r.counts.passed),
            str(r.counts.failed + r.counts.errors), str(r.counts.skipped),
            f"{r.seconds:.0f}", "yes" if r.klog_clean else "NO",
            ("PASS" if r.ok else "FAIL") + (f": {r.note}" if r.note else ""),
        ))
    widths = [max(len(row[i]) for row in lines) for i in range(len(HEADER))]
    out = []
    for n, row in enumerate(lines):
        out.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths))
                   .rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)
