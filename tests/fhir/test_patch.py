"""PATCH bodies: the official FHIR r4-patch test cases, then the edge cases the specs spell out.

The official FHIRPath Patch cases are FHIR XML; a small converter below turns them into FHIR
JSON, shaped (arrays, booleans, numbers) by the R4 StructureDefinitions, so that expected
outputs come from the test files and the spec, never from the implementation under test.
"""

from __future__ import annotations

import copy
import json
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from openrecord.fhir.outcome import FHIRError
from openrecord.fhir.patch import apply_fhirpath_patch, apply_json_patch
from tests.shared_data import SHARED, require_shared

CASES = ("fhir-test-cases", "r4-patch")
CORE_PACKAGE = ("fhir-r4", "hl7.fhir.r4.core-4.0.1.tgz")
UNPACKED_CORE = Path("/tmp/r4core/package")
FHIR = "{http://hl7.org/fhir}"
XHTML = "http://www.w3.org/1999/xhtml"


# --- FHIR XML -> FHIR JSON ----------------------------------------------------------------


class FhirXml:
    """Just enough of the FHIR XML -> JSON mapping for the test cases: `value` attributes,
    typed primitives, `_name` for primitive id/extensions, arrays where max is not 1, choice
    types, contentReference, contained resources and XHTML narrative."""

    def __init__(self, package: Path) -> None:
        self.package = package
        self._elements: dict[str, dict[str, dict[str, Any]]] = {}

    def elements(self, type_name: str) -> dict[str, dict[str, Any]]:
        if type_name not in self._elements:
            sd_file = self.package / f"StructureDefinition-{type_name}.json"
            snapshot = json.loads(sd_file.read_text(encoding="utf-8"))["snapshot"]["element"]
            self._elements[type_name] = {e["path"]: e for e in snapshot}
        return self._elements[type_name]

    def resource(self, el: ET.Element) -> dict[str, Any]:
        name = el.tag.removeprefix(FHIR)
        out: dict[str, Any] = {"resourceType": name}
        self._fill(out, el, name, name)
        return out

    def _lookup(self, type_name: str, path: str, name: str) -> tuple[dict[str, Any], str]:
        """(element definition, concrete type code) of child `name` of element `path`."""
        elements = self.elements(type_name)
        if f"{path}.{name}" in elements:
            e = elements[f"{path}.{name}"]
            return e, e["type"][0]["code"] if "type" in e else "BackboneElement"
        for epath, e in elements.items():
            stem = epath.removeprefix(path + ".").removesuffix("[x]")
            if epath.endswith("[x]") and "." not in stem and name.startswith(stem):
                for t in e["type"]:
                    if name == stem + t["code"][0].upper() + t["code"][1:]:
                        return e, t["code"]
        raise KeyError(f"{type_name}: no element {path}.{name}")

    def _fill(self, out: dict[str, Any], el: ET.Element, type_name: str, path: str) -> None:
        for attr, value in el.attrib.items():  # `id` of any element, `url` of an extension
            if attr != "value":
                out[attr] = value
        for child in el:
            name = child.tag.rpartition("}")[2]
            edef, code = self._lookup(type_name, path, name)
            ext: dict[str, Any] | None = None
            if code == "xhtml":
                div = copy.deepcopy(child)
                div.tail = None
                value: Any = ET.tostring(div, encoding="unicode", default_namespace=XHTML)
            elif code[0].islower() or code.startswith("http://hl7.org/fhirpath/System."):
                value = _typed(code, child.get("value"))
                ext = {}
                self._fill(ext, _without_value(child), "Element", "Element")
            elif code == "Resource" or self._is_resource(code):
                value = self.resource(next(iter(child)))
            else:
                value = {}
                if "contentReference" in edef:
                    self._fill(value, child, type_name, edef["contentReference"].lstrip("#"))
                elif code in ("BackboneElement", "Element"):  # children defined inline
                    self._fill(value, child, type_name, edef["path"])
                else:
                    self._fill(value, child, code, code)
            if edef["max"] != "1":
                out.setdefault(name, []).append(value)
                if ext or f"_{name}" in out:
                    exts = out.setdefault(f"_{name}", [])
                    exts.extend([None] * (len(out[name]) - 1 - len(exts)) + [ext or None])
            else:
                if value is not None:
                    out[name] = value
                if ext:
                    out[f"_{name}"] = ext

    def _is_resource(self, code: str) -> bool:
        sd_file = self.package / f"StructureDefinition-{code}.json"
        return (
            sd_file.exists()
            and json.loads(sd_file.read_text(encoding="utf-8"))["kind"] == "resource"
        )


