"""Caffe's everyday tools as ``poseidon`` commands: ``parse-log``, ``plot``, ``device-query``.

``COMMANDS`` is what ``cli.py`` registers. Errors follow the ``data`` group: a ``PoseidonError``
prints one ``poseidon: error: ...`` line and exits with its code (traceback with ``--debug``).
"""
from __future__ import annotations

import os

import click

from .data_cli import _user_errors


@click.command("parse-log")
@click.argument("log", type=click.Path(dir_okay=False))
@click.argument("output_dir", required=False, type=click.Path(file_okay=False))
@click.option("--delimiter", default=",", show_default=True, help="Column separator.")
@_user_errors
def parse_log_cmd(log, output_dir, delimiter):
    """Training LOG -> OUTPUT_DIR/<log>.train and <log>.test, the CSV files of Caffe's
    tools/extra/parse_log.py (columns NumIters, Seconds, LearningRate, then each net output).
    OUTPUT_DIR defaults to the log's folder."""
    from .log_tools import save_csv_files
    if len(delimiter) != 1:
        raise click.BadParameter("one character", param_hint="--delimiter")
    out = output_dir or os.path.dirname(os.path.abspath(log))
    written = save_csv_files(log, out, delimiter)
    for path in written:
        click.echo(f"wrote {path}", err=True)
    if not written:
        click.echo(f"{log}: no complete train or test rows; nothing written", err=True)


@click.command("plot")
@click.argument("logs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--x", "x", type=click.Choice(["iters", "seconds"]), default="iters",
              show_default=True, help="Horizontal axis.")
@click.option("--y", "y", type=click.Choice(["loss", "accuracy", "lr"]), default="loss",
              show_default=True, help="What to draw: train and test losses, test accuracies, "
              "or the learning rate.")
@click.option("-o", "--output", default="curves.png", show_default=True,
              type=click.Path(dir_okay=False), help="PNG file to write.")
@_user_errors
def plot_cmd(logs, x, y, output):
    """Curves of one or more training LOGS in one PNG (Caffe's plot_training_log.py);
    needs matplotlib (pip install 'poseidon-cli[plot]')."""
    from .log_tools import plot
    n = plot(list(logs), output, x=x, y=y)
    click.echo(f"wrote {output} ({n} curve(s))", err=True)


@click.command("device-query")
@click.option("--gpu", "gpu", type=int, default=None, help="Only this device id.")
@_user_errors
def device_query_cmd(gpu):
    """The GPUs CuPy sees, like `caffe device_query` (exit 1 with one line saying why when none)."""
    from .device_query import describe, query
    click.echo(describe(query(gpu)))


COMMANDS = [parse_log_cmd, plot_cmd, device_query_cmd]
