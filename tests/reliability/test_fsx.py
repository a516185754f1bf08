"""shiftfsx (fsx/shiftfsx.c): seeded random writes, reads, truncates, mmap
reads/writes and fallocates on one file through shiftfs, checked after
every op against an in-memory model and against the lower file's bytes.
A failure prints the seed, the op log and the replay command.
"""

import json
import os
import subprocess
import time

import pytest

from conftest import (BASE, FIGURES, FSX_OPS, FSX_SEEDS, RANGE, SHIFT_UP,
                      fstype_of, ids, mount_shiftfs, note_finding,
                      nsexec_cmd, nsexec_env, umount)


def run_fsx(binary, view, lowerf, seed, nops, prefix=(), extra=()):
    cmd = [*prefix, str(binary), "-s", str(seed), "-n", str(nops),
           "-m", str(256 * 1024), *extra, str(view), str(lowerf)]
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                       env=nsexec_env())
    return r, time.monotonic() - t0


def lower_supported(lower):
    """Which fallocate modes the lower itself supports (probe a file on
    the lower directly), to tell kmod gaps from lower limits."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    modes = {"falloc": 0, "falloc_keep_size": 1, "punch_hole": 3,
             "zero_range": 0x10, "zero_range_keep": 0x11}
    out = {}
    p = os.path.join(lower, ".probe")
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"x" * 8192)
        for name, mode in modes.items():
            ret = libc.fallocate(fd, mode, ctypes.c_long(0),
                                 ctypes.c_long(4096))
            out[name] = ret == 0
    finally:
        os.close(fd)
        os.unlink(p)
    return out


def test_fsx_detects_corruption(shiftfsx, tmp_path):
    """The tester itself: a 'lower' that is a different file must fail
    with the seed and a replay line."""
    a, b = tmp_path / "a", tmp_path / "b"
    b.write_bytes(b"junk")
    r, _ = run_fsx(shiftfsx, a, b, 7, 50)
    assert r.returncode == 1, r.stderr
    assert "FAIL seed=7" in r.stderr and "replay: shiftfsx -s 7" in r.stderr


@pytest.mark.parametrize("seed", FSX_SEEDS)
def test_fsx(shiftfsx, lower, mnt, seed):
    """As container root (SHIFT_UP): N ops, model and lower agree; the
    file is on disk at uid/gid 0 (container root), seen as 0x20000."""
    fs = fstype_of(lower)
    mount_shiftfs(lower, mnt, SHIFT_UP)
    view, lowerf = mnt / "fsx.dat", lower / "fsx.dat"
    r, secs = run_fsx(shiftfsx, view, lowerf, seed, FSX_OPS,
                      prefix=nsexec_cmd())
    FIGURES["fsx"]["runs"] += 1
    FIGURES["fsx"]["seconds"] += round(secs, 1)
    assert r.returncode == 0, (f"shiftfsx on {fs} failed (seed {seed}):\n"
                               f"{r.stderr[-6000:]}")
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    FIGURES["fsx"]["ops"] += summary["ops"]
    if summary["unsupported"]:
        FIGURES["fsx"]["unsupported"][fs] = summary["unsupported"]
        lsup = lower_supported(lower)
        gaps = [m for m in summary["unsupported"] if lsup.get(m)]
        if gaps:
            note_finding(f"shiftfs on {fs}: {gaps} give EOPNOTSUPP though "
                         f"the lower supports them (no .fallocate in "
                         f"shiftfs_file_ops yet)")
    assert ids(lowerf) == (0, 0)
    assert ids(view) == (BASE, BASE)
    assert os.path.getsize(lowerf) == summary["final_size"]
    umount(mnt)
    assert 0 < RANGE
