"""The durable notification outbox and its webhook delivery worker.

Every alert is a FHIR Communication (the record) plus one `notification_outbox` row per
channel, written in the same transaction (migration 6):

- **in-app**: the Communication itself, found by FHIR search; the row is marked
  delivered when the patient marks the Communication read (`$mark-read`).
- **webhook**: one row per endpoint the patient has (`openrecord alerts webhook add`).
  The JSON body is fixed when the row is written, so every retry sends the same bytes
  with the same `Idempotency-Key` (the row id). Delivery is at least once: a worker
  claims due rows by a lease (`claimed_until_us`, set with
  `UPDATE … WHERE claimed_until_us <= now`, which only one worker wins), POSTs, and
  marks the row delivered on a 2xx answer; otherwise it retries with exponential
  backoff (base * 2^(attempts-1), capped) until `max_attempts`. A worker that dies
  mid-delivery leaves a claim that expires: another (or the restarted) worker sends
  the row again, with the same idempotency key.

Requests carry `X-OpenRecord-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
"<t>.<body>">` keyed with the endpoint's secret, which is read from the environment
variable the endpoint names (never stored in the database). Logs name rows by id and
errors by HTTP status or exception type only: no URL, body or patient data.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import socket
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import orjson

from openrecord.service.clock import instant, now_micros
from openrecord.store.base import Store, WriteTx

if TYPE_CHECKING:
    from openrecord.care.alerts.rules import Alert
    from openrecord.service.records import RecordService

__all__ = [
    "DeliveryConfig",
    "DeliveryReport",
    "background_delivery",
    "deliver_once",
    "enqueue",
    "signature",
]

log = logging.getLogger("openrecord.alerts")
_SECOND_US = 1_000_000


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    """How the worker delivers; `from_env` reads `OPENRECORD_ALERTS_*`."""

    worker: bool = True  # run the worker inside `openrecord serve`
    poll_seconds: float = 5.0
    check_seconds: float = 60.0  # the periodic stale-data / snooze check
    lease_seconds: float = 60.0
    retry_base_seconds: float = 30.0
    retry_max_seconds: float = 3600.0
    max_attempts: int = 12
    timeout_seconds: float = 10.0
    batch: int = 20

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DeliveryConfig:
        env = os.environ if env is None else env

        def number(name: str, default: float) -> float:
            raw = env.get(f"OPENRECORD_ALERTS_{name}")
            return float(raw) if raw else default

        d = cls()
        return cls(
            worker=env.get("OPENRECORD_ALERTS_WORKER", "1") not in ("0", "false", "no"),
            poll_seconds=number("POLL_SECONDS", d.poll_seconds),
            check_seconds=number("CHECK_SECONDS", d.check_seconds),
            lease_seconds=number("LEASE_SECONDS", d.lease_seconds),
            retry_base_seconds=number("RETRY_BASE_SECONDS", d.retry_base_seconds),
            retry_max_seconds=number("RETRY_MAX_SECONDS", d.retry_max_seconds),
            max_attempts=int(number("MAX_ATTEMPTS", d.max_attempts)),
            timeout_seconds=number("TIMEOUT_SECONDS", d.timeout_seconds),
        )

    @property
    def request_timeout(self) -> float:
        """A request's timeout: at most half the lease, so a claim outlives its request."""
        return min(self.timeout_seconds, self.lease_seconds / 2)

    def backoff_us(self, attempts: int) -> int:
        """The wait after the `attempts`-th failed attempt."""
        seconds = min(self.retry_base_seconds * 2 ** (attempts - 1), self.retry_max_seconds)
        return int(seconds * _SECOND_US)


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    delivered: int = 0
    retrying: int = 0
    failed: int = 0


