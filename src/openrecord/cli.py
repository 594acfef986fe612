"""The `openrecord` command: serve, import, demo, reindex."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from platformdirs import user_data_dir

__all__ = ["default_database", "main"]


def default_database() -> str:
    """`sqlite:///…/openrecord.sqlite` in the user's data directory."""
    folder = Path(os.environ.get("OPENRECORD_HOME") or user_data_dir("openrecord"))
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'openrecord.sqlite'}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="openrecord", description="openrecord: a self-hostable FHIR R4 health-data server."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def with_database(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--database",
            default=os.environ.get("OPENRECORD_DATABASE"),
            metavar="URL",
            help="sqlite:///PATH or postgresql://… (default: a SQLite file in your data folder)",
        )
        p.add_argument(
            "--timezone",
            default=os.environ.get("OPENRECORD_TIMEZONE", "UTC"),
            metavar="ZONE",
            help="the zone of dates and times written without one, in data and in searches "
            "(IANA name, default UTC; change it only with a reindex)",
        )

    serve = sub.add_parser("serve", help="run the FHIR server (base URL /fhir)")
    with_database(serve)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument(
        "--open",
        action="store_true",
        help="NO AUTHORIZATION: every request gets full access (development only;"
        " loopback --host only). Authorization is on by default",
    )
    serve.add_argument(
        "--public-url",
        default=os.environ.get("OPENRECORD_PUBLIC_URL"),
        metavar="URL",
        help="the origin apps reach this server at (https://records.example.org): token"
        " audience and issuer, OAuth endpoint URLs (default: each request's Host)",
    )
    serve.add_argument(
        "--trusted-issuers",
        default=os.environ.get("OPENRECORD_TRUSTED_ISSUERS"),
        metavar="FILE",
        help='JSON {"issuers": [{"iss": …, "jwks": …}]}: who may sign software statements'
        " for dynamic client registration",
    )
    serve.add_argument(
        "--require-software-statement",
        action="store_true",
        help="dynamic client registration only with a software statement of a trusted issuer",
    )
    serve.add_argument(
        "--rate-limit",
        action="append",
        default=[os.environ.get("OPENRECORD_RATE_LIMITS", "")],
        metavar="NAME=COUNT/SECONDS",
        help="change a rate limit of the OAuth endpoints (token, token-client, register,"
        " client-auth-failures…; NAME=off turns one off; repeatable; docs/security.md)",
    )
    serve.add_argument(
        "--max-body-mb",
        type=int,
        default=int(os.environ.get("OPENRECORD_MAX_BODY_BYTES", 64 * 2**20)) // 2**20,
        metavar="MB",
        help="largest request body accepted, in MiB; larger ones get 413 (default 64)",
    )
    serve.add_argument("--log-level", default="info")
    serve.add_argument(
        "--debug-search",
        action="store_true",
        default=os.environ.get("OPENRECORD_DEBUG_SEARCH", "") in ("1", "true", "yes"),
        help="let searches ask for their SQL and query plan with _explain=true (development)",
    )
    serve.add_argument(
        "--profiles",
        choices=("warn", "strict", "off"),
        default=os.environ.get("OPENRECORD_PROFILES") or "warn",
        help="check resources against the profiles their meta.profile names on every write: "
        "warn (default: write, and report the issues), strict (refuse with 422), off",
    )

    imp = sub.add_parser("import", help="import FHIR JSON, NDJSON or Bundles (files or folders)")
    with_database(imp)
    imp.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    imp.add_argument("--quiet", action="store_true", help="no progress output")

    demo = sub.add_parser("demo", help="load a bundled set of synthetic patients")
    with_database(demo)

    rei = sub.add_parser(
        "reindex", help="rebuild the search index of current resources (no new versions)"
    )
    with_database(rei)
    rei.add_argument("types", nargs="*", metavar="TYPE", help="resource types (default: all)")
    rei.add_argument("--quiet", action="store_true", help="no progress output")

    glucose = sub.add_parser("glucose", help="continuous glucose (CGM) data")
    glucose_sub = glucose.add_subparsers(dest="glucose_command", required=True)
    gimp = glucose_sub.add_parser(
        "import",
        help="import CGM exports (Dexcom Clarity, LibreView, Nightscout entries, id,time,gl) "
        "as sensor-reading Observations of one patient; re-importing adds no duplicates",
    )
    with_database(gimp)
    gimp.add_argument("--patient", required=True, metavar="ID", help="the Patient's id")
    gimp.add_argument(
        "--subject", metavar="NAME", help="the subject to take from an id,time,gl file of several"
    )
    gimp.add_argument("files", nargs="+", type=Path, metavar="FILE")
    from openrecord.glucose_cli import add_nightscout_secret_parser

    add_nightscout_secret_parser(glucose_sub, with_database)
    from openrecord.glucose_cli import add_report_parser

    add_report_parser(glucose_sub, with_database)
    from openrecord.packages_cli import add_packages_parser

    add_packages_parser(sub, with_database)
    from openrecord.alerts_cli import add_alerts_parser

    add_alerts_parser(sub, with_database)
    from openrecord.audit_cli import add_audit_parser

    add_audit_parser(sub, with_database)
    from openrecord.auth.accounts_cli import add_account_parsers
    from openrecord.auth.admin_cli import add_admin_parser

    admin_sub = add_admin_parser(sub, with_database)  # admin subcommands: add-client, rotate-keys…
    add_account_parsers(admin_sub, with_database)  # admin create-user, reset-password

    args = parser.parse_args(argv)
    database = args.database or default_database()
    from openrecord.service.clock import timezone_named

    try:
        timezone_named(args.timezone)
    except ValueError as err:
        parser.error(str(err))
    os.environ["OPENRECORD_TIMEZONE"] = args.timezone  # for this process and the workers
    if args.command == "serve":
        return serve_command(args, database)
    if args.command == "import":
        return import_command(database, args.paths, quiet=args.quiet)
    if args.command == "glucose":
        from openrecord.glucose_cli import glucose_import_command

        handler = getattr(args, "glucose_handler", glucose_import_command)
        return int(handler(database, args))
    if args.command == "reindex":
        return reindex_command(database, args.types, quiet=args.quiet)
    if args.command == "audit":
        from openrecord.audit_cli import audit_command

        return audit_command(database, args)
    if args.command == "admin":
        from openrecord.auth.admin_cli import admin_command

        return admin_command(database, args)
    if args.command == "alerts":
        from openrecord.alerts_cli import alerts_command

        return alerts_command(database, args)
    if args.command == "packages":
        from openrecord.packages_cli import packages_command

        return packages_command(database, args)
    if args.command == "demo":
        from openrecord.demo import demo_files

        return import_command(database, demo_files(), quiet=False)
    return 2


