"""The debug kernel: Debian's linux-source built with KASAN, lockdep,
kmemleak and DEBUG_LIST, cached.

x86_64 `make defconfig`, then FRAGMENT applied with scripts/config: what
the guest needs built in (virtio, 9p, overlay, the lower filesystems, loop,
device-mapper, crc32c, namespaces), the heavy subsystems it does not need
switched off, and the debug options.  After olddefconfig every symbol of the
fragment must have the value asked for, else the build stops and says which
did not stick.

The build lives in CACHE/debug-kernel/<key>/, key = the linux-source
version and a hash of the fragment and compiler: build/ is the O= tree (kept:
it is the headers shiftfs.ko is built against), root/ holds boot/vmlinuz-R,
lib/modules/R and usr/src/linux-headers-R (a link to build/), the layout of
an unpacked Debian kernel, so the rest of the harness takes it as one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

from shiftctl.errors import ShiftctlError
from shiftctl.vm import kernels, source
from shiftctl.vm.fetch import Kernel
from shiftctl.vm.intree import _run
from shiftctl.vm.paths import cache_dir
from shiftctl.vm.progress import say, step

LOCALVERSION = "-shiftfs-debug"
LEAK_MODULE = "kmemleak-test"       # leaks on purpose (DEBUG_KMEMLEAK_TEST)
BASE_CONFIG = "defconfig"

# (symbol, value): "y", "n", an int, or a quoted string.  Order matters
# only for readability; olddefconfig resolves the dependencies.
FRAGMENT: tuple[tuple[str, str], ...] = (
    ("LOCALVERSION", f'"{LOCALVERSION}"'),
    ("LOCALVERSION_AUTO", "n"),
    ("IKCONFIG", "y"),
    ("IKCONFIG_PROC", "y"),
    # what the harness uses: virtio-serial (hvc0 + the result port),
    # virtio-rng, 9p over virtio for the host root, a tmpfs overlay on it
    ("VIRTIO_PCI", "y"),
    ("VIRTIO_CONSOLE", "y"),
    ("VIRTIO_BLK", "y"),
    ("HW_RANDOM_VIRTIO", "y"),
    ("NET_9P", "y"),
    ("NET_9P_VIRTIO", "y"),
    ("9P_FS", "y"),
    ("9P_FS_POSIX_ACL", "y"),
    ("OVERLAY_FS", "y"),
    ("TMPFS", "y"),
    ("TMPFS_XATTR", "y"),
    ("TMPFS_POSIX_ACL", "y"),
    ("DEVTMPFS", "y"),
    ("DEVTMPFS_MOUNT", "y"),
    ("CONFIGFS_FS", "y"),
    ("DEBUG_FS", "y"),
    ("MAGIC_SYSRQ", "y"),
    # the lowers and the fault targets of the suites
    ("EXT4_FS", "y"),
    ("EXT4_FS_POSIX_ACL", "y"),
    ("EXT4_FS_SECURITY", "y"),
    ("XFS_FS", "y"),
    ("XFS_POSIX_ACL", "y"),
    ("BTRFS_FS", "y"),
    ("BTRFS_FS_POSIX_ACL", "y"),
    ("FUSE_FS", "y"),
    ("BLK_DEV_LOOP", "y"),
    ("MD", "y"),
    ("BLK_DEV_DM", "y"),
    ("DM_FLAKEY", "y"),
    ("CRYPTO_CRC32C", "y"),
    ("CRYPTO_CRC32C_INTEL", "y"),
    # containers: user namespaces (and the rest), cgroups, io_uring
    ("NAMESPACES", "y"),
    ("USER_NS", "y"),
    ("PID_NS", "y"),
    ("NET_NS", "y"),
    ("UTS_NS", "y"),
    ("IPC_NS", "y"),
    ("CGROUPS", "y"),
    ("BPF_SYSCALL", "y"),
    ("CGROUP_BPF", "y"),
    ("IO_URING", "y"),
    ("MODULES", "y"),
    ("MODULE_UNLOAD", "y"),
    # heavy and unused in the guest
    ("DRM", "n"),
    ("AGP", "n"),
    ("SOUND", "n"),
    ("USB_SUPPORT", "n"),
    ("WIRELESS", "n"),
    ("WLAN", "n"),
    ("CFG80211", "n"),
    ("ETHERNET", "n"),
    ("NETFILTER", "n"),
    ("NFS_FS", "n"),
    ("SECURITY_SELINUX", "n"),
    ("INPUT_JOYSTICK", "n"),
    ("INPUT_TABLET", "n"),
    ("INPUT_TOUCHSCREEN", "n"),
    ("HID", "n"),
    ("ATA", "n"),
    ("SCSI", "n"),
    ("PCCARD", "n"),
    ("EFI", "n"),
    ("HIBERNATION", "n"),
    ("SUSPEND", "n"),
    ("DEBUG_INFO_NONE", "y"),
    # the debug options
    ("KASAN", "y"),
    ("KASAN_GENERIC", "y"),
    ("KASAN_OUTLINE", "n"),
    ("KASAN_INLINE", "y"),
    ("PROVE_LOCKING", "y"),
    ("DEBUG_ATOMIC_SLEEP", "y"),
    ("LOCKDEP_BITS", "17"),
    ("LOCKDEP_CHAINS_BITS", "18"),
    ("LOCKDEP_STACK_TRACE_BITS", "20"),
    ("DEBUG_KMEMLEAK", "y"),
    ("DEBUG_KMEMLEAK_MEM_POOL_SIZE", "32000"),
    ("DEBUG_KMEMLEAK_AUTO_SCAN", "n"),   # scanned once, at the end of a run
    ("DEBUG_KMEMLEAK_DEFAULT_OFF", "n"),
    # kmemleak-test.ko leaks on load: the lane's check that leaks are seen
    # (it lives in samples/, built only with SAMPLES)
    ("SAMPLES", "y"),
    ("DEBUG_KMEMLEAK_TEST", "m"),
    ("DEBUG_LIST", "y"),
    # TCG and KASAN are slow: no false hung-task or RCU-stall reports
    ("DETECT_HUNG_TASK", "y"),
    ("DEFAULT_HUNG_TASK_TIMEOUT", "600"),
    ("RCU_CPU_STALL_TIMEOUT", "120"),
)


def render(fragment: tuple[tuple[str, str], ...] = FRAGMENT) -> str:
    """The fragment as .config lines (the text the cache key hashes)."""
    lines = []
    for sym, val in fragment:
        if val == "n":
            lines.append(f"# CONFIG_{sym} is not set")
        else:
            lines.append(f"CONFIG_{sym}={val}")
    return "\n".join(lines) + "\n"


def config_edit(sym: str, val: str) -> list[str]:
    """The scripts/config arguments that set one symbol."""
    if val == "y":
        return ["--enable", sym]
    if val == "n":
        return ["--disable", sym]
    if val == "m":
        return ["--module", sym]
    if val.startswith('"'):
        return ["--set-str", sym, val.strip('"')]
    return ["--set-val", sym, val]


def parse_config(text: str) -> dict[str, str]:
    """A .config as {symbol: value}; unset symbols map to "n"."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            sym, _, val = line.partition("=")
            values[sym.removeprefix("CONFIG_")] = val
        elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
            values[line[len("# CONFIG_"):-len(" is not set")]] = "n"
    return values


