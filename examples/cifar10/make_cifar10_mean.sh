#!/usr/bin/env bash
# The per-pixel mean of the training LMDB -> examples/cifar10/mean.binaryproto (the models'
# transform_param mean_file). Caffe's create_cifar10.sh does this step too.
. "$(dirname "$0")/../lib/common.sh"
out=${OUT:-$ROOT/examples/cifar10}
cd "$ROOT"
need_poseidon
"$POSEIDON" data compute-mean "$out/cifar10_train_lmdb" "$out/mean.binaryproto"
