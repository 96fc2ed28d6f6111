#!/usr/bin/env bash
# MNIST IDX files -> examples/mnist/mnist_{train,test}_lmdb (Caffe's create_mnist.sh), then one
# partition per client of the hosts file (mnist_train_lmdb_0, _1, ...) when it has several.
# Get the four IDX files (optionally .gz) from the MNIST site into $data first.
. "$(dirname "$0")/../lib/common.sh"

# ---- parameters ------------------------------------------------------------------------------
data=${DATA:-$ROOT/data/mnist}             # train-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz], ...
out=${OUT:-$ROOT/examples/mnist}           # where the LMDBs go (the prototxts read them here)
hosts=${HOSTS:-$ROOT/examples/mnist/hosts.txt}
# ----------------------------------------------------------------------------------------------

cd "$ROOT"
need_poseidon
idx() { if [ -f "$data/$1" ]; then echo "$data/$1"; elif [ -f "$data/$1.gz" ]; then echo "$data/$1.gz";
        else die "$data/$1 (or .gz) not found: download MNIST into $data or set DATA="; fi; }
mkdir -p "$out"
fresh_db "$out/mnist_train_lmdb" "$out/mnist_test_lmdb"
"$POSEIDON" data convert-mnist "$(idx train-images-idx3-ubyte)" "$(idx train-labels-idx1-ubyte)" \
  "$out/mnist_train_lmdb"
"$POSEIDON" data convert-mnist "$(idx t10k-images-idx3-ubyte)" "$(idx t10k-labels-idx1-ubyte)" \
  "$out/mnist_test_lmdb"
partition_for_clients "$hosts" "$out/mnist_train_lmdb" "$out/mnist_test_lmdb"
echo "Done." >&2
