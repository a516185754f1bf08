"""Load: stress-ng's filesystem stressors and fio with crc32c verification
through shiftfs, for a fixed time; afterwards every file left on the lower
has ids inside the map's disk range, and fio verifies the data again
through a fresh mount with the page cache dropped.
"""

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import (BASE, FIGURES, FIO_SECONDS, RANGE, SHIFT_DOWN, SHIFT_UP,
                      STRESS_SECONDS, WORK, fstype_of, ids_outside,
                      mount_shiftfs, note_finding, nsexec_cmd, nsexec_env,
                      umount)

STRESSORS = ["dir", "dentry", "file-ioctl", "chown", "chmod", "rename",
             "link", "symlink", "xattr", "fallocate", "mmap", "flock",
             "lockf", "io-uring"]
# keep each stressor's working set small: TCG is slow and the lowers are
# 512 MiB loop images / a shared tmpfs
LIMITS = ["--dir-dirs", "512", "--dentries", "512",
          "--mmap-bytes", "8m", "--fallocate-bytes", "8m"]

pytestmark = pytest.mark.skipif(shutil.which("stress-ng") is None and
                                shutil.which("fio") is None,
                                reason="stress-ng and fio not installed "
                                "(scripts/install-deps.sh)")


def available_stressors():
    out = subprocess.run(["stress-ng", "--stressors"], capture_output=True,
                         text=True).stdout.split()
    return [s for s in STRESSORS if s in out]


def parse_metrics(yaml_text):
    """{stressor: bogo-ops} from stress-ng's --yaml output."""
    ops, cur = {}, None
    for line in yaml_text.splitlines():
        m = re.match(r"\s*- stressor:\s*(\S+)", line)
        if m:
            cur = m.group(1)
            continue
        m = re.match(r"\s*bogo-ops:\s*(\d+)", line)
        if m and cur:
            ops[cur] = int(m.group(1))
    return ops


def run_stress(target, prefix, tag):
    names = available_stressors()
    args = []
    for s in names:
        args += [f"--{s}", "1"]
    # /tmp (1777): the container's root must be able to write it
    yaml = Path("/tmp") / f"shiftfs-stress-{tag}.yaml"
    yaml.unlink(missing_ok=True)
    cmd = prefix + ["stress-ng", "--temp-path", str(target), *args,
                    *LIMITS, "-t", f"{STRESS_SECONDS}s", "--metrics-brief",
                    "--keep-files", "--yaml", str(yaml)]
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True,
                       timeout=STRESS_SECONDS * 12 + 120, env=nsexec_env())
    secs = time.monotonic() - t0
    out = r.stdout + r.stderr
    ops = parse_metrics(yaml.read_text()) if yaml.exists() else {}
    FIGURES["load"]["stress_ng_runs"] += 1
    FIGURES["load"]["stress_ng_bogo_ops"] += sum(ops.values())
    FIGURES["load"]["stress_ng_seconds"] += round(secs, 1)
    for s in names:
        if s not in FIGURES["load"]["stress_ng_stressors"]:
            FIGURES["load"]["stress_ng_stressors"].append(s)
    return r.returncode, out, ops, names


def check_stress(rc, out, ops, names, tag):
    fails = [ln for ln in out.splitlines()
             if re.search(r"\bfail\b|failed|error", ln)
             and "failed: 0" not in ln]
    # stress-ng: 0 ok, 3 no resources, 4 not implemented (a stressor
    # skipped itself, e.g. xattr or fallocate not supported yet)
    skipped = [s for s in names if s.replace("-", "_") not in ops
               and s not in ops]
    if skipped:
        note_finding(f"stress-ng {tag}: no bogo-ops from {skipped}")
    assert rc in (0, 3, 4), (f"stress-ng {tag} exit {rc}:\n" +
                             "\n".join(fails[-40:] or out.splitlines()[-40:]))
    assert sum(ops.values()) > 0, f"stress-ng {tag}: no bogo-ops:\n{out[-3000:]}"


def test_stress_ng_host_root_shift_down(lower2, mnt):
    """Host root on a SHIFT_DOWN map (disk 0x20000+N seen as N): all it
    creates lands at 0x20000+."""
    os.chown(lower2, BASE, BASE)
    mount_shiftfs(lower2, mnt, SHIFT_DOWN)
    tag = f"host-{fstype_of(lower2)}"
    rc, out, ops, names = run_stress(mnt, [], tag)
    umount(mnt)
    check_stress(rc, out, ops, names, tag)
    n, bad = ids_outside(lower2, BASE, BASE + RANGE)
    FIGURES["load"]["files_id_checked"] += n
    assert not bad, f"{len(bad)} of {n} lower entries outside the map: " \
                    f"{bad[:10]}"


