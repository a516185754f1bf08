"""Build kmod/ against a fetched kernel: on the host or in a suite chroot."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from shiftctl.errors import ShiftctlError
from shiftctl.vm import chroot, kernels
from shiftctl.vm.fetch import Kernel
from shiftctl.vm.paths import build_dir, repo_root
from shiftctl.vm.progress import step

SOURCES = ("*.c", "*.h", "Kbuild", "Makefile")
_WARNING = re.compile(r"^(\S+?):\d+:\d+: (warning|error):", re.M)


def _sync_sources(src: Path, dst: Path) -> None:
    """Copy the module sources, keeping mtimes so make stays incremental."""
    dst.mkdir(parents=True, exist_ok=True)
    wanted = set()
    for pattern in SOURCES:
        for f in src.glob(pattern):
            wanted.add(f.name)
            target = dst / f.name
            if not target.exists() or target.read_bytes() != f.read_bytes():
                shutil.copy2(f, target)
    for old in list(dst.glob("*.c")) + list(dst.glob("*.h")):
        if old.name not in wanted:
            old.unlink()


def check_output(output: str, srcdir: Path) -> list[str]:
    """Compiler warnings and errors that point into our sources."""
    found = []
    for m in _WARNING.finditer(output):
        path = m.group(1)
        if path.startswith(str(srcdir)) or "/" not in path:
            line_end = output.find("\n", m.start())
            found.append(output[m.start():line_end if line_end > 0 else None])
    return found


def _make(cmd: list[str], srcdir: Path, what: str) -> None:
    proc = subprocess.run(cmd, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    problems = check_output(proc.stdout, srcdir)
    if proc.returncode != 0 or problems:
        tail = "\n".join(problems or proc.stdout.strip().splitlines()[-20:])
        raise ShiftctlError(f"module build for {what} failed:\n{tail}")


def module_path(kernel: Kernel) -> Path:
    return build_dir() / f"kmod-{kernel.name}" / "shiftfs.ko"


def build(kernel: Kernel, extra: tuple[str, ...] = ("W=1",)) -> Path:
    """Build shiftfs.ko for `kernel`; returns its path under build/."""
    kspec = kernels.spec(kernel.name)
    src = repo_root() / "kmod"
    out = build_dir() / f"kmod-{kernel.name}"
    make_args = ["CONFIG_SHIFT_FS=m", *kspec.make_vars, *extra, "modules"]
    with step(f"kernel {kernel.name}: build shiftfs.ko"):
        if kspec.build_in is None:
            _sync_sources(src, out)
            _make(["make", "-C", str(kernel.headers_dir), f"M={out}",
                   *make_args], out, kernel.name)
        else:
            headers = f"linux-headers-{kernel.release}"
            root = chroot.ensure(kspec.build_in, (headers,))
            inside = f"/build/kmod-{kernel.name}"
            work = root / inside.lstrip("/")
            _sync_sources(src, work)
            with chroot.mounted(root):
                _make(["chroot", str(root), "make", "-C",
                       f"/usr/src/{headers}", f"M={inside}", *make_args],
                      Path(inside), kernel.name)
            out.mkdir(parents=True, exist_ok=True)
            shutil.copy2(work / "shiftfs.ko", out / "shiftfs.ko")
    ko = out / "shiftfs.ko"
    if not ko.exists():
        raise ShiftctlError(f"module build for {kernel.name} left no {ko}")
    return ko
