"""Debian's linux-source for a matrix kernel: checkpatch and in-tree builds.

The package (a .tar.xz of the whole tree) is downloaded once with the
project's apt configuration; what we need of it is extracted into the cache:
checkpatch.pl with its data files, or the whole tree.
"""

from __future__ import annotations

import gzip
import subprocess
from pathlib import Path

from shiftctl.errors import ShiftctlError
from shiftctl.vm import kernels
from shiftctl.vm.fetch import Apt
from shiftctl.vm.paths import cache_dir
from shiftctl.vm.progress import step

CHECKPATCH_FILES = ("scripts/checkpatch.pl", "scripts/spelling.txt",
                    "scripts/const_structs.checkpatch")


def _tarball(name: str) -> Path:
    kspec = kernels.spec(name)
    pkg = f"linux-source-{name}"
    srcdir = cache_dir() / "source" / name
    srcdir.mkdir(parents=True, exist_ok=True)
    found = sorted(srcdir.glob("linux-source-*.tar.xz"))
    if found:
        return found[-1]
    apt = Apt(kspec.suites)
    apt.ensure_lists()
    rec = apt.show(pkg)
    if not rec:
        raise ShiftctlError(f"no {pkg} package in {', '.join(kspec.suites)}")
    size = int(rec.get("Size", "0")) / 2**20
    with step(f"download {pkg} {rec.get('Version', '?')} ({size:.0f} MiB, once)"):
        deb, = apt.download([pkg])
        unpacked = srcdir / "deb"
        subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
    tars = sorted(unpacked.glob("usr/src/linux-source-*.tar.xz"))
    if not tars:
        raise ShiftctlError(f"{pkg} holds no source tarball")
    target = srcdir / tars[-1].name
    tars[-1].rename(target)
    return target


def _top(tarball: Path) -> str:
    return tarball.name.removesuffix(".tar.xz")


def checkpatch(name: str = "6.1") -> Path:
    """scripts/checkpatch.pl of the kernel's source, extracted once."""
    tarball = _tarball(name)
    dest = cache_dir() / "source" / name / "checkpatch"
    script = dest / "scripts" / "checkpatch.pl"
    if script.exists():
        return script
    top = _top(tarball)
    with step(f"extract checkpatch.pl from {tarball.name}"):
        dest.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["tar", "-xJf", str(tarball), "-C", str(dest),
             "--strip-components=1",
             *[f"{top}/{f}" for f in CHECKPATCH_FILES]], check=True)
    return script


def tree(name: str = "6.1") -> Path:
    """The whole source tree, extracted once (pristine; copy before use)."""
    tarball = _tarball(name)
    dest = cache_dir() / "source" / name / "tree"
    if (dest / "Makefile").exists():
        return dest
    with step(f"extract {tarball.name} (once)"):
        tmp = dest.with_name("tree.tmp")
        subprocess.run(["rm", "-rf", str(tmp)], check=True)
        tmp.mkdir(parents=True)
        subprocess.run(["tar", "-xJf", str(tarball), "-C", str(tmp),
                        "--strip-components=1"], check=True)
        tmp.rename(dest)
    return dest


def version(name: str = "6.1") -> str:
    """The Debian version of the cached linux-source (6.1.192-3)."""
    _tarball(name)
    changelog = (cache_dir() / "source" / name / "deb" / "usr" / "share" /
                 "doc" / f"linux-source-{name}" / "changelog.Debian.gz")
    try:
        first = gzip.decompress(changelog.read_bytes()).decode().split("\n")[0]
    except OSError as err:
        raise ShiftctlError(f"linux-source-{name}: no changelog to take "
                            f"the version from ({err})") from None
    # "linux (6.1.192-3) bookworm-security; urgency=high"
    if "(" not in first or ")" not in first:
        raise ShiftctlError(f"linux-source-{name}: odd changelog line {first!r}")
    return first.split("(", 1)[1].split(")", 1)[0]
