#!/usr/bin/env python3
"""Every GPU check of issue 17 in one run, inside a time budget: the engine behind
``bench/gpu_check.sh`` (which installs what is missing first; run that, not this).

Steps, in order (each a child process with its own timeout, its output appended to check.log):

- probe: CuPy and torch see a CUDA device, and its description. Target: a GPU answers (else exit 3).
- pytest: ``pytest -m gpu`` (the CuPy variants of the layer, op, solver and data tests).
  Target: no failure or error, at least one pass.
- engine: ``bench/engine.py --device gpu``, AlexNet b128 and GoogLeNet b32. Target: our
  throughput >= 0.8x PyTorch's (cuDNN, full FP32) on both.
- profiles: ``poseidon time --gpu 0 --json`` of AlexNet and GoogLeNet. Target: valid profiles
  measured on the GPU.
- digits: ``bench/digits_cluster.py``, 2 local clients with ``--gpu 0``. Target: held-out
  accuracy >= 97%.

``--cpu-dry-run`` runs the same steps on the CPU at toy sizes (LeNet, a few iterations, a CPU
pytest selection) to prove the plumbing; its targets are only "ran and wrote valid results", and
it says nothing about a GPU.

Budget: ``--budget S`` seconds for everything. Each step gets at most its cap, and never so much
that the minimum of every later step no longer fits (when even that is impossible, the step takes
what is left and later steps are skipped as "no budget"); ``RESERVE_S`` is kept for the summary.
A step past its timeout is killed with its whole process group.

Writes under OUTDIR (flat, at most 8 files, so it fits a narrow result channel): summary.json,
summary.txt (the table), check.log, pytest_gpu.xml, engine.json, profile_<net>.json (two),
digits_gpu.json.

Exit status: 0 every target met; 1 a target missed (or a step failed, timed out or had no
budget); 2 bad usage; 3 no GPU or no CuPy (not in a dry run).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import shlex
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESERVE_S = 10.0          # kept back for evaluating and writing the summary
ENGINE_TARGET = 0.8       # ours / PyTorch cuDNN FP32 images per second
DIGITS_TARGET = 0.97      # held-out accuracy of the 2-client GPU run
GPU_NETS = {"alexnet": ("bvlc/models/bvlc_alexnet/train_val.prototxt", 128),
            "googlenet": ("bvlc/models/bvlc_googlenet/train_val.prototxt", 32)}
DRY_NET = ("lenet", "bvlc/examples/mnist/lenet_train_test.prototxt", 8)
# packages the GPU image already carries and that must not be replaced from wheels (CuPy and
# PyTorch are built against its NumPy)
IMAGE_PROVIDES = {"numpy"}
EXIT_OK, EXIT_MISSED, EXIT_USAGE, EXIT_NO_GPU = 0, 1, 2, 3


@dataclass
class Step:
    name: str
    min_s: float      # below this it cannot finish: skip it instead
    cap_s: float      # never more than this
    commands: list = field(default_factory=list)   # argv lists, run in order


@dataclass
class Result:
    name: str
    status: str = "skipped"   # pass | miss | no gpu | failed | timeout | no budget | skipped
    seconds: float = 0.0
    timeout_s: float = 0.0
    detail: str = ""
    metrics: dict = field(default_factory=dict)


# -- budget ----------------------------------------------------------------------------------------

def step_timeout(remaining, min_s, cap_s, later_min_s, reserve=RESERVE_S):
    """Seconds this step may run, or None to skip it.

    ``remaining``: budget left; ``later_min_s``: the minimum seconds of every later step. The
    step gets ``min(cap, remaining - reserve - later)``; when that is under its own minimum it
    gets ``min(cap, remaining - reserve)`` (later steps will then be skipped); when even that is
    under its minimum, None."""
    avail = remaining - reserve
    t = min(cap_s, avail - later_min_s)
    if t >= min_s:
        return t
    t = min(cap_s, avail)
    return t if t >= min_s else None


# -- wheels ----------------------------------------------------------------------------------------

def _load_pyproject(path):
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    with open(path, "rb") as fh:
        return tomllib.load(fh)


def _req_name(req):
    name = req
    for sep in "<>=!~[;@ ":
        name = name.split(sep)[0]
    return name.strip().lower().replace("_", "-")


def wheel_requirements(pyproject=ROOT / "pyproject.toml"):
    """The requirement strings a wheel folder for the GPU image needs: the runtime dependencies
    of pyproject.toml, less those the image provides."""
    deps = _load_pyproject(pyproject)["project"]["dependencies"]
    return [d for d in deps if _req_name(d) not in IMAGE_PROVIDES]


def gpu_extra(pyproject=ROOT / "pyproject.toml"):
    return list(_load_pyproject(pyproject)["project"]["optional-dependencies"]["gpu"])


def download_command(python, dest, python_version="3.12"):
    """argv of the ``pip download`` that fills ``dest`` with wheels for the GPU image (x86-64
    Linux, CPython ``python_version``), run on a machine that can reach a package index."""
    plats = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64"]
    cmd = [python, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--python-version", python_version, "--implementation", "cp"]
    for p in plats:
        cmd += ["--platform", p]
    return cmd + ["-d", str(dest)] + wheel_requirements()


# -- steps -----------------------------------------------------------------------------------------

PROBE = r"""
import json, sys
out = {"python": sys.version.split()[0]}
try:
    from poseidon_cli import backend
    out["cupy_gpus"] = backend.gpu_count()
    try:
        import cupy
        out["cupy"] = cupy.__version__
    except Exception as exc:
        out["cupy"] = None
        out["cupy_error"] = f"{type(exc).__name__}: {exc}"
    dry = len(sys.argv) > 1
    out["device"] = backend.device_description(None if dry or not out["cupy_gpus"] else 0)
