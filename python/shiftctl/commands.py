"""The shiftctl subcommands: mount, umount, list, range, run."""

from __future__ import annotations

import json
import os
import sys

import click

from shiftctl import mounting, mountinfo, mountopts, ranges
from shiftctl.errors import EXIT_RUN_FAILED, EXIT_USAGE, ShiftctlError
from shiftctl.idmap import format_map


def _allocator(state_dir: str | None) -> ranges.Allocator:
    # SHIFTCTL_PROC_ROOT / SHIFTCTL_ETC_DIR: test hooks (a fake /proc, /etc).
    return ranges.Allocator(
        state_dir=state_dir,
        proc_root=os.environ.get("SHIFTCTL_PROC_ROOT", "/proc"),
        etc_dir=os.environ.get("SHIFTCTL_ETC_DIR", "/etc"),
        mountinfo_path=os.environ.get("SHIFTCTL_MOUNTINFO"),
    )


state_dir_option = click.option(
    "--state-dir", envvar="SHIFTCTL_STATE_DIR", default=None, metavar="DIR",
    help="Lease directory [default: /run/shiftctl; env SHIFTCTL_STATE_DIR].")
owner_options = [
    click.option("--owner", "owner_name", metavar="NAME", default=None,
                 help="A label for the lease (e.g. the container's name)."),
    click.option("--owner-pid", type=int, default=None, metavar="PID",
                 help="The process whose life the lease lasts "
                      "[default: shiftctl's parent, the caller]."),
]


def _with(options):
    def deco(f):
        for opt in reversed(options):
            f = opt(f)
        return f
    return deco


# ------------------------------------------------------------------ mount


@click.command("mount")
@click.option("-o", "--options", "opts", multiple=True, metavar="OPTS",
              help="Comma separated mount options (shift_uids, uidmap=F:T:C, "
                   "userns=PATH, X-mount.idmap=..., ro, nosuid, ...).")
@click.option("--uidmap", multiple=True, metavar="F:T:C",
              help="Disk uid F+i is seen as T+i, i < C (repeatable; u:F:T:C too).")
@click.option("--gidmap", multiple=True, metavar="F:T:C", help="The same for gids.")
@click.option("--idmap", multiple=True, metavar="'u:F:T:C g:F:T:C b:F:T:C'",
              help="util-linux X-mount.idmap form (b: or no prefix = both).")
@click.option("--userns", metavar="PID|PATH", default=None,
              help="Take the maps from a user namespace (/proc/PID/ns/user).")
@click.option("--pick", is_flag=True,
              help="Lease a free range and map the base-0 LOWER onto it; prints "
                   "'BASE COUNT'.")
@click.option("--backend", type=click.Choice(mounting.BACKENDS), default="shiftfs",
              show_default=True)
@click.option("--force", is_flag=True,
              help="Mount even if unprivileged users can reach the lower dir.")
@state_dir_option
@_with(owner_options)
@click.argument("lower", type=click.Path(file_okay=False))
@click.argument("target", type=click.Path(file_okay=False))
def mount_cmd(opts, uidmap, gidmap, idmap, userns, pick, backend, force, state_dir,
              owner_name, owner_pid, lower, target) -> None:
    """Mount LOWER on TARGET with shifted ids."""
    spec = mountopts.build(list(opts), list(uidmap), list(gidmap), userns, list(idmap))
    lease = None
    alloc = _allocator(state_dir)
    if pick:
        if spec.uidmap or spec.gidmap or spec.userns or spec.shift_uids or spec.shift_gids:
            raise ShiftctlError("--pick makes the map itself; drop the maps", EXIT_USAGE)
        lease = alloc.pick(owner_pid=owner_pid, owner_name=owner_name,
                           mount=os.path.realpath(target))
        pspec = mountopts.range_spec(lease.base, lease.count)
        pspec.attr_flags, pspec.extra = spec.attr_flags, spec.extra
        spec = pspec
    try:
        entry = mounting.mount(lower, target, spec, backend=backend, force=force)
    except BaseException:
        if lease is not None:
            alloc.release_quiet(lease)
        raise
    if lease is not None:
        lease.mount_id = entry.mount_id if entry else None
        alloc.update(lease)
        click.echo(f"{lease.base} {lease.count}")


@click.command("umount")
@click.option("-l", "--lazy", is_flag=True, help="Detach now, clean up later.")
@click.option("--force", is_flag=True, help="Unmount even if not shiftfs/idmapped.")
@state_dir_option
@click.argument("target", type=click.Path())
def umount_cmd(lazy, force, state_dir, target) -> None:
    """Unmount a shiftfs (or idmapped) mount; releases a lease made by mount --pick."""
    mounting.umount(target, lazy=lazy, force=force)
    real = os.path.realpath(target)
    try:
        _allocator(state_dir).release_mount(real)
    except ShiftctlError:
        pass


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--all", "include_idmapped", is_flag=True,
              help="Also list idmapped mounts (their maps are not in mountinfo).")
