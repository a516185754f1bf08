"""Differential suite (issue 6): every (case, actor) on shiftfs and on an
upstream idmapped mount of an identical lower tree with the same map;
return value or errno, the ids and modes seen through the mount, and the
ids, modes and xattrs that landed on the lower must be equal.

Where the running kernel cannot idmap the lower (tmpfs before 6.3), the
shiftfs outcome is compared with the idmapped outcome the same case gave on
another kernel (differential/reference.json, written from a 6.12 run by
`shiftctl vm diff-report --update-reference`).  Results go to
/results/differential.json for the README matrix.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import LOWER_FS, _fs_root, umount
from differential import cases, engine

HERE = Path(__file__).parent
REFERENCE = HERE / "differential" / "reference.json"
RESULTS = Path("/results/differential.json")
SHIFT_OPTS = (f"shift_uids,shift_gids,uidmap=0:{engine.BASE}:{engine.COUNT},"
              f"gidmap=0:{engine.BASE}:{engine.COUNT}")

ALL_OPS = {**cases.OPS, **{k: v[2] for k, v in cases.SYSCTL.items()}}
# Every actor on ext4; the core actors on the other filesystems (the whole
# matrix on four filesystems does not fit CI's time under TCG).
CORE_ACTORS = ("host-root", "ct-root", "ct-user")


def actors_for(fs: str) -> list:
    return [a for a in engine.ACTORS
            if fs == "ext4" or a.name in CORE_ACTORS]


ITEMS = [(fs, c) for fs in LOWER_FS for c in ALL_OPS]

_state: dict = {"fs": {}, "outcomes": {}, "divergent": {}}


def _shiftctl() -> str:
    return str(Path(sys.executable).with_name("shiftctl"))


class Side:
    def __init__(self, lower: Path, mnt: Path) -> None:
        self.lower, self.mnt = lower, mnt


@pytest.fixture(scope="session")
def workers():
    pool = engine.UsernsPool()
    made: dict = {}

    def get(actor):
        if actor.name not in made:
            made[actor.name] = engine.Worker(actor, pool.fd, ALL_OPS)
        return made[actor.name]
    yield get
    for w in made.values():
        w.close()
    pool.close()


_SIDES: dict = {}


def sides(fs: str, scratch: Path):
    """(shiftfs side, idmapped side or None, why not) for a lower fs."""
    if fs in _SIDES:
        return _SIDES[fs]
    root = _fs_root(fs, scratch)
    made = []
    for name in ("diff-shiftfs", "diff-idmapped"):
        low, mnt = root / name, scratch / f"mnt-{fs}-{name}"
        for p in (low, mnt):
            p.mkdir(exist_ok=True)
            os.chmod(p, 0o755)
        made.append(Side(low, mnt))
    a, b = made
    r = subprocess.run(["mount", "-t", "shiftfs", "-o", SHIFT_OPTS,
                        str(a.lower), str(a.mnt)], capture_output=True,
                       text=True)
    if r.returncode:
        raise AssertionError(f"shiftfs mount failed: {r.stderr.strip()}")
    r = subprocess.run([_shiftctl(), "mount", "--force", "--backend",
                        "idmapped", "--uidmap",
                        f"0:{engine.BASE}:{engine.COUNT}", "--gidmap",
                        f"0:{engine.BASE}:{engine.COUNT}", str(b.lower),
                        str(b.mnt)], capture_output=True, text=True)
    why = None
    if r.returncode:
        why = r.stderr.strip().splitlines()[-1] if r.stderr else "failed"
        b = None
    _SIDES[fs] = (a, b, why)
    _state["fs"].setdefault(fs, {"equal": 0, "total": 0, "seconds": 0.0,
                                 "against": "idmapped" if b else
                                 "reference", "why": why})
    return _SIDES[fs]


@pytest.fixture(scope="session", autouse=True)
def _write_results():
    yield
    for a, b, _ in _SIDES.values():
        for side in (a, b):
            if side:
                umount(side.mnt)
    if _state["fs"]:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps({
            "kernel": os.uname().release, "fs": _state["fs"],
            "cases": len(ALL_OPS), "actors": len(engine.ACTORS),
            "outcomes": _state["outcomes"],
            "divergent": _state["divergent"]}) + "\n")


def _digest(outcome: dict) -> str:
    return hashlib.sha256(json.dumps(outcome, sort_keys=True).encode()
                          ).hexdigest()[:16]


def _reference() -> tuple[dict, dict]:
    """(idmapped digests, digests of documented shiftfs divergences)."""
    if REFERENCE.exists():
        doc = json.loads(REFERENCE.read_text())
        return doc.get("digests", {}), doc.get("divergent", {})
    return {}, {}


def _user_xattrs(path: Path) -> bool:
    try:
        os.setxattr(path, "user.probe", b"1")
        os.removexattr(path, "user.probe")
        return True
    except OSError:
        return False


def _run_side(side: Side, tag: str, worker, op: str) -> dict:
    low, view = side.lower / tag, side.mnt / tag
    if low.exists():
        shutil.rmtree(low)
    cases.make_tree(low)
    try:
        return engine.outcome(worker, op, view, low)
    finally:
        shutil.rmtree(low, ignore_errors=True)


def _diff(got: dict, want: dict) -> str:
    """A short account of where two outcomes differ."""
    out = []
    if got["ret"] != want["ret"]:
        out.append(f"ret {got['ret']!r} != {want['ret']!r}")
    for part in ("view", "disk"):
        g, w = got[part], want[part]
        for k in sorted(set(g) | set(w)):
            if g.get(k) != w.get(k):
                out.append(f"{part} {k}: {g.get(k)!r} != {w.get(k)!r}")
    return "; ".join(out)[:1500]


@pytest.mark.parametrize("fs,case", ITEMS, ids=[f"{fs}-{c}" for fs, c in ITEMS])
def test_same_as_idmapped(fs, case, scratch, workers):
    """One case, every actor: shiftfs against idmapped (or the reference)."""
    a, b, why = sides(fs, scratch)
    rec = _state["fs"][fs]
    t0 = time.monotonic()
    sysctl = cases.SYSCTL.get(case)
    knob, old = None, None
    if sysctl:
        knob = Path(f"/proc/sys/fs/protected_{sysctl[0]}")
        old = knob.read_text()
        knob.write_text(f"{sysctl[1]}\n")
    reference, ref_divergent = _reference() if b is None else ({}, {})
    if b is None and case == "user-xattr" and not _user_xattrs(a.lower):
        pytest.skip(f"{fs} on this kernel has no user.* xattrs; the "
                    "reference kernel's has, so the outcomes cannot match")
    bad, unchecked = [], 0
    try:
        for actor in actors_for(fs):
            worker = workers(actor)
            tag = f"{case}--{actor.name}"
            key = f"{fs}|{case}|{actor.name}"
            got = _run_side(a, tag, worker, case)
            if b is not None:
                want = _run_side(b, tag, worker, case)
                _state["outcomes"][key] = _digest(want)
                why_not = _diff(got, want) if got != want else ""
                reason = why_not and cases.divergence(case, actor.name, got,
                                                      want)
                if reason:
                    _state["divergent"][key] = _digest(got)
                    rec["divergent"] = rec.get("divergent", 0) + 1
                    rec.setdefault("divergences", {})[key] = reason
                    rec["total"] += 1
                    continue
            elif key in reference:
                d = _digest(got)
                if d != reference[key] and ref_divergent.get(key) == d:
                    rec["divergent"] = rec.get("divergent", 0) + 1
                    rec["total"] += 1
                    continue
                why_not = ("differs from the idmapped outcome on another "
                           "kernel" if d != reference[key] else "")
            else:
                unchecked += 1
                continue
            rec["total"] += 1
            if why_not:
                bad.append(f"{actor.name}: {why_not}")
            else:
                rec["equal"] += 1
    finally:
        if knob is not None:
            knob.write_text(old)
        rec["seconds"] += time.monotonic() - t0
    assert not bad, "\n".join(bad)
    if unchecked:
        pytest.skip(f"{fs}: no idmapped mount here ({why}) and no reference "
                    f"outcome recorded for {unchecked} actors")
