"""The server's time zone (`--timezone`): dates and times written without a zone, in
data and in search criteria, are local to the server (search.html#date)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.databases import backends
from tests.server.conftest import running_server


@pytest.fixture(scope="module", params=backends())
def new_york(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    folder: Path = tmp_path_factory.mktemp("tz")
    with (
        running_server(request.param, folder, "--timezone", "America/New_York") as server,
        httpx.Client(base_url=server.base, timeout=60) as client,
    ):
        yield client


def test_dates_without_a_zone_are_in_the_servers_zone(new_york: httpx.Client) -> None:
    tag = uuid.uuid4().hex
    code = {"coding": [{"system": "urn:test:tz", "code": tag}]}

    def observation(effective: str) -> str:
        body = {
            "resourceType": "Observation",
            "status": "final",
            "code": code,
            "effectiveDateTime": effective,
        }
        r = new_york.post("/Observation", json=body)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    # 02:00Z on June 2 is 22:00 on June 1 in New York (EDT, UTC-4)
    late = observation("2020-06-02T02:00:00Z")
    # a date without a time: all of June 3 in New York, [04:00Z June 3, 04:00Z June 4)
    day = observation("2020-06-03")

    def found(value: str) -> list[str]:
        bundle = new_york.get(
            "/Observation", params={"code": f"urn:test:tz|{tag}", "date": value}
        ).json()
        return sorted(e["resource"]["id"] for e in bundle.get("entry", []))

    assert found("2020-06-01") == [late]  # June 1 in New York holds 22:00 EDT
    assert found("2020-06-02") == []  # in UTC it would have matched
    assert found("2020-06-01T22:00") == [late]  # minute precision, New York time
    assert found("2020-06-02T02:00Z") == [late]  # an explicit zone is taken as written
    # 01:00Z June 4 is still June 3 in New York: inside the date's day
    assert found("ge2020-06-04T01:00:00Z") == [day]
    assert found("ge2020-06-04T04:00:00Z") == []