def list_cmd(as_json, include_idmapped) -> None:
    """List shiftfs mounts: mount point, lower directory, maps."""
    path = os.environ.get("SHIFTCTL_MOUNTINFO", "/proc/self/mountinfo")
    try:
        entries = mountinfo.read(path)
    except OSError as err:
        raise ShiftctlError(f"{path}: {err.strerror}") from None
    mounts = mountinfo.shift_mounts(entries, include_idmapped=include_idmapped)
    if as_json:
        click.echo(json.dumps([m.to_json() for m in mounts], indent=2))
        return
    for m in mounts:
        maps = []
        if m.uidmap:
            maps.append("uidmap=" + format_map(m.uidmap))
        elif m.shift_uids:
            maps.append("shift_uids")
        if m.gidmap:
            maps.append("gidmap=" + format_map(m.gidmap))
        elif m.shift_gids:
            maps.append("shift_gids")
        if m.userns:
            maps.append(f"userns={m.userns}")
        extra = "" if m.backend == "shiftfs" else f" [{m.backend}]"
        click.echo(f"{m.target}\t{m.lower}\t{' '.join(maps) or '-'}{extra}")


# ------------------------------------------------------------------ range


@click.group("range")
def range_group() -> None:
    """Lease host id ranges for containers."""


@range_group.command("pick")
@click.option("--size", type=int, default=ranges.DEFAULT_SIZE, show_default=True)
@state_dir_option
@_with(owner_options)
def range_pick(size, state_dir, owner_name, owner_pid) -> None:
    """Lease a free aligned range; prints 'BASE COUNT' (decimal)."""
    lease = _allocator(state_dir).pick(size, owner_pid=owner_pid, owner_name=owner_name)
    click.echo(f"{lease.base} {lease.count}")


@range_group.command("release")
@state_dir_option
@click.argument("base")
@click.argument("count", required=False)
def range_release(state_dir, base, count) -> None:
    """Release the lease of BASE [COUNT] (as printed by pick; BASE:COUNT too)."""
    b, c = ranges.parse_range(base, count)
    _allocator(state_dir).release(b, c)


@range_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@state_dir_option
def range_list(as_json, state_dir) -> None:
    """Show the leases and whether their owners are alive."""
    rows = _allocator(state_dir).listing()
    if as_json:
        click.echo(json.dumps([dict(l.to_json(), live=live) for l, live in rows], indent=2))
        return
    for l, live in rows:
        click.echo(f"{l.base} {l.count}\tpid={l.owner_pid}\t"
                   f"{'live' if live else 'stale'}\t{l.owner_name or '-'}"
                   f"{chr(9) + l.mount if l.mount else ''}")


# -------------------------------------------------------------------- run


@click.command("run", context_settings={"ignore_unknown_options": False})
@click.option("--pick", "pick", is_flag=True, help="Lease a free range (the default).")
@click.option("--range", "base", default=None, metavar="BASE",
              help="Use this range (65536 ids from BASE); it must be free.")
@click.option("--backend", type=click.Choice(mounting.BACKENDS), default="shiftfs",
              show_default=True)
@click.option("--force", is_flag=True, help="Skip the reachability check of IMAGE.")
@click.option("--hostname", default="shiftctl", show_default=True)
@click.option("--owner", "owner_name", metavar="NAME", default=None)
@state_dir_option
@click.argument("image", type=click.Path(file_okay=False))
@click.argument("cmd", nargs=-1, required=True)
def run_cmd(pick, base, backend, force, hostname, owner_name, state_dir, image, cmd) -> None:
    """Run CMD as root of a container whose root is IMAGE (stored at base 0)."""
    from shiftctl import container  # heavy: pyroute2

    try:
        if pick and base is not None:
            raise ShiftctlError("--pick and --range are exclusive")
        b = ranges.parse_range(base)[0] if base is not None else None
        status = container.run(image, list(cmd), _allocator(state_dir), base=b,
                               backend=backend, force=force, hostname=hostname,
                               owner_name=owner_name)
    except ShiftctlError as err:
        raise ShiftctlError(str(err), EXIT_RUN_FAILED) from None
    sys.stdout.flush()
    click.get_current_context().exit(status)


def register(cli: click.Group) -> None:
    for cmd in (mount_cmd, umount_cmd, list_cmd, range_group, run_cmd):
        cli.add_command(cmd)