def _webhook_body(key: str, patient: str, communication: str, alert: Alert, detail: str) -> bytes:
    body: dict[str, Any] = {
        "id": key,
        "type": "openrecord.glucose-alert",
        "alert": alert.kind.value,
        "occurred": instant(alert.time_us),
        "communication": f"Communication/{communication}",
    }
    if detail == "full":  # what the patient chose to send to this endpoint
        body["patient"] = f"Patient/{patient}"
        body["message"] = alert.message
        if alert.mg_dl is not None:
            body["glucose"] = {"value": round(alert.mg_dl, 1), "unit": "mg/dL"}
        if alert.rate is not None:
            body["rate"] = {"value": round(alert.rate, 2), "unit": "mg/dL/min"}
    return orjson.dumps(body)


def enqueue(tx: WriteTx, patient: str, communication: str, alert: Alert, now_us: int) -> None:
    """The outbox rows of one alert's Communication: in-app, and one per webhook."""
    insert = (
        "INSERT INTO notification_outbox (id, communication, patient, channel, webhook, body,"
        " attempts, next_attempt_us, claimed_until_us, created_us)"
        " VALUES (?, ?, ?, ?, ?, ?, 0, ?, 0, ?)"
    )
    tx.execute(
        insert, (str(uuid.uuid4()), communication, patient, "in-app", None, "{}", now_us, now_us)
    )
    hooks = tx.execute(
        "SELECT id, detail FROM alert_webhook WHERE patient = ? ORDER BY id", (patient,)
    )
    for webhook, detail in hooks:
        key = str(uuid.uuid4())
        body = _webhook_body(key, patient, communication, alert, str(detail)).decode()
        tx.execute(insert, (key, communication, patient, "webhook", webhook, body, now_us, now_us))


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """The signature header's value: `t=<timestamp>,v1=<hex HMAC-SHA256(t.body)>`."""
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


@dataclass(frozen=True, slots=True)
class _Claimed:
    id: str
    body: bytes
    attempts: int
    url: str | None
    secret_env: str | None


def _claim(store: Store, worker: str, now: int, config: DeliveryConfig) -> list[_Claimed]:
    """Lease up to `batch` due webhook rows to `worker`; rows another worker holds (an
    unexpired claim) are not taken, and of two workers racing for a row one wins."""
    lease = now + int(config.lease_seconds * _SECOND_US)
    due = store.query(  # a read first: an idle outbox costs no write transaction
        "SELECT id FROM notification_outbox WHERE channel = 'webhook' AND delivered_us IS NULL"
        " AND failed_us IS NULL AND next_attempt_us <= ? AND claimed_until_us <= ? LIMIT 1",
        (now, now),
    )
    if not due:
        return []
    with store.write() as tx:
        ids = tx.execute(
            "UPDATE notification_outbox SET claimed_until_us = ?, claimed_by = ?"
            " WHERE id IN (SELECT id FROM notification_outbox WHERE channel = 'webhook'"
            " AND delivered_us IS NULL AND failed_us IS NULL AND next_attempt_us <= ?"
            " AND claimed_until_us <= ? ORDER BY next_attempt_us LIMIT ?)"
            " AND claimed_until_us <= ? AND delivered_us IS NULL RETURNING id",
            (lease, worker, now, now, config.batch, now),
        )
        if not ids:
            return []
        marks = ", ".join("?" for _ in ids)
        rows = tx.execute(
            "SELECT o.id, o.body, o.attempts, w.url, w.secret_env FROM notification_outbox o"
            f" LEFT JOIN alert_webhook w ON w.id = o.webhook WHERE o.id IN ({marks})"
            " ORDER BY o.next_attempt_us",
            [i for (i,) in ids],
        )
    return [_Claimed(str(i), str(b).encode(), int(a), u, s) for i, b, a, u, s in rows]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer like any other non-2xx: not followed (no POST elsewhere)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def _post(row: _Claimed, config: DeliveryConfig) -> tuple[str | None, bool]:
    """(error or None, whether to give up now) of one delivery attempt."""
    if row.url is None or row.secret_env is None:
        return "webhook removed", True
    secret = os.environ.get(row.secret_env)
    if not secret:
        return "secret not configured", False
    request = urllib.request.Request(
        row.url,
        data=row.body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "openrecord-alerts",
            "Idempotency-Key": row.id,
            "X-OpenRecord-Attempt": str(row.attempts + 1),
            "X-OpenRecord-Signature": signature(secret.encode(), int(time.time()), row.body),
        },
    )
    try:
        with _OPENER.open(request, timeout=config.request_timeout) as answer:
            answer.read(4096)
            status = int(answer.status)
    except urllib.error.HTTPError as err:
        return f"HTTP {err.code}", err.code == 410
    except (OSError, ValueError) as err:  # refused, reset, timeout, bad URL
        return type(err).__name__, False
    return (None, False) if 200 <= status < 300 else (f"HTTP {status}", False)


