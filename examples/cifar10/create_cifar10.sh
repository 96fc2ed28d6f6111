#!/usr/bin/env bash
# CIFAR-10 binary batches -> examples/cifar10/cifar10_{train,test}_lmdb and mean.binaryproto
# (Caffe's create_cifar10.sh), then one partition per client of the hosts file when it has several.
# Get cifar-10-binary.tar.gz from the CIFAR site and unpack it into $data first.
. "$(dirname "$0")/../lib/common.sh"

# ---- parameters ------------------------------------------------------------------------------
data=${DATA:-$ROOT/data/cifar10}           # data_batch_1.bin .. data_batch_5.bin, test_batch.bin
out=${OUT:-$ROOT/examples/cifar10}         # where the LMDBs and the mean go
hosts=${HOSTS:-$ROOT/examples/cifar10/hosts.txt}
# ----------------------------------------------------------------------------------------------

cd "$ROOT"
need_poseidon
mkdir -p "$out"
fresh_db "$out/cifar10_train_lmdb" "$out/cifar10_test_lmdb"
"$POSEIDON" data convert-cifar10 "$data" "$out"
"$(dirname "$0")/make_cifar10_mean.sh"
partition_for_clients "$hosts" "$out/cifar10_train_lmdb" "$out/cifar10_test_lmdb"
echo "Done." >&2
