"""`openrecord packages add FILE_OR_FOLDER` and `openrecord packages list`.

`add` stores a FHIR package's conformance resources through `RecordService` and
records the package (service/packages.py); servers put its profiles and terminology
to use when they next start, its SearchParameters at once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["add_packages_parser", "packages_command"]


def add_packages_parser(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    with_database: Callable[[argparse.ArgumentParser], None],
) -> None:
    """The `packages` subcommand and its `add`/`list` actions."""
    packages = sub.add_parser("packages", help="FHIR packages (profiles, terminology, searches)")
    actions = packages.add_subparsers(dest="packages_command", required=True)
    add = actions.add_parser(
        "add",
        help="load a FHIR package (.tgz, npm layout) or a folder of JSON conformance resources",
    )
    with_database(add)
    add.add_argument("path", type=Path, metavar="FILE_OR_FOLDER")
    listing = actions.add_parser("list", help="the packages loaded into the database")
    with_database(listing)


def packages_command(database: str, args: argparse.Namespace) -> int:
    from openrecord.cli import redact
    from openrecord.fhir.definitions import definitions
    from openrecord.fhir.outcome import FHIRError
    from openrecord.service.context import SecurityContext
    from openrecord.service.package_files import PackageError, read_package
    from openrecord.service.packages import add_package, installed_packages, profiles_of
    from openrecord.service.records import RecordService
    from openrecord.store import open_store

    if args.packages_command == "add":
        try:
            package = read_package(args.path)
        except PackageError as err:
            print(f"openrecord: {err}", file=sys.stderr)
            return 2
        _, problems = profiles_of(package.resources, definitions())
        store = open_store(database)
        try:
            records = RecordService(store)
            try:
                report = add_package(records, SecurityContext.open("packages add"), package)
            except FHIRError as err:
                print(f"openrecord: {err.issues[0].diagnostics}", file=sys.stderr)
                return 1
        finally:
            store.close()
        written = ", ".join(f"{n} {t}" for t, n in sorted(report.written.items())) or "nothing new"
        print(
            f"loaded {package.name}#{package.version} into {redact(database)}: {written}; "
            f"{report.unchanged} unchanged, {len(report.skipped)} skipped, "
            f"{len(report.built_in)} SearchParameters built into R4 already, "
            f"{package.ignored} other resources ignored"
        )
        for line in report.skipped:
            print(f"  skipped {line}", file=sys.stderr)
        for line in problems:
            print(f"  profile not usable: {line}", file=sys.stderr)
        print("restart the server to validate against its profiles and use its terminology")
        return 0
    store = open_store(database)
    try:
        found = installed_packages(RecordService(store))
    finally:
        store.close()
    if not found:
        print("no packages loaded (US Core, the HL7 CGM IG and R4 core are built in)")
    for p in found:
        when = datetime.fromtimestamp(p.loaded_at / 1e6, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        print(f"{p.name}#{p.version}\t{p.canonical}\t{len(p.resources)} resources\t{when}")
    return 0
