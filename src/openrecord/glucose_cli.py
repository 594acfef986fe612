"""`openrecord glucose import`: CGM exports → sensor-reading Observations of one patient.

The format of each file is detected from its content (care/glucose/importers.py);
Clarity and LibreView hold local wall-clock times, read in `--timezone`. Readings are
written through `RecordService` in transaction Bundles with ids derived from patient
and instant, so importing a file twice, or overlapping exports, adds no duplicates.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from openrecord.care.glucose.importers import GlucoseImportError, parse_export
from openrecord.care.glucose.readings import Reading

__all__ = [
    "add_nightscout_secret_parser",
    "add_report_parser",
    "glucose_import_command",
    "glucose_report_command",
    "nightscout_secret_command",
]


def _readings_of(args: argparse.Namespace) -> list[Reading] | str:
    """Every reading of the files (sorted, one per instant), or an error message."""
    by_time: dict[int, Reading] = {}
    for path in args.files:
        try:
            result = parse_export(path.read_bytes(), zone=args.timezone)
        except (OSError, UnicodeDecodeError, GlucoseImportError) as err:
            return f"{path}: {err}"
        if args.subject is not None:
            if args.subject not in result.series:
                return f"{path}: no subject {args.subject!r} (found {', '.join(result.series)})"
            series = result.series[args.subject]
        elif len(result.series) > 1:
            return (
                f"{path}: {len(result.series)} subjects ({', '.join(result.series)}); use --subject"
            )
        else:
            series = result.readings
        for reading in series:
            by_time.setdefault(reading.time_us, reading)
        print(
            f"{path}: {result.format}, {len(series):,} readings, {result.duplicates} duplicate(s),"
            f" {len(result.skipped)} skipped row(s)",
            file=sys.stderr,
        )
        for row in result.skipped[:10]:
            print(f"  line {row.line}: {row.reason}", file=sys.stderr)
    return [by_time[t] for t in sorted(by_time)]


def glucose_import_command(database: str, args: argparse.Namespace) -> int:
    from openrecord.cli import redact
    from openrecord.fhir.outcome import FHIRError
    from openrecord.service.clock import configured_timezone
    from openrecord.service.context import SecurityContext
    from openrecord.service.glucose import import_readings
    from openrecord.service.records import RecordService
    from openrecord.store import open_store

    readings = _readings_of(args)
    if isinstance(readings, str):
        print(f"openrecord: {readings}", file=sys.stderr)
        return 2
    store = open_store(database)
    records = RecordService(store, tz=configured_timezone())
    ctx = SecurityContext.open(purpose="import")
    try:
        report = import_readings(records, ctx, args.patient, readings)
    except FHIRError as err:
        print(f"openrecord: {err}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(
        f"imported {report.readings:,} readings for Patient/{args.patient}"
        f" ({report.created:,} new) into {redact(database)}"
    )
    return 0


def add_nightscout_secret_parser(
    glucose_sub: argparse._SubParsersAction[argparse.ArgumentParser],
    with_database: Callable[[argparse.ArgumentParser], None],
) -> None:
    """`openrecord glucose nightscout-secret --patient ID [--revoke]`."""
    p = glucose_sub.add_parser(
        "nightscout-secret",
        help="create (print once) a Nightscout API secret that uploads readings for one "
        "patient at /api/v1/entries, or revoke that patient's secrets",
    )
    with_database(p)
    p.add_argument("--patient", required=True, metavar="ID", help="the Patient's id")
    p.add_argument(
        "--revoke", action="store_true", help="revoke every Nightscout secret of the patient"
    )
    p.set_defaults(glucose_handler=nightscout_secret_command)


def nightscout_secret_command(database: str, args: argparse.Namespace) -> int:
    """Create a secret (only a hash of its SHA-1 is stored) or revoke the patient's."""
    from openrecord.cli import redact
    from openrecord.fhir.outcome import FHIRError
    from openrecord.server.nightscout import issue_secret, revoke_secrets
    from openrecord.service.clock import configured_timezone
    from openrecord.service.context import SecurityContext
    from openrecord.service.records import RecordService
    from openrecord.store import open_store

    store = open_store(database)
    try:
        if args.revoke:
            count = revoke_secrets(store, args.patient)
            print(f"revoked {count} Nightscout secret(s) of Patient/{args.patient}")
            return 0
        records = RecordService(store, tz=configured_timezone())
        try:
            records.read(SecurityContext.open(purpose="nightscout-secret"), "Patient", args.patient)
        except FHIRError as err:
            print(f"openrecord: {err}", file=sys.stderr)
            return 1
        secret = issue_secret(store, args.patient)
    finally:
        store.close()
    from openrecord.care.glucose.nightscout import secret_sha1

    print(f"Nightscout API secret for Patient/{args.patient} in {redact(database)}")
    print("(shown once; only a hash is kept — revoke with --revoke):")
    print(f"  API_SECRET      {secret}")
    print(f"  api-secret hash {secret_sha1(secret)}")
    print("Uploaders: Nightscout URL = this server's root (https://HOST), API secret as above.")
    return 0


