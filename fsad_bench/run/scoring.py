"""An episode's metrics from its predictions: the protocol's metrics, and per defect kind.

Only what the protocol lists is computed; a metric that does not apply (no maps, no masks)
or is undefined (one class only) is None with a note, never a made-up number. Per defect
kind, the kind's images are scored against every normal test image (image AUROC, and
pixel AUROC and AUPRO over those images' pixels), which shows what a method misses.
"""

from __future__ import annotations

import math

import torch

from fsad_bench import metrics
from fsad_bench.datasets.io import TestSet
from fsad_bench.identity import IMAGE_METRICS
from fsad_bench.records import Prediction, clean_metric

NO_MAPS = "not applicable: the method produces no anomaly maps"
NO_MASKS = "not applicable: the dataset has image-level labels only"
UNDEFINED = "undefined: the test set lacks normal or anomalous samples"


def score_episode(
    test: TestSet, pred: Prediction, produces_maps: bool, wanted: tuple[str, ...]
) -> tuple[dict[str, float | None], dict[str, str]]:
    """The protocol's metrics (``wanted``), exactly those; None with a note when one does
    not apply (no maps, no masks) or is undefined (one class only), never a made-up number."""
    labels, scores = test.labels.numpy(), pred.scores.numpy()
    values: dict[str, float | None] = {}
    notes: dict[str, str] = {}
    for name in wanted:
        if name in IMAGE_METRICS:
            values[name] = metrics.IMAGE_LEVEL[name](labels, scores)
        elif not produces_maps or test.masks is None:
            values[name], notes[name] = None, NO_MAPS if not produces_maps else NO_MASKS
        else:
            values[name] = metrics.PIXEL_LEVEL[name](test.masks.numpy(), pred.maps.numpy())
    for name, value in values.items():
        if value is not None and math.isnan(value):
            notes[name] = UNDEFINED
    return {k: clean_metric(v) for k, v in values.items()}, notes


BY_DEFECT = ("image_auroc", "pixel_auroc", "aupro")  # the ones the by-defect report shows


def defect_metrics(
    test: TestSet, pred: Prediction, produces_maps: bool, wanted: tuple[str, ...]
) -> dict[str, dict[str, float | None]]:
    """For each defect kind: its images and every normal image, scored as a test set."""
    kinds = sorted(
        {d for d, label in zip(test.defects, test.labels.tolist(), strict=True) if label}
    )
    if len(kinds) < 2:  # one kind (or none): the whole-set metrics already say it
        return {}
    names = tuple(m for m in BY_DEFECT if m in wanted)
    normal = test.labels == 0
    found = {}
    for kind in kinds:
        keep = normal | torch.tensor([d == kind for d in test.defects])
        subset = TestSet(
            test.images[:0],  # not needed for scoring
            test.labels[keep],
            None if test.masks is None else test.masks[keep],
            (),
        )
        part = Prediction(pred.scores[keep], None if pred.maps is None else pred.maps[keep])
        values, _ = score_episode(subset, part, produces_maps, names)
        found[kind] = values
    return found
