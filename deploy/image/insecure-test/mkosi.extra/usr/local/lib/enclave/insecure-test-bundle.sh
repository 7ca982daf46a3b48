#!/usr/bin/env bash
# INSECURE test flavour only (enclave-insecure-test-bundle.service): wait for the simulated TEE's
# bundle and print its public files base64-encoded between markers on stdout (the console).
set -euo pipefail
dir=/run/enclave/simulated-tee
for _ in $(seq 600); do
    [[ -s $dir/root_ca.pem && -s $dir/collateral.json ]] && break
    sleep 1
done
for name in root_ca.pem collateral.json; do
    echo "ENCLAVE-INSECURE-TEST-BUNDLE-BEGIN $name"
    base64 -w 0 <"$dir/$name"
    echo
    echo "ENCLAVE-INSECURE-TEST-BUNDLE-END $name"
done