def test_stress_ng_container_root_shift_up(lower2, mnt):
    """Container root (host 0x20000) on a SHIFT_UP map: all it creates
    lands at disk 0..0xffff."""
    mount_shiftfs(lower2, mnt, SHIFT_UP)
    tag = f"container-{fstype_of(lower2)}"
    rc, out, ops, names = run_stress(mnt, nsexec_cmd(), tag)
    umount(mnt)
    check_stress(rc, out, ops, names, tag)
    n, bad = ids_outside(lower2, 0, RANGE)
    FIGURES["load"]["files_id_checked"] += n
    assert not bad, f"{len(bad)} of {n} lower entries outside the map: " \
                    f"{bad[:10]}"


FIO_CASES = [("tmpfs", False), ("ext4", False), ("ext4", True),
             ("xfs", True)]


def fio_job(directory, direct, seconds, verify_only=False):
    return f"""
[global]
directory={directory}
ioengine=psync
rw=randwrite
bsrange=4k-64k
size=8m
numjobs=4
direct={1 if direct else 0}
verify=crc32c
verify_fatal=1
do_verify=1
{'verify_only=1' if verify_only else f'runtime={seconds}'}
{'verify_state_load=1' if verify_only else ''}
group_reporting=0
randrepeat=1
[shiftfs-verify]
"""


def run_fio(job, prefix, tag, state):
    """Run fio on `job`; its verify state (how far each job wrote when the
    runtime ran out) is kept in `state`, for a later verify_only pass."""
    jobfile = WORK / f"{tag}.fio"
    jobfile.write_text(job)
    t0 = time.monotonic()
    r = subprocess.run(prefix + ["fio", "--output-format=json",
                                 f"--aux-path={state}", str(jobfile)],
                       capture_output=True, text=True, timeout=600,
                       env=nsexec_env())
    FIGURES["load"]["fio_seconds"] += round(time.monotonic() - t0, 1)
    assert r.returncode == 0, f"fio {tag} exit {r.returncode}:\n" \
                              f"{r.stderr[-3000:]}\n{r.stdout[-2000:]}"
    text = r.stdout[r.stdout.index("{"):]
    data = json.loads(text)
    errs = [j.get("error", 0) for j in data["jobs"]]
    assert not any(errs), f"fio {tag}: job errors {errs}"
    read = sum(j["read"]["io_bytes"] for j in data["jobs"])
    FIGURES["load"]["fio_jobs"] += len(data["jobs"])
    FIGURES["load"]["fio_bytes_verified"] += read
    return data, read


@pytest.mark.parametrize("fs,direct", FIO_CASES,
                         ids=[f"{f}-{'direct' if d else 'buffered'}"
                              for f, d in FIO_CASES])
def test_fio_verify(fs, direct, scratch, mnt):
    """fio writes and verifies (crc32c) as container root through a
    SHIFT_UP mount; then a fresh mount with dropped caches verifies again;
    the lower's files are at disk ids 0..0xffff."""
    import tempfile

    from conftest import cf
    if shutil.which("fio") is None:
        pytest.skip("fio not installed")
    root = cf._fs_root(fs, scratch)
    lower = Path(tempfile.mkdtemp(prefix="fio-", dir=root))
    os.chmod(lower, 0o755)
    try:
        mount_shiftfs(lower, mnt, SHIFT_UP)
        tag = f"fio-{fs}-{'direct' if direct else 'buffered'}"
        state = WORK / f"{tag}-state"
        shutil.rmtree(state, ignore_errors=True)
        state.mkdir(parents=True)
        os.chmod(state, 0o1777)     # container root writes its state here
        data, read = run_fio(fio_job(mnt, direct, FIO_SECONDS),
                             nsexec_cmd(), tag, state)
        written = sum(j["write"]["io_bytes"] for j in data["jobs"])
        assert written > 0, "fio wrote nothing"
        umount(mnt)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        mount_shiftfs(lower, mnt, SHIFT_UP)
        # up to where each job got (a slow kernel stops writing early)
        _, read2 = run_fio(fio_job(mnt, direct, FIO_SECONDS, True),
                           nsexec_cmd(), tag + "-again", state)
        assert read2 == written, \
            f"verified {read2} bytes after remount, {written} were written"
        umount(mnt)
        n, bad = ids_outside(lower, 0, RANGE)
        FIGURES["load"]["files_id_checked"] += n
        assert n >= 4 and not bad, (n, bad[:10])
    finally:
        umount(mnt)
        shutil.rmtree(lower, ignore_errors=True)
