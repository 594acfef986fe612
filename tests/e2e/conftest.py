"""Browser end-to-end tests: headless Debian Chromium (`/usr/bin/chromium`) driven by
Playwright through the real sign-in pages. Under `CI=true` they must run (a missing
browser, Playwright or npm package fails them); elsewhere they skip with the reason.
Browsers are never downloaded (`playwright install` is not used)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
JS_CLIENT = Path(__file__).parent / "js" / "node_modules" / "fhirclient" / "build"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def need(condition: bool, reason: str) -> None:
    """Skip without the prerequisite, except under CI, where it is a failure."""
    if condition:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI must run the browser tests: see .ci/run)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    need(CHROMIUM.exists(), f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need(False, "the playwright package is not installed (pip install -e '.[test]')")
        raise
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="session")
def js_client() -> Path:
    bundle = JS_CLIENT / "fhir-client.min.js"
    need(bundle.exists(), f"{bundle} is missing (npm ci --prefix tests/e2e/js)")
    return bundle


def virtual_authenticator(context: Any, page: Any) -> tuple[Any, str]:
    """A CTAP2 platform authenticator with resident keys and user verification in
    Chromium (DevTools WebAuthn domain), for `page`: (the CDP session, its id)."""
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    made = cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
                "automaticPresenceSimulation": True,
            }
        },
    )
    return cdp, str(made["authenticatorId"])