def _without_value(el: ET.Element) -> ET.Element:
    """The id attribute and extension children of a primitive: what goes into `_name`."""
    stripped = ET.Element(el.tag, {k: v for k, v in el.attrib.items() if k == "id"})
    stripped.extend(list(el))
    return stripped


def _typed(code: str, text: str | None) -> Any:
    if text is None:
        return None
    if code == "boolean":
        return text == "true"
    if code in ("integer", "positiveInt", "unsignedInt"):
        return int(text)
    if code == "decimal":
        return float(text)
    return text


def _canonical_narrative(value: Any) -> Any:
    """XHTML compared as canonical XML: serialisations of the same div differ textually."""
    if isinstance(value, dict):
        return {
            k: ET.canonicalize(v, strip_text=True)
            if k == "div" and isinstance(v, str)
            else _canonical_narrative(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_canonical_narrative(v) for v in value]
    return value


@pytest.fixture(scope="session")
def fhir_xml(tmp_path_factory: pytest.TempPathFactory) -> FhirXml:
    """The converter, over the R4 core package (unpacked in /tmp/r4core, or unpacked here)."""
    if UNPACKED_CORE.is_dir():
        return FhirXml(UNPACKED_CORE)
    tgz = require_shared(*CORE_PACKAGE)
    target = tmp_path_factory.mktemp("r4core")
    with tarfile.open(tgz) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith("package/StructureDef")]
        tar.extractall(target, members=members, filter="data")
    return FhirXml(target / "package")


# --- the official cases -------------------------------------------------------------------


def _missing_data_param(name: str) -> list[Any]:
    return [pytest.param(None, id=f"{name}-shared-data-missing")]


def _json_patch_cases() -> list[Any]:
    path = SHARED.joinpath(*CASES, "json-patch-tests.json")
    if not path.exists():
        return _missing_data_param("json-patch-tests")
    cases = json.loads(path.read_text(encoding="utf-8"))
    return [pytest.param(case, id=case["comment"]) for case in cases]


def _fhir_patch_cases() -> list[Any]:
    path = SHARED.joinpath(*CASES, "fhir-patch-tests.xml")
    if not path.exists():
        return _missing_data_param("fhir-patch-tests")
    cases = ET.parse(path).getroot().findall("case")
    return [pytest.param(case, id=case.get("name")) for case in cases]


@pytest.mark.parametrize("case", _json_patch_cases())
def test_official_json_patch_case(case: dict[str, Any] | None) -> None:
    require_shared(*CASES, "json-patch-tests.json")
    assert case is not None
    doc = copy.deepcopy(case["doc"])
    if "error" in case:
        with pytest.raises(FHIRError) as err:
            apply_json_patch(doc, case["patch"])
        assert err.value.status == 422, case["error"]
    else:
        assert apply_json_patch(doc, case["patch"]) == case["expected"]
    assert doc == case["doc"], "the input was mutated"


@pytest.mark.parametrize("case", _fhir_patch_cases())
def test_official_fhirpath_patch_case(case: ET.Element | None, fhir_xml: FhirXml) -> None:
    require_shared(*CASES, "fhir-patch-tests.xml")
    assert case is not None

    def resource(section: str) -> dict[str, Any]:
        holder = case.find(section)
        assert holder is not None
        return fhir_xml.resource(next(iter(holder)))

    before, diff = resource("input"), resource("diff")
    doc = copy.deepcopy(before)
    error = case.find("error")
    if error is not None:
        with pytest.raises(FHIRError) as err:
            apply_fhirpath_patch(doc, diff)
        assert err.value.status == 422, error.get("msg")
        paths = [
            p["valueString"] for op in diff["parameter"] for p in op["part"] if p["name"] == "path"
        ]
        assert any(path in str(err.value) for path in paths)
    else:
        result = apply_fhirpath_patch(doc, diff)
        assert _canonical_narrative(result) == _canonical_narrative(resource("output"))
    assert doc == before, "the input was mutated"


# --- JSON Patch edge cases (RFC 6902 / RFC 6901) --------------------------------------------


