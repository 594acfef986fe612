"""`openrecord glucose import`: CGM exports → sensor-reading Observations of one patient.

The format of each file is detected from its content (care/glucose/importers.py);
Clarity and LibreView hold local wall-clock times, read in `--timezone`. Readings are
written through `RecordService` in transaction Bundles with ids derived from patient
and instant, so importing a file twice, or overlapping exports, adds no duplicates.
"""

from __future__ import annotations

import argparse
import sys

from openrecord.care.glucose.importers import GlucoseImportError, parse_export
from openrecord.care.glucose.readings import Reading

__all__ = ["glucose_import_command"]


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