except Exception as exc:
    out["poseidon_error"] = f"{type(exc).__name__}: {exc}"
try:
    import torch
    out["torch"] = torch.__version__
    out["torch_cuda"] = bool(torch.cuda.is_available())
    if out["torch_cuda"]:
        out["torch_device"] = torch.cuda.get_device_name(0)
except Exception as exc:
    out["torch"] = None
    out["torch_error"] = f"{type(exc).__name__}: {exc}"
print("PROBE " + json.dumps(out))
"""


def default_conformance():
    inside = ROOT / "shared" / "conformance"
    return inside if inside.is_dir() else (ROOT / ".." / "shared" / "conformance").resolve()


def build_steps(py, outdir, conf, dry_run):
    """The steps with their commands (argv lists)."""
    out = pathlib.Path(outdir)
    bench = ROOT / "bench"
    probe = [py, "-c", PROBE] + (["dry"] if dry_run else [])
    if dry_run:
        pytest_cmd = [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not gpu",
                      f"--junitxml={out / 'pytest_gpu.xml'}",
                      str(ROOT / "tests" / "test_profile.py")]
        name, rel, batch = DRY_NET
        engine = [py, str(bench / "engine.py"), "--device", "cpu", "--nets", name,
                  "--batch", f"{name}={batch}", "--reps", "2", "--threads", "1",
                  "--conformance", str(conf), "--out", str(out / "engine.json")]
        profiles = [[py, "-m", "poseidon_cli.cli", "time", "--model", str(conf / rel),
                     "--iterations", "1", "--cpu", "--json", str(out / f"profile_{name}.json")]]
        digits = [py, str(bench / "digits_cluster.py"), "--clients", "2", "--staleness", "0",
                  "--max-iter", "20", "--no-single", "--json", str(out / "digits_gpu.json")]
    else:
        pytest_cmd = [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu",
                      "--continue-on-collection-errors", f"--junitxml={out / 'pytest_gpu.xml'}",
                      str(ROOT / "tests")]
        engine = [py, str(bench / "engine.py"), "--device", "gpu",
                  "--nets", ",".join(GPU_NETS), "--reps", "8", "--rounds", "2",
                  "--threads", str(os.cpu_count() or 1), "--conformance", str(conf),
                  "--out", str(out / "engine.json")]
        profiles = [[py, "-m", "poseidon_cli.cli", "time", "--model", str(conf / rel),
                     "--iterations", "10", "--gpu", "0", "--json", str(out / f"profile_{n}.json")]
                    for n, (rel, _) in GPU_NETS.items()]
        digits = [py, str(bench / "digits_cluster.py"), "--clients", "2", "--staleness", "0",
                  "--gpu", "0", "--no-single", "--target-accuracy", str(DIGITS_TARGET),
                  "--json", str(out / "digits_gpu.json")]
    return [Step("probe", 5, 60, [probe]),
            Step("pytest", 30, 240, [pytest_cmd]),
            Step("engine", 30, 180, [engine]),
            Step("profiles", 20, 120, profiles),
            Step("digits", 30, 200, [digits])]


def run_logged(argv, timeout, log, env):
    """Run ``argv`` in its own process group with output appended to ``log``; (returncode or
    None on timeout, stdout text). On timeout the whole group is killed."""
    log.write(f"\n$ {shlex.join(argv)}   (timeout {timeout:.0f} s)\n")
    log.flush()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=ROOT, env=env, start_new_session=True)
    try:
        text, _ = proc.communicate(timeout=max(timeout, 0.1))
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)   # the step's own group: clients it started too
        text, _ = proc.communicate()
        rc = None
    log.write(text or "")
    log.write(f"[exit {'timeout' if rc is None else rc}]\n")
    log.flush()
    return rc, text or ""


# -- evaluating what the steps wrote ---------------------------------------------------------------

def parse_probe(text):
    for line in text.splitlines():
        if line.startswith("PROBE "):
            return json.loads(line[len("PROBE "):])
    return None


def parse_junit(path):
    """{tests, passed, failures, errors, skipped, failed_ids} from a pytest junit XML file."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    failed = []
    for s in suites:
        for k in counts:
            counts[k] += int(s.get(k, 0))
        for case in s.iter("testcase"):
            if case.find("failure") is not None or case.find("error") is not None:
                failed.append(f"{case.get('classname', '')}::{case.get('name', '')}")
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    counts["failed_ids"] = failed
    return counts


