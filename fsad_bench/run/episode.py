"""Play one episode in a worker: seed, meta-fit (cached), fit, predict, validate, score.

Everything a worker needs travels in a picklable ``EpisodeTask``; any exception or invalid
output becomes a failed record with its reason, so one bad episode never stops a run.
"""

from __future__ import annotations

import hashlib
import os
import traceback
from dataclasses import replace
from functools import lru_cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fsad_bench import metrics
from fsad_bench.datasets import get_layout
from fsad_bench.datasets.base import Category
from fsad_bench.datasets.io import TestSet, load_category_tensors, load_image
from fsad_bench.errors import DatasetError
from fsad_bench.features.cache import process_cache
from fsad_bench.features.lru import ByteLRU, limit_from_env, tensor_bytes
from fsad_bench.method import MetaTrainSet
from fsad_bench.protocols.protocol import Protocol
from fsad_bench.records import (
    STATUS_FAILED,
    STATUS_OK,
    EpisodeRecord,
    MethodRef,
    Prediction,
)
from fsad_bench.registry import GROUP, resolve
from fsad_bench.run import gallery
from fsad_bench.run.meta_cache import meta_fit_cached, meta_key
from fsad_bench.run.scoring import defect_metrics, score_episode
from fsad_bench.run.seeding import fit_seed, meta_fit_seed, seed_everything
from fsad_bench.run.tasks import EpisodeOutcome, EpisodeTask
from fsad_bench.run.timing import PeakMemory, Stopwatch
from fsad_bench.store import scores_file_name


class InvalidOutput(RuntimeError):
    """A plugin broke the output contract (shape, dtype, NaN)."""


@lru_cache(maxsize=4)
def _category(layout: str, root: str | None, name: str, options: tuple) -> Category:
    return get_layout(layout).load_category(Path(root) if root else None, name, **dict(options))


@lru_cache(maxsize=2)
def _test_set(layout: str, root: str | None, name: str, options: tuple, size: int) -> TestSet:
    return load_category_tensors(_category(layout, root, name, options), size)


def _options(protocol: Protocol) -> tuple:
    return tuple(sorted(protocol.layout_options.items()))


def category_of(task: EpisodeTask, name: str) -> Category:
    protocol = task.protocol
    return _category(protocol.layout, task.data_root, name, _options(protocol))


def load_support(task: EpisodeTask, category: Category) -> torch.Tensor:
    size = task.protocol.image_size
    return torch.stack([load_image(category.root / e.path, size) for e in task.support])


def _meta_categories(task: EpisodeTask) -> list[Category]:
    """Only the other categories: the held-out one never enters meta-training."""
    if task.episode.category in task.meta_categories:
        raise RuntimeError(f"held-out category {task.episode.category!r} in the meta-train set")
    return [category_of(task, name) for name in task.meta_categories]


def meta_data_hash(task: EpisodeTask) -> str:
    """Identifies the meta-train images by listing (cheap) plus the protocol definition."""
    names = [c.relpath(p) for c in _meta_categories(task) for p in c.train_normal]
    payload = "\n".join([task.protocol.definition_hash(), *sorted(names)])
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


IMAGE_CACHE_ENV = "FSAD_IMAGE_CACHE_MB"
_TRAIN_IMAGES: ByteLRU[torch.Tensor] | None = None


def train_images(task: EpisodeTask, category: Category) -> torch.Tensor:
    """A category's normal training images, decoded and resized once per process: every
    held-out category and seed meta-trains on the same images of the others."""
    global _TRAIN_IMAGES
    if _TRAIN_IMAGES is None:
        limit = limit_from_env(IMAGE_CACHE_ENV, 2048.0)
        _TRAIN_IMAGES = ByteLRU(int(limit * 2**20), tensor_bytes)
    protocol = task.protocol
    key = (protocol.layout, task.data_root, category.name, _options(protocol),
           protocol.image_size)  # fmt: skip
    images = _TRAIN_IMAGES.get(key)
    if images is None:
        images = decode_train(category, protocol.image_size)
        _TRAIN_IMAGES.put(key, images)
    return images.clone()  # a plugin that writes into its inputs cannot spoil the cache


def decode_train(category: Category, size: int) -> torch.Tensor:
    return torch.stack([load_image(path, size) for path in category.train_normal])


