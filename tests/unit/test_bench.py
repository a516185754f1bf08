"""The benchmark's pure parts: selection checks, maps, statistics, report."""

from __future__ import annotations

import pytest

from shiftctl.bench import guest, report


def test_selection_accepts_known_names() -> None:
    guest.check_selection("W1,W5", "shiftfs,bindfs", ("shiftfs:W3",))
    guest.check_selection(None, None)


@pytest.mark.parametrize("workloads,paths,profiles,word", [
    ("W9", None, (), "workload"),
    (None, "nfs", (), "path"),
    (None, None, ("shiftfs",), "PATH:WORKLOAD"),
    (None, None, ("shiftfs:W0",), "PATH:WORKLOAD"),
])
def test_selection_refuses_unknown(workloads: str | None, paths: str | None,
                                   profiles: tuple[str, ...], word: str) -> None:
    with pytest.raises(ValueError, match=word):
        guest.check_selection(workloads, paths, profiles)


@pytest.mark.parametrize("n", [1, 5, 340])
def test_extents_cover_the_range_contiguously(n: int) -> None:
    ext = [tuple(int(x) for x in e.split(":")) for e in guest.extents(n)]
    assert len(ext) == n
    assert sum(c for _, _, c in ext) == guest.COUNT
    start = 0
    for disk, view, count in ext:
        assert disk == start and view == guest.BASE + start and count > 0
        start += count


def test_median_and_ratio() -> None:
    assert guest.median([3.0, 1.0, 2.0]) == 2.0
    assert guest.median([4.0, 1.0, 2.0, 3.0]) == 2.5
    recs = guest.records("tmpfs", {("W1", "native"): [1.0, 2.0, 3.0],
                                   ("W1", "shiftfs"): [2.2, 2.0, 9.0]})
    by = {r["path"]: r for r in recs}
    assert by["shiftfs"]["ratio_to_native"] == pytest.approx(1.1)
    assert by["shiftfs"]["min_s"] == 2.0 and by["shiftfs"]["max_s"] == 9.0


def _doc() -> dict:
    times = {("W1", "native"): [1.0], ("W1", "shiftfs"): [1.05],
             ("W1", "bindfs"): [20.0], ("W6", "native"): [1.0],
             ("W6", "shiftfs"): [1.2]}
    return {"kernel": "6.1.0-test", "date": "2026-12-03", "rounds": 1,
            "scale": {"walk_files": 100}, "records": guest.records("tmpfs", times),
            "scaling": [{"fs": "tmpfs", "workload": "W1", "extents": 1,
                         "path": "shiftfs", "ratio_to_native": 1.00},
                        {"fs": "tmpfs", "workload": "W1", "extents": 340,
                         "path": "shiftfs", "ratio_to_native": 1.10}],
            "memory": {"tmpfs": {"native": 10, "shiftfs": 20,
                                 "extra_bytes_per_file": 102.4}}}


def test_targets_pass_and_miss() -> None:
    lines = report.targets(_doc())
    assert "PASS tmpfs W1: shiftfs 1.05x (target <= 1.10)" in lines
    assert any(ln.startswith("MISS tmpfs W6: shiftfs 1.20x") for ln in lines)
    assert any(ln.startswith("PASS tmpfs W1: bindfs / shiftfs = 19.0")
               for ln in lines)
    assert any(ln.startswith("MISS tmpfs W1: 340 extents +10.0%")
               for ln in lines)
    assert any(ln.startswith("PASS tmpfs: 102 extra bytes") for ln in lines)


def test_markdown_table() -> None:
    md = report.markdown(_doc())
    assert "Kernel 6.1.0-test, 2026-12-03" in md
    assert "| W1 stat x10 (hot) | 1000.0 ms | 1.05x | 20.00x |" in md
    assert "| tmpfs | W1 | 1.00x | - | 1.10x |" in md
