"""The signed-in user's own pages: connected apps (with revoke) and security (TOTP and
passkeys). Both need a session that passed both factors; every change is a POST with
the session's CSRF token."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from openrecord.auth import totp
from openrecord.auth.accounts import User
from openrecord.auth.authorization import list_grants, revoke_grant
from openrecord.auth.page_support import origin_of
from openrecord.auth.pages import PENDING_TOTP
from openrecord.auth.scope_text import describe_scope
from openrecord.auth.sessions import Session
from openrecord.auth.webauthn import PasskeyError, new_challenge, registration_options

if TYPE_CHECKING:
    from openrecord.auth.pages import AuthPages

__all__ = ["AccountPages"]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _day(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d")


class AccountPages:
    def __init__(self, pages: AuthPages) -> None:
        self.pages = pages
        self.kit = pages.kit

    def _signed_in(self, request: Request, page: str) -> tuple[Session, User] | Response:
        session = self.kit.session(request)
        user = self.pages._user(session) if session else None
        if session is None or user is None:
            return self.kit.redirect(request, f"/auth/login?next={page}")
        if session.stage != "mfa":
            return self.kit.redirect(request, "/auth/mfa")
        return session, user

    async def _post(self, request: Request) -> tuple[Session, User, object] | Response:
        posted = await self.pages._posted(request, ("mfa",))
        if isinstance(posted, Response):
            return posted
        session, form = posted
        user = self.pages._user(session)
        if user is None:
            return self.kit.redirect(request, "/auth/login")
        return session, user, form

    # -- connected apps ----------------------------------------------------------------

    async def apps_page(self, request: Request) -> Response:
        signed = self._signed_in(request, "/account/apps")
        if isinstance(signed, Response):
            return signed
        session, user = signed
        grants = list_grants(self.pages.store, user.id)
        apps = [
            {
                "client_id": g.client_id,
                "name": g.client_name,
                "scopes": [describe_scope(s) for s in g.scopes],
                "patients": g.patients,
                "since": _day(g.created_at),
                "until": _day(g.expires_at),
            }
            for g in grants
        ]
        return self.kit.render(
            request,
            "apps.html",
            session,
            apps=apps,
            username=user.username,
            notice=request.query_params.get("done") == "revoked",
        )

    async def apps_revoke(self, request: Request) -> Response:
        posted = await self._post(request)
        if isinstance(posted, Response):
            return posted
        session, user, form = posted
        client_id = form.get("client_id")  # type: ignore[attr-defined]
        if isinstance(client_id, str) and client_id:
            revoke_grant(self.pages.store, user.id, client_id[:200])
            self.pages.audit("revoke", "success", request, user, client_id[:200])
        return self.kit.redirect(request, "/account/apps?done=revoked", session)

    # -- security: TOTP and passkeys ---------------------------------------------------

    def _security(
        self,
        request: Request,
        session: Session,
        user: User,
        status: int = 200,
        error: str | None = None,
        notice: str | None = None,
    ) -> Response:
        secret = self.pages.pending_totp(session, user.id, create=True)
        assert secret is not None
        passkeys = self.pages.passkeys.for_user(user.id)
        challenge = new_challenge()
        session.data["webauthn_register"] = _b64(challenge)
        _, rp_id = origin_of(request)
        options = registration_options(
            rp_id=rp_id,
            rp_name="openrecord",
            user_id=user.id,
            username=user.username,
            existing=passkeys,
            challenge=challenge,
        ).replace("<", "\\u003c")  # inside a <script> element
        self.pages.sessions.save(session)
        return self.kit.render(
            request,
            "security.html",
            session,
            status,
            username=user.username,
            totp_enabled=user.totp_enabled,
            secret=secret,
            uri=totp.otpauth_uri(secret, user.username),
            passkeys=[
                {"id": p.credential_id, "name": p.name, "created": _day(p.created_at)}
                for p in passkeys
            ],
            registration_options=options,
            error=error,
            notice=notice,
        )

    async def security_page(self, request: Request) -> Response:
        signed = self._signed_in(request, "/account/security")
        if isinstance(signed, Response):
            return signed
        return self._security(request, *signed)

    async def totp_submit(self, request: Request) -> Response:
        posted = await self._post(request)
        if isinstance(posted, Response):
            return posted
        session, user, form = posted
        secret = self.pages.pending_totp(session, user.id)
        code = form.get("code")  # type: ignore[attr-defined]
        if (
            isinstance(secret, str)
            and isinstance(code, str)
            and self.pages.accounts.enable_totp(user.id, secret, code[:20])
        ):
            session.data.pop(PENDING_TOTP, None)
            self.pages.audit("enrol-totp", "success", request, user)
            fresh = self.pages.accounts.get(user.id) or user
            return self._security(
                request, session, fresh, notice="The authenticator app is set up."
            )
        return self._security(
            request,
            session,
            user,
            400,
            error="That code is not right. Check the clock of your device.",
        )

    async def passkey_submit(self, request: Request) -> Response:
        posted = await self._post(request)
        if isinstance(posted, Response):
            return posted
        session, user, form = posted
        challenge = session.data.pop("webauthn_register", None)
        credential = form.get("credential")  # type: ignore[attr-defined]
        name = form.get("name")  # type: ignore[attr-defined]
        if not isinstance(challenge, str) or not isinstance(credential, str):
            return self._security(request, session, user, 400, error="The passkey request expired.")
        origin, rp_id = origin_of(request)
        try:
            self.pages.passkeys.register(
                user.id,
                credential,
                challenge=_unb64(challenge),
                rp_id=rp_id,
                origin=origin,
                name=name if isinstance(name, str) else "passkey",
            )
        except PasskeyError as err:
            return self._security(request, session, user, 400, error=str(err))
        self.pages.audit("enrol-passkey", "success", request, user)
        return self._security(request, session, user, notice="The passkey is registered.")

    async def passkey_remove(self, request: Request) -> Response:
        posted = await self._post(request)
        if isinstance(posted, Response):
            return posted
        session, user, form = posted
        credential_id = form.get("credential_id")  # type: ignore[attr-defined]
        removed = isinstance(credential_id, str) and self.pages.passkeys.remove(
            user.id, credential_id
        )
        return self._security(
            request, session, user, notice="The passkey was removed." if removed else None
        )

    def routes(self) -> list[Route]:
        return [
            Route("/account/apps", self.apps_page, methods=["GET"]),
            Route("/account/apps/revoke", self.apps_revoke, methods=["POST"]),
            Route("/account/security", self.security_page, methods=["GET"]),
            Route("/account/security/totp", self.totp_submit, methods=["POST"]),
            Route("/account/security/passkey", self.passkey_submit, methods=["POST"]),
            Route("/account/security/passkey/remove", self.passkey_remove, methods=["POST"]),
        ]
