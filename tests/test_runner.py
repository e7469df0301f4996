"""End-to-end runs on tiny MVTec-layout data: records, resume, failures, the train/test wall."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_mvtec_category

from fsad_bench.errors import DatasetError, FsadError, PluginError, ProtocolError
from fsad_bench.run.config import build_run_config
from fsad_bench.run.runner import run
from fsad_bench.store import read_records

pytestmark = pytest.mark.usefixtures("fake_methods")


def config(root: Path, out: Path, methods: str = "meandist", **extra: object):
    options = {"data_root": root, "layout": "mvtec", "methods": methods, "shots": "1,2",
               "seeds": "0,1", "out": out, "image_size": 32, **extra}  # fmt: skip
    return build_run_config(options)


def test_run_writes_one_record_per_episode_with_scores(mvtec_root: Path, tmp_path: Path) -> None:
    summary = run(config(mvtec_root, tmp_path / "run"), log=lambda _: None)
    records = read_records(tmp_path / "run")
    assert summary.played == len(records) == 3 * 2 * 2
    assert {(r.category, r.k, r.seed) for r in records} == {
        (c, k, s) for c in ("alpha", "beta", "gamma") for k in (1, 2) for s in (0, 1)
    }
    for record in records:
        assert record.status == "ok"
        assert all(0.0 <= v <= 1.0 for v in record.metrics.values())
        sidecar = json.loads((tmp_path / "run" / record.scores_file).read_text())
        assert len(sidecar["scores"]) == len(sidecar["labels"]) == 6
        assert record.provenance["support"][0].startswith(f"{record.category}/train/good/")
    # bright-square defects are trivially separable by the mean-distance method
    assert all(r.metrics["image_auroc"] == 1.0 for r in records)


def test_same_seed_same_scores(mvtec_root: Path, tmp_path: Path) -> None:
    run(config(mvtec_root, tmp_path / "a"), log=lambda _: None)
    run(config(mvtec_root, tmp_path / "b"), log=lambda _: None)
    a, b = read_records(tmp_path / "a"), read_records(tmp_path / "b")
    assert [(r.result_key, r.metrics, r.support_manifest_hash) for r in a] == [
        (r.result_key, r.metrics, r.support_manifest_hash) for r in b
    ]


def test_resume_plays_only_missing_episodes(mvtec_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    run(config(mvtec_root, out), log=lambda _: None)
    full = {r.result_key: r.metrics for r in read_records(out)}
    lines = (out / "records.jsonl").read_text().splitlines(keepends=True)
    torn = "".join(lines[:7]) + lines[7][:50]  # as if killed while writing the 8th line
    (out / "records.jsonl").write_text(torn)
    summary = run(config(mvtec_root, out), log=lambda _: None)
    assert (summary.played, summary.skipped) == (5, 7)
    records = read_records(out)
    assert len(records) == len({r.result_key for r in records}) == 12
    assert {r.result_key: r.metrics for r in records} == full
    assert run(config(mvtec_root, out), log=lambda _: None).played == 0


def test_resume_refuses_different_params(mvtec_root: Path, tmp_path: Path) -> None:
    run(config(mvtec_root, tmp_path / "run", categories="alpha"), log=lambda _: None)

    with pytest.raises(FsadError, match="use a new --out"):
        run(config(mvtec_root, tmp_path / "run", image_size=48), log=lambda _: None)


def test_resume_with_another_batch_size_is_refused(mvtec_root: Path, tmp_path: Path) -> None:
    """The batch size changes the floats (convolutions round per batch), so it is part of
    the run's identity and of every record, like a parameter."""
    out = tmp_path / "run"
    run(config(mvtec_root, out, categories="alpha", batch_size=4), log=lambda _: None)
    assert {r.settings["batch_size"] for r in read_records(out)} == {4}
    with pytest.raises(FsadError, match="batch_size=4, not 2; use a new --out"):
        run(config(mvtec_root, out, categories="alpha", batch_size=2), log=lambda _: None)


def test_a_protocol_computes_exactly_the_metrics_it_lists(mvtec_root: Path, tmp_path: Path) -> None:
    protocol = tmp_path / "image_only.yaml"
    protocol.write_text(
        "name: image_only\nversion: '1'\ndataset: tiny\nlayout: mvtec\nshots: [1]\n"
        f"seeds: [0]\nimage_size: 32\ndata_root: {mvtec_root}\nmetrics: [image_auroc, image_ap]\n"
    )
    options = {"protocol": str(protocol), "methods": "meandist", "out": tmp_path / "run"}
    run(build_run_config(options), log=lambda _: None)
    for record in read_records(tmp_path / "run"):
        assert set(record.metrics) == {"image_auroc", "image_ap"}, record.metrics


