"""The names that identify a result, each defined once: keys, metric names, labels, kinds.

Records, the runner, manifests, reports, submissions and the leaderboard all speak of the
same episode, method and metric; a second hand-written copy of a key format or a label is
how two views end up disagreeing, so they all import these.
"""

from __future__ import annotations

# Metrics in display order: image level first, then pixel level.
IMAGE_METRICS = ("image_auroc", "image_ap", "image_f1_max")
PIXEL_METRICS = ("pixel_auroc", "pixel_ap", "pixel_f1_max", "aupro")
METRICS = IMAGE_METRICS + PIXEL_METRICS
METRIC_LABELS = {
    "image_auroc": "image AUROC",
    "image_ap": "image AP",
    "image_f1_max": "image F1-max",
    "pixel_auroc": "pixel AUROC",
    "pixel_ap": "pixel AP",
    "pixel_f1_max": "pixel F1-max",
    "aupro": "AUPRO@0.3",
}
# What a row of a table is: a validated submission of a run of this project, a figure
# copied from a paper, or a run directory on this machine that nobody has validated.
KIND_REPRODUCED = "reproduced"
KIND_PUBLISHED = "published"
KIND_LOCAL = "local run"


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def episode_key(protocol: str, version: str, category: str, k: int, seed: int) -> str:
    """``protocol@version/category/kK/seedS``: one episode of a protocol."""
    return f"{protocol}@{version}/{category}/k{k}/seed{seed}"


def meta_train_key(protocol: str, version: str, category: str, seed: int) -> str:
    """The episode key without K: meta-training sees no support images, and its weights are
    shared by every K of a category and seed, so its seed must not depend on K."""
    return f"{protocol}@{version}/{category}/seed{seed}"


def result_key(method: str, preset: str | None, episode: str) -> str:
    """Identity for resume and reports: a method (name and preset) on an episode."""
    return f"{method}:{preset or ''}:{episode}"


def method_label(method: str, preset: str | None) -> str:
    """``name`` or ``name.preset``: how a method was asked for, and how it is reported."""
    return f"{method}.{preset}" if preset else method


def split_label(label: str) -> tuple[str, str | None]:
    """The inverse of ``method_label``."""
    name, _, preset = label.partition(".")
    return name, preset or None


# The row of a table that averages every category; a category that happens to carry this
# name is shown under ``category_label`` instead, so no table row is ambiguous.
MEAN_ROW = "mean"


def category_label(category: str) -> str:
    return f"{category} (category)" if category == MEAN_ROW else category
