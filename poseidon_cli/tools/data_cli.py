"""``poseidon data ...``: dataset converters and LMDB utilities (the click group ``data``).

Commands: convert-mnist, convert-cifar10, convert-imageset, digits, partition, compute-mean,
inspect. A user mistake (``PoseidonError``) prints one ``poseidon: error: ...`` line and exits 2
(traceback with ``poseidon --debug``); converters never leave a partial output DB behind.
"""
from __future__ import annotations

import functools
import json
import sys

import click

from ..errors import PoseidonError


def _user_errors(fn):
    # Same mapping as cli.user_errors; kept local so this module imports without cli.py.
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        ctx = click.get_current_context()
        debug = bool(ctx.find_root().params.get("debug"))
        try:
            return fn(*args, **kwargs)
        except PoseidonError as exc:
            if debug:
                raise
            click.echo(f"poseidon: error: {exc.one_line()}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            if debug:
                raise
            click.echo("poseidon: error: interrupted (no partial output was kept)", err=True)
            sys.exit(130)
    return wrapper


@click.group("data")
def data():
    """Create, partition and inspect Caffe-format LMDB datasets."""


@data.command("convert-mnist")
@click.argument("images", type=click.Path(dir_okay=False))
@click.argument("labels", type=click.Path(dir_okay=False))
@click.argument("out", type=click.Path())
@_user_errors
def convert_mnist_cmd(images, labels, out):
    """MNIST IDX files (optionally .gz) -> LMDB OUT (keys %08d, 1x28x28), like
    Caffe's convert_mnist_data."""
    from .convert_mnist import convert_mnist
    n = convert_mnist(images, labels, out)
    click.echo(f"wrote {n} records to {out}", err=True)


@data.command("convert-cifar10")
@click.argument("input_dir", type=click.Path(file_okay=False))
@click.argument("out_dir", type=click.Path(file_okay=False))
@_user_errors
def convert_cifar10_cmd(input_dir, out_dir):
    """CIFAR-10 binary batches in INPUT_DIR -> OUT_DIR/cifar10_{train,test}_lmdb
    (keys %05d, 3x32x32 R,G,B planes), like Caffe's convert_cifar_data."""
    from .convert_cifar10 import convert_cifar10
    res = convert_cifar10(input_dir, out_dir)
    click.echo(f"wrote {res['train_count']} records to {res['train']} and "
               f"{res['test_count']} to {res['test']}", err=True)


@data.command("convert-imageset")
@click.argument("root", type=click.Path(file_okay=False))
@click.argument("list_file", metavar="LIST", type=click.Path(dir_okay=False))
@click.argument("out", type=click.Path())
@click.option("--resize-height", type=int, default=0, show_default=True,
              help="Resize every image to this height (with --resize-width).")
@click.option("--resize-width", type=int, default=0, show_default=True,
              help="Resize every image to this width (with --resize-height).")
@click.option("--gray", is_flag=True, help="Store one gray channel instead of BGR.")
@click.option("--shuffle", is_flag=True, help="Shuffle the list (seeded) before converting.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for --shuffle.")
@click.option("--encoded", is_flag=True, help="Store compressed images (Datum encoded: true).")
@click.option("--encode-type", default="", help="png or jpg for --encoded (default: keep the file's).")
@_user_errors
def convert_imageset_cmd(root, list_file, out, resize_height, resize_width, gray, shuffle, seed,
                         encoded, encode_type):
    """Images listed in LIST ('path label' per line, paths under ROOT) -> LMDB OUT
    (keys %08d_<path>, BGR planes), like Caffe's convert_imageset."""
    from .convert_imageset import convert_imageset
    n = convert_imageset(root, list_file, out, resize_height, resize_width, gray, shuffle, seed,
                         encoded, encode_type)
    click.echo(f"wrote {n} records to {out}", err=True)


@data.command("digits")
@click.argument("out_dir", metavar="OUT", type=click.Path(file_okay=False))
@click.option("--size", type=int, default=28, show_default=True,
              help="Image side after resizing (8 = scikit-learn's original).")
@click.option("--test-count", type=int, default=297, show_default=True,
              help="The last N images form the test set.")
@_user_errors
def digits_cmd(out_dir, size, test_count):
    """scikit-learn's bundled 8x8 digits -> OUT/digits_{train,test}_lmdb (an offline MNIST
    stand-in; needs scikit-learn)."""
    from .digits import write_digits
    res = write_digits(out_dir, size, test_count)
    click.echo(f"wrote {res['train_count']} records to {res['train']} and "
               f"{res['test_count']} to {res['test']}", err=True)


@data.command("partition")
@click.argument("db", type=click.Path(file_okay=False))
@click.option("--parts", type=int, required=True, help="Number of partitions (= clients).")
@_user_errors
def partition_cmd(db, parts):
    """Deal the records of LMDB DB round-robin into DB_0 .. DB_{P-1}, one per client
    (for shared_file_system: false)."""
    from .partition import partition_db
    for path, n in partition_db(db, parts):
        click.echo(f"wrote {n} records to {path}", err=True)


@data.command("compute-mean")
@click.argument("db", type=click.Path(file_okay=False))
@click.argument("mean", type=click.Path(dir_okay=False))
@_user_errors
def compute_mean_cmd(db, mean):
    """Per-pixel mean of LMDB DB -> MEAN.binaryproto (Caffe's compute_image_mean)."""
    from .compute_mean import write_mean
    m = write_mean(db, mean)
    chans = ", ".join(f"{v:.4f}" for v in m.reshape(m.shape[0], -1).mean(axis=1))
    click.echo(f"wrote {mean} ({'x'.join(map(str, m.shape))}); mean per channel: {chans}", err=True)


@data.command("inspect")
@click.argument("db", type=click.Path(file_okay=False))
@click.option("--first", type=int, default=5, show_default=True, help="How many first keys to show.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@_user_errors
def inspect_cmd(db, first, as_json):
    """Record count, image shape, label histogram and first keys of LMDB DB."""
    from .inspect_db import format_report, inspect_db
    info = inspect_db(db, first)
    if as_json:
        click.echo(json.dumps(info, indent=1))
    else:
        click.echo(format_report(info))
