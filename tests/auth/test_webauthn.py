"""Passkeys (auth/webauthn.py) against a software authenticator producing real ES256
registrations and assertions: what verifies, and each thing that must not."""

from __future__ import annotations

import base64
import hashlib
import json

import cbor2
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from openrecord.auth.webauthn import (
    PasskeyError,
    Passkeys,
    authentication_options,
    credential_id_of,
    new_challenge,
    registration_options,
    sign_in_options,
)
from openrecord.store.base import Store
from tests.auth.soft_authenticator import UP, SoftAuthenticator, b64

RP, ORIGIN = "records.example.org", "https://records.example.org"


def _register(passkeys: Passkeys, device: SoftAuthenticator, user: str = "u1") -> None:
    challenge = new_challenge()
    options = json.loads(
        registration_options(
            rp_id=RP,
            rp_name="openrecord",
            user_id=user,
            username="alice",
            existing=passkeys.for_user(user),
            challenge=challenge,
        )
    )
    assert options["challenge"] == b64(challenge) and options["rp"]["id"] == RP
    credential = device.create(options)
    passkeys.register(
        user, json.dumps(credential), challenge=challenge, rp_id=RP, origin=ORIGIN, name="laptop"
    )


def _assert(passkeys: Passkeys, device: SoftAuthenticator, user: str = "u1", **kw: object) -> str:
    challenge = new_challenge()
    options = json.loads(
        authentication_options(
            rp_id=RP, passkeys=passkeys.for_user(user) or [], challenge=challenge
        )
    )
    expected = kw.pop("challenge", challenge)
    assertion = device.get(options, **kw)  # type: ignore[arg-type]
    passkeys.authenticate(
        user,
        json.dumps(assertion),
        challenge=expected,  # type: ignore[arg-type]
        rp_id=RP,
        origin=ORIGIN,
    )
    return json.dumps(assertion)


def test_register_then_sign_in_with_a_passkey(store: Store) -> None:
    passkeys, device = Passkeys(store), SoftAuthenticator(RP, ORIGIN)
    _register(passkeys, device)
    (key,) = passkeys.for_user("u1")
    assert key.credential_id == b64(device.credential_id) and key.name == "laptop"
    _assert(passkeys, device)
    _assert(passkeys, device)
    assert passkeys.for_user("u1")[0].sign_count == 2
    assert passkeys.for_user("u1")[0].last_used_at is not None


def test_registration_is_refused_for_a_wrong_challenge_or_origin(store: Store) -> None:
    passkeys, device = Passkeys(store), SoftAuthenticator(RP, ORIGIN)
    challenge = new_challenge()
    options = json.loads(
        registration_options(
            rp_id=RP, rp_name="x", user_id="u1", username="a", existing=[], challenge=challenge
        )
    )
    good = json.dumps(device.create(options))
    with pytest.raises(PasskeyError):
        passkeys.register("u1", good, challenge=new_challenge(), rp_id=RP, origin=ORIGIN, name="")
    evil = json.dumps(device.create(options, origin="https://records.example.org.evil.test"))
    with pytest.raises(PasskeyError):
        passkeys.register("u1", evil, challenge=challenge, rp_id=RP, origin=ORIGIN, name="")
    with pytest.raises(PasskeyError):
        passkeys.register(
            "u1", good, challenge=challenge, rp_id="evil.test", origin=ORIGIN, name=""
        )
    with pytest.raises(PasskeyError):
        passkeys.register("u1", "not json", challenge=challenge, rp_id=RP, origin=ORIGIN, name="")
    assert passkeys.for_user("u1") == []
    passkeys.register("u1", good, challenge=challenge, rp_id=RP, origin=ORIGIN, name="")
    with pytest.raises(PasskeyError, match="already"):  # one credential, one account
        passkeys.register("u2", good, challenge=challenge, rp_id=RP, origin=ORIGIN, name="")


def test_assertions_that_must_fail(store: Store) -> None:
    passkeys, device = Passkeys(store), SoftAuthenticator(RP, ORIGIN)
    _register(passkeys, device)
    with pytest.raises(PasskeyError):  # a challenge this server did not issue for it
        _assert(passkeys, device, challenge=new_challenge())
    with pytest.raises(PasskeyError):  # a phishing origin
        _assert(passkeys, device, origin="https://evil.test")
    with pytest.raises(PasskeyError):  # signed for another relying party
        _assert(passkeys, device, rp_id="evil.test")
    with pytest.raises(PasskeyError, match="not registered to this account"):
        _assert(passkeys, device, user="u2")
    # a replayed assertion (same counter) and a clone whose counter went back
    challenge = new_challenge()
    options = json.loads(
        authentication_options(rp_id=RP, passkeys=passkeys.for_user("u1"), challenge=challenge)
    )
    assertion = json.dumps(device.get(options, count=10))
    passkeys.authenticate("u1", assertion, challenge=challenge, rp_id=RP, origin=ORIGIN)
    with pytest.raises(PasskeyError):
        passkeys.authenticate("u1", assertion, challenge=challenge, rp_id=RP, origin=ORIGIN)
    with pytest.raises(PasskeyError):
        _assert(passkeys, device, count=5)
    # a forged signature (another key)
    other = SoftAuthenticator(RP, ORIGIN)
    other.credential_id = device.credential_id
    with pytest.raises(PasskeyError):
        _assert(passkeys, other, count=20)
    # a flipped byte in the signed data
    challenge = new_challenge()
    options = json.loads(
        authentication_options(rp_id=RP, passkeys=passkeys.for_user("u1"), challenge=challenge)
    )
    tampered = device.get(options, count=30)
    data = bytearray(base64.urlsafe_b64decode(tampered["response"]["authenticatorData"] + "=="))
    data[-1] ^= 1
    tampered["response"]["authenticatorData"] = b64(bytes(data))
    with pytest.raises(PasskeyError):
        passkeys.authenticate(
            "u1", json.dumps(tampered), challenge=challenge, rp_id=RP, origin=ORIGIN
        )
    assert passkeys.for_user("u1")[0].sign_count == 10


