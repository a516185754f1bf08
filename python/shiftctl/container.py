"""``shiftctl run``: a container on a base-0 image, shifted to a leased range.

Processes and the order of things:

P, shiftctl (real root, initial namespaces)
    leases the range (owner: P itself, plus an flock on the lease file that
    P's children hold too), checks IMAGE is out of unprivileged reach and
    makes the shifted mount of IMAGE, detached (fsopen/fsconfig/fsmount, or
    open_tree + mount_setattr for --backend idmapped): the shiftfs mount must
    be made by real root, so it happens before any namespace is entered.
C, forked from P
    unshare(CLONE_NEWNS), makes its mounts private and attaches the shifted
    mount over IMAGE (still real root, so it can); then unshare(CLONE_NEWUSER)
    and waits while P writes its uid_map/gid_map ("0 BASE 65536"); becomes
    root of the new namespace; unshare(NEWNS|NEWPID|NEWNET|NEWUTS|NEWIPC)
    (all owned by the new user ns: the mount ns copy locks what came from the
    host, as in any rootless container) and forks G.  C waits for G and exits
    with G's status (128+N for signal N).
G, pid 1 of the new pid namespace
    brings loopback up (pyroute2), sets the hostname, attaches a clone of the
    image mount (C left it as the cwd; the clone is unlocked, which
    pivot_root needs) on top of it, mounts /proc, a tmpfs
    /dev (null, zero, full, random, urandom, tty bind-mounted from the host,
    a devpts instance, /dev/shm), /sys read-only, a tmpfs /tmp,
    pivot_root(".", "."), detaches the old root, forks CMD (pid 2, run as
    the container's root) and stays as its init: forwards signals, reaps
    orphans, exits with CMD's status.

P forwards SIGINT/SIGTERM/SIGHUP/SIGQUIT to G, which passes them on to CMD
(a second one makes P send SIGKILL to G: the whole container goes), waits
for C and releases the lease on every path.  C and G die with their parent (PR_SET_PDEATHSIG), so if P is
killed the container goes and the next pick reclaims the stale lease (and
while any of them lives, its flock and user namespace keep the range busy).
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import sys

from shiftctl import mounting, mountopts, syscalls
from shiftctl.errors import (EXIT_CANNOT_EXEC, EXIT_NOT_FOUND, EXIT_RUN_FAILED,
                             ShiftctlError)
from shiftctl.idmap import Extent, userns_lines
from shiftctl.ranges import DEFAULT_SIZE, Allocator, Lease

DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
ENV_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class RunError(ShiftctlError):
    exit_code = EXIT_RUN_FAILED


def _status(wstatus: int) -> int:
    if os.WIFSIGNALED(wstatus):
        return 128 + os.WTERMSIG(wstatus)
    if os.WIFEXITED(wstatus):
        return os.WEXITSTATUS(wstatus)
    return EXIT_RUN_FAILED


def _send(fd: int, msg: str) -> None:
    try:
        os.write(fd, (msg.replace("\n", " ") + "\n").encode())
    except OSError:
        pass


# ------------------------------------------------------------------ G side


def preload_pyroute2() -> None:
    """Import pyroute2 (and what it imports lazily) while still real root: in
    the container, the host's Python library may be unreadable (e.g. under
    /root) to the container's uids."""
    try:
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            ipr.link_lookup(ifname="lo")
            ipr.get_links(1)
    except Exception:  # noqa: BLE001 - reported from the container if it matters
        pass


def _loopback_up() -> None:
    try:
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            idx = ipr.link_lookup(ifname="lo")
            if idx:
                ipr.link("set", index=idx[0], state="up")
    except Exception as err:  # noqa: BLE001 - one line to the user
        raise RunError(f"cannot bring loopback up: {err}") from None


def _mkdir(path: str, mode: int = 0o755) -> None:
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        pass


def _touch(path: str) -> None:
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o666))


def _symlink(target: str, path: str) -> None:
    try:
        os.symlink(target, path)
    except FileExistsError:
        pass


