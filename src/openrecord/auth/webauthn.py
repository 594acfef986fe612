"""WebAuthn passkeys as the second factor (Web Authentication Level 2), on py_webauthn.

Registration (`navigator.credentials.create`) stores the credential's id and COSE
public key; authentication (`navigator.credentials.get`) checks the assertion's
signature over `authenticatorData || SHA-256(clientDataJSON)`, the challenge this
server issued for the session, the origin and RP ID, user presence, and that the
signature counter moved forward (a cloned authenticator shows up as a counter that
did not). ES256, EdDSA and RS256 keys are accepted. An assertion only counts for a
credential registered to the user who is signing in.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

import orjson
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url
from webauthn.helpers.exceptions import (
    InvalidAuthenticationResponse,
    InvalidCBORData,
    InvalidJSONStructure,
    InvalidRegistrationResponse,
)
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from openrecord.store.base import Store

__all__ = [
    "Passkey",
    "PasskeyError",
    "Passkeys",
    "authentication_options",
    "new_challenge",
    "registration_options",
]

_ERRORS = (
    InvalidAuthenticationResponse,
    InvalidRegistrationResponse,
    InvalidJSONStructure,
    InvalidCBORData,
    ValueError,
    KeyError,
    TypeError,
)


class PasskeyError(ValueError):
    """A passkey response that does not verify (message fit for the user)."""


@dataclass(frozen=True, slots=True)
class Passkey:
    credential_id: str  # base64url
    user_id: str
    public_key: str  # COSE key, base64url
    sign_count: int
    name: str
    created_at: int
    last_used_at: int | None


def new_challenge() -> bytes:
    return secrets.token_bytes(32)


def registration_options(
    *,
    rp_id: str,
    rp_name: str,
    user_id: str,
    username: str,
    existing: list[Passkey],
    challenge: bytes,
) -> str:
    """The JSON options for `navigator.credentials.create` (challenge kept by the caller)."""
    options = generate_registration_options(
        rp_id=rp_id,
        rp_name=rp_name,
        user_name=username,
        user_id=user_id.encode(),
        challenge=challenge,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.PREFERRED,
            user_verification=UserVerificationRequirement.PREFERRED,
        ),
        exclude_credentials=[
            PublicKeyCredentialDescriptor(id=base64url_to_bytes(p.credential_id)) for p in existing
        ],
    )
    return options_to_json(options)


def authentication_options(*, rp_id: str, passkeys: list[Passkey], challenge: bytes) -> str:
    """The JSON options for `navigator.credentials.get`, allowing the user's passkeys."""
    options = generate_authentication_options(
        rp_id=rp_id,
        challenge=challenge,
        allow_credentials=[
            PublicKeyCredentialDescriptor(id=base64url_to_bytes(p.credential_id)) for p in passkeys
        ],
        user_verification=UserVerificationRequirement.PREFERRED,
    )
    return options_to_json(options)


def _credential(text: str) -> dict[str, Any]:
    if len(text) > 64 * 1024:
        raise PasskeyError("the passkey response is too large")
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise PasskeyError("the passkey response is not JSON") from None
    if not isinstance(value, dict):
        raise PasskeyError("the passkey response is not a credential")
    return value


class Passkeys:
    def __init__(self, store: Store) -> None:
        self.store = store

    def for_user(self, user_id: str) -> list[Passkey]:
        rows = self.store.query(
            "SELECT credential_id, user_id, public_key, sign_count, name, created_at,"
            " last_used_at FROM account_passkey WHERE user_id = ? ORDER BY created_at",
            (user_id,),
        )
        return [
            Passkey(
                str(c),
                str(u),
                str(k),
                int(n),
                str(name),
                int(t),
                None if last is None else int(last),
            )
            for c, u, k, n, name, t, last in rows
        ]

    def register(
        self,
        user_id: str,
        credential_json: str,
        *,
        challenge: bytes,
        rp_id: str,
        origin: str,
        name: str,
    ) -> Passkey:
        """Verify a registration response for the challenge and store the passkey."""
        credential = _credential(credential_json)
        try:
            verified = verify_registration_response(
                credential=credential,
                expected_challenge=challenge,
                expected_rp_id=rp_id,
                expected_origin=origin,
            )
        except _ERRORS as err:
            raise PasskeyError(f"the passkey could not be registered: {err}") from None
        passkey = Passkey(
            bytes_to_base64url(verified.credential_id),
            user_id,
            bytes_to_base64url(verified.credential_public_key),
            verified.sign_count,
            name.strip()[:100] or "passkey",
            int(time.time()),
            None,
        )
        with self.store.write() as tx:
            if tx.execute(
                "SELECT 1 FROM account_passkey WHERE credential_id = ?", (passkey.credential_id,)
            ):
                raise PasskeyError("this passkey is registered already")
            tx.execute(
                "INSERT INTO account_passkey (credential_id, user_id, public_key, sign_count,"
                " name, created_at, last_used_at) VALUES (?, ?, ?, ?, ?, ?, NULL)",
                (
                    passkey.credential_id,
                    user_id,
                    passkey.public_key,
                    passkey.sign_count,
                    passkey.name,
                    passkey.created_at,
                ),
            )
        return passkey

    def authenticate(
        self, user_id: str, credential_json: str, *, challenge: bytes, rp_id: str, origin: str
    ) -> Passkey:
        """Verify an assertion by one of `user_id`'s passkeys; PasskeyError otherwise."""
        credential = _credential(credential_json)
        raw_id = credential.get("rawId") or credential.get("id")
        if not isinstance(raw_id, str):
            raise PasskeyError("the passkey response names no credential")
        mine = {p.credential_id: p for p in self.for_user(user_id)}
        passkey = mine.get(raw_id)
        if passkey is None:
            raise PasskeyError("this passkey is not registered to this account")
        try:
            verified = verify_authentication_response(
                credential=credential,
                expected_challenge=challenge,
                expected_rp_id=rp_id,
                expected_origin=origin,
                credential_public_key=base64url_to_bytes(passkey.public_key),
                credential_current_sign_count=passkey.sign_count,
            )
        except _ERRORS as err:
            raise PasskeyError(f"the passkey could not be verified: {err}") from None
        with self.store.write() as tx:
            # the counter moves forward once: a concurrent replay of the same assertion
            # finds it already at this value and fails
            rows = tx.execute(
                "UPDATE account_passkey SET sign_count = ?, last_used_at = ?"
                " WHERE credential_id = ? AND user_id = ? AND (sign_count < ? OR ? = 0)"
                " RETURNING credential_id",
                (
                    verified.new_sign_count,
                    int(time.time()),
                    passkey.credential_id,
                    user_id,
                    verified.new_sign_count,
                    verified.new_sign_count,
                ),
            )
        if not rows:
            raise PasskeyError("the passkey's signature counter did not move forward")
        return passkey

    def remove(self, user_id: str, credential_id: str) -> bool:
        with self.store.write() as tx:
            rows = tx.execute(
                "DELETE FROM account_passkey WHERE user_id = ? AND credential_id = ?"
                " RETURNING credential_id",
                (user_id, credential_id),
            )
        return bool(rows)
