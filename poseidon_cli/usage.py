"""Command-line usage mistakes (unknown option, bad value, missing option, unknown command) in
the same form as every other user error: one ``poseidon: error: ...`` line, exit code 2.

``PoseidonGroup`` is the click group class of ``poseidon``; click's own multi-line usage
message (``Usage: ... Error: ...``) is replaced by one line that names the command and option
and says how to see the valid options.
"""
from __future__ import annotations

import sys

import click


def usage_line(exc: click.ClickException) -> str:
    ctx = getattr(exc, "ctx", None)
    path = ctx.command_path if ctx is not None else "poseidon"
    text = " ".join(exc.format_message().split())
    return f"poseidon: error: {path}: {text} (run '{path} -h' for the options)"


class PoseidonGroup(click.Group):
    """A click group whose usage errors are one line (see the module docstring)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Abort:
            click.echo("poseidon: error: interrupted", err=True)
            sys.exit(130)
        except click.UsageError as exc:
            click.echo(usage_line(exc), err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:   # a file click could not open, for instance
            click.echo(f"poseidon: error: {' '.join(exc.format_message().split())}", err=True)
            sys.exit(2)
        sys.exit(rv if isinstance(rv, int) else 0)