def _mount_sys(dst: str) -> None:
    ro = syscalls.MS_RDONLY | syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC
    try:
        syscalls.mount("sysfs", dst, "sysfs", ro)
        return
    except ShiftctlError:
        pass
    # No fresh sysfs allowed (e.g. none fully visible): a read-only rbind.
    try:
        syscalls.mount("/sys", dst, None, syscalls.MS_BIND | syscalls.MS_REC)
        syscalls.mount_setattr(syscalls.AT_FDCWD, dst, syscalls.AT_RECURSIVE,
                               attr_set=syscalls.MOUNT_ATTR_RDONLY)
    except ShiftctlError:
        pass        # leave /sys empty rather than fail the container


def setup_root() -> None:
    """Mount what a container expects on the image and pivot into it.

    The image's shifted mount is the current directory (C chdir'ed into it
    as real root: the path to it may be closed to the container's uids).  It
    came from a more privileged mount namespace, so it is locked; a clone of
    it (open_tree) is not, and that is what becomes the root.
    """
    syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
    tfd = syscalls.open_tree(syscalls.AT_FDCWD, ".",
                             syscalls.OPEN_TREE_CLONE | syscalls.OPEN_TREE_CLOEXEC)
    try:
        syscalls.move_mount(tfd, "", syscalls.AT_FDCWD, ".", syscalls.MOVE_MOUNT_F_EMPTY_PATH)
        os.fchdir(tfd)
    finally:
        os.close(tfd)
    nsd = syscalls.MS_NOSUID | syscalls.MS_NODEV
    for d, mode in (("proc", 0o555), ("dev", 0o755), ("sys", 0o555), ("tmp", 0o1777)):
        _mkdir(d, mode)
    syscalls.mount("proc", "proc", "proc", nsd | syscalls.MS_NOEXEC)
    syscalls.mount("tmpfs", "dev", "tmpfs", syscalls.MS_NOSUID | syscalls.MS_STRICTATIME,
                   "mode=755,size=65536k")
    for name in DEVICES:
        host = f"/dev/{name}"
        if not os.path.exists(host):
            continue
        _touch(f"dev/{name}")
        syscalls.mount(host, f"dev/{name}", None, syscalls.MS_BIND)
    _mkdir("dev/pts")
    syscalls.mount("devpts", "dev/pts", "devpts", syscalls.MS_NOSUID | syscalls.MS_NOEXEC,
                   "newinstance,ptmxmode=0666,mode=0620,gid=5")
    _symlink("pts/ptmx", "dev/ptmx")
    _mkdir("dev/shm", 0o1777)
    syscalls.mount("shm", "dev/shm", "tmpfs", nsd, "mode=1777,size=65536k")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"),
                         ("core", "/proc/kcore")):
        _symlink(target, f"dev/{name}")
    _mount_sys("sys")
    syscalls.mount("tmpfs", "tmp", "tmpfs", nsd, "mode=1777")
    oldroot = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    try:
        syscalls.pivot_root(".", ".")
        os.fchdir(oldroot)           # the old root, now stacked on the new one
        syscalls.umount2(".", syscalls.MNT_DETACH)
    finally:
        os.close(oldroot)
    os.chdir("/")


def _exec_cmd(cmd: list[str], hostname: str, status_w: int) -> None:
    """The container's main process (pid 2); never returns."""
    code = EXIT_RUN_FAILED
    try:
        for sig in FORWARDED:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)   # exec keeps the mask
        env = {"PATH": ENV_PATH, "HOME": "/root", "HOSTNAME": hostname,
               "TERM": os.environ.get("TERM", "xterm"), "container": "shiftctl"}
        try:
            os.execvpe(cmd[0], cmd, env)
        except FileNotFoundError:
            code = EXIT_NOT_FOUND
            _send(status_w, f"e{code} {cmd[0]}: command not found")
        except OSError as err:
            code = EXIT_CANNOT_EXEC
            _send(status_w, f"e{code} {cmd[0]}: cannot execute: {err.strerror}")
    finally:
        os._exit(code)


