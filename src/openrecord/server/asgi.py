"""Entry point for ASGI servers: `uvicorn --factory openrecord.server.asgi:app_from_env`.

Worker processes each build their own app (and store connections) from the
environment that `openrecord serve` sets.
"""

from __future__ import annotations

import os

from openrecord.auth.oauth_endpoints import AuthConfig, load_trusted_issuers
from openrecord.auth.rate_limit import RateLimits
from openrecord.server.app import Application, ServerConfig, create_app
from openrecord.service.clock import configured_timezone
from openrecord.service.profile_policy import profile_policy

__all__ = ["app_from_env"]


def app_from_env() -> Application:
    database = os.environ.get("OPENRECORD_DATABASE")
    if not database:
        raise RuntimeError("OPENRECORD_DATABASE is not set")
    max_body = int(os.environ.get("OPENRECORD_MAX_BODY_BYTES", 64 * 1024 * 1024))
    debug_search = os.environ.get("OPENRECORD_DEBUG_SEARCH", "") in ("1", "true", "yes")
    profiles = profile_policy(os.environ.get("OPENRECORD_PROFILES") or "warn")
    return create_app(
        ServerConfig(
            database=database,
            max_body_bytes=max_body,
            debug_search=debug_search,
            profiles=profiles,
            tz=configured_timezone(),
            open=os.environ.get("OPENRECORD_OPEN", "") == "1",
            auth=AuthConfig(
                public_url=os.environ.get("OPENRECORD_PUBLIC_URL") or None,
                trusted_issuers=load_trusted_issuers(os.environ.get("OPENRECORD_TRUSTED_ISSUERS")),
                require_software_statement=os.environ.get("OPENRECORD_REQUIRE_SOFTWARE_STATEMENT")
                == "1",
                rate_limits=RateLimits.from_env(),
            ),
        )
    )
