"""Benchmark output: build/bench-<kernel>.json and a Markdown table."""

from __future__ import annotations

from shiftctl.bench.guest import PATHS, WORKLOADS

TITLES = {
    "W1": "W1 stat x10 (hot)", "W2": "W2 readdir+lstat", "W3": "W3 create+write+unlink",
    "W4": "W4 chown", "W5": "W5 open+close", "W6": "W6 seq read (cached)",
    "W7": "W7 seq write+fsync", "W8": "W8 mmap random 4K",
}
METADATA = ("W1", "W2", "W3", "W4", "W5")


def _cell(rec: dict | None) -> str:
    if rec is None:
        return "-"
    ratio = rec.get("ratio_to_native")
    if rec["path"] == "native":
        return f"{rec['median_s'] * 1000:.1f} ms"
    return f"{ratio:.2f}x" if ratio is not None else "?"


def markdown(doc: dict) -> str:
    recs = doc["records"]
    by = {(r["fs"], r["workload"], r["path"]): r for r in recs}
    fss = sorted({r["fs"] for r in recs}, key=lambda f: (f != "tmpfs", f))
    paths = [p for p in PATHS if any(r["path"] == p for r in recs)]
    out = [f"Kernel {doc['kernel']}, {doc['date']}, {doc['rounds']} "
           f"interleaved rounds{' (smoke scale)' if doc.get('smoke') else ''}; "
           "native column: median time, other columns: median / native "
           "median (lower is better)."]
    for fs in fss:
        out += ["", f"**{fs}**", "",
                "| workload | " + " | ".join(paths) + " |",
                "|---" * (len(paths) + 1) + "|"]
        for w in WORKLOADS:
            if not any((fs, w, p) in by for p in paths):
                continue
            out.append(f"| {TITLES[w]} | "
                       + " | ".join(_cell(by.get((fs, w, p))) for p in paths)
                       + " |")
    scaling = doc.get("scaling", [])
    if scaling:
        out += ["", "Map size (shiftfs, ratio to native):", "",
                "| fs | workload | 1 extent | 5 extents | 340 extents |",
                "|---|---|---|---|---|"]
        keyed = {(r["fs"], r["workload"], r["extents"]): r for r in scaling}
        for fs in fss:
            for w in ("W1", "W4"):
                cells = [keyed.get((fs, w, n)) for n in (1, 5, 340)]
                if any(cells):
                    out.append(f"| {fs} | {w} | " + " | ".join(
                        f"{c['ratio_to_native']:.2f}x" if c else "-"
                        for c in cells) + " |")
    mem = {fs: m for fs, m in doc.get("memory", {}).items() if m}
    if mem:
        out += ["", "Slab growth walking the tree (KiB; extra per cached "
                "file through shiftfs):", "",
                "| fs | files | native | shiftfs | extra bytes/file |",
                "|---|---|---|---|---|"]
        for fs in fss:
            m = mem.get(fs, {})
            if m:
                out.append(f"| {fs} | {doc['scale']['walk_files']} | "
                           f"{m.get('native', '-')} | {m.get('shiftfs', '-')} | "
                           f"{m.get('extra_bytes_per_file', '-')} |")
    skipped = {fs: s for fs, s in doc.get("skipped_paths", {}).items() if s}
    for fs, s in skipped.items():
        for p, why in s.items():
            out.append(f"\n{fs}: no {p} path: {why}")
    return "\n".join(out) + "\n"


def targets(doc: dict) -> list[str]:
    """The issue's targets, each as a PASS/MISS line (information only)."""
    by = {(r["fs"], r["workload"], r["path"]): r for r in doc["records"]}
    lines = []
    for (fs, w, p), r in sorted(by.items()):
        if p != "shiftfs" or r.get("ratio_to_native") is None:
            continue
        limit = 1.10 if w in METADATA else 1.02
        ratio = r["ratio_to_native"]
        ovl = by.get((fs, w, "overlayfs"))
        verdict = "PASS" if ratio <= limit else "MISS"
        extra = ""
        if ovl and ovl.get("ratio_to_native") is not None:
            extra = (f"; overlayfs {ovl['ratio_to_native']:.2f}x"
                     + (" (shiftfs above it)"
                        if ratio > ovl["ratio_to_native"] else ""))
        lines.append(f"{verdict} {fs} {w}: shiftfs {ratio:.2f}x "
                     f"(target <= {limit:.2f}){extra}")
        bfs = by.get((fs, w, "bindfs"))
        if w in ("W1", "W2", "W3") and bfs and bfs.get("ratio_to_native"):
            factor = bfs["ratio_to_native"] / ratio
            lines.append(f"{'PASS' if factor >= 10 else 'MISS'} {fs} {w}: "
                         f"bindfs / shiftfs = {factor:.1f} (target >= 10)")
    scal = {(r["fs"], r["workload"], r["extents"]): r
            for r in doc.get("scaling", [])}
    for (fs, w, n), r in sorted(scal.items()):
        one = scal.get((fs, w, 1))
        if n != 340 or not one or not one.get("ratio_to_native") \
                or r.get("ratio_to_native") is None:
            continue
        cost = r["ratio_to_native"] / one["ratio_to_native"] - 1
        lines.append(f"{'PASS' if cost <= 0.05 else 'MISS'} {fs} {w}: 340 "
                     f"extents {cost * 100:+.1f}% vs 1 (target <= +5%)")
    for fs, m in sorted(doc.get("memory", {}).items()):
        extra_b = m.get("extra_bytes_per_file")
        if extra_b is not None:
            lines.append(f"{'PASS' if extra_b <= 1024 else 'MISS'} {fs}: "
                         f"{extra_b:.0f} extra bytes per cached file "
                         "(target <= 1024)")
    return lines
