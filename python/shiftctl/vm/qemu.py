"""Boot a fetched kernel in QEMU and run one command in the guest.

The guest's root is the host's, shared read-only over virtio-9p (with
multidevs=remap, else inode numbers of different host filesystems collide)
under a tmpfs overlay.  Three channels come back: the serial console (the
kernel's log, kept for panics), a virtio console with the command's output
(streamed), and a virtio port with the framed results (see channel.py).
"""

from __future__ import annotations

import os
import secrets
import shutil
import shlex
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from shiftctl.errors import ShiftctlError
from shiftctl.vm import channel, initramfs, kernels, klog, kmemleak
from shiftctl.vm.fetch import Kernel
from shiftctl.vm.paths import build_dir, cache_dir, repo_root
from shiftctl.vm.progress import say

QEMU = "qemu-system-x86_64"


@dataclass
class Boot:
    kernel: Kernel
    status: int | None
    files: dict[str, bytes]
    console: str
    output: str
    seconds: float
    timed_out: bool
    rundir: Path | None = None
    truncated: list[str] = field(default_factory=list)

    @property
    def dmesg(self) -> str:
        return self.files.get("dmesg", b"").decode(errors="replace")

    @property
    def findings(self) -> list[tuple[str, str]]:
        """Kernel-log reports from dmesg and the console (panics); on a
        debug kernel also the kmemleak scan at the end of the run."""
        found = klog.scan(self.dmesg + "\n" + self.console)
        if kernels.is_debug(self.kernel.name) and self.status is not None:
            found += kmemleak.findings(self.files.get(kmemleak.RESULT))
        return found


def _accel(kernel: Kernel) -> str:
    """kvm when a probe boot under KVM works on this host boot, else tcg.

    /dev/kvm can exist and open yet never run a guest (nested setups), so
    the probe is a real boot of `true` with a short timeout.  The answer is
    cached per host boot id.  SHIFTFS_ACCEL=tcg|kvm skips the probe.
    """
    forced = os.environ.get("SHIFTFS_ACCEL")
    if forced in ("tcg", "kvm"):
        return forced
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    stamp = cache_dir() / "kvm-probe"
    if stamp.exists():
        seen_id, _, answer = stamp.read_text().partition(" ")
        if seen_id == boot_id:
            return answer.strip()
    say("probing KVM with a short boot (cached for this host boot)")
    try:
        probe = boot(kernel, None, "true", timeout=25, stream=False,
                     tag="kvm-probe", accel="kvm")
        answer = "kvm" if probe.status == 0 else "tcg"
    except ShiftctlError:
        answer = "tcg"
    stamp.write_text(f"{boot_id} {answer}\n")
    say(f"KVM probe: using {answer}")
    return answer


class _Tail(threading.Thread):
    """Copy a growing file to a stream until stopped."""

    def __init__(self, path: Path, out) -> None:
        super().__init__(daemon=True)
        self.path, self.out = path, out
        self.stop = threading.Event()

    def run(self) -> None:
        pos = 0
        while True:
            stopping = self.stop.is_set()
            try:
                with open(self.path, "rb") as f:
                    f.seek(pos)
                    chunk = f.read()
            except FileNotFoundError:
                chunk = b""
            if chunk:
                pos += len(chunk)
                self.out.write(chunk.decode(errors="replace"))
                self.out.flush()
            if stopping:
                return
            time.sleep(0.1)


def run_dir(tag: str, name: str) -> Path:
    """build/vm/<tag>-<kernel>-<pid>: one per boot, so concurrent runs in
    one checkout don't share files; those of dead processes are removed."""
    vmdir = build_dir() / "vm"
    vmdir.mkdir(parents=True, exist_ok=True)
    for old in vmdir.iterdir():
        pid = old.name.rsplit("-", 1)[-1]
        if old.is_dir() and pid.isdigit() and int(pid) != os.getpid() \
                and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(old, ignore_errors=True)
    rundir = vmdir / f"{tag}-{name}-{os.getpid()}"
    if rundir.exists():
        shutil.rmtree(rundir)
    rundir.mkdir()
    return rundir


