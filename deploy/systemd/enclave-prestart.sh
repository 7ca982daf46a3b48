#!/usr/bin/env bash
# ExecStartPre of enclave.service, run as root ("+" prefix) before the service drops to the
# "enclave" user. It grants that user exactly two things the kernel only lets root do by default:
#
#  1. create report entries under configfs-tsm (/sys/kernel/config/tsm/report), where the
#     service obtains its TDX quotes; the directory becomes group-writable by "enclave";
#  2. open /dev/mapper/control, through which `dmsetup table` reads the live dm-verity table of a
#     mounted model (the ioctl itself also needs CAP_SYS_ADMIN, which the unit grants).
#
# Environment: ENCLAVE_USER (enclave), TSM_REPORT_DIR (/sys/kernel/config/tsm/report),
# DM_CONTROL (/dev/mapper/control), ENCLAVE_TEE (from enclave.env; "configfs-tsm" makes a
# missing configfs-tsm an error, "auto" a warning).
set -euo pipefail

user=${ENCLAVE_USER:-enclave}
tsm=${TSM_REPORT_DIR:-/sys/kernel/config/tsm/report}
dm_control=${DM_CONTROL:-/dev/mapper/control}
tee=${ENCLAVE_TEE:-auto}

if ! getent group "$user" >/dev/null; then
    echo "enclave-prestart: no group $user" >&2
    exit 1
fi

if [[ ! -d /sys/kernel/config/tsm ]] && ! mountpoint -q /sys/kernel/config; then
    mount -t configfs configfs /sys/kernel/config 2>/dev/null || true
fi
if [[ -d $tsm ]]; then
    chgrp -- "$user" "$tsm"
    chmod 0770 -- "$tsm"
    echo "enclave-prestart: $tsm writable by group $user"
elif [[ $tee == configfs-tsm ]]; then
    echo "enclave-prestart: ENCLAVE_TEE=configfs-tsm but $tsm does not exist" >&2
    exit 1
else
    echo "enclave-prestart: $tsm does not exist (no TDX guest driver?); quote provider: $tee" >&2
fi

if [[ -c $dm_control ]]; then
    chgrp -- "$user" "$dm_control"
    chmod 0660 -- "$dm_control"
else
    echo "enclave-prestart: $dm_control missing: live dm-verity checks will fail" >&2
fi
