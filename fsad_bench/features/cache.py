"""Backbone features of a batch computed once per process, shared by methods, K and seeds.

Every episode of a category scores the same test images, in the same batches, with the same
frozen backbone: PatchCore and PaDiM at K = 1..8 and three seeds would extract them 24 times.
Entries are keyed by the exact batch (its bytes), the backbone's weights and the stage, so a
hit returns what the same computation gave before. Caching whole batches, never single
images, keeps runs bit-identical to cold ones: a miss is computed with the batch composition
a cold run uses (convolutions may round differently for other batch sizes), which is what
makes a resumed run equal an uninterrupted one.

Bounded in bytes (least recently used entries go first); ``FSAD_FEATURE_CACHE_MB`` sets the
bound, 0 turns the cache off. The variable is read at every use, so setting it at any time
(a benchmark that must time the backbone, a notebook) takes effect on the next batch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from fsad_bench.features.lru import ByteLRU, limit_from_env, tensor_bytes

DEFAULT_MB = 2048.0
ENV = "FSAD_FEATURE_CACHE_MB"


def batch_digest(images: Tensor) -> str:
    """Content hash of a batch (shape, dtype, device and every value)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{tuple(images.shape)}|{images.dtype}|{images.device}".encode())
    digest.update(images.detach().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


def weights_digest(module: torch.nn.Module) -> str:
    """Identity of a backbone's weights, computed once when the extractor is built."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


class FeatureCache:
    """LRU of per-stage feature maps keyed by (weights, stage, batch)."""

    def __init__(self, limit_mb: float) -> None:
        self.store: ByteLRU[Tensor] = ByteLRU(int(limit_mb * 2**20), tensor_bytes)
        self.hits = 0
        self.misses = 0

    def resize(self, limit_mb: float) -> None:
        """Change the bound; entries beyond it are dropped at once (0: off and empty)."""
        limit = int(limit_mb * 2**20)
        if limit != self.store.limit_bytes:
            self.store.resize(limit)

    def clear(self) -> None:
        """Empty, with the hit and miss counts back at zero (a cold start, for measuring)."""
        self.store.clear()
        self.hits = self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.store.limit_bytes > 0

    @property
    def limit_bytes(self) -> int:
        return self.store.limit_bytes

    @property
    def bytes(self) -> int:
        return self.store.bytes

    @property
    def entries(self) -> dict:
        return self.store.entries

    def features(
        self,
        weights: str,
        stages: Sequence[int],
        images: Tensor,
        compute: Callable[[Tensor], list[Tensor]],
    ) -> list[Tensor]:
        """The stages' features of ``images``: from the cache when all are there, else
        computed for the whole batch and stored. Returned tensors are the caller's own."""
        if not self.enabled or torch.is_grad_enabled() and images.requires_grad:
            return compute(images)
        batch = batch_digest(images)
        keys = [(weights, stage, batch) for stage in stages]
        if all(key in self.store for key in keys):
            self.hits += 1
            return [self.store.get(key).clone() for key in keys]
        self.misses += 1
        computed = compute(images)
        for key, tensor in zip(keys, computed, strict=True):
            self.store.put(key, tensor.detach().clone())
        return computed


_CACHE: FeatureCache | None = None


def process_cache() -> FeatureCache:
    """The one cache of this process, bounded by ``FSAD_FEATURE_CACHE_MB`` as it is now."""
    global _CACHE
    limit_mb = limit_from_env(ENV, DEFAULT_MB)
    if _CACHE is None:
        _CACHE = FeatureCache(limit_mb)
    else:
        _CACHE.resize(limit_mb)
    return _CACHE
