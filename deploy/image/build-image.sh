#!/usr/bin/env bash
# Build the TDX CVM image with mkosi (deploy/image/mkosi.conf).
#
# Usage: build-image.sh [--model NAME=ROOTHASH_FILE]... [--vllm-lock FILE] [--wheel FILE]
#                       [--stage DIR] [-- MKOSI_ARGS...]
#
#   --model      bake a model's dm-verity root hash (deploy/verity/build-model-image.sh writes
#                NAME.roothash) into /etc/enclave/roothash; the image opens NAME's verity image
#                at boot (model-verity@NAME.service) before enclave.service. Repeatable.
#   --vllm-lock  a hash-pinned requirements file for vLLM (pip --require-hashes); recommended
#   --wheel      use this service wheel instead of building one from the repository
#   --stage DIR  only assemble the extra tree into DIR (no mkosi); used by the tests
#
# Needs: mkosi >= 25 (with systemd-repart and ukify >= 255) and network access to the Ubuntu
# archive and PyPI at build time. Afterwards: deploy/image/measure.py for the expected
# measurements (docs/operations.md, "Measurements").
set -euo pipefail

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd -- "$here/../.." && pwd)

models=()
lock=""
wheel=""
stage=""
while (($#)); do
    case $1 in
    --model)
        models+=("${2:?--model needs NAME=ROOTHASH_FILE}")
        shift 2
        ;;
    --vllm-lock)
        lock=${2:?--vllm-lock needs a file}
        shift 2
        ;;
    --wheel)
        wheel=${2:?--wheel needs a file}
        shift 2
        ;;
    --stage)
        stage=${2:?--stage needs a directory}
        shift 2
        ;;
    --)
        shift
        break
        ;;
    *)
        echo "build-image.sh: unknown argument $1" >&2
        exit 2
        ;;
    esac
done

if [[ -n $stage ]]; then
    mkdir -p -- "$stage"
    tree=$(cd -- "$stage" && pwd)
else
    tree=$(mktemp -d)
    trap 'rm -rf -- "$tree"' EXIT
fi

install -d "$tree/opt/enclave-dist" "$tree/usr/local/lib/enclave/verity" \
    "$tree/etc/systemd/system" "$tree/etc/enclave/roothash" "$tree/usr/share/doc/enclave"

if [[ -n $wheel ]]; then
    install -m 0644 -- "$wheel" "$tree/opt/enclave-dist/"
else
    python3 -m pip wheel --quiet --no-deps --wheel-dir "$tree/opt/enclave-dist" -- "$repo"
fi
if [[ -n $lock ]]; then
    install -m 0644 -- "$lock" "$tree/opt/enclave-dist/vllm-requirements.txt"
fi

install -m 0755 -- "$repo"/deploy/systemd/*.sh "$tree/usr/local/lib/enclave/"
install -m 0755 -- "$repo"/deploy/verity/*.sh "$tree/usr/local/lib/enclave/verity/"
install -m 0644 -- "$repo"/deploy/systemd/*.service "$repo"/deploy/verity/*.service \
    "$tree/etc/systemd/system/"
install -m 0644 -- "$repo/deploy/systemd/enclave.env" "$tree/etc/enclave/enclave.env"
install -m 0644 -- "$repo/docs/operations.md" "$repo/docs/model-lifecycle.md" \
    "$tree/usr/share/doc/enclave/"

for spec in "${models[@]}"; do
    name=${spec%%=*}
    file=${spec#*=}
    if [[ $spec != *=* || ! $name =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$ || $name == *..* ]]; then
        echo "build-image.sh: --model wants NAME=ROOTHASH_FILE with a plain name" >&2
        exit 2
    fi
    hash=$(tr -d '\n' <"$file")
    if [[ ! $hash =~ ^[0-9a-fA-F]{64}$ ]]; then
        echo "build-image.sh: $file does not hold a sha256 root hash" >&2
        exit 2
    fi
    printf '%s\n' "$hash" >"$tree/etc/enclave/roothash/$name.roothash"
done

if [[ -n $stage ]]; then
    echo "staged the extra tree in $tree"
    exit 0
fi

mkosi --directory "$here" --extra-tree "$tree" build "$@"
echo "image: $here/mkosi.output; expected measurements: $here/measure.py --help"
