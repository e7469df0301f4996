from __future__ import annotations

from pathlib import Path

import pytest

from fsad_bench.errors import DatasetError, ProtocolError
from fsad_bench.protocols.manifests import (
    SupportEntry,
    check_entries,
    load_manifest,
    write_manifest,
)
from fsad_bench.protocols.protocol import (
    PROTOCOL_DIR,
    derive_seed,
    list_protocol_files,
    load_protocol,
    sample_support,
)

POOL = [f"cat/train/good/{i:03d}.png" for i in range(20)]


def test_builtin_protocols_load_and_hash_stably() -> None:
    names = {p.stem for p in list_protocol_files()}
    assert {"mvtec_ad_loo", "mpdd_loo", "synthetic_loo", "elpv_loo"} <= names
    for name in names:
        protocol = load_protocol(name)
        assert protocol.definition_hash() == load_protocol(name).definition_hash()
        assert protocol.meta_train == "leave_one_out"


def test_include_inherits_and_overrides() -> None:
    thesis = load_protocol("mvtec_ad_thesis")
    base = load_protocol("mvtec_ad_loo")
    assert thesis.shots == (1, 5, 10)
    assert thesis.categories == base.categories and len(base.categories) == 15
    # shots and seeds select episodes; they do not change what an episode means
    assert thesis.definition_hash() == base.definition_hash()


def test_unknown_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("name: x\nversion: 1\ndataset: d\nlayout: mvtec\nshots: [1]\nseeds: [0]\n"
                    "image_size: 64\nshotz: [2]\n")  # fmt: skip
    with pytest.raises(ProtocolError, match="shotz"):
        load_protocol(str(path))


def test_support_sampling_is_seeded_nested_and_seed_dependent() -> None:
    protocol = load_protocol("mvtec_ad_loo")
    one = sample_support(protocol, "cat", 4, 0, POOL)
    assert one == sample_support(protocol, "cat", 4, 0, list(reversed(POOL)))
    assert len(set(one)) == 4 and set(one) <= set(POOL)
    assert sample_support(protocol, "cat", 2, 0, POOL) == one[:2]  # K=2 within K=4
    assert one != sample_support(protocol, "cat", 4, 1, POOL)
    assert one != sample_support(protocol, "other", 4, 0, POOL)


def test_k_larger_than_pool_names_the_category() -> None:
    protocol = load_protocol("mvtec_ad_loo")
    with pytest.raises(ProtocolError, match=r"'cat' has only 20 .* K=21"):
        sample_support(protocol, "cat", 21, 0, POOL)


def test_derive_seed_is_stable_across_processes() -> None:
    # sha256-based, so it must not depend on PYTHONHASHSEED: compare with a fixed digest
    import hashlib

    expected = int.from_bytes(hashlib.sha256(b"a/1").digest()[:4], "little")
    assert derive_seed("a", 1) == expected


def test_manifest_roundtrip_and_checks(tmp_path: Path) -> None:
    import numpy as np
    from conftest import write_png

    from fsad_bench.datasets.hashing import pixel_sha256

    image = write_png(tmp_path / "c" / "train" / "good" / "000.png", np.zeros((4, 4), np.uint8))
    entries = [SupportEntry("c/train/good/000.png", pixel_sha256(image))]
    protocol = load_protocol("mvtec_ad_loo")
    write_manifest(tmp_path / "m.json", protocol, {"c/k1/seed0": entries})
    assert load_manifest(tmp_path / "m.json") == {"c/k1/seed0": entries}
    check_entries(tmp_path, entries, tmp_path / "m.json")
    write_png(image, np.ones((4, 4), np.uint8))
    with pytest.raises(DatasetError, match="pixels differ"):
        check_entries(tmp_path, entries, tmp_path / "m.json")
    with pytest.raises(DatasetError, match="missing"):
        check_entries(tmp_path, [SupportEntry("c/nope.png")], tmp_path / "m.json")


def test_mvtec_manifest_matches_counts(tmp_path: Path) -> None:
    """The shipped MVTec manifest is the one the published counts and the sampler give."""
    import csv

    from fsad_bench.protocols.manifests import manifest_from_counts

    protocol = load_protocol("mvtec_ad_loo")
    with open(PROTOCOL_DIR / "mvtec_ad_counts.csv", encoding="utf-8") as handle:
        counts = {row["category"]: int(row["train_good"]) for row in csv.DictReader(handle)}
    shipped = load_manifest(protocol.manifest_path())
    rebuilt = manifest_from_counts(protocol, counts, tmp_path / "rebuilt.json")
    assert load_manifest(rebuilt) == shipped
    assert len(shipped) == 15 * len(protocol.shots) * len(protocol.seeds)


def test_freezing_a_protocol_that_inherits_its_manifest_does_not_overwrite_the_parents() -> None:
    from fsad_bench.protocols.manifests import freeze_manifest

    quick = load_protocol("synthetic_quick")
    path = quick.manifest_path()
    before = path.read_bytes()
    with pytest.raises(ProtocolError, match="also holds .* episode.*shared with the protocol"):
        freeze_manifest(quick)
    assert path.read_bytes() == before
    # mvtec_ad_thesis includes mvtec_ad_loo under the same name, with fewer K
    thesis = load_protocol("mvtec_ad_thesis")
    with pytest.raises(ProtocolError, match="also holds"):
        freeze_manifest(thesis)
