"""Regenerate the frozen support manifests under protocols/manifests/.

    python scripts/freeze_manifests.py            # all of them
MVTec AD: from the published train counts (protocols/mvtec_ad_counts.csv), no data needed.
Synthetic (v1, v2) and ELPV: from the data (generated / installed), with pixel hashes, the
support manifests and the test manifests.
"""

from __future__ import annotations

import csv

from fsad_bench.protocols.manifests import (
    freeze_manifest,
    freeze_test_manifest,
    manifest_from_counts,
)
from fsad_bench.protocols.protocol import PROTOCOL_DIR, load_protocol
from fsad_bench.run.config import resolve_protocol


def main() -> None:
    protocol = load_protocol("mvtec_ad_loo")
    with open(PROTOCOL_DIR / "mvtec_ad_counts.csv", encoding="utf-8") as handle:
        counts = {row["category"]: int(row["train_good"]) for row in csv.DictReader(handle)}
    print(manifest_from_counts(protocol, counts, protocol.manifest_path()))
    for name in ("synthetic_loo", "elpv_loo", "synthetic2_loo"):
        protocol = resolve_protocol({"protocol": name})
        print(freeze_manifest(protocol))
        print(freeze_test_manifest(protocol))


if __name__ == "__main__":
    main()