def test_remove_only_ones_own_passkey(store: Store) -> None:
    passkeys, device = Passkeys(store), SoftAuthenticator(RP, ORIGIN)
    _register(passkeys, device)
    assert not passkeys.remove("u2", b64(device.credential_id))
    assert passkeys.remove("u1", b64(device.credential_id))
    assert passkeys.for_user("u1") == []


def _discoverable(device: SoftAuthenticator, options: dict[str, object], **set: object) -> str:
    """The authenticator's assertion as a discoverable credential returns it: with the
    user handle (WebAuthn L2 §5.2.2), here "u1" as `registration_options` gave it."""
    assertion = device.get(options)
    assertion["response"]["userHandle"] = set.pop("handle", b64(b"u1"))
    if set.pop("no_uv", False):  # UP only: re-sign authenticatorData with bit 2 clear
        data = bytearray(
            base64.urlsafe_b64decode(assertion["response"]["authenticatorData"] + "==")
        )
        data[32] = UP
        client = base64.urlsafe_b64decode(assertion["response"]["clientDataJSON"] + "==")
        signature = device.key.sign(
            bytes(data) + hashlib.sha256(client).digest(), ec.ECDSA(hashes.SHA256())
        )
        assertion["response"]["authenticatorData"] = b64(bytes(data))
        assertion["response"]["signature"] = b64(signature)
    if assertion["response"]["userHandle"] is None:
        del assertion["response"]["userHandle"]
    return json.dumps(assertion)


def test_new_passkeys_are_discoverable_and_user_verifying(store: Store) -> None:
    options = json.loads(
        registration_options(
            rp_id=RP, rp_name="x", user_id="u1", username="a", existing=[], challenge=b"c" * 32
        )
    )
    assert options["authenticatorSelection"] == {
        "residentKey": "required",
        "requireResidentKey": True,
        "userVerification": "required",
    }
    assert options["user"]["id"] == b64(b"u1")  # the user handle: our user id, no name
    challenge = new_challenge()
    sign_in = json.loads(sign_in_options(rp_id=RP, challenge=challenge))
    assert sign_in["allowCredentials"] == [] and sign_in["userVerification"] == "required"
    assert sign_in["challenge"] == b64(challenge) and sign_in["rpId"] == RP


def test_sign_in_without_a_password(store: Store) -> None:
    passkeys, device = Passkeys(store), SoftAuthenticator(RP, ORIGIN)
    _register(passkeys, device)

    def attempt(**set: object) -> None:
        challenge = new_challenge()
        options = json.loads(sign_in_options(rp_id=RP, challenge=challenge))
        assertion = _discoverable(device, options, **set)
        passkey = passkeys.find(credential_id_of(assertion))
        assert passkey is not None and passkey.user_id == "u1"
        passkeys.sign_in(passkey, assertion, challenge=challenge, rp_id=RP, origin=ORIGIN)

    attempt()
    with pytest.raises(PasskeyError, match="User verification is required"):
        attempt(no_uv=True)
    with pytest.raises(PasskeyError, match="no user handle"):
        attempt(handle=None)
    with pytest.raises(PasskeyError, match="not its owner"):
        attempt(handle=b64(b"u2"))
    assert passkeys.find(b64(b"unknown")) is None
    with pytest.raises(PasskeyError):
        credential_id_of("{}")


def test_a_registration_without_user_verification_is_refused(store: Store) -> None:
    passkeys, device = Passkeys(store), SoftAuthenticator(RP, ORIGIN)
    challenge = new_challenge()
    options = json.loads(
        registration_options(
            rp_id=RP, rp_name="x", user_id="u1", username="a", existing=[], challenge=challenge
        )
    )
    credential = device.create(options)
    raw = cbor2.loads(base64.urlsafe_b64decode(credential["response"]["attestationObject"] + "=="))
    data = bytearray(raw["authData"])
    data[32] = UP | 0x40  # user present, attested data; not verified
    raw["authData"] = bytes(data)
    credential["response"]["attestationObject"] = b64(cbor2.dumps(raw))
    with pytest.raises(PasskeyError, match="User verification is required"):
        passkeys.register(
            "u1", json.dumps(credential), challenge=challenge, rp_id=RP, origin=ORIGIN, name=""
        )
    assert passkeys.for_user("u1") == []
