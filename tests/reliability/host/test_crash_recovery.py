"""A guest killed hard after sync, rebooted, shows every synced byte and
id intact.  Runs on the HOST (it boots two guests with the harness API):

    build/venv/bin/python -m pytest tests/reliability/host -q

Boot 1 writes a seeded tree through shiftfs (SHIFT_UP, as container
users) onto ext4 on a virtio disk (an image in build/), syncs, writes more
and resets the machine at once (sysrq b: no unmount, no further sync).
Boot 2 mounts the disk (journal replay) and checks every synced file's
bytes and disk ids, the view ids through a fresh shiftfs mount, and
e2fsck -fn.

Needs `qemu.boot(..., extra_args=[...])` (extra QEMU arguments); until the
harness has it, a shim appends the arguments to the QEMU command line.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "python"))
KERNEL = os.environ.get("SHIFTFS_REL_CRASH_KERNEL", "6.1")
GUEST = "tests/reliability/host/crash_guest.py"


@pytest.fixture
def harness():
    if os.geteuid() != 0:
        pytest.skip("needs root (mkfs, the harness)")
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("no qemu")
    from shiftctl.vm import build as kbuild
    from shiftctl.vm import fetch, qemu
    kernel = fetch.fetch(KERNEL)
    ko = kbuild.build(kernel)
    return qemu, kernel, ko


def boot_with_disk(qemu, kernel, ko, command, img, timeout):
    extra = ["-drive", f"file={img},if=virtio,format=raw,cache=writeback"]
    env = {"SHIFTFS_EXTRA_MODULES": "virtio_blk"}
    return qemu.boot(kernel, ko, command, timeout=timeout, tag="crash",
                     stream=False, env=env, extra_args=extra)


def test_synced_data_and_ids_survive_a_hard_reset(harness, tmp_path):
    qemu, kernel, ko = harness
    imgdir = REPO / "build" / "reliability"
    imgdir.mkdir(parents=True, exist_ok=True)
    img = imgdir / f"crash-{os.getpid()}.img"
    try:
        with open(img, "wb") as f:
            f.truncate(256 << 20)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(img)], check=True)
        py = sys.executable
        b1 = boot_with_disk(qemu, kernel, ko,
                            f"{py} {GUEST} write /dev/vda", img, 300)
        assert "SYNCED" in b1.output, b1.output[-3000:]
        assert b1.status is None, "the guest was not reset (status sent)"
        assert not b1.timed_out
        assert not b1.findings, b1.findings
        b2 = boot_with_disk(qemu, kernel, ko,
                            f"{py} {GUEST} verify /dev/vda", img, 300)
        assert not b2.findings, b2.findings
        res = json.loads(b2.files.get("crash.json", b"{}") or b"{}")
        assert b2.status == 0, (b2.output[-3000:], res)
        assert res["checked"] == 40 and not res["bad"], res
        assert res["fsck_rc"] == 0, res["fsck"]
        out = REPO / "build" / "reliability" / f"crash-{KERNEL}.json"
        out.write_text(json.dumps({"kernel": kernel.release, **res,
                                   "boot1_s": round(b1.seconds, 1),
                                   "boot2_s": round(b2.seconds, 1)},
                                  indent=1))
    finally:
        img.unlink(missing_ok=True)
