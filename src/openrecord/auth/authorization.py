"""Authorization requests between `GET /auth/authorize` and the token endpoint.

`/auth/authorize` validates an app's request and stores it as *pending*; the
interactive pages (login, MFA, patient picker, consent) read it with `load_pending`
and end it with `complete_authorization` (a one-time code for the app's
`redirect_uri`) or `deny_authorization`. The token endpoint redeems the code once
(`redeem_code`); a second redemption is an attack (RFC 6749 §4.1.2) and revokes the
grant the first one created. A *grant* is one app's access for one user and patient:
its refresh-token family and access tokens. `list_grants`/`revoke_grant` are the
patient's view of their connected apps; revocation is effective on the next request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from openrecord.auth.common import (
    REVOKED_CHANNEL,
    OAuthError,
    digest,
    dumps,
    loads,
    now,
    random_token,
)
from openrecord.auth.scopes import ScopeError, parse_scopes
from openrecord.store.base import Store, WriteTx

__all__ = [
    "CODE_SECONDS",
    "PENDING_SECONDS",
    "AuthorizationError",
    "Grant",
    "PendingAuthorization",
    "RedeemedCode",
    "complete_authorization",
    "create_launch",
    "deny_authorization",
    "grant_lock",
    "list_grants",
    "load_launch",
    "load_pending",
    "redeem_code",
    "revoke_grant",
    "revoke_grants_where",
    "store_pending",
    "with_query",
]

PENDING_SECONDS = 15 * 60  # time for the user to log in, pass MFA and consent
CODE_SECONDS = 60  # an authorization code lives one minute (RFC 6749 §4.1.2: short)
LAUNCH_SECONDS = 10 * 60


class AuthorizationError(OAuthError):
    """The request is unknown, expired or already finished, or the grant is invalid."""


@dataclass(frozen=True, slots=True)
class PendingAuthorization:
    """An app's validated authorization request, waiting for the user."""

    id: str
    client_id: str
    client_name: str
    redirect_uri: str
    scopes: tuple[str, ...]
    state: str
    aud: str
    launch: dict[str, Any] | None  # EHR launch context: patient, encounter, fhirContext
    expires_at: int


@dataclass(frozen=True, slots=True)
class Grant:
    """One connected app of a user: what it may do and until when it can renew."""

    client_id: str
    client_name: str
    scopes: tuple[str, ...]
    patients: tuple[str, ...]
    created_at: int  # first authorized
    last_authorized_at: int
    expires_at: int  # when its last access or refresh token runs out


@dataclass(frozen=True, slots=True)
class RedeemedCode:
    """What a code was issued for: the token endpoint turns it into a grant."""

    request_id: str
    client_id: str
    redirect_uri: str
    code_challenge: str
    scope: str
    user_id: str
    fhir_user: str | None
    patient: str | None
    context: dict[str, Any]  # launch context (encounter, fhirContext…)
    nonce: str | None


def with_query(url: str, params: dict[str, str]) -> str:
    """`url` with `params` added to its query (the redirect_uri may have one)."""
    return url + ("&" if "?" in url else "?") + urlencode(params)


# -- EHR launch contexts ---------------------------------------------------------------


def create_launch(
    store: Store,
    *,
    patient: str | None = None,
    encounter: str | None = None,
    fhir_context: Sequence[dict[str, Any]] = (),
    seconds: int = LAUNCH_SECONDS,
) -> str:
    """An opaque `launch` value for an EHR launch carrying this context."""
    launch_id = random_token(24)
    context: dict[str, Any] = {}
    if patient:
        context["patient"] = patient
    if encounter:
        context["encounter"] = encounter
    if fhir_context:
        context["fhirContext"] = list(fhir_context)
    with store.write() as tx:
        tx.execute(
            "INSERT INTO auth_launch (id, context, expires_at) VALUES (?, ?, ?)",
            (launch_id, dumps(context), now() + seconds),
        )
    return launch_id


def load_launch(store: Store, launch_id: str) -> dict[str, Any] | None:
    rows = store.query(
        "SELECT context FROM auth_launch WHERE id = ? AND expires_at > ?", (launch_id, now())
    )
    return loads(rows[0][0]) if rows else None


# -- pending requests ------------------------------------------------------------------


