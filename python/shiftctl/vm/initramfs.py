"""The guest's busybox initramfs, and the per-boot job archive.

The base archive (cached per kernel) holds static busybox, the modules
needed to reach the host root (virtio, 9p, overlay) decompressed and in
dependency order, and /init.  The job archive (made per boot, appended: the
kernel unpacks concatenated cpio archives in order) holds /job: the second
stage, its environment and the command.
"""

from __future__ import annotations

import hashlib
import io
import lzma
import os
import stat
import subprocess
from pathlib import Path

from shiftctl.errors import ShiftctlError
from shiftctl.vm.fetch import Kernel
from shiftctl.vm.paths import build_dir, repo_root

BUSYBOX = Path("/usr/bin/busybox")
# What /init needs to mount the root; the rest is modprobed in stage 2.
INIT_MODULES = ("virtio_pci", "virtio_console", "9pnet_virtio", "9p",
                "overlay")


def module_order(kernel: Kernel, names: tuple[str, ...]) -> list[Path]:
    """Module files to insmod, dependencies first, builtins skipped."""
    order: list[Path] = []
    for name in names:
        proc = subprocess.run(
            ["modprobe", "-d", kernel.root, "-S", kernel.release,
             "--show-depends", name],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            raise ShiftctlError(f"kernel {kernel.name}: module {name}: "
                                f"{proc.stderr.strip()}")
        for line in proc.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "insmod":
                path = Path(parts[1])
                if path not in order:
                    order.append(path)
    return order


def _decompress(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".xz":
        return lzma.decompress(data)
    if path.suffix == ".zst":
        return subprocess.run(["zstd", "-dc", str(path)], check=True,
                              stdout=subprocess.PIPE).stdout
    return data


class Cpio:
    """A minimal newc writer (no external cpio needed, reproducible)."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"") -> None:
        nameb = name.encode() + b"\0"
        hdr = "070701" + "".join(f"{v:08x}" for v in (
            self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0,
            len(nameb), 0))
        self.ino += 1
        self.buf.write(hdr.encode() + nameb)
        self.buf.write(b"\0" * (-(110 + len(nameb)) % 4))
        self.buf.write(data)
        self.buf.write(b"\0" * (-len(data) % 4))

    def dir(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        data = self.buf.getvalue()
        return data + b"\0" * (-len(data) % 512)


def _init_script() -> bytes:
    return (repo_root() / "scripts" / "guest-initramfs-init.sh").read_bytes()


def base(kernel: Kernel) -> Path:
    """The cached base archive for `kernel`."""
    if not BUSYBOX.exists():
        raise ShiftctlError(f"{BUSYBOX} missing (apt-get install busybox-static)")
    mods = module_order(kernel, INIT_MODULES)
    h = hashlib.sha256(_init_script())
    h.update(BUSYBOX.read_bytes())
    for m in mods:
        h.update(str(m).encode())
    out = build_dir() / f"initramfs-{kernel.name}-{h.hexdigest()[:12]}.cpio"
    if out.exists():
        return out
    for old in build_dir().glob(f"initramfs-{kernel.name}-*.cpio"):
        old.unlink()
    c = Cpio()
    for d in ("bin", "dev", "proc", "sys", "lower", "upper", "newroot",
              "modules"):
        c.dir(d)
    c.file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
    c.symlink("bin/sh", "busybox")
    c.file("init", _init_script(), 0o755)
    names = []
    for m in mods:
        name = m.name.removesuffix(".xz").removesuffix(".zst")
        c.file(f"modules/{name}", _decompress(m))
        names.append(name)
    c.file("modules/order", "".join(f"{n}\n" for n in names).encode())
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(c.finish())
    os.replace(tmp, out)
    return out


def job(files: dict[str, tuple[bytes, int]]) -> bytes:
    """An archive with /job/<name> for each (data, mode)."""
    c = Cpio()
    c.dir("job")
    for name, (data, mode) in sorted(files.items()):
        c.file(f"job/{name}", data, mode)
    return c.finish()
