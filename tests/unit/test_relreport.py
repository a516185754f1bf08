"""The reliability table from the guest's counters."""

from shiftctl.vm import relreport


def _doc() -> dict:
    return {"kernel": "6.12.1", "wall_seconds": 420.0, "findings": ["x"],
            "load": {"stress_ng_stressors": ["dir", "chown"], "stress_ng_runs": 4,
                     "stress_ng_bogo_ops": 1234567, "stress_ng_seconds": 64.2,
                     "files_id_checked": 5000, "fio_jobs": 32,
                     "fio_bytes_verified": 262e6, "fio_seconds": 200.4},
            "fsx": {"runs": 8, "ops": 12000, "seconds": 150.0},
            "faults": {"survived": 5, "tried": 5, "eio_seen": 179},
            "bad_input": {"tried": 1201, "refused": 1201, "with_reason": 1072},
            "escapes": {"tried": 10, "refused": 10}}


def test_table_has_every_part() -> None:
    md = relreport.table({"6.12": _doc()})
    assert "| | 6.12 (6.12.1) |" in md
    assert "2 stressors x 4 runs, 1,234,567 bogo-ops in 64 s; 5,000" in md
    assert "32 jobs, 262 MB verified, 200 s" in md
    assert "5 of 5 survived, 179 EIOs" in md
    assert "1,201 tried, 1,201 refused, 1,072 with a reason" in md
    assert "| guest wall time | 7.0 min |" in md
    assert "- 6.12: x" in md


def test_missing_part_shows_dash() -> None:
    doc = _doc()
    del doc["fsx"]
    md = relreport.table({"6.1": doc, "7.2": _doc()})
    assert "| shiftfsx | - | 8 runs, 12,000 ops checked, 150 s |" in md
