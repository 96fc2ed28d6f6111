#!/usr/bin/env bash
# Train the LeNet-style digits net on this machine (like Poseidon's examples/*/train_*.sh,
# without a hosts file). Extra arguments go to `poseidon train`, e.g. --gpu 0 or
# --snapshot output/digits_iter_600.solverstate to resume.
set -euo pipefail
cd "$(dirname "$0")"
[ -d data/digits_train_lmdb ] || python make_data.py
exec poseidon train --solver digits_solver.prototxt --output-dir output "$@"