def evaluate(name, outdir, dry_run, probe=None):
    """(status, detail, metrics) for a step whose commands all exited; reads its files."""
    out = pathlib.Path(outdir)
    if name == "probe":
        p = probe or {}
        if "poseidon_error" in p or not p:
            why = p.get("poseidon_error", "no probe output")
            return "miss", f"poseidon_cli does not import: {why}", p
        if dry_run:
            return "pass", f"dry run on {p.get('device', 'the CPU')}", p
        if not p.get("cupy"):
            return "no gpu", f"no CuPy: {p.get('cupy_error', 'not importable')}", p
        if not p.get("cupy_gpus"):
            return "no gpu", "CuPy sees no CUDA device", p
        if not p.get("torch_cuda"):
            return "no gpu", f"{p.get('device')}; but torch.cuda sees no GPU", p
        return "pass", p.get("device", ""), p
    if name == "pytest":
        j = parse_junit(out / "pytest_gpu.xml")
        ok = j["failures"] == 0 and j["errors"] == 0 and j["passed"] > 0
        detail = (f"{j['passed']} passed, {j['failures']} failed, {j['errors']} errors, "
                  f"{j['skipped']} skipped")
        if j["failed_ids"]:
            detail += "; first: " + ", ".join(j["failed_ids"][:3])
        return ("pass" if ok else "miss"), detail, j
    if name == "engine":
        data = json.loads((out / "engine.json").read_text())
        rows = data["results"]
        errs = "".join(f"; {e['net']}/{e['device']} failed at {e['stage']}: {e['error']}"
                       for e in data.get("errors", []))
        if dry_run:
            ok = bool(rows) and not data.get("errors") and all(
                r["ours_img_s"] > 0 and r["torch_img_s"] > 0 for r in rows)
            return ("pass" if ok else "miss"), \
                "; ".join(f"{r['net']} b{r['batch']} ratio {r['ratio_ours_over_torch']:.2f} "
                          f"(dry run, no target)" for r in rows) + errs, {"rows": rows}
        metrics, parts, ok = {}, [], True
        for net, (_, batch) in GPU_NETS.items():
            row = next((r for r in rows if r["net"] == net and r["device"] == "gpu"
                        and r["batch"] == batch), None)
            if row is None:
                ok = False
                parts.append(f"{net} b{batch}: no result")
                continue
            ratio = row["ratio_ours_over_torch"]
            ok &= ratio >= ENGINE_TARGET
            metrics[net] = {"batch": batch, "ratio": ratio, "ours_img_s": row["ours_img_s"],
                            "torch_img_s": row["torch_img_s"]}
            parts.append(f"{net} b{batch} {ratio:.2f}x (ours {row['ours_img_s']:.0f} / "
                         f"torch {row['torch_img_s']:.0f} img/s)")
        metrics["errors"] = data.get("errors", [])
        return ("pass" if ok else "miss"), \
            f"target >= {ENGINE_TARGET}: " + "; ".join(parts) + errs, metrics
    if name == "profiles":
        from poseidon_cli import profile   # only now: the wheels are installed by this time
        nets = [DRY_NET[0]] if dry_run else list(GPU_NETS)
        metrics, parts, ok = {}, [], True
        for net in nets:
            path = out / f"profile_{net}.json"
            try:
                prof = profile.read_profile(path)
            except Exception as exc:   # noqa: BLE001 - reported as a miss, with its message
                ok = False
                parts.append(f"{net}: {exc}")
                continue
            on_gpu = prof.device.startswith("GPU")
            ok &= on_gpu or dry_run
            metrics[net] = {"batch": prof.batch, "forward_ms": prof.forward_ms,
                            "backward_ms": prof.backward_ms, "device": prof.device,
                            "layers": len(prof.layers)}
            parts.append(f"{net} b{prof.batch} fwd {prof.forward_ms:.1f} ms bwd "
                         f"{prof.backward_ms:.1f} ms" + ("" if on_gpu else " (CPU)"))
        return ("pass" if ok else "miss"), "; ".join(parts), metrics
    if name == "digits":
        d = json.loads((out / "digits_gpu.json").read_text())
        rows = d["rows"]
        accs = [r["accuracy"] for r in rows]
        if dry_run:
            ok = bool(rows) and all(0 <= a <= 1 for a in accs)
            return ("pass" if ok else "miss"), \
                f"accuracy {', '.join(f'{100 * a:.2f}%' for a in accs)} (dry run, no target)", d
        ok = bool(rows) and all(a >= DIGITS_TARGET for a in accs)
        return ("pass" if ok else "miss"), \
            (f"target >= {100 * DIGITS_TARGET:.0f}%: "
             f"{', '.join(f'{100 * a:.2f}%' for a in accs) or 'no run'}"), d
    raise ValueError(name)


