"""DKMS in the guest: dkms.conf and `make dkms-install` (scripts/dkms-install.sh)
build shiftfs with Debian's dkms for the booted kernel, install it under
/lib/modules/R/updates/dkms, `modprobe shiftfs` loads it, a mount shifts, and
`make dkms-remove` (`dkms remove shiftfs/VERSION --all`) takes it away again.

dkms comes from the host (scripts/install-deps.sh installs it; the guest runs
the host's root).  The headers of the booted kernel are the harness's
relocated copy in the cache; a Debian host would have them from
linux-headers-R.

/lib/modules/R in the guest is the whole Debian module tree, read over 9p:
under TCG one `depmod -a` of it takes 1.5-3 minutes and dkms runs it on
install and on remove.  The test therefore puts a tmpfs with a module tree of
its own at /lib/modules/R (modules.builtin*, modules.order, the `build` link
to the headers) for its duration: dkms, depmod and modprobe run unchanged on
it, and the real tree is back afterwards.  The harness's shiftfs.ko is
reloaded at the end, so later tests find shiftfs as before.
"""

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
KREL = os.uname().release
KERNEL = (os.environ.get("SHIFTFS_KERNEL")
          or os.environ.get("SHIFTFS_MATRIX_KERNEL", ""))
MODDIR = os.environ.get("SHIFTFS_MODDIR", "")
KO = os.environ.get("SHIFTFS_KO", "")
NAME = "shiftfs"
VERSION = re.search(r'^PACKAGE_VERSION="?([^"\n]+)"?$',
                    (REPO / "dkms.conf").read_text(), re.M).group(1)
LIB = Path("/lib/modules") / KREL
INSTALLED = LIB / "updates" / "dkms" / f"{NAME}.ko"
STEP_TIMEOUT = 1500

pytestmark = [
    pytest.mark.skipif(os.environ.get("SHIFTFS_TEST_DKMS") != "1",
                       reason="the DKMS lane: `make vm-ship` (compiling under "
                       "TCG takes ~10 min, too long for every run)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not MODDIR, reason="not in a harness guest (on a host: "
                       "make dkms-install)"),
    pytest.mark.skipif(KERNEL == "7.2",
                       reason="7.2: the host's dkms and gcc are bookworm's; "
                       "the 7.2 headers need sid's toolchain (gcc-16), so "
                       "DKMS cannot build for it in this guest"),
    pytest.mark.skipif(shutil.which("dkms") is None,
                       reason="dkms is not installed on the host "
                       "(scripts/install-deps.sh)"),
]


def sh(*cmd, check=True, timeout=STEP_TIMEOUT):
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    print(f"[{time.monotonic() - t0:6.1f}s] {' '.join(cmd)} -> {r.returncode}")
    if check and r.returncode:
        raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}):\n"
                             f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def loaded():
    return Path("/sys/module/shiftfs").is_dir()


def shiftfs_mounts():
    return [line for line in Path("/proc/self/mountinfo").read_text()
            .splitlines() if " - shiftfs " in line]


@pytest.fixture
def modtree():
    """A tmpfs module tree at /lib/modules/R, its `build` link on the
    headers; the real tree (and the harness's module) come back after."""
    headers = Path(MODDIR).parents[2] / "usr" / "src" / f"linux-headers-{KREL}"
    if not (headers / "Makefile").exists():
        pytest.skip(f"no headers for {KREL} at {headers}")
    # dkms reads its helpers' output through <(...): needs /dev/fd
    if not os.path.exists("/dev/fd"):
        os.symlink("/proc/self/fd", "/dev/fd")
    keep = [f for f in ("modules.builtin", "modules.builtin.modinfo",
                        "modules.order") if (Path(MODDIR) / f).exists()]
    sh("mount", "-t", "tmpfs", "-o", "mode=0755", "dkms-modtree", str(LIB))
    try:
        for f in keep:
            shutil.copy(Path(MODDIR) / f, LIB / f)
        (LIB / "kernel").mkdir()
        (LIB / "build").symlink_to(headers)
        sh("depmod", "-a", KREL)
        yield LIB
    finally:
        for m in shiftfs_mounts():
            subprocess.run(["umount", "-l", m.split()[4]])
        subprocess.run(["dkms", "remove", f"{NAME}/{VERSION}", "--all"],
                       capture_output=True, timeout=STEP_TIMEOUT)
        shutil.rmtree(f"/usr/src/{NAME}-{VERSION}", ignore_errors=True)
        subprocess.run(["rmmod", NAME], capture_output=True)
        subprocess.run(["umount", "-l", str(LIB)])
        if KO and not loaded():
            subprocess.run(["insmod", KO], check=True)


def test_dkms_install_modprobe_mount_remove(modtree, tmp_path):
    t0 = time.monotonic()
    # make dkms-install == scripts/dkms-install.sh: copy to /usr/src, then
    # dkms add, build, install -k R
    sh("sh", str(REPO / "scripts" / "dkms-install.sh"), KREL)
    src = Path(f"/usr/src/{NAME}-{VERSION}")
    assert (src / "dkms.conf").is_file() and (src / "kmod" / "Kbuild").is_file()
    status = sh("dkms", "status", f"{NAME}/{VERSION}").stdout
    assert re.search(rf"{NAME}/{VERSION}, {re.escape(KREL)}, x86_64: "
                     rf"installed", status), status
    assert INSTALLED.is_file(), list(LIB.rglob("*.ko*"))
    vermagic = sh("modinfo", "-F", "vermagic", str(INSTALLED)).stdout.split()
    assert vermagic[0] == KREL
    # depmod ran: modprobe resolves shiftfs to the dkms copy
    assert sh("modinfo", "-n", NAME).stdout.strip() == str(INSTALLED)

    # swap the harness's module for dkms's
    assert not shiftfs_mounts(), ("a shiftfs mount from an earlier test is "
                                  f"still there: {shiftfs_mounts()}")
    if loaded():
        sh("rmmod", NAME)
    sh("modprobe", NAME)
    assert loaded()
    srcversion = Path("/sys/module/shiftfs/srcversion")
    if srcversion.exists():
        assert srcversion.read_text().strip() == \
            sh("modinfo", "-F", "srcversion", str(INSTALLED)).stdout.strip()

    lower, mnt = tmp_path / "lower", tmp_path / "mnt"
    lower.mkdir()
    mnt.mkdir()
    (lower / "f").write_text("base 0\n")
    sh("mount", "-t", "shiftfs", "-o", "shift_uids,shift_gids,"
       "uidmap=0:131072:65536,gidmap=0:131072:65536", str(lower), str(mnt))
    try:
        assert sh("stat", "-c", "%u %g", str(mnt / "f")).stdout.split() == \
            ["131072", "131072"]
        assert (mnt / "f").read_text() == "base 0\n"
        # the module is pinned while mounted
        assert sh("rmmod", NAME, check=False).returncode != 0
    finally:
        sh("umount", str(mnt))
    sh("rmmod", NAME)

    # make dkms-remove == dkms remove shiftfs/VERSION --all, rm the sources
    sh("sh", str(REPO / "scripts" / "dkms-remove.sh"))
    assert not INSTALLED.exists()
    assert not list(LIB.rglob(f"{NAME}.ko*")), list(LIB.rglob(f"{NAME}.ko*"))
    assert sh("dkms", "status", NAME).stdout.strip() == ""
    assert not src.exists()
    assert sh("modinfo", "-n", NAME, check=False).returncode != 0
    print(f"dkms round trip on {KREL}: {time.monotonic() - t0:.0f}s")
