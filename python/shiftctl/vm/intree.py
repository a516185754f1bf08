"""`make kconfig-check`: Kconfig.patch applied to Debian's linux-source,
kmod/ copied to fs/shiftfs, configured SHIFT_FS=m, that directory built."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from shiftctl.errors import ShiftctlError
from shiftctl.vm import build as kbuild
from shiftctl.vm import fetch, source
from shiftctl.vm.paths import build_dir, repo_root
from shiftctl.vm.progress import step

# Debian's config names signing keys and BTF that a source tree lacks.
CONFIG_EDITS = (
    ("--set-str", "SYSTEM_TRUSTED_KEYS", ""),
    ("--set-str", "SYSTEM_REVOCATION_KEYS", ""),
    ("--disable", "MODULE_SIG_ALL", None),
    ("--disable", "DEBUG_INFO_BTF", None),
    ("--module", "SHIFT_FS", None),
)


def _run(cmd: list[str], cwd: Path, what: str) -> str:
    proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.strip().splitlines()[-20:])
        raise ShiftctlError(f"{what} failed:\n{tail}")
    return proc.stdout


def check(name: str = "6.1", jobs: int = 2) -> Path:
    """Returns the in-tree shiftfs.ko; raises on any failure or warning."""
    pristine = source.tree(name)
    kernel = fetch.fetch(name)
    work = build_dir() / "kconfig-check"
    tree, out = work / "linux", work / "out"
    with step("kconfig-check: link-copy the tree and apply Kconfig.patch"):
        for old in (tree, out):
            if old.exists():
                shutil.rmtree(old)
        work.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-al", str(pristine), str(tree)], check=True)
        for rel in ("fs/Kconfig", "fs/Makefile"):  # break the hard links
            f = tree / rel
            data = f.read_bytes()
            f.unlink()
            f.write_bytes(data)
        _run(["patch", "-p1", "--no-backup-if-mismatch", "-i",
              str(repo_root() / "Kconfig.patch")], tree, "patch")
        dest = tree / "fs" / "shiftfs"
        dest.mkdir()
        for pattern in kbuild.SOURCES:
            for f in (repo_root() / "kmod").glob(pattern):
                shutil.copy2(f, dest / f.name)
    with step("kconfig-check: configure (Debian's config + SHIFT_FS=m)"):
        out.mkdir(parents=True, exist_ok=True)
        config = Path(kernel.root) / "boot" / f"config-{kernel.release}"
        shutil.copy2(config, out / ".config")
        for op, sym, val in CONFIG_EDITS:
            args = [str(tree / "scripts" / "config"), "--file",
                    str(out / ".config"), op, sym]
            if val is not None:
                args.append(val)
            _run(args, tree, f"scripts/config {op} {sym}")
        _run(["make", f"O={out}", "olddefconfig"], tree, "olddefconfig")
        if "CONFIG_SHIFT_FS=m" not in (out / ".config").read_text():
            raise ShiftctlError("CONFIG_SHIFT_FS=m did not survive olddefconfig"
                                " (is Kconfig.patch applied?)")
    # Debian's symbol versions, so modpost resolves what vmlinux exports
    shutil.copy2(kernel.headers_dir / "Module.symvers", out / "Module.symvers")
    with step("kconfig-check: make modules_prepare"):
        _run(["make", f"O={out}", f"-j{jobs}", "modules_prepare"], tree,
             "modules_prepare")
    with step("kconfig-check: build fs/shiftfs (W=1, warnings fail)"):
        auto = (out / "include" / "config" / "auto.conf").read_text()
        if "CONFIG_SHIFT_FS=m" not in auto:
            raise ShiftctlError("modules_prepare did not take SHIFT_FS=m")
        # The one directory, against the prepared tree and Debian's
        # Module.symvers (there is no vmlinux.o to take symbols from).
        log = _run(["make", f"O={out}", f"-j{jobs}", "W=1",
                    f"M={tree / 'fs' / 'shiftfs'}", "modules"], tree,
                   "build fs/shiftfs")
        problems = [ln for ln in log.splitlines()
                    if ("warning:" in ln or "error:" in ln
                        or "WARNING:" in ln) and
                    ("fs/shiftfs" in ln or "modpost" in ln)]
        if problems:
            raise ShiftctlError("in-tree build warnings:\n"
                                + "\n".join(problems[:20]))
    ko = tree / "fs" / "shiftfs" / "shiftfs.ko"
    if not ko.exists():
        raise ShiftctlError(f"in-tree build left no {ko}")
    return ko
