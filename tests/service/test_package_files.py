"""Reading FHIR packages: the npm layout, folders, and hostile or foreign archives."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from openrecord.service import package_files
from openrecord.service.package_files import PackageError, read_package

CS: dict[str, Any] = {
    "resourceType": "CodeSystem",
    "id": "cs",
    "url": "http://example.org/cs",
    "status": "active",
    "content": "complete",
}
VS: dict[str, Any] = {
    "resourceType": "ValueSet",
    "id": "vs",
    "url": "http://example.org/vs",
    "status": "active",
}
MANIFEST = {
    "name": "example.pkg",
    "version": "0.1.0",
    "canonical": "http://example.org",
    "fhirVersions": ["4.0.1"],
}


def archive(
    path: Path, members: list[tuple[str, bytes]], links: list[tuple[str, str]] = ()
) -> Path:  # type: ignore[assignment]
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in links:
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return path


def js(value: Any) -> bytes:
    return json.dumps(value).encode()


def test_npm_layout_keeps_only_the_conformance_resources(tmp_path: Path) -> None:
    path = archive(
        tmp_path / "p.tgz",
        [
            ("package/package.json", js(MANIFEST)),
            ("package/CodeSystem-cs.json", js(CS)),
            ("package/ValueSet-vs.json", js(VS)),
            ("package/.index.json", js({"index-version": 1, "files": []})),
            ("package/Patient-p.json", js({"resourceType": "Patient", "id": "p"})),
            ("package/example/ValueSet-ex.json", js(dict(VS, id="ex"))),
            ("package/other/readme.txt", b"text"),
            ("../ValueSet-escape.json", js(dict(VS, id="escape"))),
            ("/ValueSet-absolute.json", js(dict(VS, id="absolute"))),
            ("package/../ValueSet-dotdot.json", js(dict(VS, id="dotdot"))),
        ],
        links=[("package/ValueSet-link.json", "/etc/passwd")],
    )
    found = read_package(path)
    assert (found.name, found.version, found.canonical) == (
        "example.pkg",
        "0.1.0",
        "http://example.org",
    )
    assert found.fhir_versions == ("4.0.1",)
    assert [r["id"] for r in found.resources] == ["cs", "vs"]
    assert found.ignored == 1  # the Patient beside them


def test_a_folder_named_by_its_implementation_guide(tmp_path: Path) -> None:
    (tmp_path / "CodeSystem-cs.json").write_text(json.dumps(CS))
    (tmp_path / "notes.md").write_text("not json")
    guide = {
        "resourceType": "ImplementationGuide",
        "packageId": "example.ig",
        "version": "2.0.0",
        "url": "http://example.org/ig/ImplementationGuide/example.ig",
        "fhirVersion": ["4.0.1"],
    }
    (tmp_path / "ImplementationGuide-ig.json").write_text(json.dumps(guide))
    found = read_package(tmp_path)
    assert (found.name, found.version, found.canonical) == (
        "example.ig",
        "2.0.0",
        "http://example.org/ig",
    )
    assert [r["id"] for r in found.resources] == ["cs"]


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([("package/package.json", js(dict(MANIFEST, fhirVersions=["5.0.0"])))], "R4"),
        ([("package/package.json", js(MANIFEST)), ("package/x.json", b"{oops")], "x.json"),
        ([("package/package.json", js(MANIFEST)), ("package/y.json", b"[1, 2]")], "y.json"),
        ([("package/readme.txt", b"hello")], "not a FHIR package"),
        ([("package/package.json", js({"name": "", "version": "1"}))], "name"),
    ],
)
def test_foreign_or_broken_packages_are_refused(
    tmp_path: Path, members: list[tuple[str, bytes]], message: str
) -> None:
    with pytest.raises(PackageError, match=message):
        read_package(archive(tmp_path / "bad.tgz", members))


def test_not_an_archive_and_missing_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tgz"
    junk.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(PackageError, match="not a readable"):
        read_package(junk)
    with pytest.raises(PackageError, match="no such file"):
        read_package(tmp_path / "absent.tgz")


def test_oversized_members_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(package_files, "MAX_FILE_BYTES", 100)
    big = dict(CS, description="x" * 200)
    path = archive(
        tmp_path / "big.tgz",
        [("package/package.json", js(MANIFEST)), ("package/CodeSystem-big.json", js(big))],
    )
    with pytest.raises(PackageError, match="too large"):
        read_package(path)
