"""The reliability figures: build/reliability-<kernel>.json as a table."""

from __future__ import annotations


def _n(x: float | int) -> str:
    return f"{x:,.0f}"


ROWS = (
    ("load: stress-ng", lambda d: (
        f"{len(d['load']['stress_ng_stressors'])} stressors x "
        f"{d['load']['stress_ng_runs']} runs, "
        f"{_n(d['load']['stress_ng_bogo_ops'])} bogo-ops in "
        f"{d['load']['stress_ng_seconds']:.0f} s; "
        f"{_n(d['load']['files_id_checked'])} lower entries id-checked")),
    ("load: fio (crc32c verify)", lambda d: (
        f"{d['load']['fio_jobs']} jobs, "
        f"{d['load']['fio_bytes_verified'] / 1e6:.0f} MB verified, "
        f"{d['load']['fio_seconds']:.0f} s")),
    ("shiftfsx", lambda d: (
        f"{d['fsx']['runs']} runs, {_n(d['fsx']['ops'])} ops checked, "
        f"{d['fsx']['seconds']:.0f} s")),
    ("faults", lambda d: (
        f"{d['faults']['survived']} of {d['faults']['tried']} survived, "
        f"{_n(d['faults']['eio_seen'])} EIOs to callers")),
    ("bad input", lambda d: (
        f"{_n(d['bad_input']['tried'])} tried, "
        f"{_n(d['bad_input']['refused'])} refused, "
        f"{_n(d['bad_input']['with_reason'])} with a reason")),
    ("escapes", lambda d: (
        f"{d['escapes']['tried']} tried, {d['escapes']['refused']} refused")),
    ("guest wall time", lambda d: f"{d['wall_seconds'] / 60:.1f} min"),
)


def table(docs: dict[str, dict]) -> str:
    """One column per kernel; a part the run did not reach shows '-'."""
    names = list(docs)
    lines = ["| | " + " | ".join(f"{n} ({docs[n].get('kernel', '?')})"
                                  for n in names) + " |",
             "|---" * (len(names) + 1) + "|"]
    for title, cell in ROWS:
        cells = []
        for n in names:
            try:
                cells.append(cell(docs[n]))
            except (KeyError, TypeError, ZeroDivisionError):
                cells.append("-")
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    findings = [f"{n}: {f}" for n in names for f in docs[n].get("findings", [])]
    if findings:
        lines += ["", "Findings reported by the runs:", ""]
        lines += [f"- {f}" for f in findings]
    return "\n".join(lines) + "\n"