def _status(call: Any, *args: Any) -> tuple[int, str, str]:
    with pytest.raises(FHIRError) as err:
        call(*args)
    issue = err.value.issues[0]
    assert "Traceback" not in issue.diagnostics
    return err.value.status, issue.code, issue.diagnostics


DOC: dict[str, Any] = {"resourceType": "Patient", "a": {"b": [1, 2, 3]}, "t": True, "n": 1}


@pytest.mark.parametrize(
    "patch",
    [
        {"op": "add", "path": "/x", "value": 1},  # not an array
        [[]],  # an operation that is not an object
        [{"op": "frobnicate", "path": "/a"}],
        [{"op": "add", "value": 1}],
        [{"op": "add", "path": "/x"}],
        [{"op": "move", "path": "/x"}],
        [{"op": "remove", "path": "a"}],  # pointers start with '/'
        [{"op": "remove", "path": "/a~2"}],  # '~' only escapes 0 and 1
        # malformed late operations are reported before earlier ones would apply (or fail)
        [{"op": "test", "path": "/n", "value": 2}, {"op": "copy", "path": "/x"}],
    ],
)
def test_json_patch_malformed_is_400(patch: Any) -> None:
    status, code, _ = _status(apply_json_patch, DOC, patch)
    assert status == 400 and code in ("invalid", "structure")


@pytest.mark.parametrize(
    ("patch", "fragment"),
    [
        ([{"op": "remove", "path": "/missing"}], "operation 0 (remove '/missing')"),
        (
            [
                {"op": "test", "path": "/n", "value": 1},
                {"op": "replace", "path": "/zz", "value": 0},
            ],
            "operation 1 (replace '/zz')",
        ),
        ([{"op": "add", "path": "/a/b/4", "value": 0}], "out of range"),
        ([{"op": "add", "path": "/a/b/01", "value": 0}], "not an array index"),
        ([{"op": "remove", "path": "/a/b/-"}], "not an array index"),
        ([{"op": "move", "from": "/a", "path": "/a/c"}], "own child"),
        ([{"op": "remove", "path": ""}], "whole resource"),
        ([{"op": "test", "path": "/t", "value": 1}], "test failed"),  # true is not 1
        ([{"op": "test", "path": "/n", "value": "1"}], "test failed"),
        ([{"op": "add", "path": "", "value": [1]}], "not a JSON object"),
    ],
)
def test_json_patch_that_cannot_apply_is_422(patch: Any, fragment: str) -> None:
    before = copy.deepcopy(DOC)
    status, code, message = _status(apply_json_patch, DOC, patch)
    assert (status, code) == (422, "processing")
    assert fragment in message
    assert before == DOC


def test_json_patch_operations() -> None:
    patch = [
        {"op": "test", "path": "/n", "value": 1.0},  # numbers compare by value
        {"op": "test", "path": "/a", "value": {"b": [1, 2, 3]}},
        {"op": "copy", "from": "/a/b", "path": "/c"},
        {"op": "move", "from": "/a/b/0", "path": "/a/b/-"},
        {"op": "add", "path": "/c/-", "value": {"k/~": 1}},
        {"op": "replace", "path": "/c/3/k~1~0", "value": 2},
        {"op": "remove", "path": "/t"},
        {"op": "move", "from": "/n", "path": "/n"},
    ]
    result = apply_json_patch(DOC, patch)
    assert result == {
        "resourceType": "Patient",
        "a": {"b": [2, 3, 1]},
        "c": [1, 2, 3, {"k/~": 2}],
        "n": 1,
    }
    assert DOC["a"]["b"] == [1, 2, 3], "the input was mutated"
    result["c"][3]["k/~"] = 99
    assert patch[4]["value"] == {"k/~": 1}, "the result aliases the patch document"


def test_json_patch_replaces_the_root() -> None:
    new = {"resourceType": "Basic"}
    assert apply_json_patch(DOC, [{"op": "replace", "path": "", "value": new}]) == new


# --- FHIRPath Patch edge cases ---------------------------------------------------------------


def _op(kind: str, path: str, **parts: Any) -> dict[str, Any]:
    """One operation; `value=` is a value part (a dict), other parts are typed by Python type."""
    out: list[dict[str, Any]] = [
        {"name": "type", "valueCode": kind},
        {"name": "path", "valueString": path},
    ]
    for name, value in parts.items():
        if name == "value":
            out.append({"name": "value", **value})
        else:
            key = "valueInteger" if isinstance(value, int) else "valueString"
            out.append({"name": name, key: value})
    return {"name": "operation", "part": out}


