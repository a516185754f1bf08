"""Fixtures for the shiftfs reliability suite (load, fsx, faults, bad
input, escapes), run in the guest as root like tests/conformance.

The conformance fixtures (lower filesystems, mnt, as_process, FsContext,
mount_shiftfs, SHIFT_UP/SHIFT_DOWN) are reused: tests/conformance/conftest.py
is loaded under its own module name (both files are called conftest.py)
and its helpers and fixtures are re-exported from here.

Durations and sizes are parameters, from the environment:

    SHIFTFS_REL_STRESS_SECONDS   stress-ng time per run           (8)
    SHIFTFS_REL_FIO_SECONDS      fio write+verify time per job    (6)
    SHIFTFS_REL_FSX_OPS          shiftfsx ops per seed            (1500)
    SHIFTFS_REL_FSX_SEEDS        comma-separated seeds            (1,2)
    SHIFTFS_REL_CORPUS           bad-input corpus size (>= 1000)  (1200)

What ran is counted in a session-wide ``figures`` dict and written to
/results/reliability.json at the end (the harness brings /results back).
The tests under host/ run on the host (they boot guests themselves) and
are not collected in the guest.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
IN_GUEST = bool(os.environ.get("SHIFTFS_NONCE"))

_spec = importlib.util.spec_from_file_location(
    "shiftfs_conformance_conftest", HERE.parent / "conformance" / "conftest.py")
cf = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = cf
_spec.loader.exec_module(cf)

# helpers and fixtures of the conformance suite, under the same names
for _name in cf.__all__:
    globals()[_name] = getattr(cf, _name)
_cleanup_session = cf._cleanup_session          # unmounts the lower fs

if IN_GUEST:
    collect_ignore = ["host"]
else:
    # On the host only host/ runs; the guest tests need the guest.
    collect_ignore_glob = ["test_*.py"]


def env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


STRESS_SECONDS = env_int("SHIFTFS_REL_STRESS_SECONDS", 8)
FIO_SECONDS = env_int("SHIFTFS_REL_FIO_SECONDS", 6)
FSX_OPS = env_int("SHIFTFS_REL_FSX_OPS", 1500)
FSX_SEEDS = [int(s) for s in
             os.environ.get("SHIFTFS_REL_FSX_SEEDS", "1,2").split(",") if s]
CORPUS_SIZE = max(1000, env_int("SHIFTFS_REL_CORPUS", 1200))

WORK = Path("/run/shiftfs-reliability")
RESULTS = Path("/results")

# ------------------------------------------------------------------ figures

FIGURES: dict = {
    "kernel": os.uname().release,
    "matrix_kernel": os.environ.get("SHIFTFS_MATRIX_KERNEL", ""),
    "load": {"stress_ng_runs": 0, "stress_ng_bogo_ops": 0,
             "stress_ng_seconds": 0.0, "stress_ng_stressors": [],
             "fio_jobs": 0, "fio_bytes_verified": 0, "fio_seconds": 0.0,
             "files_id_checked": 0},
    "fsx": {"runs": 0, "ops": 0, "seconds": 0.0, "unsupported": {}},
    "faults": {"tried": 0, "survived": 0, "eio_seen": 0, "names": []},
    "bad_input": {"tried": 0, "refused": 0, "with_reason": 0,
                  "errnos": {}},
    "escapes": {"tried": 0, "refused": 0, "names": []},
    "findings": [],
}


@pytest.fixture(scope="session")
def figures():
    return FIGURES


def note_finding(text: str) -> None:
    """Something worth reporting that does not fail the suite (a missing
    kernel feature, a documented limitation)."""
    if text not in FIGURES["findings"]:
        FIGURES["findings"].append(text)


def pytest_sessionfinish(session, exitstatus):
    if not IN_GUEST:
        return
    FIGURES["exitstatus"] = int(exitstatus)
    FIGURES["wall_seconds"] = round(time.monotonic() - _T0, 1)
    try:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "reliability.json").write_text(
            json.dumps(FIGURES, indent=2, sort_keys=True) + "\n")
    except OSError:
        pass


_T0 = time.monotonic()

# ----------------------------------------------------------------- fixtures


@pytest.fixture(scope="session", autouse=True)
def _require_guest():
    if not IN_GUEST:
        return              # host: only host/ is collected (see above)
    if os.geteuid() != 0:
        pytest.skip("the reliability suite runs as root in the harness guest")
    if not cf.shiftfs_loaded():
        ko = os.environ.get("SHIFTFS_KO")
        if ko:
            subprocess.run(["insmod", ko], check=False)
    if not cf.shiftfs_loaded():
        pytest.skip("shiftfs is not loaded")
    WORK.mkdir(parents=True, exist_ok=True)


@pytest.fixture(scope="session")
def shiftfsx():
    """The fsx-like tester, compiled for this guest."""
    src = HERE / "fsx" / "shiftfsx.c"
    out = WORK / "shiftfsx"
    WORK.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-o",
                        str(out), str(src)], capture_output=True, text=True)
    assert r.returncode == 0, f"shiftfsx did not build:\n{r.stderr}"
    return out


@pytest.fixture(params=["ext4", "tmpfs"])
def lower2(request, scratch):
    """A fresh directory on ext4 or tmpfs (the load tests' two lowers)."""
    import shutil
    import tempfile

    root = cf._fs_root(request.param, scratch)
    d = Path(tempfile.mkdtemp(prefix="r-", dir=root))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def fstype_of(path) -> str:
    r = subprocess.run(["stat", "-f", "-c", "%T", str(path)],
                       capture_output=True, text=True)
    t = r.stdout.strip()
    return {"ext2/ext3": "ext4"}.get(t, t)


def nsexec_cmd(base: int = cf.BASE, count: int = cf.RANGE) -> list[str]:
    """Prefix that runs a command as root of a container whose root is
    host uid/gid BASE (via shiftctl.nsexec)."""
    return [sys.executable, "-m", "shiftctl.nsexec", "--map",
            f"0:{base}:{count}", "--"]


def nsexec_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "python") + (
        ":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def ids_outside(root, lo: int, hi: int):
    """Entries below root (root excluded) whose uid or gid is outside
    [lo, hi)."""
    bad, n = [], 0
    root = str(root)
    for path, uid, gid in cf.lower_ids_all(root):
        if path == root:
            continue
        n += 1
        if not (lo <= uid < hi and lo <= gid < hi):
            bad.append((path, uid, gid))
    return n, bad
