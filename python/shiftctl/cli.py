"""The `shiftctl` command line."""

from __future__ import annotations

import sys

import click

from shiftctl.errors import ShiftctlError


class Group(click.Group):
    """A click group that turns ShiftctlError into one line on stderr."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except ShiftctlError as err:
            click.echo(f"shiftctl: {err}", err=True)
            ctx.exit(err.exit_code)
        except OSError as err:
            click.echo(f"shiftctl: {err.strerror or err}", err=True)
            ctx.exit(1)


@click.group(cls=Group)
@click.version_option(package_name="shiftctl")
def cli() -> None:
    """Mount shiftfs, lease id ranges, run containers, drive the VM harness."""


def _register() -> None:
    from shiftctl.vm.cli import vm

    cli.add_command(vm)
    try:
        from shiftctl import commands
    except ImportError:  # pragma: no cover - during bootstrap only
        return
    commands.register(cli)


_register()


def main() -> None:
    cli(prog_name="shiftctl")


if __name__ == "__main__":
    sys.exit(main())