def _params(*ops: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": list(ops)}


BIRTH_EXT = {"extension": [{"url": "http://example.org/time", "valueTime": "10:00:00"}]}
PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "p1",
    "birthDate": "1980-01-01",
    "_birthDate": BIRTH_EXT,
    "name": [{"family": "Doe", "given": ["Ann", "Bea", "Cy"], "_given": [None, BIRTH_EXT, None]}],
    "identifier": [{"value": "1"}, {"value": "2"}],
    "deceasedBoolean": False,
    "contained": [{"resourceType": "Observation", "id": "o1", "status": "final"}],
}


def _patch(*ops: dict[str, Any]) -> dict[str, Any]:
    before = copy.deepcopy(PATIENT)
    result = apply_fhirpath_patch(PATIENT, _params(*ops))
    assert before == PATIENT, "the input was mutated"
    return result


def test_fhirpath_patch_delete_of_nothing_is_not_an_error() -> None:
    assert _patch(_op("delete", "Patient.gender")) == PATIENT


def test_fhirpath_patch_primitive_extensions_follow_their_values() -> None:
    result = _patch(_op("delete", "Patient.birthDate"), _op("delete", "Patient.name.given[0]"))
    assert "birthDate" not in result and "_birthDate" not in result
    assert result["name"][0]["given"] == ["Bea", "Cy"]
    assert result["name"][0]["_given"] == [BIRTH_EXT, None]
    result = _patch(_op("delete", "Patient.name.given[1]"))
    assert "_given" not in result["name"][0]  # no extension left: no `_given` either
    result = _patch(_op("move", "Patient.name.given", source=1, destination=2))
    assert result["name"][0]["given"] == ["Ann", "Cy", "Bea"]
    assert result["name"][0]["_given"] == [None, None, BIRTH_EXT]
    result = _patch(
        _op("insert", "Patient.name.given", index=0, value={"valueString": "Al"}),
        _op("replace", "Patient.birthDate", value={"valueDate": "1981-02-02"}),
    )
    assert result["name"][0]["_given"] == [None, None, BIRTH_EXT, None]
    assert result["birthDate"] == "1981-02-02" and "_birthDate" not in result  # whole element
    result = _patch(_op("delete", "Patient.birthDate.extension"))
    assert result["birthDate"] == "1980-01-01" and "_birthDate" not in result


def test_fhirpath_patch_adds_extensions_to_primitives() -> None:
    ext = {"part": [{"name": "url", "valueUri": "http://x"}, {"name": "value", "valueCode": "y"}]}
    result = _patch(
        _op("add", "Patient.name.given[2]", name="extension", value=ext),
        _op("add", "Patient.birthDate", name="extension", value=ext),
        _op(
            "add", "Patient", name="gender", value={"valueCode": "other", "_valueCode": {"id": "g"}}
        ),
    )
    added = {"url": "http://x", "valueCode": "y"}
    assert result["name"][0]["_given"] == [None, BIRTH_EXT, {"extension": [added]}]
    assert result["_birthDate"]["extension"] == [*BIRTH_EXT["extension"], added]
    assert (result["gender"], result["_gender"]) == ("other", {"id": "g"})


def test_fhirpath_patch_choice_elements_use_the_concrete_name() -> None:
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
    quantity = {"valueQuantity": {"value": 5, "unit": "mg"}}
    added = apply_fhirpath_patch(
        obs, _params(_op("add", "Observation", name="value", value=quantity))
    )
    assert added["valueQuantity"] == {"value": 5, "unit": "mg"}
    replaced = apply_fhirpath_patch(
        added, _params(_op("replace", "Observation.value", value={"valueString": "five"}))
    )
    assert "valueQuantity" not in replaced and replaced["valueString"] == "five"
    status, _, message = _status(
        apply_fhirpath_patch,
        obs,
        _params(_op("add", "Observation", name="value", value={"valueHumanName": {"text": "x"}})),
    )
    assert status == 422 and "value[x]" in message
    status, _, message = _status(
        apply_fhirpath_patch,
        added,
        _params(_op("add", "Observation", name="value", value={"valueString": "x"})),
    )
    assert status == 422 and "already has a value" in message


def test_fhirpath_patch_reaches_into_contained_resources() -> None:
    result = _patch(
        _op("replace", "Patient.contained.where(id = 'o1').status", value={"valueCode": "amended"})
    )
    assert result["contained"][0]["status"] == "amended"


