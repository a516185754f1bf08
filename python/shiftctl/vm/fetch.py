"""Fetch Debian kernel packages into the cache with the project's own apt.

The host's apt sources are never touched: each set of suites gets its own
sources.list, lists, archives and status under the cache, and apt is run with
APT_CONFIG pointing there.  The newest version is resolved once, recorded in
kernels/<name>/resolved.json, and reused until `shiftctl vm fetch --refresh`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from shiftctl.errors import ShiftctlError
from shiftctl.vm import kernels
from shiftctl.vm.paths import cache_dir
from shiftctl.vm.progress import step

KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


@dataclass
class Kernel:
    """A fetched, unpacked kernel."""

    name: str          # matrix key
    release: str       # uname -r
    version: str       # Debian package version
    root: str          # unpacked packages

    @property
    def vmlinuz(self) -> Path:
        boot = Path(self.root) / "boot" / f"vmlinuz-{self.release}"
        return boot if boot.exists() else self.modules_dir / "vmlinuz"

    @property
    def modules_dir(self) -> Path:
        return Path(self.root) / "lib" / "modules" / self.release

    @property
    def headers_dir(self) -> Path:
        return Path(self.root) / "usr" / "src" / f"linux-headers-{self.release}"


class Apt:
    """apt-get/apt-cache with a private configuration for some suites."""

    def __init__(self, suites: tuple[str, ...]) -> None:
        self.suites = suites
        self.root = cache_dir() / "apt" / "+".join(suites)
        self.conf = self.root / "apt.conf"

    def _write_config(self) -> None:
        for sub in ("lists/partial", "archives/partial", "cache", "etc"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        lines = [
            f"deb [signed-by={KEYRING}] {kernels.SUITES[s]} {s} main"
            for s in self.suites
        ]
        (self.root / "etc" / "sources.list").write_text("\n".join(lines) + "\n")
        status = self.root / "status"
        if not status.exists():
            status.write_text("")
        r = self.root
        self.conf.write_text(
            f'Dir::Etc::SourceList "{r}/etc/sources.list";\n'
            'Dir::Etc::SourceParts "/nonexistent";\n'
            f'Dir::Etc::Preferences "{r}/etc/preferences";\n'
            'Dir::Etc::PreferencesParts "/nonexistent";\n'
            f'Dir::State "{r}";\n'
            f'Dir::State::Lists "{r}/lists";\n'
            f'Dir::State::status "{r}/status";\n'
            f'Dir::Cache "{r}/cache";\n'
            f'Dir::Cache::Archives "{r}/archives";\n'
            'Acquire::Check-Valid-Until "false";\n'
            'Acquire::Languages "none";\n'
            'APT::Get::List-Cleanup "false";\n'
            'Debug::NoLocking "true";\n'
        )

    def run(self, tool: str, *args: str, capture: bool = True,
            cwd: Path | None = None) -> str:
        env = dict(os.environ, APT_CONFIG=str(self.conf), LC_ALL="C")
        proc = subprocess.run(
            [tool, *args], env=env, cwd=cwd, text=True,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE,
        )
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["?"])[-1]
            raise ShiftctlError(f"{tool} {' '.join(args[:2])}: {last}")
        return proc.stdout if capture else ""

    def update(self) -> None:
        self._write_config()
        with step(f"apt update ({', '.join(self.suites)})"):
            self.run("apt-get", "-q", "update")

    def ensure_lists(self) -> None:
        if not (self.root / "lists").is_dir() or not any(
            (self.root / "lists").glob("*Packages*")
        ):
            self.update()
        else:
            self._write_config()

    def package_names(self) -> set[str]:
        return set(self.run("apt-cache", "pkgnames").split())

    def show(self, pkg: str) -> dict[str, str]:
        """The candidate record of a package, as a field dict."""
        out = self.run("apt-cache", "show", "--no-all-versions", pkg)
        fields: dict[str, str] = {}
        key = None
        for line in out.splitlines():
            if not line.strip():
                if fields:
                    break
                continue
            if line[0].isspace() and key:
                fields[key] += " " + line.strip()
                continue
            key, _, value = line.partition(":")
            fields[key] = value.strip()
        return fields

    def closure(self, roots: list[str]) -> dict[str, dict[str, str]]:
        """The roots and their kernel-package dependencies, recursively."""
        seen: dict[str, dict[str, str]] = {}
        todo = list(roots)
        while todo:
            pkg = todo.pop()
            if pkg in seen:
                continue
            rec = self.show(pkg)
            seen[pkg] = rec
            for dep in kernels.parse_depends(rec.get("Depends", "")):
                if kernels.kernel_package(dep) and dep not in seen:
                    todo.append(dep)
        return seen

    def download(self, pkgs: list[str]) -> list[Path]:
        dest = self.root / "archives"
        self.run("apt-get", "-q", "download", *pkgs, capture=False, cwd=dest)
        debs = []
        for pkg in pkgs:
            found = sorted(dest.glob(f"{pkg}_*.deb"))
            if not found:
                raise ShiftctlError(f"apt-get download left no .deb for {pkg}")
            debs.append(found[-1])
        return debs


def relocate_headers(root: Path) -> None:
    """Point the headers' top Makefile at the unpacked tree, not /usr/src."""
    for mk in (root / "usr" / "src").glob("linux-headers-*/Makefile"):
        text = mk.read_text()
        fixed = text.replace("/usr/src/", f"{root}/usr/src/")
        if fixed != text:
            mk.write_text(fixed)


