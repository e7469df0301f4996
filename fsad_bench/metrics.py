"""Image and pixel AUROC, AP and F1-max, and exact AUPRO; numpy in, Python float out.

An undefined metric is ``nan``, never a made-up 0.5 or 0: a record must not look like a
chance-level result when it is none. AUROC, AP and F1-max are ``nan`` unless the test set
holds both classes (images, or pixels for the pixel metrics); AUPRO is ``nan`` without a
defect region or a normal pixel. With no anomalous sample, recall is 0/0 and AP and F1-max
are undefined. With no normal sample, precision is 1 at every threshold, so AP = F1-max = 1
for any scores whatsoever: a number that says nothing about the method, hence ``nan`` too.

AP and F1-max follow scikit-learn's ``average_precision_score`` (step sum of
(R_n - R_{n-1}) P_n, no interpolation) and the maximum of 2PR/(P+R) over every point of
``precision_recall_curve``; every distinct score is a threshold and tied scores enter
together.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from sklearn.metrics import roc_auc_score

AUPRO_VERSION = "aupro-exact-v1"
# v2: image/pixel AP and F1-max added; image AUROC, pixel AUROC and AUPRO are unchanged.
METRICS_VERSION = f"fsad-metrics-v2+{AUPRO_VERSION}"

# 8-connectivity inside each image, none across images of the stack.
_EIGHT_CONNECTED_PER_IMAGE = np.zeros((3, 3, 3), dtype=bool)
_EIGHT_CONNECTED_PER_IMAGE[1] = True


def image_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """AUROC of per-image scores (higher = more anomalous); nan unless both classes occur."""
    labels, scores = _check_scores(labels, scores)
    if labels.all() or not labels.any():
        return math.nan
    return float(roc_auc_score(labels, scores))


def pixel_auroc(masks: np.ndarray, maps: np.ndarray) -> float:
    """AUROC over all pixels of all images; nan unless both normal and defect pixels occur.

    Computed as the Mann-Whitney statistic (ties count one half), which equals the ROC area:
    sorting the normal scores once and locating each defect score is several times faster
    than sklearn's full ROC curve on millions of pixels (benchmarks/bench_aupro.py).
    """
    masks, maps = _check_maps(masks, maps)
    normal = np.sort(maps[~masks])
    defect = np.sort(maps[masks])
    if normal.size == 0 or defect.size == 0:
        return math.nan
    below = np.searchsorted(normal, defect, side="left")
    not_above = np.searchsorted(normal, defect, side="right")
    wins = below.sum(dtype=np.int64) + 0.5 * (not_above - below).sum(dtype=np.int64)
    return float(wins / (float(normal.size) * float(defect.size)))


def image_ap(labels: np.ndarray, scores: np.ndarray) -> float:
    """Average precision of per-image scores; nan unless both classes occur."""
    labels, scores = _check_scores(labels, scores)
    return _average_precision(scores[~labels], scores[labels])


def image_f1_max(labels: np.ndarray, scores: np.ndarray) -> float:
    """Best F1 over all thresholds on per-image scores; nan unless both classes occur."""
    labels, scores = _check_scores(labels, scores)
    return _f1_max(scores[~labels], scores[labels])


def pixel_ap(masks: np.ndarray, maps: np.ndarray) -> float:
    """Average precision over all pixels of all images; nan unless both classes occur."""
    masks, maps = _check_maps(masks, maps)
    return _average_precision(maps[~masks], maps[masks])


def pixel_f1_max(masks: np.ndarray, maps: np.ndarray) -> float:
    """Best F1 over all thresholds on all pixels of all images; nan unless both classes occur."""
    masks, maps = _check_maps(masks, maps)
    return _f1_max(maps[~masks], maps[masks])


def _average_precision(normal: np.ndarray, defect: np.ndarray) -> float:
    counts = _pr_counts(normal, defect)
    if counts is None:
        return math.nan
    tp, fp = counts
    gained = np.diff(tp, prepend=0)
    return float(np.sum(gained * (tp / (tp + fp))) / defect.size)


def _f1_max(normal: np.ndarray, defect: np.ndarray) -> float:
    """2PR/(P+R) with P = tp/(tp+fp), R = tp/n_defect is 2 tp / (n_defect + tp + fp)."""
    counts = _pr_counts(normal, defect)
    if counts is None:
        return math.nan
    tp, fp = counts
    return float(np.max(2.0 * tp / (defect.size + tp + fp)))


def _pr_counts(normal: np.ndarray, defect: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """True and false positives at each distinct defect score t, highest first (score >= t).

    These thresholds suffice for both AP and F1-max. Recall moves only at defect scores, so
    other thresholds add (R_n - R_{n-1}) P_n = 0 to AP; between two defect scores tp is
    fixed and fp can only grow downwards, so F1 = 2 tp / (n_defect + tp + fp) peaks at a
    defect score (above the highest one tp = 0 and F1 = 0). One sort of each class replaces
    sklearn's argsort of all samples with its gathers. None when a class is missing.
    ``normal`` and ``defect`` are private copies and are sorted in place.
    """
    if normal.size == 0 or defect.size == 0:
        return None
    normal.sort()
    defect.sort()
    first_of_tie = np.ones(defect.size, dtype=bool)
    first_of_tie[1:] = defect[1:] != defect[:-1]
    start = np.flatnonzero(first_of_tie)[::-1]
    tp = defect.size - start
    fp = normal.size - np.searchsorted(normal, defect[start], side="left")
    return tp, fp


def aupro(maps: np.ndarray, masks: np.ndarray, limit: float = 0.3) -> float:
    """Normalised area under the per-region-overlap curve up to FPR ``limit`` (MVTec AD).

    Regions are the 8-connected components of each mask; FPR counts the normal pixels of
    all images (defect-free ones included); PRO averages the covered fraction over all
    regions. Every distinct score is a threshold and tied pixels enter together. nan when
    there is no defect region or no normal pixel.
    """
    masks, maps = _check_maps(masks, maps)
    limit = _check_limit(limit)
    regions, n_regions = ndimage.label(masks, structure=_EIGHT_CONNECTED_PER_IMAGE)
    normal = maps[~masks]
    if n_regions == 0 or normal.size == 0:
        return math.nan
    defect_regions = regions[masks]
    area = np.bincount(defect_regions, minlength=n_regions + 1)
    weight = 1.0 / (area[defect_regions] * float(n_regions))
    fpr, pro = _pro_curve(normal, maps[masks], weight, limit)
    return _area_up_to(fpr, pro, limit) / limit


def _pro_curve(
    normal: np.ndarray, defect: np.ndarray, weight: np.ndarray, limit: float
) -> tuple[np.ndarray, np.ndarray]:
    """Vertices of PRO(FPR) from FPR 0 to the first threshold whose FPR reaches ``limit``.

    Lower thresholds cannot change the area, so only normal pixels scoring at or above that
    threshold (found by partition) are sorted. PRO moves only at defect scores and is flat in
    between, so each distinct defect score t (descending) gives two vertices: (FPR over
    normals > t, PRO before t) and (FPR over normals >= t, PRO after t). The thresholds held
    by normal pixels alone lie on the flat parts; leaving them out keeps the area exact.
    ``normal`` is a private copy and is reordered in place.
    """
    n_normal = normal.size
    # m > limit * n_normal normal pixels reach FPR > limit, whatever the rounding.
    m = min(n_normal, int(limit * n_normal) + 1)
    normal.partition(n_normal - m)
    cut = normal[n_normal - m]
    top = normal[n_normal - m :]
    top.sort()
    n_cut = m + int(np.count_nonzero(normal[: n_normal - m] == cut))

    keep = defect >= cut
    order = np.argsort(defect[keep])[::-1]
    scores, weight = defect[keep][order], weight[keep][order]
    last_of_tie = np.ones(scores.size, dtype=bool)
    last_of_tie[:-1] = scores[1:] != scores[:-1]
    thresholds = scores[last_of_tie]
    pro_after = np.minimum(np.cumsum(weight)[last_of_tie], 1.0)
    pro_before = np.r_[0.0, pro_after][:-1]
    above = m - np.searchsorted(top, thresholds, side="right")
    at_or_above = m - np.searchsorted(top, thresholds, side="left")
    at_or_above[thresholds == cut] = n_cut

    pro_end = pro_after[-1] if pro_after.size else 0.0
    fpr = np.r_[0.0, np.column_stack([above, at_or_above]).ravel() / n_normal, n_cut / n_normal]
    pro = np.r_[0.0, np.column_stack([pro_before, pro_after]).ravel(), pro_end]
    return fpr, pro


def _area_up_to(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoid area under y(x) on [0, limit]; x is non-decreasing, starts at 0, ends >= limit."""
    inside = int(np.searchsorted(x, limit, side="right"))
    xs, ys = x[:inside], y[:inside]
    area = float(np.sum(np.diff(xs) * (ys[1:] + ys[:-1])) / 2.0)
    if xs[-1] < limit:
        x0, y0, x1, y1 = xs[-1], ys[-1], x[inside], y[inside]
        y_limit = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
        area += float((limit - x0) * (y0 + y_limit) / 2.0)
    return area


