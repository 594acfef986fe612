"""Sign in with a passkey alone: the "Sign in with a passkey" button of the login page.

The login page carries options for `navigator.credentials.get` with an empty
allowCredentials (the authenticator offers its discoverable credentials for this RP)
and userVerification "required"; the challenge is kept in the server-side session,
expires after `SIGN_IN_SECONDS` and is taken once (`SessionStore.take`). The posted
assertion names its credential; its owner is the account (the user handle must agree),
and the UV flag must be set: possession of the authenticator plus the PIN or biometric
that unlocked it make a multi-factor cryptographic authenticator, which meets AAL2 on
its own (NIST SP 800-63B §4.2.1) — so the session goes straight to the `mfa` stage,
with no password and no TOTP code, and carries on exactly where a password sign-in
would: the pending authorization request (`/auth/select-patient`, consent) or the
account page it was opened for.

Failures are throttled under `passkey:<user id>` (or `passkey-credential:<id>` for a
credential nobody registered) and the client address, apart from the password's
`login:<username>`: someone guessing passwords cannot lock the owner out of their
passkey. Every success and failure is an AuditEvent (`login`, `login-failed`,
`login-throttled`, `lockout`, with "passkey" in its description).
"""

from __future__ import annotations

import base64
import time
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from openrecord.auth.accounts import User
from openrecord.auth.page_support import origin_of
from openrecord.auth.sessions import Session
from openrecord.auth.throttle import now_ms
from openrecord.auth.webauthn import (
    SIGN_IN_SECONDS,
    PasskeyError,
    credential_id_of,
    new_challenge,
    sign_in_options,
)

if TYPE_CHECKING:
    from openrecord.auth.pages import AuthPages

__all__ = ["CHALLENGE_KEY", "PasskeySignIn"]

CHALLENGE_KEY = "passkey_signin"  # in Session.data: {"challenge": b64url, "expires": epoch s}


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class PasskeySignIn:
    def __init__(self, pages: AuthPages) -> None:
        self.pages = pages
        self.kit = pages.kit

    def options(self, request: Request, session: Session) -> str:
        """A fresh one-time challenge in `session` (the caller saves it) and the options
        JSON for the login page, safe inside a <script> element."""
        challenge = new_challenge()
        session.data[CHALLENGE_KEY] = {
            "challenge": _b64(challenge),
            "expires": int(time.time()) + SIGN_IN_SECONDS,
        }
        _, rp_id = origin_of(request)
        return sign_in_options(rp_id=rp_id, challenge=challenge).replace("<", "\\u003c")

    def _challenge(self, session: Session) -> bytes | None:
        """The session's sign-in challenge, taken (once) if it has not expired."""
        issued = self.pages.sessions.take(session, CHALLENGE_KEY)
        if not isinstance(issued, dict) or not isinstance(issued.get("challenge"), str):
            return None
        expires = issued.get("expires")
        if not isinstance(expires, int) or expires <= time.time():
            return None
        return _unb64(issued["challenge"])

    def _refuse(
        self,
        request: Request,
        session: Session,
        user: User | None,
        outcome: str,
        reason: str,
        message: str,
    ) -> Response:
        self.pages.audit("login", outcome, request, user, f"passkey: {reason}"[:300])
        status = 401 if outcome == "failure" else 429
        return self.pages.login_form(request, session, status, message)

    async def submit(self, request: Request) -> Response:
        posted = await self.pages._posted(request, ("anonymous",))
        if isinstance(posted, Response):
            return posted
        session, form = posted
        challenge = self._challenge(session)
        credential = form.get("credential")
        credential = credential[:65536] if isinstance(credential, str) else ""
        try:
            credential_id = credential_id_of(credential)
        except PasskeyError as err:
            return self._refuse(
                request, session, None, "failure", str(err), "The passkey was not used."
            )
        passkey = self.pages.passkeys.find(credential_id)
        owner = self.pages.accounts.get(passkey.user_id) if passkey else None
        throttle = self.pages.accounts.throttle
        ip = self.pages._ip(request)
        key = f"passkey:{owner.id}" if owner else f"passkey-credential:{credential_id[:100]}"
        ip_key = f"ip:{ip}" if ip else None
        refusal = throttle.admit(key, ip_key)
        if refusal is not None:
            outcome = "lockout" if refusal.kind == "locked" else "throttled"
            return self._refuse(
                request, session, owner, outcome, refusal.kind, refusal.message(now_ms())
            )
        problem = None
        if challenge is None:
            problem = "the sign-in request expired or was used"
        elif passkey is None or owner is None:
            problem = "this passkey is not registered here"
        elif owner.disabled:
            problem = "the account is disabled"
        else:
            origin, rp_id = origin_of(request)
            try:
                self.pages.passkeys.sign_in(
                    passkey, credential, challenge=challenge, rp_id=rp_id, origin=origin
                )
            except PasskeyError as err:
                problem = str(err)
        if problem is not None or owner is None:
            after = throttle.failed(key, ip_key)
            if after is not None and after.kind == "locked":
                return self._refuse(
                    request, session, owner, "lockout", problem or "", after.message(now_ms())
                )
            return self._refuse(
                request,
                session,
                owner,
                "failure",
                problem or "",
                f"The passkey could not sign you in: {problem}. Try again, or use your password.",
            )
        throttle.succeeded(key)
        self.pages.audit("login", "success", request, owner, "passkey (user verified)")
        session.data.pop("totp_pending", None)
        fresh = self.pages.sessions.promote(session, user_id=owner.id, stage="mfa")
        return self.kit.redirect(request, self.pages._after_mfa(fresh), fresh)
