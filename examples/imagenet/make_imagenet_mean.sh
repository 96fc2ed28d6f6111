#!/usr/bin/env bash
# The per-pixel mean of the training LMDB -> examples/imagenet/imagenet_mean.binaryproto
# (Caffe's make_imagenet_mean.sh); AlexNet and CaffeNet subtract it (GoogLeNet and ResNet-50
# subtract per-channel values instead).
. "$(dirname "$0")/../lib/common.sh"
out=${OUT:-$ROOT/examples/imagenet}
cd "$ROOT"
need_poseidon
"$POSEIDON" data compute-mean "$out/ilsvrc12_train_lmdb" "$out/imagenet_mean.binaryproto"
echo "Done." >&2
