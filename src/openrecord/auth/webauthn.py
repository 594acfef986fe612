"""WebAuthn passkeys (Web Authentication Level 2), on py_webauthn: a second factor
after the password, or sign-in on their own.

Registration (`navigator.credentials.create`) asks for a discoverable credential
(residentKey "required") with user verification, and stores the credential's id and
COSE public key; authentication (`navigator.credentials.get`) checks the assertion's
signature over `authenticatorData || SHA-256(clientDataJSON)`, the challenge this
server issued for the session, the origin and RP ID, user presence, and that the
signature counter moved forward (a cloned authenticator shows up as a counter that
did not). ES256, EdDSA and RS256 keys are accepted.

As a second factor an assertion only counts for a credential registered to the user
who typed the password. Sign-in without a password (`sign_in`) asks the authenticator
for any of its credentials for this RP (empty allowCredentials, WebAuthn §7.2 step 6:
the user handle it returns must be the credential owner's) and needs the UV flag:
possession of the key plus the PIN or biometric that unlocked it is two factors.
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
    "SIGN_IN_SECONDS",
    "Passkey",
    "PasskeyError",
    "Passkeys",
    "authentication_options",
    "credential_id_of",
    "new_challenge",
    "registration_options",
    "sign_in_options",
]

# How long a sign-in or registration ceremony may take (and its challenge lives): the
# low end of the 5 to 10 minutes WebAuthn recommends when user verification is
# required (a PIN may have to be typed).
SIGN_IN_SECONDS = 300

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
        timeout=SIGN_IN_SECONDS * 1000,
        # discoverable and user-verifying: every new passkey can sign in on its own
        # (an authenticator that cannot do both refuses to register)
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.REQUIRED,
            user_verification=UserVerificationRequirement.REQUIRED,
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


def sign_in_options(*, rp_id: str, challenge: bytes) -> str:
    """The JSON options for a sign-in without a username: no allowCredentials (the
    authenticator offers its discoverable credentials) and user verification required."""
    options = generate_authentication_options(
        rp_id=rp_id,
        challenge=challenge,
        timeout=SIGN_IN_SECONDS * 1000,
        allow_credentials=[],
        user_verification=UserVerificationRequirement.REQUIRED,
    )
    return options_to_json(options)


def credential_id_of(credential_json: str) -> str:
    """The credential id (base64url) an assertion names; PasskeyError if none."""
    raw_id = _credential(credential_json).get("rawId")
    if not isinstance(raw_id, str) or not raw_id or len(raw_id) > 1400:
        raise PasskeyError("the passkey response names no credential")
    return raw_id


def _user_handle(credential: dict[str, Any]) -> bytes | None:
    response = credential.get("response")
    handle = response.get("userHandle") if isinstance(response, dict) else None
    if not isinstance(handle, str) or not handle:
        return None
    try:
        return base64url_to_bytes(handle)
    except ValueError:
        raise PasskeyError("the passkey response's user handle is not base64url") from None


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
        require_user_verification: bool = True,
    ) -> Passkey:
        """Verify a registration response for the challenge and store the passkey. The
        UV flag must be set unless told otherwise (how passkeys were added before
        sign-in without a password existed: tests of that case)."""
        credential = _credential(credential_json)
        try:
            verified = verify_registration_response(
                credential=credential,
                expected_challenge=challenge,
                expected_rp_id=rp_id,
                expected_origin=origin,
                require_user_verification=require_user_verification,
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

    def find(self, credential_id: str) -> Passkey | None:
        """The passkey with this credential id, whoever it belongs to."""
        rows = self.store.query(
            "SELECT credential_id, user_id, public_key, sign_count, name, created_at,"
            " last_used_at FROM account_passkey WHERE credential_id = ?",
            (credential_id,),
        )
        if not rows:
            return None
        c, u, k, n, name, t, last = rows[0]
        return Passkey(
            str(c), str(u), str(k), int(n), str(name), int(t), None if last is None else int(last)
        )

    def authenticate(
        self, user_id: str, credential_json: str, *, challenge: bytes, rp_id: str, origin: str
    ) -> Passkey:
        """Verify an assertion by one of `user_id`'s passkeys (the second factor after
        the password); PasskeyError otherwise."""
        credential = _credential(credential_json)
        raw_id = credential.get("rawId") or credential.get("id")
        if not isinstance(raw_id, str):
            raise PasskeyError("the passkey response names no credential")
        mine = {p.credential_id: p for p in self.for_user(user_id)}
        passkey = mine.get(raw_id)
        if passkey is None:
            raise PasskeyError("this passkey is not registered to this account")
        return self._verify(
            passkey, credential, challenge=challenge, rp_id=rp_id, origin=origin, uv=False
        )

    def sign_in(
        self, passkey: Passkey, credential_json: str, *, challenge: bytes, rp_id: str, origin: str
    ) -> Passkey:
        """Verify a discoverable assertion by `passkey` (found by `credential_id_of`) as
        a sign-in on its own: the user handle must be present and be the passkey
        owner's (WebAuthn L2 §7.2 step 6), and the UV flag set (step 17)."""
        credential = _credential(credential_json)
        if credential.get("rawId") != passkey.credential_id:
            raise PasskeyError("the passkey response names another credential")
        handle = _user_handle(credential)
        if handle is None:
            raise PasskeyError("the passkey did not say whose it is (no user handle)")
        if handle != passkey.user_id.encode():
            raise PasskeyError("the passkey's user handle is not its owner's")
        return self._verify(
            passkey, credential, challenge=challenge, rp_id=rp_id, origin=origin, uv=True
        )

    def _verify(
        self,
        passkey: Passkey,
        credential: dict[str, Any],
        *,
        challenge: bytes,
        rp_id: str,
        origin: str,
        uv: bool,
    ) -> Passkey:
        try:
            verified = verify_authentication_response(
                credential=credential,
                expected_challenge=challenge,
                expected_rp_id=rp_id,
                expected_origin=origin,
                credential_public_key=base64url_to_bytes(passkey.public_key),
                credential_current_sign_count=passkey.sign_count,
                require_user_verification=uv,
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
                    passkey.user_id,
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