def test_resume_on_other_data_is_refused(mvtec_root: Path, tmp_path: Path) -> None:
    import shutil

    run(config(mvtec_root, tmp_path / "run", categories="alpha"), log=lambda _: None)
    other = tmp_path / "other"
    shutil.copytree(mvtec_root, other)
    image = next((other / "beta" / "test" / "good").iterdir())
    image.write_bytes(image.read_bytes() + b"\0")  # another file, same name
    with pytest.raises(FsadError, match="played on other data.*--data-root"):
        run(config(other, tmp_path / "run", categories="alpha"), log=lambda _: None)


def test_resume_after_a_plugin_upgrade_is_refused(
    mvtec_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fake_plugins import MeanDistance

    from fsad_bench.method import MethodInfo

    run(config(mvtec_root, tmp_path / "run", categories="alpha"), log=lambda _: None)
    monkeypatch.setattr(MeanDistance, "info", MethodInfo("meandist", "1", True, False))
    with pytest.raises(FsadError, match="version 0 .*plugin's version differ.*new --out"):
        run(config(mvtec_root, tmp_path / "run", categories="alpha"), log=lambda _: None)
    # a run.json from before it named versions: the records still say which version ran
    path = tmp_path / "run" / "run.json"
    old = json.loads(path.read_text())
    del old["identity"]["methods"]
    path.write_text(json.dumps(old))
    with pytest.raises(FsadError, match="ran here as version 0, the installed plugin is 1"):
        run(config(mvtec_root, tmp_path / "run", categories="alpha"), log=lambda _: None)


def test_a_lost_score_file_is_played_again(mvtec_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    run(config(mvtec_root, out, categories="alpha"), log=lambda _: None)
    first = read_records(out)[0]
    (out / first.scores_file).unlink()
    lines: list[str] = []
    assert run(config(mvtec_root, out, categories="alpha"), log=lines.append).played == 1
    assert any("lost their score file" in line for line in lines)
    assert (out / first.scores_file).exists()
    assert read_records(out)[-1].metrics == first.metrics


def test_a_second_call_adds_to_the_directory_instead_of_replacing_its_bookkeeping(
    mvtec_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    run(config(mvtec_root, out, shots="1", seeds="0"), log=lambda _: None)
    run(config(mvtec_root, out, shots="2", seeds="1"), log=lambda _: None)
    protocol = json.loads((out / "run.json").read_text())["protocol"]
    assert (protocol["shots"], protocol["seeds"]) == ([1, 2], [0, 1])
    supports = json.loads((out / "support_manifest.json").read_text())["supports"]
    assert {"alpha/k1/seed0", "alpha/k2/seed1"} <= set(supports)
    # a copy torn by a kill does not block the next call; it is rebuilt
    (out / "support_manifest.json").write_text('{"supports": {"al')
    run(config(mvtec_root, out, shots="2", seeds="1"), log=lambda _: None)
    assert "alpha/k2/seed1" in json.loads((out / "support_manifest.json").read_text())["supports"]


def test_failures_are_recorded_and_the_run_goes_on(mvtec_root: Path, tmp_path: Path) -> None:
    summary = run(config(mvtec_root, tmp_path / "run", methods="nanscores,raises,meandist"),
                  log=lambda _: None)  # fmt: skip
    records = read_records(tmp_path / "run")
    by_method = {
        m: [r for r in records if r.method.name == m] for m in ("nanscores", "raises", "meandist")
    }
    assert all(r.status == "failed" and "NaN" in r.error for r in by_method["nanscores"])
    assert {r.status for r in by_method["raises"] if r.k == 1} == {"ok"}
    assert all("more than one shot" in r.error for r in by_method["raises"] if r.k == 2)
    assert all(r.status == "ok" for r in by_method["meandist"])
    assert len(summary.failed) == 12 + 6
    assert all(r.metrics["image_auroc"] is None for r in summary.failed)


def test_method_without_maps_runs_over_several_batches(mvtec_root: Path, tmp_path: Path) -> None:
    run(config(mvtec_root, tmp_path / "run", methods="scoresonly", batch_size=2),
        log=lambda _: None)  # fmt: skip
    records = read_records(tmp_path / "run")
    assert len(records) == 12 and all(r.status == "ok" for r in records), records[0].error
    for record in records:
        assert record.metrics["image_auroc"] == 1.0
        assert record.metrics["pixel_auroc"] is None and record.metrics["aupro"] is None
        assert "not applicable" in record.metric_notes["pixel_auroc"]


def test_a_long_episode_shows_that_the_run_is_alive(
    mvtec_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fsad_bench.run import progress

    monkeypatch.setattr(progress, "HEARTBEAT_S", 0.3)
    lines: list[str] = []
    run(config(mvtec_root, tmp_path / "run", methods="naps", shots="1", seeds="0",
               categories="alpha"), log=lines.append)  # fmt: skip
    beats = [line for line in lines if line.startswith("... still working")]
    assert beats, lines
    assert beats[0].startswith("... still working: 0/1 episodes done, ")
    assert beats[0].endswith("; playing naps alpha k=1 seed=0")
    assert lines[-1].startswith("[1/1 ")  # the episode's own line comes last


def test_meta_fit_never_sees_the_held_out_category(mvtec_root: Path, tmp_path: Path) -> None:
    from fake_plugins import MetaSpy

    MetaSpy.seen.clear()
    run(config(mvtec_root, tmp_path / "run", methods="metaspy"), log=lambda _: None)
    assert MetaSpy.seen, "meta_fit was never called"
    for held_out, _, categories in MetaSpy.seen:
        assert held_out not in categories
        assert set(categories) == {"alpha", "beta", "gamma"} - {held_out}
    # cached per (held-out, seed): K=2 reuses K=1's meta-training, so 3 x 2 fits, no repeats
    assert sorted({(h, s) for h, s, _ in MetaSpy.seen}) == sorted(
        (h, s) for h, s, _ in MetaSpy.seen
    )
    assert len(MetaSpy.seen) == 6
    records = read_records(tmp_path / "run")
    assert sum(r.provenance["meta_fit_cache_hit"] for r in records) == 6


def test_meta_training_does_not_depend_on_which_k_trains_first(
    mvtec_root: Path, tmp_path: Path
) -> None:
    """K=2 alone, or K=2 reusing the weights K=1 trained: the same meta-training."""
    from fake_plugins import MetaSpy

    options = {"methods": "metaspy", "seeds": "0", "categories": "alpha"}
    MetaSpy.draws.clear()
    run(config(mvtec_root, tmp_path / "k2", shots="2", **options), log=lambda _: None)
    run(config(mvtec_root, tmp_path / "k12", shots="1,2", **options), log=lambda _: None)
    assert len(MetaSpy.draws) == 2  # once per run: K=2 of the second reuses K=1's weights
    assert MetaSpy.draws[0] == MetaSpy.draws[1]
    alone, reused = (
        [r for r in read_records(tmp_path / name) if r.k == 2] for name in ("k2", "k12")
    )
    assert reused[0].provenance["meta_fit_cache_hit"] is True
    assert alone[0].metrics == reused[0].metrics


def test_a_method_meta_training_with_k_shots_trains_and_caches_per_k(
    mvtec_root: Path, tmp_path: Path
) -> None:
    """meta_uses_k: the tasks carry the episode's K, and meta-training is seeded and cached
    per K (one training per K, none shared), while other methods still train once."""
    from fake_plugins import MetaSpy, MetaSpyPerK

    MetaSpy.draws.clear()
    MetaSpyPerK.ks.clear()
    options = {"seeds": "0", "categories": "alpha", "shots": "1,2"}
    run(config(mvtec_root, tmp_path / "k", methods="metaspyk", **options), log=lambda _: None)
    assert MetaSpyPerK.ks == [1, 2]
    assert len(MetaSpy.draws) == 2 and MetaSpy.draws[0] != MetaSpy.draws[1]  # seeded per K
    assert len(list((tmp_path / "k" / "meta_cache").glob("*.pt"))) == 2
    records = read_records(tmp_path / "k")
    assert not any(r.provenance["meta_fit_cache_hit"] for r in records)
    run(config(mvtec_root, tmp_path / "once", methods="metaspy", **options), log=lambda _: None)
    assert len(list((tmp_path / "once" / "meta_cache").glob("*.pt"))) == 1


def test_records_say_their_threads_and_other_threads_retrain(
    mvtec_root: Path, tmp_path: Path
) -> None:
    import torch
    from fake_plugins import MetaSpy

    MetaSpy.seen.clear()
    before = torch.get_num_threads()
    options = {"methods": "metaspy", "seeds": "0", "categories": "alpha"}
    run(config(mvtec_root, tmp_path / "run", shots="1", **options), log=lambda _: None)
    (record,) = read_records(tmp_path / "run")
    assert record.env["torch_threads"] == before
    assert len(MetaSpy.seen) == 1
    torch.set_num_threads(before + 1)
    try:  # K=2 would reuse K=1's meta-training on the same threads; not on others
        run(config(mvtec_root, tmp_path / "run", shots="1,2", **options), log=lambda _: None)
    finally:
        torch.set_num_threads(before)
    assert len(MetaSpy.seen) == 2
    new = [r for r in read_records(tmp_path / "run") if r.k == 2]
    assert new[0].provenance["meta_fit_cache_hit"] is False
    assert new[0].env["torch_threads"] == before + 1


def test_bad_data_fails_before_any_episode(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for name in ("alpha", "beta"):
        make_mvtec_category(root, name)
    missing = root / "beta" / "ground_truth" / "blob" / "001_mask.png"
    missing.unlink()
    with pytest.raises(DatasetError, match="001"):
        run(config(root, tmp_path / "run"), log=lambda _: None)
    assert not (tmp_path / "run" / "records.jsonl").exists()


def test_k_too_large_unknown_method_missing_root(mvtec_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ProtocolError, match="K=50 is too large"):
        run(config(mvtec_root, tmp_path / "r1", shots="50"), log=lambda _: None)
    with pytest.raises(PluginError, match="unknown method 'nosuch'"):
        run(config(mvtec_root, tmp_path / "r2", methods="nosuch"), log=lambda _: None)
    with pytest.raises(DatasetError, match="does not exist"):
        config(tmp_path / "nowhere", tmp_path / "r3")


def test_unreadable_test_image_stops_the_run_with_its_path(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for name in ("alpha", "beta"):
        make_mvtec_category(root, name)
    broken = root / "beta" / "test" / "good" / "001.png"
    broken.write_bytes(broken.read_bytes()[:40])  # truncated
    with pytest.raises(DatasetError, match=r"beta/test/good/001.png"):
        run(config(root, tmp_path / "run", categories="alpha,beta"), log=lambda _: None)
    records = read_records(tmp_path / "run")  # alpha's finished episodes are kept
    assert records and {r.category for r in records} == {"alpha"}


def test_process_pool_gives_the_same_records(mvtec_root: Path, tmp_path: Path) -> None:
    options = {"methods": "patchcore", "shots": "1", "categories": "alpha,beta", "image_size": 64}
    run(config(mvtec_root, tmp_path / "one", **options), log=lambda _: None)
    run(config(mvtec_root, tmp_path / "two", workers=2, **options), log=lambda _: None)
    one = {r.result_key: r.metrics for r in read_records(tmp_path / "one")}
    two = {r.result_key: r.metrics for r in read_records(tmp_path / "two")}
    assert len(one) == 4 and one.keys() == two.keys()
    for key, metrics in one.items():
        for name, value in metrics.items():
            assert abs(value - two[key][name]) < 1e-6, (key, name)


def test_records_break_scores_down_by_defect_kind(mvtec_root: Path, tmp_path: Path) -> None:
    """With two defect kinds, each record carries per-kind image and pixel metrics, and its
    score file names every image's kind; the per-kind image AUROC equals the one the
    report recomputes from the score file."""
    from fsad_bench.results.by_defect import _from_scores
    from fsad_bench.store import read_scores

    alpha = mvtec_root / "alpha"
    for part in ("test", "ground_truth"):
        (alpha / part / "dent").mkdir()
    (alpha / "test" / "blob" / "002.png").rename(alpha / "test" / "dent" / "002.png")
    (alpha / "ground_truth" / "blob" / "002_mask.png").rename(
        alpha / "ground_truth" / "dent" / "002_mask.png"
    )
    run(config(mvtec_root, tmp_path / "run", categories="alpha", shots="1", seeds="0"),
        log=lambda _: None)  # fmt: skip
    record = read_records(tmp_path / "run")[0]
    assert set(record.by_defect) == {"blob", "dent"}
    for values in record.by_defect.values():
        assert {"image_auroc", "pixel_auroc", "aupro"} <= set(values)
        assert all(0.0 <= v <= 1.0 for v in values.values())
    payload = read_scores(tmp_path / "run", record)
    assert sorted(set(payload["defects"])) == ["blob", "dent", "good"]
    recomputed = _from_scores(payload)
    for kind in ("blob", "dent"):
        assert recomputed[kind]["image_auroc"] == record.by_defect[kind]["image_auroc"]


def test_episodes_below_a_methods_minimum_k_are_not_played(
    mvtec_root: Path, tmp_path: Path
) -> None:
    lines: list[str] = []
    summary = run(config(mvtec_root, tmp_path / "run", methods="needstwo,meandist",
                         categories="alpha", seeds="0"), log=lines.append)  # fmt: skip
    played = {(r.method.name, r.k) for r in read_records(tmp_path / "run")}
    assert played == {("needstwo", 2), ("meandist", 1), ("meandist", 2)}
    assert summary.played == 3 and not summary.failed
    assert any("needstwo: K=[1] below its minimum of 2 support images" in line for line in lines)
