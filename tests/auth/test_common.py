"""PKCE S256 against RFC 7636 Appendix B; secrets are random and stored hashed."""

from __future__ import annotations

import hashlib

from openrecord.auth.common import digest, random_token, s256


def test_s256_matches_rfc7636_appendix_b() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert s256(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_secrets_are_random_and_hashed() -> None:
    tokens = {random_token() for _ in range(100)}
    assert len(tokens) == 100 and all(len(t) >= 43 for t in tokens)
    secret = "abc"
    assert digest(secret) == hashlib.sha256(b"abc").hexdigest() != secret
