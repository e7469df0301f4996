"""The per-process backbone feature cache: exact hits, bounded memory, unchanged records."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fsad_bench.errors import FsadError
from fsad_bench.features import cache as feature_cache
from fsad_bench.features.cache import FeatureCache
from fsad_bench.run.config import build_run_config
from fsad_bench.run.runner import run
from fsad_bench.store import read_records, read_scores


def counting(calls: list[int]):
    def compute(images: torch.Tensor) -> list[torch.Tensor]:
        calls.append(len(images))
        return [images.mean(dim=1, keepdim=True) * 2, images[:, :1, ::2, ::2] + 1]

    return compute


def test_same_batch_is_computed_once_and_returned_as_a_copy() -> None:
    cache, calls = FeatureCache(limit_mb=16), []
    images = torch.rand(4, 3, 8, 8)
    first = cache.features("w", (2, 3), images, counting(calls))
    first[0].zero_()  # a caller that writes into its result must not corrupt the cache
    second = cache.features("w", (2, 3), images.clone(), counting(calls))
    assert calls == [4] and (cache.hits, cache.misses) == (1, 1)
    assert torch.equal(second[0], images.mean(dim=1, keepdim=True) * 2)
    assert torch.equal(second[1], images[:, :1, ::2, ::2] + 1)


def test_the_environment_bound_applies_at_any_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """FSAD_FEATURE_CACHE_MB=0 set after the cache exists turns it off at the next use (how
    the benchmarks time the backbone), and a bound set later takes effect again."""
    monkeypatch.setenv(feature_cache.ENV, "16")
    monkeypatch.setattr(feature_cache, "_CACHE", None)
    calls: list[int] = []
    images = torch.rand(4, 3, 8, 8)
    feature_cache.process_cache().features("w", (2, 3), images, counting(calls))
    assert feature_cache.process_cache().bytes > 0
    monkeypatch.setenv(feature_cache.ENV, "0")
    off = feature_cache.process_cache()
    assert not off.enabled and off.bytes == 0
    off.features("w", (2, 3), images, counting(calls))
    off.features("w", (2, 3), images, counting(calls))
    assert calls == [4, 4, 4]  # every call ran the backbone
    monkeypatch.setenv(feature_cache.ENV, "16")
    on = feature_cache.process_cache()
    on.features("w", (2, 3), images, counting(calls))
    on.features("w", (2, 3), images, counting(calls))
    assert calls == [4, 4, 4, 4] and on.enabled


@pytest.mark.parametrize("value", ["abc", "-1", "inf"])
def test_a_bad_bound_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(feature_cache.ENV, value)
    with pytest.raises(FsadError, match=f"{feature_cache.ENV}=.*MB >= 0"):
        feature_cache.process_cache()


def test_other_batch_weights_or_stages_miss() -> None:
    cache, calls = FeatureCache(limit_mb=16), []
    images = torch.rand(4, 3, 8, 8)
    cache.features("w", (2, 3), images, counting(calls))
    cache.features("w", (2, 3), images[:3], counting(calls))  # another batch composition
    cache.features("other", (2, 3), images, counting(calls))
    cache.features("w", (1, 2), images, counting(calls))  # stage 1 was never stored
    changed = images.clone()
    changed[0, 0, 0, 0] += 1e-6
    cache.features("w", (2, 3), changed, counting(calls))
    assert calls == [4, 3, 4, 4, 4] and cache.hits == 0


def test_memory_stays_under_the_bound_and_zero_disables() -> None:
    cache, calls = FeatureCache(limit_mb=0.005), []  # 5.2 kB: two batches of 2.5 kB
    batches = [torch.rand(2, 3, 16, 16) for _ in range(6)]
    for batch in batches:
        cache.features("w", (2, 3), batch, counting(calls))
        assert cache.bytes <= cache.limit_bytes
    cache.features("w", (2, 3), batches[-1], counting(calls))
    cache.features("w", (2, 3), batches[0], counting(calls))  # evicted long ago
    assert calls == [2] * 7 and cache.hits == 1
    off, calls = FeatureCache(limit_mb=0), []
    for _ in range(2):
        off.features("w", (2, 3), batches[0], counting(calls))
    assert calls == [2, 2] and not off.entries


def test_cached_run_equals_a_cold_one_and_shares_features_across_methods(
    mvtec_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def play(out: Path, limit_mb: float) -> int:
        """The run's batch hits in the process cache, bounded through the environment."""
        monkeypatch.setenv(feature_cache.ENV, str(limit_mb))
        cache = feature_cache.process_cache()
        cache.clear()
        options = {"data_root": mvtec_root, "layout": "mvtec", "methods": "patchcore,padim",
                   "shots": "1,2", "seeds": "0", "categories": "alpha", "out": out,
                   "image_size": 64, "batch_size": 4}  # fmt: skip
        run(build_run_config(options), log=lambda _: None)
        return cache.hits

    cold = play(tmp_path / "cold", 0)
    warm = play(tmp_path / "warm", 512)
    # 6 test images in batches of 4 -> 2 test batches. At K=1 PatchCore (stages 2, 3) and
    # then PaDiM (1, 2, 3: stage 1 is new) compute them; at K=2 both methods find all four.
    assert cold == 0 and warm >= 4
    a, b = read_records(tmp_path / "cold"), read_records(tmp_path / "warm")
    assert len(a) == len(b) == 4
    for x, y in zip(a, b, strict=True):
        assert (x.result_key, x.metrics) == (y.result_key, y.metrics)
        assert read_scores(tmp_path / "cold", x) == read_scores(tmp_path / "warm", y)


@pytest.mark.usefixtures("fake_methods")
def test_meta_training_images_are_decoded_once_per_category(
    mvtec_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fsad_bench.features.lru import ByteLRU, tensor_bytes
    from fsad_bench.run import episode

    decoded: list[str] = []
    original = episode.decode_train

    def counting(category, size):  # noqa: ANN001, ANN202 - a spy with the same signature
        decoded.append(category.name)
        return original(category, size)

    monkeypatch.setattr(episode, "decode_train", counting)

    def play(out: Path, limit_bytes: int) -> list:
        monkeypatch.setattr(episode, "_TRAIN_IMAGES", ByteLRU(limit_bytes, tensor_bytes))
        options = {"data_root": mvtec_root, "layout": "mvtec", "methods": "metaspy",
                   "shots": "1,2", "seeds": "0,1", "out": out, "image_size": 32}  # fmt: skip
        run(build_run_config(options), log=lambda _: None)
        return read_records(out)

    cold = play(tmp_path / "cold", 0)
    assert len(decoded) == 12  # 3 held-out categories x 2 seeds, 2 other categories each
    decoded.clear()
    warm = play(tmp_path / "warm", 2**30)
    assert sorted(decoded) == ["alpha", "beta", "gamma"]
    assert [(r.result_key, r.metrics) for r in cold] == [(r.result_key, r.metrics) for r in warm]