def _finish(
    store: Store, row: _Claimed, error: str | None, give_up: bool, config: DeliveryConfig
) -> str:
    now = now_micros()
    attempts = row.attempts + 1
    with store.write() as tx:
        if error is None:
            tx.execute(
                "UPDATE notification_outbox SET delivered_us = ?, attempts = ?,"
                " claimed_until_us = 0, last_error = NULL WHERE id = ? AND delivered_us IS NULL",
                (now, attempts, row.id),
            )
            return "delivered"
        if give_up or attempts >= config.max_attempts:
            tx.execute(
                "UPDATE notification_outbox SET failed_us = ?, attempts = ?,"
                " claimed_until_us = 0, last_error = ? WHERE id = ? AND delivered_us IS NULL",
                (now, attempts, error, row.id),
            )
            log.warning(
                "notification %s failed for good after %d attempt(s): %s", row.id, attempts, error
            )
            return "failed"
        tx.execute(
            "UPDATE notification_outbox SET attempts = ?, next_attempt_us = ?,"
            " claimed_until_us = 0, last_error = ? WHERE id = ? AND delivered_us IS NULL",
            (attempts, now + config.backoff_us(attempts), error, row.id),
        )
    log.info("notification %s attempt %d failed (%s); will retry", row.id, attempts, error)
    return "retrying"


def deliver_once(store: Store, config: DeliveryConfig, worker: str | None = None) -> DeliveryReport:
    """One pass: claim and deliver every webhook row due now, batch by batch. A row
    whose claim could run out before its request times out is left to expire and be
    claimed again, rather than sent while another worker may send it too."""
    worker = worker or _worker_name()
    counts = {"delivered": 0, "retrying": 0, "failed": 0}
    seen: set[str] = set()
    while True:
        claimed_at = time.monotonic()
        rows = [r for r in _claim(store, worker, now_micros(), config) if r.id not in seen]
        if not rows:
            break
        for row in rows:
            if time.monotonic() - claimed_at + config.request_timeout >= config.lease_seconds:
                break
            seen.add(row.id)
            error, give_up = _post(row, config)
            counts[_finish(store, row, error, give_up, config)] += 1
    return DeliveryReport(**counts)


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


async def _run(records: RecordService, config: DeliveryConfig, stop: asyncio.Event) -> None:
    from openrecord.service.alerts import check_due

    worker = _worker_name()
    next_check = 0.0
    while not stop.is_set():
        try:
            await anyio.to_thread.run_sync(deliver_once, records.store, config, worker)
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + config.check_seconds
                await anyio.to_thread.run_sync(check_due, records)
        except Exception as exc:  # keep going; no message (it may quote data)
            log.error("alert worker pass failed: %s", type(exc).__name__)
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), config.poll_seconds)


@asynccontextmanager
async def background_delivery(records: RecordService) -> AsyncIterator[None]:
    """Run the delivery worker and the periodic check beside the server (its lifespan);
    off with `OPENRECORD_ALERTS_WORKER=0`. Several server processes each run one: the
    leases keep them from sending a row twice."""
    config = DeliveryConfig.from_env()
    if not config.worker:
        yield
        return
    stop = asyncio.Event()
    task = asyncio.create_task(_run(records, config, stop))
    try:
        yield
    finally:
        stop.set()
        with suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(task, config.timeout_seconds + 5)
