#!/usr/bin/env bash
# Build the TDX CVM image with mkosi (deploy/image/mkosi.conf).
#
# Usage: build-image.sh [--flavour ubuntu|debian] [--model NAME=ROOTHASH_FILE]...
#                       [--vllm-lock FILE | --without-vllm] [--wheel FILE] [--stage DIR]
#                       [--insecure-test] [--tools-tree DIR] [-- MKOSI_ARGS...]
#
#   --flavour    ubuntu (default: Ubuntu 24.04 with the NVIDIA driver) or debian (Debian 13,
#                CPU only); they share everything but the distribution and the package names
#                (mkosi.conf.d/10-<flavour>.conf)
#   --model      bake a model's dm-verity root hash (deploy/verity/build-model-image.sh writes
#                NAME.roothash) into /etc/enclave/roothash; the image opens NAME's verity image
#                at boot (model-verity@NAME.service) before enclave.service. Repeatable.
#   --vllm-lock  a hash-pinned requirements file for vLLM (pip --require-hashes); recommended
#   --without-vllm  no engine in the image (the reproducibility and boot checks: vLLM's CUDA
#                wheels are gigabytes and resolve from PyPI unless locked)
#   --insecure-test  INSECURE, tests only: the insecure test flavour (deploy/image/insecure-test:
#                the declared insecure_allow_simulated_tee and insecure_dev_engine settings, the
#                simulator and development engine they need; image id enclave-cvm-insecure-test)
#   --tools-tree DIR  run mkosi's tools (systemd-repart, ukify, mkfs, apt) from DIR
#                (deploy/image/build-tools-tree builds Debian 13's; needed for a reproducible
#                debian build on a bookworm host, whose systemd-repart 254 salts verity randomly)
#   --wheel      use this service wheel instead of building one from the repository
#   --stage DIR  only assemble the extra tree into DIR (no mkosi); used by the tests
#
# Needs: ubuntu: mkosi >= 26 (with systemd-repart and ukify >= 255) and the Ubuntu archive;
# debian: mkosi 24.3 and systemd 254 (bookworm-backports), kmod, cpio, zstd, erofs-utils and the
# Debian archive; both: PyPI at build time. deploy/image/build-reproducible builds twice and
# compares. Afterwards: deploy/image/measure.py for the expected
# measurements (docs/operations.md, "Measurements").
set -euo pipefail

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd -- "$here/../.." && pwd)

models=()
flavour=ubuntu
without_vllm=""
insecure_test=""
tools_tree=""
lock=""
wheel=""
stage=""
while (($#)); do
    case $1 in
    --model)
        models+=("${2:?--model needs NAME=ROOTHASH_FILE}")
        shift 2
        ;;
    --flavour)
        flavour=${2:?--flavour needs ubuntu or debian}
        shift 2
        ;;
    --without-vllm)
        without_vllm=1
        shift
        ;;
    --insecure-test)
        insecure_test=1
        shift
        ;;
    --tools-tree)
        tools_tree=${2:?--tools-tree needs a directory}
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

if [[ $flavour != ubuntu && $flavour != debian ]]; then
    echo "build-image.sh: --flavour wants ubuntu or debian, not $flavour" >&2
    exit 2
fi
if [[ -n $without_vllm && -n $lock ]]; then
    echo "build-image.sh: --without-vllm and --vllm-lock exclude each other" >&2
    exit 2
fi

# the image's Python (its dependency wheels and the insecure test flavour's modules are for it)
case $flavour in
ubuntu) pyver=3.12 ;; # noble
debian) pyver=3.13 ;; # trixie
esac

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
    # SOURCE_DATE_EPOCH (mkosi.conf's): the wheel's file times, so the same source gives the
    # same wheel (and the same archive hash in the image's direct_url.json)
    sde=$(sed -n 's/^SourceDateEpoch=//p' "$here/mkosi.conf")
    SOURCE_DATE_EPOCH=${sde:?mkosi.conf sets SourceDateEpoch=} python3 -m pip wheel --quiet \
        --no-deps --wheel-dir "$tree/opt/enclave-dist" -- "$repo"
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

if [[ -n $insecure_test ]]; then
    echo "build-image.sh: WARNING: INSECURE test flavour (simulated TEE, development engine):" \
        "tests only, never deploy it" >&2
    # the modules the declared insecure settings need, which production wheels leave out
    site=$tree/opt/enclave/lib/python$pyver/site-packages
    # (the development package, enclave_dev: docs/design.md, layout)
    install -d "$site/enclave_dev"
    (cd -- "$repo" && find enclave_dev -name '*.py' -exec install -D -m 0644 {} "$site/{}" \;)
    cp -a -- "$here/insecure-test/mkosi.extra/." "$tree/"
fi

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
    echo "staged the extra tree in $tree (without the dependency wheels)"
    exit 0
fi

# The service's dependencies, as wheels for the image's Python, fetched here (with this host's
# pip configuration: index, proxy, certificates) so the image build itself needs no network
# for them and installs exactly these files (mkosi.postinst.chroot: pip --no-index).
platforms=(--platform manylinux2014_x86_64)
for minor in $(seq 17 39); do
    platforms+=(--platform "manylinux_2_${minor}_x86_64")
done
service_wheel=("$tree"/opt/enclave-dist/*.whl)
python3 -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
    --python-version "$pyver" --implementation cp "${platforms[@]}" \
    --dest "$tree/opt/enclave-dist/wheels" -- "${service_wheel[0]}[server]"

mkosi_args=(--directory "$here" --distribution "$flavour" --extra-tree "$tree")
if [[ -n $without_vllm ]]; then
    mkosi_args+=(--environment=VLLM_VERSION=none)
else
    # vLLM from PyPI inside the image build (mkosi.postinst.chroot)
    mkosi_args+=(--with-network=yes)
fi
if [[ -n $insecure_test ]]; then
    mkosi_args+=(--image-id enclave-cvm-insecure-test)
fi
if [[ -n $tools_tree ]]; then
    mkosi_args+=(--tools-tree "$(cd -- "$tools_tree" && pwd)")
fi
mkosi "${mkosi_args[@]}" "$@" build
echo "image: $here/mkosi.output; expected measurements: $here/measure.py --help"
