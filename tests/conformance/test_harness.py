"""The harness itself: the module in this guest is the one built for it."""

import os
import subprocess
from pathlib import Path

import pytest

KO = os.environ.get("SHIFTFS_KO", "")

pytestmark = pytest.mark.skipif(not KO, reason="not in a harness guest")


def modinfo(field: str) -> str:
    return subprocess.run(["modinfo", "-F", field, KO], check=True,
                          capture_output=True, text=True).stdout.strip()


def test_vermagic_matches_running_kernel():
    assert modinfo("vermagic").split()[0] == os.uname().release


def test_loaded_module_is_the_built_one():
    assert Path("/sys/module/shiftfs").is_dir(), "shiftfs is not loaded"
    srcversion = Path("/sys/module/shiftfs/srcversion")
    if srcversion.exists():
        assert srcversion.read_text().strip() == modinfo("srcversion")


def test_shiftfs_registered():
    fstypes = [line.split()[-1]
               for line in Path("/proc/filesystems").read_text().splitlines()]
    assert "shiftfs" in fstypes


def test_matrix_kernel_is_the_booted_one():
    # "6.12", or a flavour of one: "6.1-debug" boots 6.1.N-shiftfs-debug
    series, _, flavour = os.environ["SHIFTFS_KERNEL"].partition("-")
    release = os.uname().release
    assert release.startswith(series + ".")
    if flavour:
        assert release.endswith(f"-shiftfs-{flavour}")