def add_report_parser(
    glucose_sub: argparse._SubParsersAction[argparse.ArgumentParser],
    with_database: Callable[[argparse.ArgumentParser], None],
) -> None:
    """`openrecord glucose report --patient ID [--start --end] [--format] --output FILE`."""
    p = glucose_sub.add_parser(
        "report",
        help="write a patient's Ambulatory Glucose Profile (AGP) report as SVG, PDF or a "
        "FHIR DiagnosticReport carrying the PDF",
    )
    with_database(p)
    p.add_argument("--patient", required=True, metavar="ID", help="the Patient's id")
    p.add_argument(
        "--start", metavar="DATE", help="first day or instant (default: 14 days before --end)"
    )
    p.add_argument(
        "--end", metavar="DATE", help="end of the period, exclusive (default: tomorrow, local)"
    )
    p.add_argument("--format", choices=("svg", "pdf", "fhir"), default="pdf")
    p.add_argument("--unit", choices=("mg/dL", "mmol/L"), default="mg/dL")
    p.add_argument("--page", choices=("a4", "letter"), default="a4", help="PDF page size")
    p.add_argument("--output", required=True, metavar="FILE", help="where to write; - for stdout")
    p.set_defaults(glucose_handler=glucose_report_command)


def glucose_report_command(database: str, args: argparse.Namespace) -> int:
    """Build the AGP through the record service (operator access) and write it."""
    from datetime import datetime, timedelta
    from pathlib import Path

    import orjson

    from openrecord.fhir.outcome import FHIRError
    from openrecord.server.ops_agp import agp_report
    from openrecord.service.clock import configured_timezone
    from openrecord.service.context import SecurityContext
    from openrecord.service.glucose import parse_bound
    from openrecord.service.records import RecordService
    from openrecord.store import open_store

    zone = configured_timezone()
    tomorrow = datetime.now(zone).date() + timedelta(days=1)
    end_text = args.end or tomorrow.isoformat()
    store = open_store(database)
    try:
        records = RecordService(store, tz=zone)
        end = parse_bound(end_text, "--end", zone)
        if args.start is None:
            first = datetime.fromisoformat(end_text[:10]).date() - timedelta(days=14)
            start_text = first.isoformat()
        else:
            start_text = args.start
        start = parse_bound(start_text, "--start", zone)
        ctx = SecurityContext.open(purpose="report")
        report = agp_report(
            records, ctx, args.patient, start, end, zone=zone, unit=args.unit, page=args.page
        )
    except FHIRError as err:
        print(f"openrecord: {err}", file=sys.stderr)
        return 1
    finally:
        store.close()
    if args.format == "svg":
        body = report.svg()
    elif args.format == "pdf":
        body = report.pdf()
    else:
        body = orjson.dumps(report.diagnostic_report(), option=orjson.OPT_INDENT_2)
    if args.output == "-":
        sys.stdout.buffer.write(body)
    else:
        Path(args.output).write_bytes(body)
        print(f"wrote the AGP report of Patient/{args.patient} ({args.format}) to {args.output}")
    return 0
