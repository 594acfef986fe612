"""`openrecord admin create-user`, `reset-password`, `seal-secrets`: managing accounts.

The password comes from standard input (`--password-stdin`, first line) or an
interactive prompt, never from the command line (where `ps` and shell history would
keep it). `--totp` sets up the second factor at once and prints its key and
`otpauth://` URI; otherwise the user sets one up at first sign-in. TOTP keys are
stored encrypted (`auth/secret_box.py`); `seal-secrets` (also run by `serve` at start)
encrypts plaintext ones and re-encrypts those under a previous key after a rotation.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["add_account_parsers", "seal_secrets"]


def add_account_parsers(
    admin_sub: Any, with_database: Callable[[argparse.ArgumentParser], None]
) -> None:
    create = admin_sub.add_parser(
        "create-user",
        help="create a user linked to their Patient, Practitioner, RelatedPerson or Person",
    )
    with_database(create)
    create.add_argument("--username", required=True)
    who = create.add_mutually_exclusive_group(required=True)
    who.add_argument("--patient", metavar="ID", help="the user is this Patient")
    who.add_argument("--practitioner", metavar="ID", help="the user is this Practitioner")
    who.add_argument(
        "--related-person",
        metavar="ID",
        help="the user is this RelatedPerson (acts for its patient)",
    )
    who.add_argument("--person", metavar="ID", help="the user is this Person (its links)")
    create.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    create.add_argument(
        "--totp", action="store_true", help="set up an authenticator app now (prints its key)"
    )
    create.set_defaults(admin_handler=create_user_command)

    reset = admin_sub.add_parser(
        "reset-password", help="print a one-time password reset link for a user (1 hour)"
    )
    with_database(reset)
    reset.add_argument("--username", required=True)
    reset.add_argument(
        "--public-url",
        default=os.environ.get("OPENRECORD_PUBLIC_URL"),
        metavar="URL",
        help="the server's address, to print a whole link (default: the path only)",
    )
    reset.set_defaults(admin_handler=reset_password_command)

    seal = admin_sub.add_parser(
        "seal-secrets",
        help="encrypt stored TOTP keys under the current secret key (plaintext ones and,"
        " after a rotation, those under a key in OPENRECORD_SECRET_KEY_PREVIOUS)",
    )
    with_database(seal)
    seal.set_defaults(admin_handler=lambda database, args: seal_secrets(database))


def seal_secrets(database: str) -> int:
    """Seal the database's TOTP keys under the configured secret key (creating the
    default key file if there is none); 2, with the reason, when a key is missing or
    some secret does not open — so that a server never runs with the wrong key."""
    from openrecord.auth.accounts import Accounts
    from openrecord.auth.secret_box import SecretBox, SecretKeyError
    from openrecord.store import open_store

    try:
        box = SecretBox.from_env()
    except SecretKeyError as err:
        print(f"openrecord: {err}", file=sys.stderr)
        return 2
    store = open_store(database)
    try:
        report = Accounts(store, box=box).seal_totp_secrets()
    finally:
        store.close()
    if report.sealed:
        print(
            f"openrecord: encrypted {report.sealed} TOTP key(s) under secret key {box.key_id}",
            file=sys.stderr,
        )
    if report.unreadable:
        for problem in report.unreadable[:5]:
            print(f"openrecord: {problem}", file=sys.stderr)
        print(
            f"openrecord: {len(report.unreadable)} TOTP key(s) cannot be decrypted with"
            f" {box.where} (key {box.key_id}); see docs/security.md, secrets at rest",
            file=sys.stderr,
        )
        return 2
    return 0


def _read_password(from_stdin: bool) -> str | None:
    if from_stdin:
        line = sys.stdin.readline()
        return line.rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Password again: ") != first:
        print("openrecord: the passwords differ", file=sys.stderr)
        return None
    return first


def create_user_command(database: str, args: argparse.Namespace) -> int:
    from openrecord.auth import totp
    from openrecord.auth.accounts import AccountError, Accounts
    from openrecord.auth.secret_box import SecretKeyError
    from openrecord.store import open_store

    for option, type in (
        ("patient", "Patient"),
        ("practitioner", "Practitioner"),
        ("related_person", "RelatedPerson"),
        ("person", "Person"),
    ):
        value = getattr(args, option)
        if value:
            fhir_user = f"{type}/{value}"
    password = _read_password(args.password_stdin)
    if password is None:
        return 2
    store = open_store(database)
    try:
        type, _, id = fhir_user.partition("/")
        found = store.read(type, id)
        if found is None or found.deleted:
            print(
                f"openrecord: {fhir_user} is not in the database (import it first)", file=sys.stderr
            )
            return 2
        accounts = Accounts(store)
        try:
            user = accounts.create_user(args.username, password, fhir_user)
        except AccountError as err:
            print(f"openrecord: {err}", file=sys.stderr)
            return 2
        print(f"created user {user.username} ({fhir_user}), id {user.id}")
        if args.totp:
            secret = totp.new_secret()
            try:
                accounts.set_totp_secret(user.id, secret)
            except SecretKeyError as err:
                print(f"openrecord: {err}", file=sys.stderr)
                return 2
            print(f"TOTP key: {secret}")
            print(f"(stored encrypted under secret key {accounts.box.key_id})", file=sys.stderr)
            print(f"TOTP URI: {totp.otpauth_uri(secret, user.username)}")
    finally:
        store.close()
    return 0


def reset_password_command(database: str, args: argparse.Namespace) -> int:
    from openrecord.auth.accounts import Accounts
    from openrecord.store import open_store

    store = open_store(database)
    try:
        accounts = Accounts(store)
        user = accounts.find(args.username)
        if user is None:
            print(f"openrecord: no user {args.username!r}", file=sys.stderr)
            return 2
        token = accounts.issue_reset(user.id)
    finally:
        store.close()
    base = (args.public_url or "").rstrip("/")
    print(f"{base}/auth/reset?token={token}")
    print("valid for 1 hour, once; give it to the user privately", file=sys.stderr)
    return 0
