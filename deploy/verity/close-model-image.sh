#!/usr/bin/env bash
# Unmount a model opened by open-model-image.sh and close its dm-verity device.
#
# Usage: close-model-image.sh NAME    (environment: MODELS_DIR [/models])
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 NAME" >&2
    exit 2
fi
name=$1
if [[ ! $name =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$ || $name == *..* || $name == *. ]]; then
    echo "$0: invalid model name" >&2
    exit 2
fi
target=${MODELS_DIR:-/models}/$name
device=verity-$name

if mountpoint -q -- "$target"; then
    umount -- "$target"
fi
if [[ -e /dev/mapper/$device ]]; then
    veritysetup close -- "$device"
fi