def mismatches(config_text: str,
               fragment: tuple[tuple[str, str], ...] = FRAGMENT) -> list[str]:
    """Fragment symbols whose value did not survive olddefconfig."""
    have = parse_config(config_text)
    bad = []
    for sym, want in fragment:
        got = have.get(sym, "n")
        if got != want:
            bad.append(f"CONFIG_{sym}: wanted {want}, got {got}")
    return bad


def cache_key(source_version: str, fragment_text: str, compiler: str,
              base: str = BASE_CONFIG) -> str:
    """<source version>-<hash of base config, fragment and compiler>."""
    h = hashlib.sha256()
    for part in (base, fragment_text, compiler):
        h.update(part.encode() + b"\0")
    return f"{source_version}-{h.hexdigest()[:12]}"


def _compiler() -> str:
    proc = subprocess.run(["gcc", "--version"], stdout=subprocess.PIPE,
                          text=True, check=False)
    return (proc.stdout.splitlines() or ["gcc ?"])[0]


def key_dir(name: str) -> Path:
    base = kernels.DEBUG_KERNELS[name]
    key = cache_key(source.version(base), render(), _compiler())
    return cache_dir() / "debug-kernel" / key


def load(name: str) -> Kernel | None:
    """The cached debug kernel, if built and complete."""
    record = key_dir(name) / "resolved.json"
    if not record.exists():
        return None
    k = Kernel(**json.loads(record.read_text()))
    if not k.vmlinuz.exists() or not (k.modules_dir / "modules.dep").exists() \
            or not (k.headers_dir / "Module.symvers").exists():
        return None
    return k


def build_seconds(name: str) -> float | None:
    """The wall time the cached build took, if recorded."""
    f = key_dir(name) / "build.json"
    if not f.exists():
        return None
    return float(json.loads(f.read_text()).get("seconds", 0.0))


def _make(tree: Path, out: Path, log: Path, *targets: str) -> None:
    """make O=out TARGETS, output appended to `log`, its tail on failure."""
    with open(log, "a") as f:
        f.write(f"\n### make {' '.join(targets)}\n")
        f.flush()
        proc = subprocess.run(["make", "-C", str(tree), f"O={out}", "CC=gcc",
                               *targets], stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-25:]
        raise ShiftctlError(f"debug kernel: make {' '.join(targets)} failed "
                            f"(log: {log}):\n" + "\n".join(tail))


