"""Password reset by one-time token: `/auth/reset?token=…` (tokens made by
`openrecord admin reset-password`, handed over by the operator). A reset ends every
session of the account."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from openrecord.auth.accounts import AccountError
from openrecord.auth.page_support import form_field

if TYPE_CHECKING:
    from openrecord.auth.pages import AuthPages

__all__ = ["ResetPages"]


class ResetPages:
    def __init__(self, pages: AuthPages) -> None:
        self.pages = pages

    async def page(self, request: Request) -> Response:
        token = request.query_params.get("token", "")[:100]
        session = self.pages.kit.session(request) or self.pages.sessions.create()
        if not token or self.pages.accounts.reset_token_user(token) is None:
            return self.pages._message(
                request,
                "Reset link not valid",
                "This password reset link is unknown, expired or used. Ask the operator of"
                " this server for a new one.",
                400,
                session,
            )
        return self.pages.kit.render(request, "reset.html", session, token=token, error=None)

    async def submit(self, request: Request) -> Response:
        posted = await self.pages._posted(request, ("anonymous", "password", "mfa"))
        if isinstance(posted, Response):
            return posted
        session, form = posted
        token = form_field(form, "token", 100)
        password, again = form_field(form, "password", 1024), form_field(form, "confirm", 1024)
        if password != again:
            return self.pages.kit.render(
                request,
                "reset.html",
                session,
                400,
                token=token,
                error="The two passwords are not the same.",
            )
        try:
            user = self.pages.accounts.reset_password(token, password)
        except AccountError as err:
            return self.pages.kit.render(
                request, "reset.html", session, 400, token=token, error=str(err)
            )
        self.pages.sessions.delete_for_user(user.id)
        self.pages.sessions.delete(session)
        self.pages.audit("password-reset", "success", request, user)
        response = self.pages._message(
            request, "Password changed", "Your password was changed. Sign in with the new one.", 200
        )
        self.pages.kit.clear_cookie(request, response)
        return response
