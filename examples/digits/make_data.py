#!/usr/bin/env python
"""Make the digits LMDBs (Caffe Datum records, keys "%08d") for this example, offline.

    python make_data.py [OUT] [--split shuffled|last] [--seed 1701] [--size 28] [--force]

OUT defaults to ./data next to this script. ``--split last`` runs ``poseidon data digits OUT``
(the last 297 images are the test set: a split by writer that even an RBF SVM only gets ~95% on);
``--split shuffled`` (default) holds out a stratified random 297 images (seeded), the usual way the
scikit-learn digits are evaluated. Either way: 1,500 train / 297 test real 8x8 handwritten digits,
resized to 28x28 so the LeNet-style prototxt fits. Needs scikit-learn.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def shuffled_split(labels, test_count, seed):
    """Stratified random split: per class, the same share goes to the test set."""
    rng = np.random.default_rng(seed)
    test = []
    classes = np.unique(labels)
    share = test_count / len(labels)
    for c in classes:
        idx = np.flatnonzero(labels == c)
        test.extend(rng.permutation(idx)[: int(round(share * len(idx)))].tolist())
    test = sorted(test)[:test_count]
    extra = [i for i in rng.permutation(len(labels)) if i not in set(test)]
    while len(test) < test_count:  # rounding left us short
        test.append(extra.pop())
    mask = np.zeros(len(labels), bool)
    mask[test] = True
    train_idx = rng.permutation(np.flatnonzero(~mask))  # mix classes within the training stream
    return train_idx, np.flatnonzero(mask)


def write_shuffled(out, size, test_count, seed):
    from poseidon_cli.data.datum import array_to_datum
    from poseidon_cli.data.lmdb_source import AtomicLMDBWriter
    from poseidon_cli.tools.digits import load_digits_uint8

    images, labels = load_digits_uint8(size)
    train_idx, test_idx = shuffled_split(labels, test_count, seed)
    os.makedirs(out, exist_ok=True)
    for name, idx in (("digits_train_lmdb", train_idx), ("digits_test_lmdb", test_idx)):
        with AtomicLMDBWriter(os.path.join(out, name)) as w:
            for j, i in enumerate(idx):
                w.put(f"{j:08d}", array_to_datum(images[i], int(labels[i])).SerializeToString())
    print(f"wrote {len(train_idx)} train and {len(test_idx)} test records to {out}", file=sys.stderr)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("out", nargs="?", default=os.path.join(HERE, "data"))
    ap.add_argument("--split", choices=["shuffled", "last"], default="shuffled")
    ap.add_argument("--seed", type=int, default=1701)
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--test-count", type=int, default=297)
    ap.add_argument("--force", action="store_true", help="replace existing LMDBs")
    a = ap.parse_args(argv)
    for name in ("digits_train_lmdb", "digits_test_lmdb"):
        path = os.path.join(a.out, name)
        if os.path.exists(path):
            if not a.force:
                print(f"{path} exists (use --force to rebuild)", file=sys.stderr)
                return 0
            shutil.rmtree(path)
    if a.split == "last":
        cmd = [sys.executable, "-m", "poseidon_cli.cli", "data", "digits", a.out,
               "--size", str(a.size), "--test-count", str(a.test_count)]
        return subprocess.call(cmd)
    write_shuffled(a.out, a.size, a.test_count, a.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
