"""Reading a FHIR package: an npm-style `.tgz` (`package/package.json` and the resources
beside it) or a folder of JSON resources, as `openrecord packages add` takes it.

Only the conformance resources the server uses are kept (StructureDefinition,
SearchParameter, ValueSet, CodeSystem, ConceptMap); examples (`package/example/`)
and other files are left out. The archive is read in memory, never extracted: member
names cannot write anywhere, links and devices are ignored, and sizes are bounded.
"""

from __future__ import annotations

import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

__all__ = [
    "CONFORMANCE_TYPES",
    "MAX_FILE_BYTES",
    "MAX_TOTAL_BYTES",
    "PackageContents",
    "PackageError",
    "read_package",
]

CONFORMANCE_TYPES = (
    "CodeSystem",
    "ValueSet",
    "ConceptMap",
    "StructureDefinition",
    "SearchParameter",
)
MAX_FILE_BYTES = 64 * 2**20
MAX_TOTAL_BYTES = 1024 * 2**20
_MAX_MEMBERS = 200_000
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-+]{0,199}")


class PackageError(ValueError):
    """The file or folder is not a package this server can load."""


@dataclass(frozen=True, slots=True)
class PackageContents:
    name: str
    version: str
    canonical: str
    fhir_versions: tuple[str, ...]
    resources: list[dict[str, Any]]  # conformance resources, in file order
    ignored: int  # other resources (examples, ImplementationGuide, CapabilityStatement…)


def read_package(path: Path) -> PackageContents:
    """The package at `path` (a `.tgz`/`.tar.gz` file or a folder); PackageError if not one."""
    if path.is_dir():
        return _from_files(_folder_files(path), default_name=path.name)
    if not path.is_file():
        raise PackageError(f"{path}: no such file or folder")
    try:
        with tarfile.open(path, "r:*") as tar:
            return _from_files(_archive_files(tar), default_name=path.name)
    except (tarfile.TarError, EOFError, OSError) as err:
        raise PackageError(f"{path}: not a readable .tgz package ({err})") from None


def _folder_files(folder: Path) -> list[tuple[str, bytes]]:
    out = []
    total = 0
    for file in sorted(folder.iterdir()):
        if not file.is_file() or file.is_symlink() or file.suffix.lower() != ".json":
            continue
        size = file.stat().st_size
        total += size
        if size > MAX_FILE_BYTES or total > MAX_TOTAL_BYTES:
            raise PackageError(f"{file}: the package is too large to load")
        out.append((file.name, file.read_bytes()))
    return out


def _archive_files(tar: tarfile.TarFile) -> list[tuple[str, bytes]]:
    out = []
    total = 0
    for count, member in enumerate(tar):
        if count > _MAX_MEMBERS:
            raise PackageError("the archive has too many members")
        parts = member.name.replace("\\", "/").lstrip("./").split("/")
        # the standard layout: package/<file>.json; package/example/… and others are not loaded
        if not member.isfile() or len(parts) != 2 or parts[0] != "package":
            continue
        if not parts[1].lower().endswith(".json") or parts[1].startswith("."):
            continue
        total += member.size
        if member.size > MAX_FILE_BYTES or total > MAX_TOTAL_BYTES:
            raise PackageError(f"{member.name}: the package is too large to load")
        handle = tar.extractfile(member)
        if handle is not None:
            out.append((parts[1], handle.read(MAX_FILE_BYTES + 1)))
    return out


def _from_files(files: list[tuple[str, bytes]], default_name: str) -> PackageContents:
    manifest: dict[str, Any] | None = None
    resources: list[dict[str, Any]] = []
    guide: dict[str, Any] | None = None
    ignored = 0
    for file_name, data in files:
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError as err:
            raise PackageError(f"{file_name}: not valid JSON ({err})") from None
        if not isinstance(parsed, dict):
            raise PackageError(f"{file_name}: not a JSON object")
        if file_name == "package.json":
            manifest = parsed
        elif parsed.get("resourceType") in CONFORMANCE_TYPES:
            resources.append(parsed)
        else:
            if parsed.get("resourceType") == "ImplementationGuide" and guide is None:
                guide = parsed
            ignored += 1
    if manifest is None and guide is None and not resources:
        raise PackageError("no package.json and no conformance resources: not a FHIR package")
    source = manifest or {}
    name: Any
    version: Any
    if manifest is not None:  # the manifest's name and version are the package's, as given
        name, version = manifest.get("name"), manifest.get("version")
    else:
        name = (guide or {}).get("packageId") or default_name
        version = (guide or {}).get("version") or "current"
    canonical = (
        source.get("canonical")
        or str((guide or {}).get("url", "")).split("/ImplementationGuide")[0]
    )
    versions = source.get("fhirVersions") or source.get("fhir-version-list") or []
    if not versions and guide is not None:
        versions = guide.get("fhirVersion") or []
    if not isinstance(versions, list):
        versions = [versions]
    fhir_versions = tuple(str(v) for v in versions)
    if fhir_versions and not any(v.startswith("4.0") for v in fhir_versions):
        raise PackageError(
            f"package {name}#{version} is for FHIR {', '.join(fhir_versions)}; this server is R4"
        )
    for key, value in (("name", name), ("version", version)):
        if not isinstance(value, str) or not _NAME.fullmatch(value):
            raise PackageError(
                f"the package {key} {value!r} is missing or not letters, digits, '.', '-', '_'"
            )
    return PackageContents(
        str(name), str(version), str(canonical or ""), fhir_versions, resources, ignored
    )
