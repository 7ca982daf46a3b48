"""The built CVM image booted in QEMU (deploy/image/boot-qemu: TCG, Debian's OVMF), as a host
would launch it, with no TDX:

- the production image (``build-image.sh --flavour debian --without-vllm``): the firmware boots
  the UKI, the initrd opens the root under dm-verity against the root hash of the UKI's command
  line and switches to it, ``enclave.service`` starts and refuses to serve, fail closed, with its
  reason on the serial console, and nothing answers on the forwarded port;
- the insecure test flavour (``--insecure-test``: the same image plus the declared
  ``insecure_allow_simulated_tee`` and ``insecure_dev_engine`` drop-in) answers ``/health`` and
  passes ``enclave verify`` through QEMU's port forwarding.

These tests build nothing: .ci/run's image step (deploy/image/ci-image) builds the images and
runs them with ``ENCLAVE_IMAGE_DIR`` set to the mkosi output directory that holds both; without
it they skip. Boot times are printed (TCG is slow: minutes).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy._repo import DEPLOY

IMAGE_DIR = os.environ.get("ENCLAVE_IMAGE_DIR", "")
BOOT_TIMEOUT = float(os.environ.get("ENCLAVE_IMAGE_BOOT_TIMEOUT", "900"))
ACCEL = os.environ.get("ENCLAVE_IMAGE_ACCEL", "tcg")

pytestmark = [
    pytest.mark.image,
    pytest.mark.slow,
    pytest.mark.skipif(
        not IMAGE_DIR,
        reason="boots the built CVM image: set ENCLAVE_IMAGE_DIR (.ci/run's image step, "
        "deploy/image/ci-image, builds the images and sets it)",
    ),
]

ANSI = re.compile(r"\x1b\[[0-9;:]*[A-Za-z]")
REFUSAL = (
    "enclave-prestart: ENCLAVE_TEE=configfs-tsm but /sys/kernel/config/tsm/report does not exist"
)
#: The insecure test flavour's bundle on the console (insecure-test-bundle.sh): numbered base64
#: lines ending in "|", each file's line count and SHA-256, printed three times.
BUNDLE_LINE = re.compile(r"ENCLAVE-INSECURE-TEST-BUNDLE (\S+) (\d{5}) ([A-Za-z0-9+/=]+)\|")
BUNDLE_END = re.compile(r"ENCLAVE-INSECURE-TEST-BUNDLE-END (\S+) (\d+) ([0-9a-f]{64})")


def bundle_files(console: str) -> dict[str, bytes]:
    """Each file of the bundle, put together from the numbered lines that came through whole in
    any repetition (another writer's line may land next to ours) and checked by its SHA-256."""
    lines: dict[str, dict[int, str]] = {}
    for name, number, data in BUNDLE_LINE.findall(console):
        lines.setdefault(name, {}).setdefault(int(number), data)
    files = {}
    for name, count, digest in set(BUNDLE_END.findall(console)):
        got = lines.get(name, {})
        missing = [n for n in range(1, int(count) + 1) if n not in got]
        assert not missing, f"{name}: lines {missing[:5]} never came through whole"
        data = base64.b64decode("".join(got[n] for n in range(1, int(count) + 1)))
        assert hashlib.sha256(data).hexdigest() == digest, f"{name}: not the file the VM sent"
        files[name] = data
    return files


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def disk_image(image_id: str) -> Path:
    path = Path(IMAGE_DIR) / f"{image_id}_0.1.0.raw"
    if not path.is_file():
        pytest.fail(f"{path} is missing: build it with deploy/image/build-image.sh")
    return path


@dataclass
class Vm:
    process: subprocess.Popen[bytes]
    serial: Path
    port: int
    started: float

    def console(self) -> str:
        raw = self.serial.read_bytes().decode("utf-8", "replace") if self.serial.exists() else ""
        return ANSI.sub("", raw.replace("\r", ""))

    def wait_for(self, what: str | re.Pattern[str], timeout: float = BOOT_TIMEOUT) -> float:
        """Seconds since the VM started when ``what`` appeared on the console."""
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            text = self.console()
            if (what in text) if isinstance(what, str) else what.search(text):
                return time.monotonic() - self.started
            if self.process.poll() is not None:
                break
            time.sleep(1)
        tail = "\n".join(self.console().splitlines()[-60:])
        pytest.fail(f"not on the console after {timeout:.0f} s: {what!r}\n--- tail:\n{tail}")


@pytest.fixture
def boot(tmp_path: Path) -> Iterator[Callable[[Path], Vm]]:
    vms: list[Vm] = []

    def start(image: Path) -> Vm:
        serial = tmp_path / f"serial-{len(vms)}.log"
        port = free_port()
        command = [
            str(DEPLOY / "image" / "boot-qemu"),
            "--image", str(image),
            "--serial", str(serial),
            "--hostfwd", str(port),
            "--accel", ACCEL,
        ]  # fmt: skip
        with (tmp_path / f"qemu-{len(vms)}.log").open("wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        vm = Vm(process, serial, port, time.monotonic())
        vms.append(vm)
        return vm

    yield start
    for vm in vms:
        vm.process.terminate()
        try:
            vm.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            vm.process.kill()
            vm.process.wait()


def https_status(port: int, path: str, timeout: float = 10) -> int | None:
    """The HTTP status of GET path over TLS (certificate not checked: liveness only; the
    verified check is ``enclave verify``), or None when nothing answers."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw,
            context.wrap_socket(raw) as tls,
        ):
            request = f"GET {path} HTTP/1.1\r\nHost: enclave\r\nConnection: close\r\n\r\n"
            tls.sendall(request.encode())
            head = tls.recv(64).decode("latin-1")
    except (OSError, ssl.SSLError):
        return None
    match = re.match(r"HTTP/1\.[01] (\d{3})", head)
    return int(match.group(1)) if match else None


def test_production_image_boots_verity_root_and_fails_closed_without_tdx(
    boot: Callable[[Path], Vm],
) -> None:
    vm = boot(disk_image("enclave-cvm"))
    firmware_to_stub = vm.wait_for("Linux version")
    verity = vm.wait_for(re.compile(r"module=verity op=ctr .*res=1"))
    console = vm.console()
    assert "Using verity root device /dev/mapper/root" in console
    roothash = re.search(r"roothash=([0-9a-f]{64})", console)
    assert roothash, "the kernel command line (from the UKI) carries the root hash"
    switched = vm.wait_for("initrd-switch-root")
    refused = vm.wait_for(REFUSAL)
    failed = vm.wait_for(re.compile(r"Failed to start enclave\.service"))
    # fail closed: nothing serves on the forwarded port
    assert https_status(vm.port, "/health", timeout=5) is None
    print(
        f"\nboot ({ACCEL}): kernel at {firmware_to_stub:.0f} s, verity root opened at "
        f"{verity:.0f} s, switched root by {switched:.0f} s, enclave.service refused at "
        f"{refused:.0f} s (failed at {failed:.0f} s)",
        file=sys.stderr,
    )


def test_insecure_test_flavour_serves_health_and_verifies(
    boot: Callable[[Path], Vm], tmp_path: Path
) -> None:
    vm = boot(disk_image("enclave-cvm-insecure-test"))
    vm.wait_for(re.compile(r"module=verity op=ctr .*res=1"))
    bundled = vm.wait_for("ENCLAVE-INSECURE-TEST-BUNDLE-DONE")  # after all three repetitions
    files = {}
    for name, data in bundle_files(vm.console()).items():
        files[name] = tmp_path / name
        files[name].write_bytes(data)
    assert set(files) == {"root_ca.pem", "collateral.json"}

    deadline = time.monotonic() + 300
    status = None
    while time.monotonic() < deadline and status != 200:
        status = https_status(vm.port, "/health")
        if status != 200:
            time.sleep(2)
    assert status == 200, "/health through the forwarded port"
    healthy = time.monotonic() - vm.started

    trust = [
        sys.executable, "-m", "enclave", "verify", f"https://127.0.0.1:{vm.port}",
        "--collateral", str(files["collateral.json"]),
        "--root-ca", str(files["root_ca.pem"]),
        "--insecure-simulated-root",
    ]  # fmt: skip
    verify = subprocess.run(
        [*trust, "--insecure-accept-service", "insecure_dev_engine"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "Traceback" not in verify.stderr
    # the service declared what it is: a verifier not told to accept it refuses
    refused = subprocess.run(
        trust,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "insecure_dev_engine" in refused.stdout + refused.stderr
    print(
        f"\nboot ({ACCEL}, insecure test flavour): bundle on the console at {bundled:.0f} s, "
        f"/health 200 at {healthy:.0f} s",
        file=sys.stderr,
    )
