"""The interactive steps of a SMART authorization: login, MFA, patient picker, consent.

`GET /auth/authorize` (auth/endpoints) stores a pending request and sends the browser
to `/auth/login?request=<id>`. Each page checks that the steps before it were done in
this session — password, then a second factor (TOTP code or passkey), or a passkey
with user verification alone (auth/passkey_signin.py), then the patient
(one the user may act for, checked here, never taken from the form alone), then
consent — so no step can be skipped by typing a URL. Every form carries the session's
CSRF token; the session gets a new id after each factor (no fixation). The consent
page lists each requested scope in plain words with a box the user may untick, and
ends in `complete_authorization` (code for the app) or `deny_authorization`.
"""

from __future__ import annotations

import base64
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from openrecord.auth import totp
from openrecord.auth.accounts import Accounts, User
from openrecord.auth.authorization import (
    AuthorizationError,
    PendingAuthorization,
    complete_authorization,
    deny_authorization,
    load_pending,
)
from openrecord.auth.page_support import STATIC, FormError, PageKit, form_field, origin_of
from openrecord.auth.passkey_signin import PasskeySignIn
from openrecord.auth.patients import may_act_for, patients_for
from openrecord.auth.scope_text import describe_scope
from openrecord.auth.scopes import ScopeError, parse_scopes
from openrecord.auth.secret_box import SecretKeyError
from openrecord.auth.sessions import Session, SessionStore
from openrecord.auth.throttle import Throttle, ThrottlePolicy
from openrecord.auth.webauthn import (
    PasskeyError,
    Passkeys,
    authentication_options,
    new_challenge,
)
from openrecord.service.audit import record_auth_event
from openrecord.service.records import RecordService

__all__ = ["AuthPages", "auth_page_routes"]

# Where a sign-in without an app request may continue (no open redirects).
_NEXT_PAGES = ("/account/apps", "/account/security")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


PENDING_TOTP = "totp_pending"  # Session.data: the sealed secret of a TOTP being set up


