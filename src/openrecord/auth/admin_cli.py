"""`openrecord admin …`: operator commands of the authorization server.

`add-client` registers an app or a backend service (the only way to give a client
`system/` scopes besides a trusted software statement) and prints it as JSON;
`rotate-keys` replaces the signing keys (old ones keep verifying until their tokens
expire). Each subcommand sets `admin_handler(database, args)`; others (accounts) add
their own subcommands to the same group.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

__all__ = ["add_admin_parser", "admin_command", "apply_auth_options"]


def add_admin_parser(sub: Any, with_database: Callable[[argparse.ArgumentParser], None]) -> Any:
    """The `admin` group with add-client and rotate-keys; returns its subparsers."""
    admin = sub.add_parser("admin", help="operator commands: clients, keys, users")
    admin_sub = admin.add_subparsers(dest="admin_command", required=True)

    add = admin_sub.add_parser(
        "add-client",
        help="register an OAuth client (an app, or a backend service with system/ scopes);"
        " prints it as JSON with its client_id",
    )
    with_database(add)
    add.add_argument("--name", required=True, help="the client's name, shown to users")
    add.add_argument(
        "--grant-type",
        choices=("client_credentials", "authorization_code"),
        required=True,
        help="client_credentials: a backend service (SMART Backend Services);"
        " authorization_code: an app users launch",
    )
    add.add_argument("--jwks", type=Path, metavar="FILE", help="the client's public JWK Set")
    add.add_argument("--jwks-uri", metavar="URL", help="where the client publishes its JWK Set")
    add.add_argument("--scope", default="", help="the scopes it may be granted, space-separated")
    add.add_argument(
        "--redirect-uri", action="append", default=[], metavar="URI", help="(repeatable)"
    )
    add.add_argument(
        "--auth-method",
        choices=("none", "client_secret_basic", "client_secret_post", "private_key_jwt"),
        help="token endpoint authentication (default: private_key_jwt with --jwks/--jwks-uri,"
        " else none for apps)",
    )
    add.set_defaults(admin_handler=add_client_command)

    rotate = admin_sub.add_parser(
        "rotate-keys",
        help="new token signing keys; the old ones stay published until their tokens expire",
    )
    with_database(rotate)
    rotate.add_argument(
        "--drop-old",
        action="store_true",
        help="delete the old keys instead of retiring them (a key leaked): tokens they"
        " signed are refused after a server restart",
    )
    rotate.set_defaults(admin_handler=rotate_keys_command)
    return admin_sub


def admin_command(database: str, args: argparse.Namespace) -> int:
    handler: Callable[[str, argparse.Namespace], int] = args.admin_handler
    return int(handler(database, args))


def add_client_command(database: str, args: argparse.Namespace) -> int:
    from openrecord.auth.clients import register_client
    from openrecord.auth.common import OAuthError
    from openrecord.store import open_store

    metadata: dict[str, Any] = {
        "client_name": args.name,
        "grant_types": [args.grant_type],
        "scope": args.scope,
        "redirect_uris": args.redirect_uri,
    }
    if args.jwks is not None:
        try:
            metadata["jwks"] = orjson.loads(args.jwks.read_bytes())
        except (OSError, orjson.JSONDecodeError) as err:
            print(f"openrecord: cannot read the JWK Set {args.jwks}: {err}", file=sys.stderr)
            return 2
    if args.jwks_uri:
        metadata["jwks_uri"] = args.jwks_uri
    keyed = args.jwks is not None or bool(args.jwks_uri)
    metadata["token_endpoint_auth_method"] = args.auth_method or (
        "private_key_jwt" if keyed else "none"
    )
    store = open_store(database)
    try:
        _, response = register_client(store, metadata, source="operator", allow_system=True)
    except OAuthError as err:
        print(f"openrecord: {err.error}: {err.description}", file=sys.stderr)
        return 2
    finally:
        store.close()
    print(orjson.dumps(response, option=orjson.OPT_INDENT_2).decode())
    return 0


def rotate_keys_command(database: str, args: argparse.Namespace) -> int:
    from openrecord.auth.keys import rotate_keys
    from openrecord.store import open_store

    store = open_store(database)
    try:
        kids = rotate_keys(store, drop_old=args.drop_old)
    finally:
        store.close()
    if args.drop_old:
        print(f"new signing keys: {', '.join(kids)}; old keys deleted: restart the server")
    else:
        print(f"new signing keys: {', '.join(kids)}; previous keys retired (still verifying)")
    return 0


_WARNING = """
  ************************************************************************
  *  openrecord is running with --open: NO AUTHORIZATION.                *
  *  Every request has full access to every record. Development only.    *
  ************************************************************************
"""


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def apply_auth_options(args: argparse.Namespace) -> bool:
    """`serve`'s authorization options into the workers' environment; False (after
    saying why) when `--open` is asked for on a host other machines can reach."""
    if args.open:
        if not _loopback(args.host):
            print(
                f"openrecord: --open (no authorization) is refused on --host {args.host}:"
                " only a loopback address (127.0.0.1, ::1, localhost) may run open",
                file=sys.stderr,
            )
            return False
        print(_WARNING, file=sys.stderr)
    os.environ["OPENRECORD_OPEN"] = "1" if args.open else "0"
    for name, value in (
        ("OPENRECORD_PUBLIC_URL", args.public_url),
        ("OPENRECORD_TRUSTED_ISSUERS", args.trusted_issuers),
    ):
        if value:
            os.environ[name] = value
        else:
            os.environ.pop(name, None)
    os.environ["OPENRECORD_REQUIRE_SOFTWARE_STATEMENT"] = (
        "1" if args.require_software_statement else "0"
    )
    return True
