#!/usr/bin/env bash
# ILSVRC12 JPEGs -> examples/imagenet/ilsvrc12_{train,val}_lmdb (Caffe's create_imagenet.sh:
# resized to 256x256, training list shuffled), then one partition per client of the hosts file
# when it has several. The lists are Caffe's train.txt / val.txt ("relative/path.JPEG label").
. "$(dirname "$0")/../lib/common.sh"

# ---- parameters ------------------------------------------------------------------------------
train_root=${TRAIN_DATA_ROOT:-/path/to/imagenet/train/}   # the images; list paths are under it
val_root=${VAL_DATA_ROOT:-/path/to/imagenet/val/}
lists=${LISTS:-$ROOT/data/ilsvrc12}        # train.txt and val.txt
out=${OUT:-$ROOT/examples/imagenet}
resize=${RESIZE:-256}                      # 0 keeps each image's own size
hosts=${HOSTS:-$ROOT/examples/imagenet/hosts.txt}
# ----------------------------------------------------------------------------------------------

cd "$ROOT"
need_poseidon
[ -d "$train_root" ] || die "TRAIN_DATA_ROOT '$train_root' is not a folder: set it to the ImageNet training images"
[ -d "$val_root" ] || die "VAL_DATA_ROOT '$val_root' is not a folder: set it to the ImageNet validation images"
for l in train val; do [ -f "$lists/$l.txt" ] || die "$lists/$l.txt not found (set LISTS=)"; done
mkdir -p "$out"
fresh_db "$out/ilsvrc12_train_lmdb" "$out/ilsvrc12_val_lmdb"
echo "Creating train lmdb..." >&2
"$POSEIDON" data convert-imageset --resize-height "$resize" --resize-width "$resize" --shuffle \
  "$train_root" "$lists/train.txt" "$out/ilsvrc12_train_lmdb"
echo "Creating val lmdb..." >&2
"$POSEIDON" data convert-imageset --resize-height "$resize" --resize-width "$resize" \
  "$val_root" "$lists/val.txt" "$out/ilsvrc12_val_lmdb"
partition_for_clients "$hosts" "$out/ilsvrc12_train_lmdb" "$out/ilsvrc12_val_lmdb"
echo "Done." >&2