def prune(out: Path) -> int:
    """Drop what an out-of-tree module build does not need from the O=
    tree: the objects (not the host tools' in scripts/ and tools/) and the
    intermediate vmlinux files.  vmlinux stays, for reading splats.
    Returns the bytes freed."""
    freed = 0
    doomed = [*out.glob(".tmp_vmlinux*"), out / "vmlinux.o"]
    for f in out.rglob("*"):
        if f.suffix in (".o", ".a") and f.is_file() and \
                f.relative_to(out).parts[0] not in ("scripts", "tools"):
            doomed.append(f)
    for f in doomed:
        if f.is_file():
            freed += f.stat().st_size
            f.unlink()
    return freed


def configure(tree: Path, out: Path, log: Path) -> None:
    """defconfig + FRAGMENT + olddefconfig in `out`; checks the result."""
    _make(tree, out, log, BASE_CONFIG)
    dotconfig = out / ".config"
    for sym, val in FRAGMENT:
        _run([str(tree / "scripts" / "config"), "--file", str(dotconfig),
              *config_edit(sym, val)], tree, f"scripts/config {sym}")
    _make(tree, out, log, "olddefconfig")
    bad = mismatches(dotconfig.read_text())
    if bad:
        raise ShiftctlError("debug kernel: the config fragment did not "
                            "stick:\n" + "\n".join(bad))


def _drop_stale(name: str, keep: Path) -> None:
    """Remove earlier builds of `name` (another source version or config)."""
    for other in keep.parent.iterdir():
        record = other / "resolved.json"
        if other == keep or not record.exists():
            continue
        try:
            if json.loads(record.read_text()).get("name") != name:
                continue
        except (OSError, ValueError):
            continue
        say(f"debug kernel {name}: removing the stale build {other.name}")
        shutil.rmtree(other, ignore_errors=True)


def build(name: str, jobs: int | None = None) -> Kernel:
    """Build (once) and return the debug kernel `name` (e.g. 6.1-debug)."""
    cached = load(name)
    if cached is not None:
        return cached
    base = kernels.DEBUG_KERNELS[name]
    tree = source.tree(base)
    kdir = key_dir(name)
    out, root, log = kdir / "build", kdir / "root", kdir / "build.log"
    jobs = jobs or os.cpu_count() or 1
    t0 = time.monotonic()
    if kdir.exists():
        shutil.rmtree(kdir)
    out.mkdir(parents=True)
    log.write_text(f"# debug kernel {name}: {kdir.name}\n")
    (kdir / "fragment.config").write_text(render())
    with step(f"debug kernel {name}: configure ({BASE_CONFIG} + fragment)"):
        configure(tree, out, log)
    with step(f"debug kernel {name}: build with -j{jobs} (long: see {log})"):
        _make(tree, out, log, f"-j{jobs}", "bzImage", "modules")
    release = (out / "include" / "config" / "kernel.release").read_text() \
        .strip()
    with step(f"debug kernel {name}: install {release}"):
        _make(tree, out, log, "INSTALL_MOD_STRIP=1",
              f"INSTALL_MOD_PATH={root}", "modules_install")
        boot = root / "boot"
        boot.mkdir(parents=True, exist_ok=True)
        shutil.copy2(out / "arch" / "x86" / "boot" / "bzImage",
                     boot / f"vmlinuz-{release}")
        shutil.copy2(out / ".config", boot / f"config-{release}")
        shutil.copy2(out / "System.map", boot / f"System.map-{release}")
        headers = root / "usr" / "src" / f"linux-headers-{release}"
        headers.parent.mkdir(parents=True, exist_ok=True)
        headers.symlink_to(os.path.relpath(out, headers.parent))
        moddir = root / "lib" / "modules" / release
        if f"/{LEAK_MODULE}.ko" not in (moddir / "modules.dep").read_text():
            raise ShiftctlError(f"debug kernel {name}: {LEAK_MODULE}.ko was "
                                "not built (the kmemleak self-check needs it)")
        freed = prune(out)
    say(f"debug kernel {name}: pruned {freed / 2**20:.0f} MiB of objects "
        "from the build tree")
    seconds = time.monotonic() - t0
    k = Kernel(name=name, release=release,
               version=f"linux-source {source.version(base)}", root=str(root))
    (kdir / "build.json").write_text(json.dumps(
        {"seconds": round(seconds, 1), "jobs": jobs, "base": BASE_CONFIG,
         "compiler": _compiler()}, indent=2) + "\n")
    (kdir / "resolved.json").write_text(json.dumps(asdict(k), indent=2)
                                        + "\n")
    say(f"debug kernel {name}: {release} built in {seconds / 60:.1f} min "
        f"(wall, -j{jobs}); cached in {kdir}")
    _drop_stale(name, kdir)
    if load(name) is None:
        raise ShiftctlError(f"debug kernel {name}: the build in {kdir} is "
                            "incomplete (no vmlinuz, modules.dep or "
                            "Module.symvers)")
    return k
