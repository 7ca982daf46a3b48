import pytest

from enclave._prefix import address_prefix
from enclave._ratelimit import request_origin
from enclave.gateway._dispatch import outer_pseudonym


@pytest.mark.parametrize(
    ("host", "bits", "key"),
    [
        ("192.0.2.1", 64, "192.0.2.1"),
        ("::ffff:192.0.2.1", 64, "192.0.2.1"),
        ("2001:db8:1:2:3:4:5:6", 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:2:3:4:5:6", 56, "2001:db8:1::/56"),
        ("fe80::1%eth0", 64, "fe80::/64"),
        ("/run/enclave.sock", 64, "/run/enclave.sock"),
    ],
)
def test_address_prefix(host: str, bits: int, key: str):
    assert address_prefix(host, bits) == key


def test_direct_and_relayed_origins_of_one_ipv6_64_are_one():
    a, b, c = "2001:db8:1:2::1", "2001:db8:1:2:ffff::2", "2001:db8:1:3::1"
    origins = [request_origin({"type": "http", "client": (host, 1)}) for host in (a, b, c)]
    assert origins[0] == origins[1] != origins[2]
    pseudonyms = [outer_pseudonym({"client": (host, 1)}) for host in (a, b, c)]
    assert pseudonyms[0] == pseudonyms[1] != pseudonyms[2]
