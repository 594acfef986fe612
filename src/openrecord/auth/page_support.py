"""What every sign-in and account page shares: templates, the session cookie, CSRF,
security headers, the public origin (for WebAuthn) and form reading."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from openrecord.auth.sessions import Session, SessionStore, cookie_name, cookie_secure

__all__ = [
    "FormError",
    "PageKit",
    "form_field",
    "origin_of",
]

_TEMPLATES = Path(__file__).resolve().parent.parent / "web" / "templates"
STATIC = Path(__file__).resolve().parent.parent / "web" / "static"

# No framing (clickjacking on the consent form), no inline script or style, nothing
# from elsewhere, no referrer to other sites (reset links carry a token; with
# "no-referrer" browsers would send `Origin: null` on our own forms), nothing cached.
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # never to other sites (reset links carry a token)
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
        " connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}


class FormError(Exception):
    """A form that cannot be read (too large, malformed)."""


def form_field(form: Any, name: str, limit: int = 4096) -> str:
    """A posted text field, cut to `limit` characters ("" when absent or a file)."""
    value = form.get(name)
    return value[:limit] if isinstance(value, str) else ""


def origin_of(request: Request) -> tuple[str, str]:
    """(origin, RP ID) of this server as the browser sees it: `OPENRECORD_PUBLIC_URL`
    when set (behind a proxy), else the request's own scheme and host."""
    public = os.environ.get("OPENRECORD_PUBLIC_URL")
    if public:
        parts = urlsplit(public)
        return f"{parts.scheme}://{parts.netloc}", parts.hostname or ""
    url = request.url
    return f"{url.scheme}://{url.netloc}", url.hostname or ""


class PageKit:
    def __init__(self, sessions: SessionStore) -> None:
        self.sessions = sessions
        self.env = Environment(
            loader=FileSystemLoader(str(_TEMPLATES)),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def secure(self, request: Request) -> bool:
        return cookie_secure(request.url.scheme, request.url.hostname or "")

    def session(self, request: Request) -> Session | None:
        return self.sessions.load(request.cookies.get(cookie_name(self.secure(request))))

    def render(
        self,
        request: Request,
        template: str,
        session: Session | None,
        status: int = 200,
        **values: Any,
    ) -> Response:
        html = self.env.get_template(f"auth/{template}").render(
            csrf=session.csrf if session else "",
            signed_in=bool(session and session.stage == "mfa"),
            **values,
        )
        response = HTMLResponse(html, status, headers=SECURITY_HEADERS)
        if session is not None:
            self.set_cookie(request, response, session)
        return response

    def redirect(self, request: Request, url: str, session: Session | None = None) -> Response:
        response = RedirectResponse(url, 303, headers=SECURITY_HEADERS)
        if session is not None:
            self.set_cookie(request, response, session)
        return response

    def set_cookie(self, request: Request, response: Response, session: Session) -> None:
        secure = self.secure(request)
        response.set_cookie(
            cookie_name(secure),
            session.id,  # no max_age: gone when the browser closes; the server expires it too
            path="/",
            secure=secure,
            httponly=True,
            samesite="lax",
        )

    def clear_cookie(self, request: Request, response: Response) -> None:
        secure = self.secure(request)
        response.delete_cookie(
            cookie_name(secure), path="/", secure=secure, httponly=True, samesite="lax"
        )

    async def form(self, request: Request) -> FormData:
        try:
            return await request.form(max_files=0, max_fields=200, max_part_size=128 * 1024)
        except Exception as err:  # multipart's and Starlette's parse errors
            raise FormError(str(err)) from None

    def same_origin(self, request: Request) -> bool:
        """A cross-site POST is refused even before the CSRF token is looked at (the
        `Origin` header, when the browser sends one, must be this server's)."""
        origin = request.headers.get("origin")
        if origin is None:
            return True
        own = f"{request.url.scheme}://{request.url.netloc}"
        return origin in (origin_of(request)[0], own)
