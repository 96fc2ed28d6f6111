#!/usr/bin/env python
"""Train the examples/digits LeNet on scikit-learn's real handwritten digits and report held-out
accuracy and wall time.

    python bench/digits.py [--split shuffled|last|both] [--max-iter N] [--gpu ID] [--keep DIR]

For each split it builds the LMDBs (examples/digits/make_data.py), runs ``poseidon train`` on a copy
of the example's solver, scores the final snapshot with ``poseidon test`` over the 297 held-out
images, prints a table and writes bench/results/digits.json. Needs scikit-learn.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import platform
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "digits")


def _make_data_module():
    spec = importlib.util.spec_from_file_location("digits_make_data",
                                                  os.path.join(EXAMPLE, "make_data.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_split(split, work, max_iter, gpu, quiet):
    from poseidon_cli.commands import test as test_cmd, train as train_cmd
    from poseidon_cli.solver.log import TrainLog

    os.makedirs(work, exist_ok=True)
    for name in ("digits_net.prototxt", "digits_solver.prototxt"):
        shutil.copy(os.path.join(EXAMPLE, name), work)
    solver = os.path.join(work, "digits_solver.prototxt")
    if max_iter:
        text = open(solver).read()
        lines = [l for l in text.splitlines() if not l.startswith(("max_iter:", "snapshot:"))]
        lines += [f"max_iter: {max_iter}", "snapshot: 0"]
        open(solver, "w").write("\n".join(lines) + "\n")
    t0 = time.time()
    rc = _make_data_module().main([os.path.join(work, "data"), "--split", split, "--force"])
    if rc:
        raise SystemExit(f"making the {split} data set failed")
    data_s = time.time() - t0
    sink = io.StringIO()
    with contextlib.redirect_stderr(sink) if quiet else contextlib.nullcontext():
        t0 = time.time()
        train_cmd.run(solver=solver, gpu=gpu, cpu=gpu is None,
                      output_dir=os.path.join(work, "output"))
        train_s = time.time() - t0
    from poseidon_cli import config
    param = config.load_solver_param(solver)
    model = f"{param.snapshot_prefix}_iter_{param.max_iter}.caffemodel"
    test_cmd.run(model=os.path.join(work, "digits_net.prototxt"), weights=model,
                      iterations=3, gpu=gpu, cpu=gpu is None, log=TrainLog([io.StringIO()]))
    acc = float(test_cmd.run.last["accuracy"])
    return {"split": split, "iterations": int(param.max_iter), "batch": 50,
            "train_seconds": round(train_s, 2), "iter_per_s": round(param.max_iter / train_s, 2),
            "data_seconds": round(data_s, 2), "test_images": 297, "test_accuracy": round(acc, 4)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--split", choices=["shuffled", "last", "both"], default="shuffled")
    ap.add_argument("--max-iter", type=int, default=0, help="override the solver's max_iter")
    ap.add_argument("--gpu", default=None, help="GPU id (default: CPU)")
    ap.add_argument("--keep", default=None, help="work directory to keep (default: a temp dir)")
    ap.add_argument("--verbose", action="store_true", help="show the training log")
    a = ap.parse_args(argv)
    splits = ["shuffled", "last"] if a.split == "both" else [a.split]
    base = a.keep or tempfile.mkdtemp(prefix="digits-bench-")
    rows = []
    try:
        for split in splits:
            rows.append(run_split(split, os.path.join(base, split), a.max_iter, a.gpu,
                                  quiet=not a.verbose))
    finally:
        if not a.keep:
            shutil.rmtree(base, ignore_errors=True)
    print(f"{'split':10} {'iters':>6} {'train s':>8} {'iter/s':>7} {'test acc':>9}")
    for r in rows:
        print(f"{r['split']:10} {r['iterations']:6d} {r['train_seconds']:8.1f} "
              f"{r['iter_per_s']:7.1f} {r['test_accuracy']:9.4f}")
    out = os.path.join(ROOT, "bench", "results")
    os.makedirs(out, exist_ok=True)
    result = {"benchmark": "digits", "device": f"GPU {a.gpu}" if a.gpu is not None else "CPU",
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "platform": platform.platform()},
              "when": time.strftime("%Y-%m-%d %H:%M:%S"), "runs": rows}
    with open(os.path.join(out, "digits.json"), "w") as f:
        json.dump(result, f, indent=2)
    return 0 if all(r["test_accuracy"] >= 0.97 for r in rows if r["split"] == "shuffled") else 1


if __name__ == "__main__":
    sys.exit(main())
