#!/usr/bin/env python3
"""Copy a few synthetic Synthea patients into the package for `openrecord demo`.

Source: ../shared/data/synthea/transaction-bundles (smart-on-fhir/generated-sample-data,
Apache-2.0; synthetic people, no real patient data). Chosen to show variety: type 2
diabetes with glucose readings, a child, an older adult, a deceased patient.
"""

from __future__ import annotations

import gzip
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "data" / "synthea" / "transaction-bundles"
OUT = ROOT / "src" / "openrecord" / "demo" / "data"
CHOSEN = [
    "Emery_Purdy_298c62e6-b204-4a14-8e21-73d5",  # type 2 diabetes, glucose readings
    "Fabian_Murray_a120c913-9ee0-4fcc-8344-82",  # type 2 diabetes
    "Estrella_Hettinger_e3f14a47-fdfd-49ee-a5",  # a teenager
    "Bruno_Bernhard_4c627fdd-8f65-4ba2-b498-b",  # a young child
    "Blake_Eichmann_6c099f2d-1173-468d-b95f-4",  # a young adult
    "Eddy_Fadel_c0cd7d3c-da6a-4e2f-a130-35e4d",  # deceased
]


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.json.gz"):
        old.unlink()
    for prefix in CHOSEN:
        (src,) = SOURCE.glob(prefix + "*.json")
        target = OUT / (src.name.split("_")[0] + "_" + src.name.split("_")[1] + ".json.gz")
        target.write_bytes(gzip.compress(src.read_bytes(), compresslevel=9, mtime=0))
        print(f"{src.name} -> {target.relative_to(ROOT)} ({target.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