def _child_g(cmd: list[str], hostname: str, status_w: int) -> None:
    """pid 1 of the container, a minimal init (like docker --init): sets the
    container up, runs CMD as pid 2, forwards signals to it, reaps orphans and
    exits with CMD's status (then the kernel kills what is left).  Never
    returns."""
    code = EXIT_RUN_FAILED
    try:
        syscalls.set_pdeathsig(signal.SIGKILL)
        _loopback_up()
        socket.sethostname(hostname)
        setup_root()
        main = os.fork()
        if main == 0:
            _exec_cmd(cmd, hostname, status_w)
        os.close(status_w)
        status_w = -1
        for sig in FORWARDED:            # blocked since C: none was lost
            signal.signal(sig, lambda s, f: _kill(main, s))
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
        while True:
            try:
                pid, wst = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            if pid == main:
                code = _status(wst)
                break
    except ShiftctlError as err:
        _send(status_w, f"e{code} container setup: {err}")
    except BaseException as err:  # noqa: BLE001
        _send(status_w, f"e{code} container setup: {type(err).__name__}: {err}")
    finally:
        os._exit(code)


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


# ------------------------------------------------------------------ C side


def _child_c(parent: int, image: str, mfd: int, cmd: list[str], hostname: str,
             status_w: int, go_r: int) -> None:
    code = EXIT_RUN_FAILED
    try:
        # P forwards signals straight to G; G (which inherits this mask)
        # unblocks them once CMD runs, so a signal sent early is not lost.
        signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
        syscalls.unshare(syscalls.CLONE_NEWNS)
        syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
        mounting.attach(mfd, image)
        os.close(mfd)
        os.chdir(image)                  # the shifted mount, for G (see setup_root)
        syscalls.unshare(syscalls.CLONE_NEWUSER)
        _send(status_w, "u")
        if os.read(go_r, 1) != b"g":
            os._exit(code)
        os.close(go_r)
        os.setgroups([])
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
        syscalls.set_pdeathsig(signal.SIGKILL)   # credentials changed: set again
        if os.getppid() != parent:
            os._exit(code)
        syscalls.unshare(syscalls.CLONE_NEWNS | syscalls.CLONE_NEWPID | syscalls.CLONE_NEWNET
                         | syscalls.CLONE_NEWUTS | syscalls.CLONE_NEWIPC)
        g = os.fork()
        if g == 0:
            _child_g(cmd, hostname, status_w)
        _send(status_w, f"p{g}")
        os.close(status_w)
        while True:
            try:
                _, wst = os.waitpid(g, 0)
                break
            except ChildProcessError:
                wst = EXIT_RUN_FAILED << 8
                break
        code = _status(wst)
    except ShiftctlError as err:
        _send(status_w, f"e{code} container setup: {err}")
    except BaseException as err:  # noqa: BLE001
        _send(status_w, f"e{code} container setup: {type(err).__name__}: {err}")
    finally:
        os._exit(code)


# ------------------------------------------------------------------ P side


def _write_maps(pid: int, base: int, count: int) -> None:
    text = userns_lines([Extent(0, base, count)])
    for name in ("uid_map", "gid_map"):
        path = f"/proc/{pid}/{name}"
        try:
            with open(path, "w") as f:
                f.write(text)
        except OSError as err:
            raise RunError(f"writing {path}: {err.strerror}") from None


def _lines(fd: int):
    buf = b""
    while True:
        try:
            data = os.read(fd, 4096)
        except InterruptedError:
            continue
        if not data:
            break
        buf += data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line.decode(errors="replace")
    if buf:
        yield buf.decode(errors="replace")