def boot(kernel: Kernel, ko: Path | None, command: str, *,
         timeout: float = 1800, stream: bool = True,
         memory: str | None = None,
         env: dict[str, str] | None = None, tag: str = "run",
         accel: str | None = None,
         extra_args: list[str] | None = None) -> Boot:
    """Boot `kernel`, load `ko`, run the shell `command`, collect results."""
    nonce = secrets.token_hex(8)
    rundir = run_dir(tag, kernel.name)
    console_log, out_log, result_bin = (rundir / "console.log",
                                        rundir / "output.log",
                                        rundir / "result.bin")
    settings = {
        "SHIFTFS_NONCE": nonce,
        "SHIFTFS_KREL": kernel.release,
        "SHIFTFS_MODDIR": str(kernel.modules_dir),
        "SHIFTFS_KO": str(ko) if ko else "",
        "SHIFTFS_CWD": str(repo_root()),
        "SHIFTFS_KERNEL": kernel.name,
        "SHIFTFS_KMEMLEAK": "1" if kernels.is_debug(kernel.name) else "",
        # SHIFTFS_TEST_* on the host select test lanes in the guest
        **{k: v for k, v in os.environ.items() if k.startswith("SHIFTFS_TEST_")},
        **(env or {}),
    }
    env_sh = "".join(f"export {k}={shlex.quote(v)}\n"
                     for k, v in settings.items())
    stage2 = (repo_root() / "scripts" / "guest-stage2.sh").read_bytes()
    archive = rundir / "initrd.cpio"
    archive.write_bytes(initramfs.base(kernel).read_bytes() + initramfs.job({
        "stage2": (stage2, 0o755),
        "env": (env_sh.encode(), 0o644),
        "cmd": (command.encode() + b"\n", 0o755),
    }))
    accel = accel or _accel(kernel)
    memory = memory or kernels.guest_memory(kernel.name)
    append = ("console=ttyS0 panic=-1 rdinit=/init loglevel=4 "
              "printk.devkmsg=on net.ifnames=0 tsc=reliable "
              "no_timer_check rcupdate.rcu_expedited=1 "
              + kernels.boot_params(kernel.name)).rstrip()
    cmd = [
        QEMU, "-accel", accel, "-cpu", "max", "-smp", "2", "-m", memory,
        "-nodefaults", "-no-reboot", "-display", "none",
        "-kernel", str(kernel.vmlinuz), "-initrd", str(archive),
        "-append", append,
        "-serial", f"file:{console_log}",
        "-device", "virtio-serial-pci",
        "-chardev", f"file,id=out,path={out_log}",
        "-device", "virtconsole,chardev=out",
        "-chardev", f"file,id=res,path={result_bin}",
        "-device", "virtserialport,chardev=res,name=shiftfs.result",
        "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,"
                   "readonly=on,multidevs=remap",
        "-device", "virtio-rng-pci",
        *(extra_args or []),
    ]
    say(f"kernel {kernel.name}: boot {kernel.release} ({accel}), "
        f"timeout {timeout:.0f}s")
    t0 = time.monotonic()
    tail = _Tail(out_log, sys.stdout) if stream else None
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if tail:
        tail.start()
    timed_out = False
    try:
        qemu_out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        proc.kill()
        qemu_out, _ = proc.communicate()
    finally:
        if tail:
            tail.stop.set()
            tail.join()
    seconds = time.monotonic() - t0
    if proc.returncode not in (0, None) and not timed_out and \
            not result_bin.exists():
        raise ShiftctlError(f"qemu failed: "
                            f"{qemu_out.decode(errors='replace').strip()}")
    res = channel.parse(result_bin.read_bytes() if result_bin.exists()
                        else b"", nonce)
    read = lambda p: p.read_text(errors="replace") if p.exists() else ""
    archive.unlink()
    return Boot(kernel=kernel, status=res.status, files=res.files, rundir=rundir,
                console=read(console_log), output=read(out_log),
                seconds=seconds, timed_out=timed_out,
                truncated=res.truncated)
