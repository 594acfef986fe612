"""`openrecord alerts`: webhook endpoints, the delivery worker for cron, the periodic check.

    openrecord alerts webhook add --patient ID --url URL --secret-env NAME [--detail minimal|full]
    openrecord alerts webhook list [--patient ID]
    openrecord alerts webhook remove ID
    openrecord alerts deliver [--once]     # deliver due webhook notifications
    openrecord alerts check                # stale-data and snooze check, once

Endpoints live in a state table, not a FHIR `Endpoint`: an Endpoint is readable
through the API by anyone who may read the record, and it would have to carry the
signing secret or a pointer into server configuration anyway; the secret itself stays
in the environment of the delivering process (`--secret-env` names the variable).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

__all__ = ["add_alerts_parser", "alerts_command"]

_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,127}")


def add_alerts_parser(sub: Any, with_database: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add `alerts` and its subcommands to the `openrecord` parser."""
    alerts = sub.add_parser("alerts", help="glucose alerts: webhooks, delivery, checks")
    alerts_sub = alerts.add_subparsers(dest="alerts_command", required=True)
    webhook = alerts_sub.add_parser("webhook", help="a patient's webhook endpoints")
    hooks = webhook.add_subparsers(dest="webhook_command", required=True)
    add = hooks.add_parser("add", help="send a patient's alerts to a URL (signed, retried)")
    with_database(add)
    add.add_argument("--patient", required=True, metavar="ID")
    add.add_argument("--url", required=True, metavar="URL", help="http(s) URL to POST to")
    add.add_argument(
        "--secret-env",
        required=True,
        metavar="NAME",
        help="environment variable holding the HMAC-SHA256 signing secret (read at delivery)",
    )
    add.add_argument(
        "--detail",
        choices=("minimal", "full"),
        default="minimal",
        help="minimal (default): alert kind, time and Communication reference only; "
        "full: also the patient reference, glucose value, rate and message",
    )
    listing = hooks.add_parser("list", help="list webhook endpoints")
    with_database(listing)
    listing.add_argument("--patient", metavar="ID")
    remove = hooks.add_parser("remove", help="remove a webhook endpoint")
    with_database(remove)
    remove.add_argument("id", metavar="ID")
    deliver = alerts_sub.add_parser("deliver", help="deliver due webhook notifications")
    with_database(deliver)
    deliver.add_argument("--once", action="store_true", help="one pass, then exit (for cron)")
    deliver.add_argument("--lease-seconds", type=float, metavar="S", help="claim lease")
    check = alerts_sub.add_parser("check", help="evaluate stale data and expired snoozes once")
    with_database(check)


def alerts_command(database: str, args: argparse.Namespace) -> int:
    from openrecord.fhir.outcome import FHIRError
    from openrecord.service.clock import configured_timezone
    from openrecord.service.records import RecordService
    from openrecord.store import open_store

    store = open_store(database)
    records = RecordService(store, tz=configured_timezone())
    try:
        if args.alerts_command == "webhook":
            return _webhook(records, args)
        if args.alerts_command == "deliver":
            return _deliver(records, args)
        from openrecord.service.alerts import check_due

        fired = check_due(records)
        print(f"{len(fired)} alert(s) raised")
        return 0
    except FHIRError as err:
        print(f"openrecord: {err}", file=sys.stderr)
        return 1
    finally:
        store.close()


def _webhook(records: Any, args: argparse.Namespace) -> int:
    from openrecord.service.context import SecurityContext

    store = records.store
    if args.webhook_command == "add":
        parts = urlsplit(args.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            print("openrecord: --url must be an http(s) URL", file=sys.stderr)
            return 2
        if not _ENV_NAME.fullmatch(args.secret_env):
            print("openrecord: --secret-env must be an environment variable name", file=sys.stderr)
            return 2
        records.read(SecurityContext.open(purpose="alerts"), "Patient", args.patient)
        id = str(uuid.uuid4())
        with store.write() as tx:
            tx.execute(
                "INSERT INTO alert_webhook (id, patient, url, secret_env, detail, created_us)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (id, args.patient, args.url, args.secret_env, args.detail, time.time_ns() // 1000),
            )
        print(id)
        return 0
    if args.webhook_command == "list":
        sql = "SELECT id, patient, url, secret_env, detail FROM alert_webhook"
        params: tuple[str, ...] = ()
        if args.patient:
            sql, params = sql + " WHERE patient = ?", (args.patient,)
        for row in store.query(sql + " ORDER BY patient, id", params):
            print("\t".join(str(v) for v in row))
        return 0
    with store.write() as tx:
        gone = tx.execute("DELETE FROM alert_webhook WHERE id = ? RETURNING id", (args.id,))
    if not gone:
        print(f"openrecord: no webhook {args.id}", file=sys.stderr)
        return 1
    return 0


def _deliver(records: Any, args: argparse.Namespace) -> int:
    from dataclasses import replace

    from openrecord.service.notifications import DeliveryConfig, deliver_once

    config = DeliveryConfig.from_env()
    if args.lease_seconds is not None:
        config = replace(config, lease_seconds=args.lease_seconds)
    while True:
        report = deliver_once(records.store, config)
        if args.once:
            print(
                f"delivered {report.delivered}, retrying {report.retrying}, failed {report.failed}"
            )
            return 0
        time.sleep(config.poll_seconds)