class AuthPages:
    def __init__(self, records: RecordService, throttle: ThrottlePolicy | None = None) -> None:
        self.records = records
        self.store = records.store
        self.sessions = SessionStore(self.store)
        self.accounts = Accounts(
            self.store, Throttle(self.store, throttle or ThrottlePolicy.from_env())
        )
        self.passkeys = Passkeys(self.store)
        self.kit = PageKit(self.sessions)
        self.passkey_signin = PasskeySignIn(self)

    # -- helpers -----------------------------------------------------------------------

    def audit(
        self,
        action: str,
        outcome: str,
        request: Request,
        user: User | None,
        detail: str = "",
        *,
        client: str | None = None,
        patient: str | None = None,
    ) -> None:
        """An authentication event in the audit trail (`service/audit.py`): `action`
        login, mfa, consent…; `outcome` success (0), failure (4) or refused/lockout (8).
        Raises when it cannot be written: the step it records then fails too."""
        if outcome in ("success", "approved"):
            kind = action
        elif outcome == "lockout":
            kind = "lockout"  # the vocabulary of service/audit.py
        else:
            kind = f"{action}-{'failed' if outcome == 'failure' else outcome}"
        code = {"success": 0, "approved": 0, "denied": 0, "failure": 4}.get(outcome, 8)
        record_auth_event(
            self.store,
            kind=kind,
            user=user.fhir_user if user else None,
            client=client,
            patient=patient,
            outcome=code,
            detail=detail or None,
            source_ip=self._ip(request),
        )

    def _ip(self, request: Request) -> str | None:
        return request.client.host if request.client else None

    def _user(self, session: Session) -> User | None:
        if session.user_id is None:
            return None
        user = self.accounts.get(session.user_id)
        return None if user is None or user.disabled else user

    def _pending(self, session: Session) -> PendingAuthorization | None:
        request_id = session.data.get("request")
        return load_pending(self.store, request_id) if isinstance(request_id, str) else None

    def _message(
        self, request: Request, title: str, text: str, status: int, session: Session | None = None
    ) -> Response:
        return self.kit.render(request, "message.html", session, status, title=title, text=text)

    def _csrf_refused(self, request: Request) -> Response:
        return self._message(
            request,
            "Request refused",
            "This form was not sent from this site's own page, or its session expired."
            " Go back, reload the page and try again.",
            403,
        )

    async def _posted(
        self, request: Request, stage: tuple[str, ...]
    ) -> tuple[Session, Any] | Response:
        """The session (at one of `stage`) and form of a POST, or the refusal: no
        session, wrong step, another origin, or a missing or wrong CSRF token."""
        session = self.kit.session(request)
        try:
            form = await self.kit.form(request)
        except FormError:
            return self._message(request, "Request refused", "The form could not be read.", 400)
        if not self.kit.same_origin(request) or session is None:
            return self._csrf_refused(request)
        if not session.csrf_ok(form.get("csrf") if isinstance(form.get("csrf"), str) else None):  # type: ignore[arg-type]
            return self._csrf_refused(request)
        if session.stage not in stage:
            return self.kit.redirect(request, "/auth/login")
        return session, form

    def pending_totp(self, session: Session, user_id: str, *, create: bool = False) -> str | None:
        """The TOTP secret being set up (before its first code confirms it), kept in the
        session sealed like the account's (`secret_box`); a new one when `create`."""
        sealed = session.data.get(PENDING_TOTP)
        if isinstance(sealed, str):
            try:
                return self.accounts.box.open(sealed, PENDING_TOTP, user_id)
            except SecretKeyError:
                pass  # another key, another user: start over
        if not create:
            return None
        secret = totp.new_secret()
        session.data[PENDING_TOTP] = self.accounts.box.seal(secret, PENDING_TOTP, user_id)
        return secret

    def _after_mfa(self, session: Session) -> str:
        if isinstance(session.data.get("request"), str):
            return "/auth/select-patient"
        following = session.data.get("next")
        return following if following in _NEXT_PAGES else "/account/apps"

    # -- login -------------------------------------------------------------------------

    async def login_page(self, request: Request) -> Response:
        request_id = request.query_params.get("request")
        following = request.query_params.get("next")
        session = self.kit.session(request)
        if request_id is not None and load_pending(self.store, request_id[:100]) is None:
            return self._message(
                request,
                "Sign-in link expired",
                "This sign-in request is unknown, expired or already finished."
                " Go back to the app and start again.",
                400,
                session,
            )
        data: dict[str, Any] = {}
        if request_id is not None:
            data["request"] = request_id
        elif following in _NEXT_PAGES:
            data["next"] = following
        if session is not None and session.stage != "anonymous" and self._user(session):
            # signed in already in this browser: carry on (with the new request, if any)
            if data:
                for key in ("patient", "request", "next"):
                    session.data.pop(key, None)
                session.data.update(data)
                self.sessions.save(session)
            target = "/auth/mfa" if session.stage == "password" else self._after_mfa(session)
            return self.kit.redirect(request, target, session)
        if session is None:
            session = self.sessions.create(data)
        elif data:  # a new request (or destination) replaces the one this session had
            session.data = data
        return self.login_form(request, session)

    def login_form(
        self,
        request: Request,
        session: Session,
        status: int = 200,
        error: str | None = None,
        username: str = "",
    ) -> Response:
        """The login page, with a fresh challenge for "Sign in with a passkey"."""
        options = self.passkey_signin.options(request, session)
        self.sessions.save(session)
        return self.kit.render(
            request,
            "login.html",
            session,
            status,
            error=error,
            username=username,
            passkey_options=options,
        )

    async def login_submit(self, request: Request) -> Response:
        posted = await self._posted(request, ("anonymous",))
        if isinstance(posted, Response):
            return posted
        session, form = posted
        username, password = form_field(form, "username", 200), form_field(form, "password", 1024)
        result = self.accounts.login(username, password, self._ip(request))
        if result.user is None:
            outcome = {"failed": "failure", "locked": "lockout"}.get(result.outcome, "throttled")
            self.audit("login", outcome, request, None, f"username {username[:100]!r}")
            status = 401 if result.outcome == "failed" else 429
            return self.login_form(request, session, status, result.refusal, username)
        self.audit("login", "success", request, result.user, "password")
        fresh = self.sessions.promote(session, user_id=result.user.id, stage="password")
        return self.kit.redirect(request, "/auth/mfa", fresh)

    async def logout(self, request: Request) -> Response:
        posted = await self._posted(request, ("anonymous", "password", "mfa"))
        if isinstance(posted, Response):
            return posted
        session, _ = posted
        self.audit("logout", "success", request, self._user(session))
        self.sessions.delete(session)
        response = self.kit.redirect(request, "/auth/login")
        self.kit.clear_cookie(request, response)
        return response

    # -- second factor -----------------------------------------------------------------

    def _mfa_page(
        self,
        request: Request,
        session: Session,
        user: User,
        status: int = 200,
        error: str | None = None,
    ) -> Response:
        passkeys = self.passkeys.for_user(user.id)
        options = None
        if passkeys:
            challenge = new_challenge()
            session.data["webauthn_challenge"] = _b64(challenge)
            _, rp_id = origin_of(request)
            options = authentication_options(
                rp_id=rp_id, passkeys=passkeys, challenge=challenge
            ).replace("<", "\\u003c")  # inside a <script> element
        enrol = None
        if not user.totp_enabled and not passkeys:
            secret = self.pending_totp(session, user.id, create=True)
            assert secret is not None
            enrol = {"secret": secret, "uri": totp.otpauth_uri(secret, user.username)}
        self.sessions.save(session)
        return self.kit.render(
            request,
            "mfa.html",
            session,
            status,
            error=error,
            totp_enabled=user.totp_enabled,
            passkey_options=options,
            enrol=enrol,
        )

    async def mfa_page(self, request: Request) -> Response:
        session = self.kit.session(request)
        if session is None or session.stage == "anonymous" or (user := self._user(session)) is None:
            return self.kit.redirect(request, "/auth/login")
        if session.stage == "mfa":
            return self.kit.redirect(request, self._after_mfa(session))
        return self._mfa_page(request, session, user)

    async def mfa_submit(self, request: Request) -> Response:
        posted = await self._posted(request, ("password",))
        if isinstance(posted, Response):
            return posted
        session, form = posted
        user = self._user(session)
        if user is None:
            return self.kit.redirect(request, "/auth/login")
        method = form_field(form, "method", 20)
        error: str | None
        if method == "passkey":
            error = self._check_passkey(
                request, session, user, form_field(form, "credential", 65536)
            )
        elif method == "enrol":
            secret = self.pending_totp(session, user.id)
            if user.totp_enabled or self.passkeys.for_user(user.id) or secret is None:
                error = "A second factor is set up already: use it."
            elif self.accounts.enable_totp(user.id, secret, form_field(form, "code", 20)):
                error = None
                session.data.pop(PENDING_TOTP, None)
            else:
                error = "That code is not right. Check the clock of your device and try again."
        else:
            error = self.accounts.check_totp(
                user.id, form_field(form, "code", 20), self._ip(request)
            )
        if error is not None:
            # the throttle's messages (auth/throttle.py Refusal) say "locked" or "Wait"
            outcome = (
                "lockout" if "locked" in error else "throttled" if "Wait" in error else "failure"
            )
            self.audit("mfa", outcome, request, user, method)
            status = 401 if outcome == "failure" else 429
            return self._mfa_page(request, session, user, status, error)
        self.audit("mfa", "success", request, user, method or "totp")
        session.data.pop("webauthn_challenge", None)
        fresh = self.sessions.promote(session, user_id=user.id, stage="mfa")
        return self.kit.redirect(request, self._after_mfa(fresh), fresh)

    def _check_passkey(
        self, request: Request, session: Session, user: User, credential: str
    ) -> str | None:
        challenge = session.data.pop("webauthn_challenge", None)  # one use only
        self.sessions.save(session)
        if not isinstance(challenge, str):
            return "The passkey request expired. Try again."
        origin, rp_id = origin_of(request)
        try:
            self.passkeys.authenticate(
                user.id, credential, challenge=_unb64(challenge), rp_id=rp_id, origin=origin
            )
        except PasskeyError as err:
            return str(err)
        return None

    # -- patient and consent -----------------------------------------------------------

    def _flow(self, request: Request) -> tuple[Session, User, PendingAuthorization] | Response:
        """The signed-in (both factors) session of an authorization in progress."""
        session = self.kit.session(request)
        if session is None or (user := self._user(session)) is None:
            return self.kit.redirect(request, "/auth/login")
        if session.stage != "mfa":
            return self.kit.redirect(request, "/auth/mfa")
        pending = self._pending(session)
        if pending is None:
            return self._message(
                request,
                "No app is waiting",
                "There is no authorization in progress (it may have expired)."
                " Go back to the app and start again.",
                400,
                session,
            )
        return session, user, pending

    @staticmethod
    def _needs_patient(pending: PendingAuthorization) -> bool:
        try:
            policy = parse_scopes(pending.scopes)
        except ScopeError:
            return True
        return policy.patient_level or "launch/patient" in pending.scopes

    def _launch_allowed(self, user: User, patient: str) -> bool:
        """An EHR launch names its patient: a practitioner acts in the EHR's context;
        anyone else only for a patient they may act for (a launch id is no key)."""
        return user.fhir_type == "Practitioner" or self._patient_allowed(user, patient)

    def _patient_allowed(self, user: User, patient: str) -> bool:
        return may_act_for(self.records, user.fhir_user, patient)

    async def select_patient_page(self, request: Request) -> Response:
        flow = self._flow(request)
        if isinstance(flow, Response):
            return flow
        session, user, pending = flow
        launch_patient = (pending.launch or {}).get("patient")
        if launch_patient and not self._launch_allowed(user, str(launch_patient)):
            self.audit(
                "select-patient", "refused", request, user, f"launch Patient/{launch_patient}"
            )
            return self._message(
                request,
                "Not allowed",
                "You cannot act for the patient of this launch.",
                403,
                session,
            )
        if launch_patient or not self._needs_patient(pending):
            session.data["patient"] = launch_patient
            self.sessions.save(session)
            return self.kit.redirect(request, "/auth/consent", session)
        choices = patients_for(self.records, user.fhir_user)
        if not choices:
            return self._message(
                request,
                "No records to share",
                "No patient record is linked to your account, so there is nothing this app"
                " could be given access to.",
                403,
                session,
            )
        if len(choices) == 1:
            session.data["patient"] = choices[0].id
            self.sessions.save(session)
            return self.kit.redirect(request, "/auth/consent", session)
        return self.kit.render(
            request,
            "select_patient.html",
            session,
            choices=choices,
            client_name=pending.client_name,
            error=None,
        )

    async def select_patient_submit(self, request: Request) -> Response:
        posted = await self._posted(request, ("mfa",))
        if isinstance(posted, Response):
            return posted
        flow = self._flow(request)
        if isinstance(flow, Response):
            return flow
        session, user, _ = flow
        patient = form_field(posted[1], "patient", 100)
        if not patient or not self._patient_allowed(user, patient):
            self.audit("select-patient", "refused", request, user, f"Patient/{patient[:64]}")
            return self._message(
                request, "Not allowed", "You cannot act for that patient.", 403, session
            )
        session.data["patient"] = patient
        self.sessions.save(session)
        return self.kit.redirect(request, "/auth/consent", session)

    def _chosen_patient(
        self, session: Session, user: User, pending: PendingAuthorization
    ) -> str | Response | None:
        patient = session.data.get("patient")
        launch_patient = (pending.launch or {}).get("patient")
        if launch_patient:
            if not self._launch_allowed(user, str(launch_patient)):
                return Response(status_code=303, headers={"Location": "/auth/select-patient"})
            return str(launch_patient)
        if not self._needs_patient(pending):
            return None
        if not isinstance(patient, str) or not self._patient_allowed(user, patient):
            return Response(status_code=303, headers={"Location": "/auth/select-patient"})
        return patient

    async def consent_page(self, request: Request) -> Response:
        flow = self._flow(request)
        if isinstance(flow, Response):
            return flow
        session, user, pending = flow
        patient = self._chosen_patient(session, user, pending)
        if isinstance(patient, Response):
            return self.kit.redirect(request, "/auth/select-patient", session)
        names = (
            {c.id: c.name for c in patients_for(self.records, user.fhir_user)} if patient else {}
        )
        return self.kit.render(
            request,
            "consent.html",
            session,
            client_name=pending.client_name,
            client_id=pending.client_id,
            redirect_uri=pending.redirect_uri,
            scopes=[describe_scope(s) for s in pending.scopes],
            patient=patient,
            patient_name=names.get(patient or "", patient),
        )

    async def consent_submit(self, request: Request) -> Response:
        posted = await self._posted(request, ("mfa",))
        if isinstance(posted, Response):
            if posted.status_code == 403:  # no session, other origin or wrong CSRF token
                session = self.kit.session(request)
                pending = self._pending(session) if session else None
                self.audit(
                    "consent",
                    "refused",
                    request,
                    self._user(session) if session else None,
                    "consent form without a valid CSRF token or session",
                    client=pending.client_id if pending else None,
                )
            return posted
        flow = self._flow(request)
        if isinstance(flow, Response):
            return flow
        session, user, pending = flow
        form = posted[1]
        patient = self._chosen_patient(session, user, pending)
        if isinstance(patient, Response):
            return self.kit.redirect(request, "/auth/select-patient", session)
        try:
            if form_field(form, "decision", 10) == "approve":
                ticked = {v for v in form.getlist("scope") if isinstance(v, str)}
                granted = [s for s in pending.scopes if s in ticked]  # only what was asked
                url = complete_authorization(
                    self.store,
                    pending.id,
                    user_id=user.id,
                    fhir_user=user.fhir_user,
                    patient=patient,
                    granted_scopes=granted,
                )
                self.audit(
                    "consent",
                    "approved",
                    request,
                    user,
                    f"granted: {' '.join(granted)}",
                    client=pending.client_id,
                    patient=patient,
                )
            else:
                url = deny_authorization(self.store, pending.id)
                self.audit("consent", "denied", request, user, client=pending.client_id)
        except AuthorizationError as err:
            return self._message(request, "Could not finish", err.description, 400, session)
        session.data.pop("request", None)
        session.data.pop("patient", None)
        self.sessions.save(session)
        return self.kit.redirect(request, url, session)

    def routes(self) -> list[Route]:
        from openrecord.auth.account_pages import AccountPages
        from openrecord.auth.reset_pages import ResetPages

        account, reset = AccountPages(self), ResetPages(self)
        return [
            Route("/auth/login", self.login_page, methods=["GET"]),
            Route("/auth/login", self.login_submit, methods=["POST"]),
            Route("/auth/login/passkey", self.passkey_signin.submit, methods=["POST"]),
            Route("/auth/logout", self.logout, methods=["POST"]),
            Route("/auth/mfa", self.mfa_page, methods=["GET"]),
            Route("/auth/mfa", self.mfa_submit, methods=["POST"]),
            Route("/auth/select-patient", self.select_patient_page, methods=["GET"]),
            Route("/auth/select-patient", self.select_patient_submit, methods=["POST"]),
            Route("/auth/consent", self.consent_page, methods=["GET"]),
            Route("/auth/consent", self.consent_submit, methods=["POST"]),
            Route("/auth/reset", reset.page, methods=["GET"]),
            Route("/auth/reset", reset.submit, methods=["POST"]),
            *account.routes(),
            Route("/auth/static/{name}", self.static, methods=["GET"]),
        ]

    async def static(self, request: Request) -> Response:
        """The pages' stylesheet and passkey script (a fixed list: nothing else is served)."""
        name = request.path_params["name"]
        media = _STATIC_FILES.get(name)
        if media is None:
            return Response("not found", 404, media_type="text/plain")
        return FileResponse(
            STATIC / name,
            media_type=media,
            headers={"Cache-Control": "max-age=3600", "X-Content-Type-Options": "nosniff"},
        )


_STATIC_FILES = {"auth.css": "text/css", "webauthn.js": "text/javascript"}


def auth_page_routes(records: RecordService) -> list[Route]:
    """The sign-in, consent and account pages, for the application's route list."""
    return AuthPages(records).routes()
