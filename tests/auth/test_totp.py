"""HOTP and TOTP against the test vectors of RFC 4226 (Appendix D) and RFC 6238 (Appendix B)."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs, urlsplit

import pytest

from openrecord.auth import totp

RFC4226_SECRET = b"12345678901234567890"
# RFC 4226 Appendix D: HOTP values for counters 0..9
RFC4226_HOTP = [
    "755224", "287082", "359152", "969429", "338314",
    "254676", "287922", "162583", "399871", "520489",
]  # fmt: skip

# RFC 6238 Appendix B: (time, SHA1, SHA256, SHA512), 8 digits
RFC6238 = [
    (59, "94287082", "46119246", "90693936"),
    (1111111109, "07081804", "68084774", "25091201"),
    (1111111111, "14050471", "67062674", "99943326"),
    (1234567890, "89005924", "91819424", "93441116"),
    (2000000000, "69279037", "90698825", "38618901"),
    (20000000000, "65353130", "77737706", "47863826"),
]
SEEDS = {
    "SHA1": b"12345678901234567890",
    "SHA256": b"12345678901234567890123456789012",
    "SHA512": b"1234567890123456789012345678901234567890123456789012345678901234",
}


@pytest.mark.parametrize("counter", range(10))
def test_hotp_rfc4226_vectors(counter: int) -> None:
    assert totp.hotp(RFC4226_SECRET, counter) == RFC4226_HOTP[counter]


@pytest.mark.parametrize(("at", "sha1", "sha256", "sha512"), RFC6238)
def test_totp_rfc6238_vectors(at: int, sha1: str, sha256: str, sha512: str) -> None:
    for algorithm, expected in (("SHA1", sha1), ("SHA256", sha256), ("SHA512", sha512)):
        assert totp.totp(SEEDS[algorithm], at, digits=8, algorithm=algorithm) == expected


def _b32(raw: bytes) -> str:
    return base64.b32encode(raw).decode().rstrip("=")


def test_verify_accepts_the_current_and_neighbouring_steps_only() -> None:
    secret = _b32(RFC4226_SECRET)
    at = 1111111109.0  # step 37037036
    step = int(at // 30)
    # the 6-digit code is the low 6 digits of the 8-digit vector (same truncation)
    assert totp.verify(secret, "081804", at) == step
    assert totp.verify(secret, totp.hotp(RFC4226_SECRET, step - 1), at) == step - 1
    assert totp.verify(secret, totp.hotp(RFC4226_SECRET, step + 1), at) == step + 1
    assert totp.verify(secret, totp.hotp(RFC4226_SECRET, step + 2), at) is None
    assert totp.verify(secret, totp.hotp(RFC4226_SECRET, step - 2), at) is None


def test_verify_refuses_a_replayed_step_and_malformed_codes() -> None:
    secret = _b32(RFC4226_SECRET)
    at = 1111111109.0
    step = int(at // 30)
    assert totp.verify(secret, "081804", at, last_step=step) is None
    assert totp.verify(secret, "081804", at, last_step=step - 1) == step
    for bad in ("", "08180", "0818045", "08180x", "٠٨١٨٠٤"):  # last: Arabic-Indic digits
        assert totp.verify(secret, bad, at) is None
    assert totp.verify(secret, " 081 804 ", at) == step  # spaces people type are fine


def test_secrets_are_160_bits_and_round_trip() -> None:
    secret = totp.new_secret()
    assert len(totp.secret_bytes(secret)) == 20
    assert totp.secret_bytes(secret.lower()) == totp.secret_bytes(secret)
    assert totp.new_secret() != secret


def test_otpauth_uri_follows_the_key_uri_format() -> None:
    uri = totp.otpauth_uri("JBSWY3DPEHPK3PXP", "alice@example.org", "openrecord")
    parts = urlsplit(uri)
    assert parts.scheme == "otpauth" and parts.netloc == "totp"
    assert parts.path == "/openrecord:alice@example.org"
    query = parse_qs(parts.query)
    assert query["secret"] == ["JBSWY3DPEHPK3PXP"]
    assert query["issuer"] == ["openrecord"]
    assert query["digits"] == ["6"] and query["period"] == ["30"]