def store_pending(
    store: Store,
    *,
    client_id: str,
    redirect_uri: str,
    scopes: Sequence[str],
    state: str,
    aud: str,
    code_challenge: str,
    launch: dict[str, Any] | None,
    nonce: str | None,
) -> str:
    """Keep a validated request until the user decides; its id for the pages."""
    request_id = random_token(24)
    params = {
        "redirect_uri": redirect_uri,
        "scopes": list(scopes),
        "state": state,
        "aud": aud,
        "code_challenge": code_challenge,
        "launch": launch,
        "nonce": nonce,
    }
    with store.write() as tx:
        tx.execute(
            "INSERT INTO auth_request (id, client_id, params, status, expires_at)"
            " VALUES (?, ?, ?, 'pending', ?)",
            (request_id, client_id, dumps(params), now() + PENDING_SECONDS),
        )
    return request_id


def _client_name(store: Store, client_id: str) -> str:
    rows = store.query("SELECT metadata FROM auth_client WHERE client_id = ?", (client_id,))
    if not rows:
        return client_id
    return str(loads(rows[0][0]).get("client_name") or client_id)


def load_pending(store: Store, request_id: str) -> PendingAuthorization | None:
    """The pending request, or None when unknown, expired or already decided."""
    rows = store.query(
        "SELECT client_id, params, expires_at FROM auth_request"
        " WHERE id = ? AND status = 'pending' AND expires_at > ?",
        (request_id, now()),
    )
    if not rows:
        return None
    client_id, params_text, expires_at = rows[0]
    params = loads(params_text)
    return PendingAuthorization(
        id=request_id,
        client_id=client_id,
        client_name=_client_name(store, client_id),
        redirect_uri=params["redirect_uri"],
        scopes=tuple(params["scopes"]),
        state=params["state"],
        aud=params["aud"],
        launch=params["launch"],
        expires_at=int(expires_at),
    )


def complete_authorization(
    store: Store,
    request_id: str,
    *,
    user_id: str,
    fhir_user: str | None,
    patient: str | None,
    granted_scopes: Sequence[str],
) -> str:
    """The user approved `granted_scopes` (a subset of those requested) for `patient`:
    the app's redirect URL with a one-time `code` and its `state`."""
    pending = load_pending(store, request_id)
    if pending is None:
        raise AuthorizationError("invalid_request", "unknown, expired or finished request")
    granted = list(dict.fromkeys(granted_scopes))
    extra = [s for s in granted if s not in pending.scopes]
    if extra:
        raise AuthorizationError("invalid_scope", f"not requested: {' '.join(extra)}")
    try:
        policy = parse_scopes(granted)
    except ScopeError as err:
        raise AuthorizationError("invalid_scope", str(err)) from err
    launch = pending.launch or {}
    if launch.get("patient"):
        if patient is not None and patient != launch["patient"]:
            raise AuthorizationError("invalid_request", "the launch names another patient")
        patient = launch["patient"]
    if policy.patient_level and not patient:
        raise AuthorizationError("invalid_request", "patient-level scopes need a patient")
    code = random_token(32)
    result = {
        "user_id": user_id,
        "fhir_user": fhir_user,
        "patient": patient,
        "scope": " ".join(granted),
    }
    with store.write() as tx:
        done = tx.execute(
            "UPDATE auth_request SET status = 'code', code_hash = ?, result = ?, expires_at = ?"
            " WHERE id = ? AND status = 'pending' RETURNING id",
            (digest(code), dumps(result), now() + CODE_SECONDS, request_id),
        )
    if not done:  # decided concurrently
        raise AuthorizationError("invalid_request", "the request was already finished")
    return with_query(pending.redirect_uri, {"code": code, "state": pending.state})


def deny_authorization(store: Store, request_id: str) -> str:
    """The user refused: the app's redirect URL with `error=access_denied`."""
    pending = load_pending(store, request_id)
    if pending is None:
        raise AuthorizationError("invalid_request", "unknown, expired or finished request")
    with store.write() as tx:
        tx.execute(
            "UPDATE auth_request SET status = 'denied' WHERE id = ? AND status = 'pending'",
            (request_id,),
        )
    return with_query(pending.redirect_uri, {"error": "access_denied", "state": pending.state})