def kernel_dir(name: str) -> Path:
    return cache_dir() / "kernels" / name


def load(name: str) -> Kernel | None:
    """The recorded kernel for a matrix entry, if fetched and complete."""
    if kernels.is_debug(name):
        from shiftctl.vm import debugkernel

        return debugkernel.load(name)
    record = kernel_dir(name) / "resolved.json"
    if not record.exists():
        return None
    k = Kernel(**json.loads(record.read_text()))
    if not k.vmlinuz.exists() or not (k.modules_dir / "modules.dep").exists():
        return None
    return k


def fetch(name: str, refresh: bool = False) -> Kernel:
    """Resolve, download and unpack one matrix kernel (cached).

    A debug kernel (kernels.DEBUG_KERNELS) is built from source instead.
    """
    if kernels.is_debug(name):
        from shiftctl.vm import debugkernel

        return debugkernel.build(name)
    kspec = kernels.spec(name)
    if not refresh:
        cached = load(name)
        if cached is not None:
            return cached
    apt = Apt(kspec.suites)
    if refresh:
        apt.update()
    else:
        apt.ensure_lists()
    image = kernels.resolve(kspec, apt.package_names())
    if image is None:
        raise ShiftctlError(
            f"kernel {name}: no package matches {kspec.image_re} "
            f"in {', '.join(kspec.suites)}"
        )
    release = kspec.release_of(image)
    pkgs = apt.closure([image, kspec.headers_of(image)])
    version = pkgs[image].get("Version", "?")
    size = sum(int(r.get("Size", "0")) for r in pkgs.values()) / 2**20
    with step(f"kernel {name}: download {release} ({version}), "
              f"{len(pkgs)} packages, {size:.0f} MiB"):
        debs = apt.download(sorted(pkgs))
    kdir = kernel_dir(name)
    root = kdir / "root"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    with step(f"kernel {name}: unpack and depmod"):
        for deb in debs:
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        if not (root / "lib").exists() and (root / "usr" / "lib").is_dir():
            (root / "lib").symlink_to("usr/lib")  # merged-/usr layout
        subprocess.run(["depmod", "-b", str(root), release], check=True)
        relocate_headers(root)
    k = Kernel(name=name, release=release, version=version, root=str(root))
    (kdir / "resolved.json").write_text(json.dumps(asdict(k), indent=2) + "\n")
    return k