def exit_code(results):
    """3 when the probe found no GPU/CuPy, 0 when every step passed, else 1."""
    if any(r.status == "no gpu" for r in results):
        return EXIT_NO_GPU
    return EXIT_OK if results and all(r.status == "pass" for r in results) else EXIT_MISSED


def table(results):
    lines = [f"{'step':<9} {'status':<9} {'seconds':>7} {'limit':>6}  detail"]
    for r in results:
        lines.append(f"{r.name:<9} {r.status:<9} {r.seconds:7.1f} {r.timeout_s:6.0f}  {r.detail}")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="gpu_check.py", description=__doc__.splitlines()[0])
    ap.add_argument("outdir")
    ap.add_argument("--budget", type=float, default=540.0, help="seconds for everything")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--cpu-dry-run", action="store_true")
    ap.add_argument("--only", default=None, help="comma-separated steps (probe always runs)")
    ap.add_argument("--conformance", default=None)
    ap.add_argument("--print-wheels", action="store_true",
                    help="print the pip download command for the wheel folder (OUTDIR) and exit")
    a = ap.parse_args(argv)
    if a.print_wheels:
        print(shlex.join(download_command("python3", a.outdir)))
        return EXIT_OK
    if not a.budget > 0:
        ap.error(f"--budget {a.budget:g}: give a positive number of seconds")
    t0 = time.monotonic()
    outdir = pathlib.Path(a.outdir).resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    conf = pathlib.Path(a.conformance).resolve() if a.conformance else default_conformance()
    steps = build_steps(a.python, outdir, conf, a.cpu_dry_run)
    known = [s.name for s in steps]
    if a.only:
        only = set(a.only.split(",")) | {"probe"}
        bad = sorted(only - set(known))
        if bad:
            ap.error(f"--only: unknown step(s) {', '.join(bad)}; steps are {', '.join(known)}")
        steps = [s for s in steps if s.name in only]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    for key in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        env.pop(key, None)
    results, probe = [], None
    print(f"gpu_check: {'CPU dry run' if a.cpu_dry_run else 'GPU'}, budget {a.budget:.0f} s, "
          f"writing to {outdir}", flush=True)
    with open(outdir / "check.log", "a") as log:   # the shell wrapper logged the installs
        for i, step in enumerate(steps):
            res = Result(step.name)
            results.append(res)
            remaining = a.budget - (time.monotonic() - t0)
            timeout = step_timeout(remaining, step.min_s, step.cap_s,
                                   sum(s.min_s for s in steps[i + 1:]))
            if timeout is None:
                res.status = "no budget"
                res.detail = f"{remaining:.0f} s left, needs {step.min_s:.0f}"
                continue
            if step.name != "probe" and probe is not None and probe.status != "pass":
                res.status, res.detail = "skipped", f"probe: {probe.status}"
                continue
            res.timeout_s = timeout
            start = time.monotonic()
            texts, rc = [], 0
            for argv in step.commands:
                left = timeout - (time.monotonic() - start)
                rc, text = run_logged(argv, left, log, env)
                texts.append(text)
                if rc != 0:
                    break
            res.seconds = time.monotonic() - start
            if rc is None:
                res.status, res.detail = "timeout", f"killed after {timeout:.0f} s (check.log)"
            else:
                try:
                    p = parse_probe(texts[0]) if step.name == "probe" else None
                    res.status, res.detail, res.metrics = evaluate(step.name, outdir,
                                                                   a.cpu_dry_run, p)
                except (OSError, ValueError, KeyError, ET.ParseError) as exc:
                    res.status = "failed"
                    res.detail = f"exit {rc}, no usable results ({type(exc).__name__}: {exc})"
                if rc != 0 and res.status == "pass":
                    res.status, res.detail = "miss", f"exit {rc}; {res.detail}"
            if step.name == "probe":
                probe = res
            print(f"  {res.name}: {res.status} ({res.seconds:.0f} s) {res.detail}", flush=True)
    code = exit_code(results)
    text = table(results)
    print("\n" + text)
    (outdir / "summary.txt").write_text(text + "\n")
    summary = {"dry_run": a.cpu_dry_run, "budget_s": a.budget,
               "elapsed_s": round(time.monotonic() - t0, 1), "exit_code": code,
               "device": (probe.metrics.get("device") if probe else None),
               "targets": {"engine_ratio": ENGINE_TARGET, "digits_accuracy": DIGITS_TARGET},
               "steps": [vars(r) for r in results]}
    (outdir / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    print(f"wrote {outdir / 'summary.json'} (exit {code})")
    if code == EXIT_NO_GPU:
        print(f"gpu_check: no usable GPU ({probe.detail}); this check needs an NVIDIA GPU with "
              f"CuPy (--cpu-dry-run tests the script itself on the CPU)", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