def meta_train_set(task: EpisodeTask, data_hash: str, per_k: bool = False) -> MetaTrainSet:
    images = {c.name: train_images(task, c) for c in _meta_categories(task)}
    k = task.episode.k if per_k else None
    return MetaTrainSet(images, task.episode.category, data_hash, task.episode.seed, k)


def predict_batched(method: Any, images: torch.Tensor, batch_size: int) -> Prediction:
    scores, maps = [], []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            # a copy: the test set stays cached for the next episodes, whatever a plugin does
            pred = method.predict(images[start : start + batch_size].clone())
            if not isinstance(pred, Prediction):
                raise InvalidOutput(f"predict returned {type(pred).__name__}, not Prediction")
            scores.append(pred.scores.detach().float().cpu())
            maps.append(None if pred.maps is None else pred.maps.detach().float().cpu())
    has_maps = {m is not None for m in maps}
    if len(has_maps) > 1:
        raise InvalidOutput("predict returned maps for some batches and None for others")
    return Prediction(torch.cat(scores), None if False in has_maps else torch.cat(maps))


def validate(pred: Prediction, n: int, size: int, produces_maps: bool) -> None:
    if tuple(pred.scores.shape) != (n,):
        raise InvalidOutput(f"scores have shape {tuple(pred.scores.shape)}, expected ({n},)")
    if not torch.isfinite(pred.scores).all():
        raise InvalidOutput("scores contain NaN or inf")
    if produces_maps != (pred.maps is not None):
        raise InvalidOutput(f"info.produces_maps={produces_maps} but maps is {pred.maps is None=}")
    if pred.maps is not None:
        if tuple(pred.maps.shape) != (n, size, size):
            raise InvalidOutput(
                f"maps have shape {tuple(pred.maps.shape)}, expected ({n}, {size}, {size})"
            )
        if not torch.isfinite(pred.maps).all():
            raise InvalidOutput("maps contain NaN or inf")


def compute_env() -> dict[str, Any]:
    """Threads the episode really ran with (in its worker): CPU results depend on them."""
    return {
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }


def compute_label(device: str) -> str:
    return f"{device}/threads={torch.get_num_threads()}"


@lru_cache(maxsize=64)
def plugin_package(name: str) -> str | None:
    """``distribution==version`` of the installed package whose entry point provides the
    method (None when registered in-process): a plugin's own version string is whatever
    its author typed, the package version is what pip installs."""
    for point in entry_points(group=GROUP, name=name):
        dist = getattr(point, "dist", None)
        if dist is not None:
            return f"{dist.metadata['Name']}=={dist.version}"
    return None


def prepare(task: EpisodeTask) -> None:
    """Import the plugin before the episode's clock starts (spawned and Ray workers)."""
    resolve(task.method_spec, task.method_params)


