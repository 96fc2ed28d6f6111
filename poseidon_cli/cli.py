"""The ``poseidon`` command line: option parsing and error mapping only.

Every command turns a ``PoseidonError`` (a user mistake) into one line on stderr and exit code 2;
``--debug`` shows the traceback instead. The work happens in the modules each command calls.
"""
from __future__ import annotations

import functools
import sys

import click

from . import __version__
from . import preflight
from .errors import PoseidonError
from .usage import PoseidonGroup


def _fail(message: str, code: int = 2):
    click.echo(f"poseidon: error: {message}", err=True)
    sys.exit(code)


def user_errors(fn):
    """Map PoseidonError to one stderr line + exit 2 (traceback only with --debug)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        ctx = click.get_current_context()
        debug = bool(ctx.find_root().params.get("debug"))
        try:
            preflight.check(fn.__name__, kwargs)
            return fn(*args, **kwargs)
        except PoseidonError as exc:
            if debug:
                raise
            _fail(exc.one_line(), exc.exit_code)
        except KeyboardInterrupt:
            if debug:
                raise
            _fail("interrupted", 130)
    return wrapper


@click.group(cls=PoseidonGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="poseidon")
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors.")
def main(debug):
    """Train Caffe-defined CNNs data-parallel across a cluster (Petuum Poseidon style).

    Bring Caffe prototxts, LMDBs, mean files and .caffemodels unchanged.
    """


def _device_options(fn):
    fn = click.option("--cpu", "cpu", is_flag=True, help="Run on the CPU (NumPy).")(fn)
    fn = click.option("--gpu", "gpu", default=None, metavar="IDS",
                      help="GPU id(s) to use, e.g. 0 or 0,1 (one worker per GPU).")(fn)
    return fn


@main.command()
@click.option("--solver", "solver", required=True, type=click.Path(dir_okay=False),
              help="Solver prototxt (Caffe format).")
@click.option("--hosts", default=None, type=click.Path(dir_okay=False),
              help="Hosts file: '<client_id> <ip> <port>' per line. Omit to train on this machine only.")
@click.option("--client-id", type=int, default=None,
              help="This machine's line in the hosts file (default: from MPI/Slurm/Kubernetes env, or local address).")
@click.option("--staleness", type=int, default=None, help="SSP staleness bound (default 0 = bulk synchronous).")
@click.option("--svb", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
              help="Sufficient-factor broadcasting for InnerProduct weights (Poseidon's flag name: SVB).")
@_device_options
@click.option("--snapshot", default=None, type=click.Path(dir_okay=False),
              help="Resume from this .solverstate; 'latest': the newest snapshot of the solver's "
                   "snapshot_prefix, or a fresh start (with --weights: fine-tune) when there is none.")
@click.option("--weights", default=None, help="Fine-tune from these .caffemodel weights (comma-separated list allowed).")
@click.option("--output-dir", default=None, type=click.Path(file_okay=False),
              help="Where logs, .netoutputs and stats go (default: beside the snapshot prefix).")
@click.option("--sigint-effect", type=click.Choice(["stop", "snapshot", "none"]), default="stop", show_default=True)
@click.option("--sighup-effect", type=click.Choice(["stop", "snapshot", "none"]), default="snapshot", show_default=True)
@click.option("--no-overlap", is_flag=True, help="Communicate after the whole backward (for comparison).")
@click.option("--deadline", type=float, default=None, help="Seconds any blocking wait may take before failing (distributed).")
@click.option("--workers-per-client", type=int, default=None,
              help="Worker processes per hosts-file line (default: one per --gpu id, else 1).")
@click.option("--max-restarts", type=int, default=0, show_default=True,
              help="Local cluster: restart a failed run from its latest snapshot up to N times.")
@click.option("--secret-file", default=None, type=click.Path(dir_okay=False),
              help="Cluster: file holding the job secret every client shares (else "
                   "$POSEIDON_SECRET; a local cluster makes one).")
@click.option("--tls-cert", default=None, type=click.Path(dir_okay=False),
              help="Cluster: this machine's PEM certificate (mutual TLS on both planes).")
@click.option("--tls-key", default=None, type=click.Path(dir_okay=False), help="Its PEM private key.")
@click.option("--tls-ca", default=None, type=click.Path(dir_okay=False),
              help="PEM certificate of the CA that signed every client's certificate.")
@click.option("--worker-index", type=int, default=None, hidden=True)
@click.option("--emulate-compute", default=None, type=click.Path(dir_okay=False), metavar="PROFILE",
              help="Do not compute: every layer takes the time this GPU profile (JSON) gives; "
                   "shapes, bytes and communication stay real (see poseidon_cli/emulate.py).")
@click.option("--dilation", type=float, default=None,
              help="With --emulate-compute: slow every layer by this factor (time dilation).")
@click.option("--jitter", type=float, default=None,
              help="With --emulate-compute: per-iteration lognormal slowdown sigma (stragglers).")
@user_errors
def train(**opts):
    """Train (or fine-tune, or resume) a net described by a solver prototxt."""
    if opts["snapshot"] and opts["weights"] and opts["snapshot"] != "latest":
        raise PoseidonError("give either --snapshot (resume) or --weights (fine-tune), not both")
    if opts["emulate_compute"]:
        from . import emulate
        emulate.configure(opts["emulate_compute"], opts["dilation"] or 1.0, opts["jitter"] or 0.0)
    if opts["max_restarts"] and not opts["hosts"]:
        raise PoseidonError("--max-restarts restarts a local cluster (--hosts); on one machine "
                            "let the restart policy rerun the command with --snapshot latest")
    if opts["hosts"]:
        from .commands import cluster
        sys.exit(cluster.run(opts) or 0)
    from .commands import train as train_cmd
    sys.exit(train_cmd.run(solver=opts["solver"], snapshot=opts["snapshot"], weights=opts["weights"],
                           gpu=opts["gpu"], cpu=opts["cpu"], output_dir=opts["output_dir"],
                           sigint_effect=opts["sigint_effect"],
                           sighup_effect=opts["sighup_effect"]) or 0)


@main.command()
@click.option("--model", required=True, type=click.Path(dir_okay=False), help="Net prototxt.")
@click.option("--weights", required=True, help="Trained .caffemodel.")
@click.option("--iterations", type=int, default=50, show_default=True)
@_device_options
@user_errors
def test(**opts):
    """Score a trained model on its TEST-phase data (like `caffe test`)."""
    from .commands import test as test_cmd
    sys.exit(test_cmd.run(**opts) or 0)


@main.command(name="time")
@click.option("--model", required=True, type=click.Path(dir_okay=False), help="Net prototxt.")
@click.option("--iterations", type=int, default=50, show_default=True)
@click.option("--phase", type=click.Choice(["TRAIN", "TEST"]), default="TRAIN", show_default=True)
@click.option("--json", "json_path", default=None, type=click.Path(dir_okay=False),
              help="Also write the per-layer profile (JSON) to this file.")
@_device_options
@user_errors
def time_(**opts):
    """Per-layer forward/backward timing of a net (like `caffe time`)."""
    from .commands import time as time_cmd
    sys.exit(time_cmd.run(**opts) or 0)


@main.command()
@click.option("--profile", required=True, type=click.Path(dir_okay=False),
              help="Per-layer GPU profile (JSON, e.g. bench/profiles/alexnet_b256_k20.json).")
@click.option("--model", default=None, type=click.Path(dir_okay=False),
              help="Net prototxt (default: the profile's 'model').")
@click.option("--nodes", default="1,2,4,8", show_default=True, help="Node counts, comma-separated.")
@click.option("--link", default="40gbit", show_default=True, help="Link rate of every node (full duplex).")
@click.option("--staleness", default="0", show_default=True, help="SSP staleness values, comma-separated.")
@click.option("--svb", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True)
@click.option("--jitter", type=float, default=0.0, show_default=True,
              help="Lognormal sigma of each worker's per-iteration compute time.")
@click.option("--no-overlap", is_flag=True, help="Communicate after the whole backward.")
@click.option("--json", "json_out", default=None, type=click.Path(dir_okay=False), help="Also write JSON here.")
@user_errors
def plan(**opts):
    """Predict iteration time and speedup on N nodes from a profile (no cluster needed)."""
    from .plan import run_plan
    sys.exit(run_plan(**opts) or 0)


@main.command(name="upgrade-net")
@click.argument("src", type=click.Path(dir_okay=False))
@click.argument("dst", type=click.Path(dir_okay=False))
@user_errors
def upgrade_net(src, dst):
    """Rewrite a V0/V1 net prototxt in the current format (like upgrade_net_proto_text)."""
    from . import config
    net = config.load_net_param(src, resolve=False)
    config.write_text(net, dst)
    click.echo(f"wrote {dst} ({len(net.layer)} layers)", err=True)


def _register_data_group():
    try:
        from .tools.data_cli import data
    except ImportError:  # tools not installed in this build
        return
    main.add_command(data)


_register_data_group()


def _register_tools_commands():
    try:
        from .tools.tools_cli import COMMANDS
    except ImportError:  # tools not installed in this build
        return
    for command in COMMANDS:
        main.add_command(command)


_register_tools_commands()


if __name__ == "__main__":  # pragma: no cover
    main()