class _Forwarder:
    """P's handler for FORWARDED signals: remembered until G's pid is known,
    then sent to G; a second signal sends SIGKILL (the container goes)."""

    def __init__(self) -> None:
        self.pid = 0
        self.hits = 0
        self.pending = 0
        self.old: dict = {}

    def __enter__(self) -> "_Forwarder":
        self.old = {s: signal.signal(s, self._handle) for s in FORWARDED}
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self.old.items():
            signal.signal(s, h)

    def _handle(self, sig: int, _frame) -> None:
        self.hits += 1
        if self.pid:
            _kill(self.pid, signal.SIGKILL if self.hits > 1 else sig)
        else:
            self.pending = sig

    def target(self, pid: int) -> None:
        self.pid = pid
        if self.pending:
            _kill(pid, signal.SIGKILL if self.hits > 1 else self.pending)


def _launch(image: str, mfd: int, cmd: list[str], lease: Lease, hostname: str,
            fwd: _Forwarder) -> int:
    if fwd.pending:                      # told to stop before anything ran
        return 128 + fwd.pending
    status_r, status_w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    parent = os.getpid()
    c = os.fork()
    if c == 0:
        os.close(status_r)
        os.close(go_w)
        _child_c(parent, image, mfd, cmd, hostname, status_w, go_r)
    os.close(status_w)
    os.close(go_r)
    error: str | None = None
    code: int | None = None
    for line in _lines(status_r):
        if line == "u":
            try:
                _write_maps(c, lease.base, lease.count)
                os.write(go_w, b"g")
            except RunError as err:
                error = str(err)
                os.close(go_w)
                go_w = -1
        elif line.startswith("p"):
            fwd.target(int(line[1:]))
        elif line.startswith("e"):
            head, _, msg = line[1:].partition(" ")
            code, error = int(head or EXIT_RUN_FAILED), msg
    os.close(status_r)
    if go_w >= 0:
        os.close(go_w)
    if fwd.pending and not fwd.pid:      # signalled while C was setting up
        _kill(c, signal.SIGKILL)
    while True:
        try:
            _, wst = os.waitpid(c, 0)
            break
        except InterruptedError:
            continue
    status = _status(wst)
    if error:
        print(f"shiftctl: run: {error}", file=sys.stderr)
        return code if code is not None else EXIT_RUN_FAILED
    if fwd.pending and not fwd.pid:
        return 128 + fwd.pending
    return status


def run(image: str, cmd: list[str], alloc: Allocator, base: int | None = None,
        backend: str = "shiftfs", force: bool = False, hostname: str = "shiftctl",
        owner_name: str | None = None) -> int:
    """Run CMD in a container rooted at IMAGE; returns its exit status."""
    with _Forwarder() as fwd:
        return _run(image, cmd, alloc, base, backend, force, hostname, owner_name, fwd)


def _run(image: str, cmd: list[str], alloc: Allocator, base: int | None, backend: str,
         force: bool, hostname: str, owner_name: str | None, fwd: _Forwarder) -> int:
    try:
        if not cmd:
            raise RunError("no command given")
        image = os.path.realpath(image)
        if not os.path.isdir(image):
            raise RunError(f"image {image}: not a directory")
        if os.geteuid() != 0:
            raise RunError("must be run as root (it mounts shiftfs)")
        me = os.getpid()
        lease = (alloc.claim(base, DEFAULT_SIZE, owner_pid=me, owner_name=owner_name)
                 if base is not None else
                 alloc.pick(DEFAULT_SIZE, owner_pid=me, owner_name=owner_name))
    except ShiftctlError as err:
        raise RunError(str(err)) from None
    hold = -1
    try:
        hold = alloc.hold(lease)
        spec = mountopts.range_spec(lease.base, lease.count)
        if not force:
            mounting.safety_check(image, image, spec)
        mfd = mounting.detached(image, spec, backend)
        preload_pyroute2()
        try:
            return _launch(image, mfd, cmd, lease, hostname, fwd)
        finally:
            os.close(mfd)
    except ShiftctlError as err:
        raise RunError(str(err)) from None
    except OSError as err:
        if err.errno == errno.EINTR:
            raise
        raise RunError(f"{err.strerror or err}") from None
    finally:
        if hold >= 0:
            os.close(hold)
        alloc.release_quiet(lease)