def play(task: EpisodeTask) -> EpisodeOutcome:
    if task.threads:
        torch.set_num_threads(task.threads)
    resolved = resolve(task.method_spec, task.method_params)
    info = resolved.cls.info
    ref = MethodRef(resolved.name, info.version, resolved.preset, {}, info.produces_maps)
    timing: dict[str, float | None] = {"meta_fit_s": None, "fit_s": None}
    provenance: dict[str, Any] = {"support": [e.path for e in task.support]}
    package = plugin_package(resolved.name)
    if package:
        provenance["plugin_package"] = package
    try:
        method = resolved.build()
        info = method.info  # a plugin may refine it per instance (a bridge, per model)
        ref = MethodRef(ref.name, ref.version, ref.preset, method.get_params(), info.produces_maps)
        if hasattr(method, "to"):
            method.to(task.device)
        protocol, episode = task.protocol, task.episode
        category = category_of(task, episode.category)
        with PeakMemory(task.device) as memory:
            if info.needs_meta_train:
                per_k = bool(getattr(method, "meta_uses_k", lambda: False)())
                meta_seed = meta_fit_seed(episode, resolved.name, per_k)
                seed_everything(meta_seed)
                data_hash = meta_data_hash(task)
                key = meta_key(ref.name, ref.version, ref.params, episode.category, meta_seed,
                               data_hash, compute_label(task.device),
                               episode.k if per_k else None)  # fmt: skip
                cache = Path(task.cache_dir) if task.cache_dir else None
                with Stopwatch() as clock:
                    cache_hit = meta_fit_cached(
                        method, key, lambda: meta_train_set(task, data_hash, per_k), cache
                    )
                timing["meta_fit_s"] = clock.seconds
                provenance["meta_fit_cache_hit"] = cache_hit
            support = load_support(task, category).to(task.device)
            seed = fit_seed(episode, resolved.name)
            seed_everything(seed)
            with Stopwatch() as clock:
                method.fit(support)
            timing["fit_s"] = clock.seconds
            test = _test_set(
                protocol.layout, task.data_root, episode.category, _options(protocol),
                protocol.image_size,
            )  # fmt: skip
            seed_everything(seed + 1)
            cache = process_cache()  # a hit skips the backbone: such a timing is not comparable
            hits, misses = cache.hits, cache.misses
            with Stopwatch() as clock:
                pred = predict_batched(method, test.images.to(task.device), task.batch_size)
            timing["predict_ms_per_image"] = 1000 * clock.seconds / max(len(test.paths), 1)
            timing["feature_cache_hits"] = cache.hits - hits  # batches; key read by report
            timing["feature_cache_misses"] = cache.misses - misses
        timing["peak_mem_mb"] = memory.peak_mb
        validate(pred, len(test.paths), protocol.image_size, info.produces_maps)
        values, notes = score_episode(test, pred, info.produces_maps, protocol.metrics)
        by_defect = defect_metrics(test, pred, info.produces_maps, protocol.metrics)
        provenance.update(getattr(method, "provenance", lambda: {})())
        record = _record(task, ref, STATUS_OK, values, notes, timing, provenance, None)
        record = replace(record, by_defect=by_defect)
        scores = {
            "paths": list(test.paths),
            "defects": list(test.defects),
            "labels": test.labels.tolist(),
            "scores": [float(s) for s in pred.scores.numpy().astype(np.float64)],
        }
        files = {}
        if task.save_maps and pred.maps is not None:
            files = gallery.render(record.result_key, test.images, test.labels, test.masks,
                                   pred.maps, pred.scores, test.paths, task.save_maps)  # fmt: skip
        return EpisodeOutcome(record, scores, files=files)
    except DatasetError as exc:
        return EpisodeOutcome(None, data_error=str(exc))
    except Exception as exc:  # noqa: BLE001 - the reason is recorded, the run goes on
        reason = f"{type(exc).__name__}: {exc}"
        where = traceback.extract_tb(exc.__traceback__)[-1]
        reason += f" (at {Path(where.filename).name}:{where.lineno})"
        empty = dict.fromkeys(task.protocol.metrics)
        return EpisodeOutcome(
            _record(task, ref, STATUS_FAILED, empty, {}, timing, provenance, reason)
        )


def failed_outcome(task: EpisodeTask, reason: str) -> EpisodeOutcome:
    """A failed record written by the parent when the worker could not report (timeout, crash);
    ``method.params`` are the requested ones, as the plugin's own never came back."""
    resolved = resolve(task.method_spec, task.method_params)
    info = resolved.cls.info
    ref = MethodRef(resolved.name, info.version, resolved.preset, resolved.params,
                    info.produces_maps)  # fmt: skip
    empty: dict[str, float | None] = dict.fromkeys(task.protocol.metrics)
    timing: dict[str, float | None] = {"meta_fit_s": None, "fit_s": None}
    provenance = {"support": [e.path for e in task.support]}
    return EpisodeOutcome(_record(task, ref, STATUS_FAILED, empty, {}, timing, provenance, reason))


def _record(
    task: EpisodeTask,
    ref: MethodRef,
    status: str,
    values: dict[str, float | None],
    notes: dict[str, str],
    timing: dict[str, float | None],
    provenance: dict[str, Any],
    error: str | None,
) -> EpisodeRecord:
    episode = task.episode
    record = EpisodeRecord(
        run_id=task.run_id,
        method=ref,
        protocol=episode.protocol,
        protocol_version=episode.protocol_version,
        protocol_hash=task.protocol.definition_hash(),
        dataset=episode.dataset,
        category=episode.category,
        k=episode.k,
        seed=episode.seed,
        support_manifest_hash=task.support_hash,
        status=status,
        metrics=values,
        metric_notes=notes,
        metrics_version=metrics.METRICS_VERSION,
        timing=timing,
        env={**task.env, **compute_env()},
        provenance=provenance,
        error=error,
        settings={"batch_size": task.batch_size},
        test_set_hash=task.test_set_hash,
    )
    if status == STATUS_OK:
        record = replace(record, scores_file=scores_file_name(record.result_key))
    return record
