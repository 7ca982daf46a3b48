#!/usr/bin/env bash
# Open a model's dm-verity image and mount it read-only under the models directory (boot step).
#
# Usage: open-model-image.sh [--verify] NAME
#
# Environment (defaults in brackets):
#   MODEL_IMAGE_DIR  where NAME.img and NAME.verity are       [/var/lib/enclave/model-images]
#   ROOTHASH_DIR     where NAME.roothash is (the manager's)   [/etc/enclave/roothash]
#   MODELS_DIR       the manager's --models-dir               [/models]
#
# The device-mapper device is /dev/mapper/verity-NAME; it is mounted at MODELS_DIR/NAME with
# ro,nodev,nosuid,noexec. The kernel then checks every block read against the root hash, and the
# model manager reads the live table (dmsetup table) and requires it to equal NAME.roothash.
# --verify reads the whole image once first (`veritysetup verify`), which takes as long as
# reading the model.
set -euo pipefail

verify=0
if [[ ${1-} == --verify ]]; then
    verify=1
    shift
fi
if [[ $# -ne 1 ]]; then
    echo "usage: $0 [--verify] NAME" >&2
    exit 2
fi
name=$1
if [[ ! $name =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$ || $name == *..* || $name == *. ]]; then
    echo "$0: invalid model name" >&2
    exit 2
fi

image_dir=${MODEL_IMAGE_DIR:-/var/lib/enclave/model-images}
roothash_dir=${ROOTHASH_DIR:-/etc/enclave/roothash}
models_dir=${MODELS_DIR:-/models}
image=$image_dir/$name.img
tree=$image_dir/$name.verity
device=verity-$name
target=$models_dir/$name

hash=$(head -c 65 -- "$roothash_dir/$name.roothash" | tr -d '\n')
if [[ ! $hash =~ ^[0-9a-fA-F]{64}$ ]]; then
    echo "$0: $roothash_dir/$name.roothash does not hold a sha256 root hash" >&2
    exit 1
fi

if ((verify)); then
    veritysetup verify -- "$image" "$tree" "$hash"
fi
if [[ ! -e /dev/mapper/$device ]]; then
    veritysetup open --panic-on-corruption -- "$image" "$device" "$tree" "$hash"
fi
mkdir -p -- "$target"
if ! mountpoint -q -- "$target"; then
    mount -t squashfs -o ro,nodev,nosuid,noexec -- "/dev/mapper/$device" "$target"
fi
echo "model $name: /dev/mapper/$device mounted read-only at $target (root hash $hash)"
