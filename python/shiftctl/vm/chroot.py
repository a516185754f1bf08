"""A cached debootstrap chroot of a Debian suite, for kernels whose headers
need that suite's compiler and glibc (sid's 7.2 on a bookworm host)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from shiftctl.errors import ShiftctlError
from shiftctl.vm import kernels
from shiftctl.vm.paths import cache_dir
from shiftctl.vm.progress import step

BASE_PACKAGES = ("make", "kmod", "ca-certificates")


def chroot_dir(suite: str) -> Path:
    return cache_dir() / "chroots" / suite


def _run(root: Path, *cmd: str) -> None:
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "DEBIAN_FRONTEND": "noninteractive",
        "LC_ALL": "C",
        "HOME": "/root",
    }
    proc = subprocess.run(["chroot", str(root), *cmd], env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.strip().splitlines()[-15:])
        raise ShiftctlError(f"in the {root.name} chroot, {' '.join(cmd[:3])} "
                            f"failed:\n{tail}")


@contextmanager
def mounted(root: Path) -> Iterator[Path]:
    """/proc (objtool needs it) and /dev mounted for the duration."""
    mounts = []
    try:
        for fstype, src, dst in (("proc", "proc", "proc"),
                                 ("devtmpfs", "udev", "dev")):
            target = root / dst
            target.mkdir(exist_ok=True)
            subprocess.run(["mount", "-t", fstype, src, str(target)],
                           check=True)
            mounts.append(target)
        yield root
    finally:
        for target in reversed(mounts):
            subprocess.run(["umount", "-l", str(target)], check=False)


def ensure(suite: str, packages: tuple[str, ...] = ()) -> Path:
    """The chroot for `suite` with `packages` installed (cached)."""
    root = chroot_dir(suite)
    ready = root / ".shiftfs-ready"
    if not ready.exists():
        if root.exists():
            shutil.rmtree(root)
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = root.with_name(root.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        with step(f"debootstrap --variant=minbase {suite} (once, cached)"):
            proc = subprocess.run(
                ["debootstrap", "--variant=minbase",
                 "--include=" + ",".join(BASE_PACKAGES),
                 suite, str(tmp), kernels.SUITES[suite]],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if proc.returncode != 0:
                tail = "\n".join(proc.stdout.strip().splitlines()[-10:])
                raise ShiftctlError(f"debootstrap {suite} failed:\n{tail}")
        (tmp / "etc" / "apt" / "apt.conf.d" / "99shiftfs").write_text(
            'Acquire::Check-Valid-Until "false";\n'
            'APT::Install-Recommends "false";\n')
        tmp.rename(root)
        ready.write_text("")
    have = set(ready.read_text().split())
    missing = [p for p in packages if p not in have]
    if missing:
        with step(f"{suite} chroot: apt-get install {' '.join(missing)}"):
            with mounted(root):
                _run(root, "apt-get", "-q", "update")
                _run(root, "apt-get", "-y", "-q", "install", *missing)
        ready.write_text("\n".join(sorted(have | set(missing))) + "\n")
    return root


def run_in(root: Path, *cmd: str) -> None:
    with mounted(root):
        _run(root, *cmd)
