#!/usr/bin/env bash
# Package a model directory as a read-only squashfs image with a dm-verity hash tree.
#
# Usage: build-model-image.sh [--salt HEX] MODEL_DIR NAME OUT_DIR
#
# Writes, in OUT_DIR:
#   NAME.img       the squashfs image of MODEL_DIR (owner root, fixed times: reproducible)
#   NAME.verity    the dm-verity hash tree (sha256, 4096-byte blocks, format 1)
#   NAME.roothash  the root hash: 64 lowercase hex digits and a newline
# and prints the output of `veritysetup format` (its "Root hash:" line included).
#
# Install NAME.roothash in the manager's --roothash-dir (default /etc/enclave/roothash) and the
# two images where open-model-image.sh finds them (MODEL_IMAGE_DIR). With --salt the same
# directory always gives the same root hash; without it veritysetup picks a random salt.
set -euo pipefail

usage() {
    echo "usage: $0 [--salt HEX] MODEL_DIR NAME OUT_DIR" >&2
    exit 2
}

salt=()
if [[ ${1-} == --salt ]]; then
    [[ $# -ge 2 && $2 =~ ^[0-9a-fA-F]{2,512}$ ]] || usage
    salt=(--salt "$2")
    shift 2
fi
[[ $# -eq 3 ]] || usage
model_dir=$1
name=$2
out_dir=$3

# The model manager's name rule: no path separators, no "..", no trailing ".".
if [[ ! $name =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$ || $name == *..* || $name == *. ]]; then
    echo "$0: invalid model name" >&2
    exit 2
fi
if [[ ! -d $model_dir ]]; then
    echo "$0: $model_dir is not a directory" >&2
    exit 1
fi
mkdir -p -- "$out_dir"

image=$out_dir/$name.img
tree=$out_dir/$name.verity
roothash=$out_dir/$name.roothash
tmp=$(mktemp -d "$out_dir/.build-$name.XXXXXX")
trap 'rm -rf -- "$tmp"' EXIT

mksquashfs "$model_dir" "$tmp/image" -noappend -all-root -no-xattrs \
    -mkfs-time 0 -all-time 0 -no-progress -quiet >/dev/null

report=$(veritysetup format --hash=sha256 --data-block-size=4096 --hash-block-size=4096 \
    "${salt[@]}" "$tmp/image" "$tmp/tree")
printf '%s\n' "$report"

hash=$(awk -F: '$1 == "Root hash" { gsub(/[ \t]/, "", $2); print tolower($2) }' <<<"$report")
if [[ ! $hash =~ ^[0-9a-f]{64}$ ]]; then
    echo "$0: no root hash in the output of veritysetup format" >&2
    exit 1
fi
printf '%s\n' "$hash" >"$tmp/roothash"

chmod 0444 "$tmp/image" "$tmp/tree" "$tmp/roothash"
mv -f -- "$tmp/image" "$image"
mv -f -- "$tmp/tree" "$tree"
mv -f -- "$tmp/roothash" "$roothash"
