#!/usr/bin/env bash
# INSECURE test flavour only (enclave-insecure-test-bundle.service): wait for the simulated TEE's
# bundle and print its public files on stdout (the console), base64 in numbered lines ending in
# "|", each file with its SHA-256, three times over: other services write to the same serial
# console and a line of theirs can land next to one of ours (seen: glued to the end of a long
# base64 line), so the reader (tests/image/test_boot.py) takes each numbered line from any
# repetition where it came through whole and checks the file's hash.
set -euo pipefail
dir=/run/enclave/simulated-tee
for _ in $(seq 600); do
    [[ -s $dir/root_ca.pem && -s $dir/collateral.json ]] && break
    sleep 1
done
for _ in 1 2 3; do
    for name in root_ca.pem collateral.json; do
        sum=$(sha256sum <"$dir/$name" | cut -d' ' -f1)
        n=0
        while IFS= read -r line; do
            n=$((n + 1))
            printf 'ENCLAVE-INSECURE-TEST-BUNDLE %s %05d %s|\n' "$name" "$n" "$line"
        done < <(base64 -w 64 <"$dir/$name")
        echo "ENCLAVE-INSECURE-TEST-BUNDLE-END $name $n $sum"
    done
done
echo "ENCLAVE-INSECURE-TEST-BUNDLE-DONE"