@pytest.mark.parametrize(
    ("op", "fragment"),
    [
        (_op("replace", "Patient.gender", value={"valueCode": "male"}), "no content"),
        (_op("add", "Patient.contact", name="gender", value={"valueCode": "male"}), "no content"),
        (_op("insert", "Patient.link", index=0, value={"valueString": "x"}), "no content"),
        (
            _op("replace", "Patient.identifier", value={"valueIdentifier": {"value": "3"}}),
            "matches 2",
        ),
        (_op("delete", "Patient.identifier"), "matches 2"),
        (_op("delete", "Patient"), "resource itself"),
        (_op("insert", "Patient.identifier", index=3, value={"valueIdentifier": {}}), "index 3"),
        (_op("insert", "Patient.identifier", index=-1, value={"valueIdentifier": {}}), "index -1"),
        (_op("move", "Patient.identifier", source=2, destination=0), "source 2"),
        (_op("move", "Patient.identifier", source=0, destination=2), "destination 2"),
        (_op("move", "Patient.birthDate", source=0, destination=0), "single list"),
        (_op("add", "Patient", name="id", value={"valueId": "p2"}), "already has a value"),
        (
            _op("add", "Patient", name="nickname", value={"valueString": "x"}),
            "not a known element",
        ),
        (_op("add", "Patient", name="name", value={"valueString": "x"}), "not valid"),
        (_op("replace", "Patient.id", value={"valueHumanName": {"text": "x"}}), "not valid"),
        (_op("add", "Patient.id", name="family", value={"valueString": "x"}), "complex element"),
        (
            _op("replace", "Patient.name.family.length()", value={"valueString": "x"}),
            "not an element",
        ),
    ],
)
def test_fhirpath_patch_that_cannot_apply_is_422(op: dict[str, Any], fragment: str) -> None:
    before = copy.deepcopy(PATIENT)
    with pytest.raises(FHIRError) as err:
        apply_fhirpath_patch(PATIENT, _params(_op("delete", "Patient.gender"), op))
    issue = err.value.issues[0]
    assert (err.value.status, issue.code, issue.expression) == (
        422,
        "processing",
        "Parameters.parameter[1]",
    )
    assert "operation 1" in issue.diagnostics and fragment in issue.diagnostics
    assert before == PATIENT


@pytest.mark.parametrize(
    "body",
    [
        {"resourceType": "Patient"},
        {"resourceType": "Parameters", "parameter": {}},
        _params({"name": "op", "part": []}),
        _params({"name": "operation"}),
        _params(_op("upsert", "Patient")),
        _params(_op("replace", "Patient.id")),  # no value
        _params(_op("add", "Patient", value={"valueString": "x"})),  # no name
        _params(_op("insert", "Patient.identifier", index="0", value={"valueString": "x"})),
        _params(_op("delete", "Patient.name.where(")),  # not FHIRPath
        _params(_op("add", "Patient", name="a", value={"part": []})),
        _params(_op("add", "Patient", name="a", value={"part": [{"valueString": "x"}]})),
        _params(_op("add", "Patient", name="a", value={"valueString": "x", "part": []})),
        _params({"name": "operation", "part": [{"name": "type", "valueCode": "delete"}] * 2}),
    ],
)
def test_fhirpath_patch_malformed_is_400(body: Any) -> None:
    status, code, message = _status(apply_fhirpath_patch, PATIENT, body)
    assert status == 400 and code in ("invalid", "structure"), message


def test_fhirpath_patch_builds_complex_values_from_nested_parts() -> None:
    name = {
        "part": [
            {"name": "family", "valueString": "Roe"},
            {"name": "given", "valueString": "Al"},  # HumanName.given is 0..*: an array
            {"name": "given", "valueString": "Bo", "_valueString": {"id": "g2"}},
        ]
    }
    result = _patch(
        _op("add", "Patient", name="name", value=name),
        _op("add", "Patient", name="contained", value={"resource": {"resourceType": "Basic"}}),
        _op("replace", "Patient.identifier[1]", value={"valueIdentifier": {"value": "9"}}),
    )
    assert result["name"][1] == {
        "family": "Roe",
        "given": ["Al", "Bo"],
        "_given": [None, {"id": "g2"}],
    }
    assert result["contained"][1] == {"resourceType": "Basic"}
    assert result["identifier"] == [{"value": "1"}, {"value": "9"}]