def serve_command(args: argparse.Namespace, database: str) -> int:
    import uvicorn

    from openrecord.auth.admin_cli import apply_auth_options
    from openrecord.store import open_store

    if not apply_auth_options(args):  # --open only on loopback
        return 2
    from openrecord.auth.rate_limit import parse_limits

    try:
        os.environ["OPENRECORD_RATE_LIMITS"] = ",".join(filter(None, args.rate_limit))
        parse_limits(os.environ["OPENRECORD_RATE_LIMITS"])
    except ValueError as err:
        print(f"openrecord: {err}", file=sys.stderr)
        return 2
    # Open once here so migrations run before the workers start.
    open_store(database).close()
    if not args.open:  # the secret key exists and opens every stored TOTP key
        from openrecord.auth.accounts_cli import seal_secrets

        if seal_secrets(database) != 0:
            return 2
    os.environ["OPENRECORD_DATABASE"] = database
    os.environ["OPENRECORD_MAX_BODY_BYTES"] = str(args.max_body_mb * 2**20)
    os.environ["OPENRECORD_DEBUG_SEARCH"] = "1" if args.debug_search else "0"
    os.environ["OPENRECORD_PROFILES"] = args.profiles
    print(
        f"openrecord: FHIR R4 at http://{args.host}:{args.port}/fhir (database {redact(database)})",
        file=sys.stderr,
    )
    uvicorn.run(
        "openrecord.server.asgi:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        access_log=False,
    )
    return 0


def import_command(database: str, paths: Sequence[Path], *, quiet: bool) -> int:
    from openrecord.importer import Importer
    from openrecord.service.records import RecordService
    from openrecord.store import open_store

    missing = [p for p in paths if not p.exists()]
    if missing:
        print(f"openrecord: not found: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    from openrecord.runtime import settle_heap

    store = open_store(database)
    records = RecordService(store)
    records.warm_up()
    settle_heap()
    progress = Progress(quiet)
    try:
        report = Importer(records, progress=progress).import_paths(paths)
    finally:
        store.close()
    elapsed = progress.finish()
    print(
        f"imported {report.resources:,} resources from {report.files} file(s) in {elapsed:.1f} s"
        f" into {redact(database)}; {len(report.errors)} error(s)"
    )
    for error in report.errors:
        print(f"  error: {error}", file=sys.stderr)
    return 1 if report.errors else 0


def reindex_command(database: str, types: Sequence[str], *, quiet: bool) -> int:
    from openrecord.fhir.outcome import FHIRError
    from openrecord.service.clock import configured_timezone
    from openrecord.service.context import SecurityContext
    from openrecord.service.records import RecordService
    from openrecord.service.reindex import reindex
    from openrecord.store import open_store

    store = open_store(database)
    records = RecordService(store, tz=configured_timezone())  # dates as the server reads them
    progress = Progress(quiet)
    try:
        records.warm_up()
        report = reindex(records, SecurityContext.open(), types, progress=progress)
    except FHIRError as err:
        print(f"openrecord: {err}", file=sys.stderr)
        return 2
    finally:
        store.close()
    progress.finish()
    print(
        f"reindexed {report.total:,} resources in {report.seconds:.1f} s"
        f" in {redact(database)}; {report.skipped} skipped (changed meanwhile)"
    )
    return 0


class Progress:
    """Resources done so far and the rate, on one stderr line (nothing when quiet)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.done = 0
        self.started = time.perf_counter()

    def __call__(self, n: int) -> None:
        self.done += n
        if not self.quiet:
            rate = self.done / max(time.perf_counter() - self.started, 1e-9)
            print(f"\r  {self.done:>9,} resources  {rate:>8,.0f}/s", end="", file=sys.stderr)

    def finish(self) -> float:
        """End the progress line; the seconds since the start."""
        if not self.quiet and self.done:
            print(file=sys.stderr)
        return time.perf_counter() - self.started


def redact(url: str) -> str:
    """The database URL without its password, for messages."""
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in creds else url
    return url


if __name__ == "__main__":
    raise SystemExit(main())