def redeem_code(store: Store, code: str, client_id: str) -> RedeemedCode:
    """Mark the code used (once, atomically) and return what it was issued for. A code
    presented again revokes the grant its first redemption created (RFC 6749 §4.1.2)."""
    code_hash = digest(code)
    with store.write() as tx:
        rows = tx.execute(
            "UPDATE auth_request SET status = 'used' WHERE code_hash = ? AND status = 'code'"
            " AND expires_at > ? RETURNING id, client_id, params, result",
            (code_hash, now()),
        )
    if not rows:
        # A replay: revoke what the first redemption issued. If that redemption is
        # still creating its grant, 'replayed' makes it revoke the grant itself.
        with store.write() as tx:
            used = tx.execute(
                "UPDATE auth_request SET status = 'replayed' WHERE code_hash = ?"
                " AND status IN ('used', 'replayed') RETURNING grant_id",
                (code_hash,),
            )
            if used and used[0][0]:
                revoke_grants_where(tx, "id = ?", (used[0][0],))
        raise OAuthError("invalid_grant", "the authorization code is invalid, expired or used")
    request_id, owner, params_text, result_text = rows[0]
    if owner != client_id:
        raise OAuthError("invalid_grant", "the code was issued to another client")
    params, result = loads(params_text), loads(result_text)
    launch = dict(params.get("launch") or {})
    launch.pop("patient", None)
    return RedeemedCode(
        request_id=request_id,
        client_id=owner,
        redirect_uri=params["redirect_uri"],
        code_challenge=params["code_challenge"],
        scope=result["scope"],
        user_id=result["user_id"],
        fhir_user=result["fhir_user"],
        patient=result["patient"],
        context=launch,
        nonce=params.get("nonce"),
    )


# -- grants (connected apps) -----------------------------------------------------------


def grant_lock(grant_id: str) -> str:
    """The lock that orders issuing an access token of a grant and revoking the grant."""
    return f"openrecord-grant-{grant_id}"


def revoke_grants_where(tx: WriteTx, where: str, params: Sequence[Any]) -> int:
    """Revoke the grants matching `where` and every access token they issued; their
    refresh tokens die with them (the token endpoint checks the grant)."""
    ids = [
        r[0]
        for r in tx.execute(
            f"UPDATE auth_grant SET revoked_at = ? WHERE revoked_at IS NULL AND ({where})"
            " RETURNING id",
            (now(), *params),
        )
    ]
    for grant_id in ids:
        tx.lock(grant_lock(grant_id))  # against an access token being issued meanwhile
        tx.execute("UPDATE auth_access SET revoked = 1 WHERE grant_id = ?", (grant_id,))
        tx.notify(REVOKED_CHANNEL)
        tx.execute(
            "UPDATE auth_refresh SET used_at = ? WHERE grant_id = ? AND used_at IS NULL",
            (now(), grant_id),
        )
    return len(ids)


def list_grants(store: Store, user_id: str) -> list[Grant]:
    """The apps `user_id` has authorized that still hold a live token, one per app."""
    t = now()
    rows = store.query(
        "SELECT g.client_id, g.scope, g.patient, g.created_at,"
        " (SELECT max(r.expires_at) FROM auth_refresh r"
        "   WHERE r.grant_id = g.id AND r.used_at IS NULL),"
        " (SELECT max(a.expires_at) FROM auth_access a"
        "   WHERE a.grant_id = g.id AND a.revoked = 0)"
        " FROM auth_grant g WHERE g.user_id = ? AND g.revoked_at IS NULL"
        " ORDER BY g.created_at",
        (user_id,),
    )
    merged: dict[str, dict[str, Any]] = {}
    for client_id, scope, patient, created, refresh_until, access_until in rows:
        until = max(int(refresh_until or 0), int(access_until or 0))
        if until <= t:
            continue
        entry = merged.setdefault(
            client_id,
            {"scopes": [], "patients": [], "created": int(created), "last": 0, "until": 0},
        )
        entry["scopes"] += [s for s in scope.split() if s not in entry["scopes"]]
        if patient and patient not in entry["patients"]:
            entry["patients"].append(patient)
        entry["last"] = max(entry["last"], int(created))
        entry["until"] = max(entry["until"], until)
    return [
        Grant(
            client_id=client_id,
            client_name=_client_name(store, client_id),
            scopes=tuple(e["scopes"]),
            patients=tuple(e["patients"]),
            created_at=e["created"],
            last_authorized_at=e["last"],
            expires_at=e["until"],
        )
        for client_id, e in merged.items()
    ]


def revoke_grant(store: Store, user_id: str, client_id: str) -> None:
    """Disconnect an app: its refresh tokens and access tokens stop working now."""
    with store.write() as tx:
        revoke_grants_where(tx, "user_id = ? AND client_id = ?", (user_id, client_id))