def _check_limit(limit: float) -> float:
    try:
        value = float(limit)
    except (TypeError, ValueError):
        value = math.nan
    if not 0.0 < value <= 1.0:
        raise ValueError(f"aupro limit must be a number in (0, 1], got {limit!r}")
    return value


def _check_scores(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = _binary(labels, "labels")
    scores = _finite(scores, "scores")
    if labels.ndim != 1 or labels.shape != scores.shape:
        raise ValueError(
            f"labels and scores must be 1-D arrays of the same length, "
            f"got shapes {labels.shape} and {scores.shape}"
        )
    return labels, scores


def _check_maps(masks: np.ndarray, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    masks = _binary(masks, "masks")
    maps = _finite(maps, "maps")
    if maps.ndim != 3 or masks.shape != maps.shape:
        raise ValueError(
            f"masks and maps must both have shape (N, H, W), "
            f"got masks {masks.shape} and maps {maps.shape}"
        )
    return masks, maps


def _binary(values: np.ndarray, name: str) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype != bool:
        if not ((values == 0) | (values == 1)).all():
            raise ValueError(f"{name} must contain only 0 and 1 (or booleans)")
        values = values.astype(bool)
    return values


def _finite(values: np.ndarray, name: str) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be a numeric array, got dtype {values.dtype}")
    if values.dtype not in (np.float32, np.float64):
        values = values.astype(np.float64)
    if not np.isfinite(values).all():
        raise ValueError(f"{name} contain NaN or inf; the method must return finite scores")
    return values


def _aupro_of(masks: np.ndarray, maps: np.ndarray) -> float:
    return aupro(maps, masks)


# name -> function(labels, scores) / function(masks, maps): how the runner computes each
IMAGE_LEVEL = {"image_auroc": image_auroc, "image_ap": image_ap, "image_f1_max": image_f1_max}
PIXEL_LEVEL = {
    "pixel_auroc": pixel_auroc,
    "pixel_ap": pixel_ap,
    "pixel_f1_max": pixel_f1_max,
    "aupro": _aupro_of,
}
