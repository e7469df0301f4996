"""Metrics against independent implementations: a plain full-sort AUPRO, the literal
threshold-by-threshold definitions, pairwise AUROC counts, scikit-learn's AP and
precision-recall curve, and hand-derived values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import ndimage
from scipy.stats import rankdata
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from fsad_bench import metrics
from fsad_bench.identity import METRIC_LABELS
from fsad_bench.identity import METRICS as ALL_METRICS
from fsad_bench.metrics import (
    AUPRO_VERSION,
    METRICS_VERSION,
    aupro,
    image_ap,
    image_auroc,
    image_f1_max,
    pixel_ap,
    pixel_auroc,
    pixel_f1_max,
)

# ---------------------------------------------------------------------------------------------
# Independent references


def label_regions(masks: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected regions image by image, numbered 1..n across the whole stack."""
    labels = np.zeros(masks.shape, dtype=np.int64)
    n_regions = 0
    for i, mask in enumerate(masks):
        image_labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=int))
        labels[i] = np.where(image_labels > 0, image_labels + n_regions, 0)
        n_regions += n
    return labels, n_regions


def clipped_area(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoid area of the polyline (x, y) over [0, limit], each segment cut at limit."""
    x0, x1, y0, y1 = x[:-1], x[1:], y[:-1], y[1:]
    end = np.minimum(x1, limit)
    width = np.maximum(end - x0, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        y_end = np.where(x1 > x0, y0 + (y1 - y0) * (end - x0) / (x1 - x0), y1)
    return float(np.sum(width * (y0 + y_end)) / 2.0)


def plain_aupro(maps: np.ndarray, masks: np.ndarray, limit: float = 0.3) -> float:
    """Reference: sort every pixel by score, accumulate FP and per-region weights, integrate."""
    masks = np.asarray(masks).astype(bool)
    maps = np.asarray(maps)
    labels, n_regions = label_regions(masks)
    n_normal = int((~masks).sum())
    if n_regions == 0 or n_normal == 0:
        return math.nan
    area = np.bincount(labels.ravel())
    order = np.argsort(-maps.ravel())
    scores, owner = maps.ravel()[order], labels.ravel()[order]
    fp = np.cumsum(owner == 0)
    tp = np.cumsum(np.where(owner > 0, 1.0 / (area[owner] * n_regions), 0.0))
    last_of_tie = np.r_[scores[1:] != scores[:-1], True]
    fpr = np.r_[0.0, fp[last_of_tie] / n_normal]
    pro = np.r_[0.0, tp[last_of_tie]]
    return clipped_area(fpr, pro, limit) / limit


def literal_aupro(maps: np.ndarray, masks: np.ndarray, limit: float = 0.3) -> float:
    """The definition read aloud: one pass over the pixels per distinct threshold (tiny maps)."""
    masks = np.asarray(masks).astype(bool)
    labels, n_regions = label_regions(masks)
    n_normal = int((~masks).sum())
    if n_regions == 0 or n_normal == 0:
        return math.nan
    regions = [labels == r for r in range(1, n_regions + 1)]
    fpr, pro = [0.0], [0.0]
    for threshold in sorted(set(maps.ravel().tolist()), reverse=True):
        above = maps >= threshold
        fpr.append((above & ~masks).sum() / n_normal)
        pro.append(float(np.mean([above[region].mean() for region in regions])))
    return clipped_area(np.array(fpr), np.array(pro), limit) / limit


def pairwise_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mann-Whitney: fraction of (anomalous, normal) pairs ordered correctly, ties count 1/2."""
    labels = np.asarray(labels).astype(bool)
    pos, neg = scores[labels][:, None], scores[~labels][None, :]
    return float(((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (pos.size * neg.size))


def same(a: float, b: float, tol: float = 1e-9) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol


def blob_masks(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Blob-shaped defects (smoothed noise above a level) in about half of the images."""
    noise = ndimage.gaussian_filter(rng.random((n, size, size)), sigma=(0, 3, 3))
    masks = noise > np.quantile(noise, 0.95, axis=(1, 2), keepdims=True)
    masks[rng.random(n) < 0.5] = False
    return masks


# ---------------------------------------------------------------------------------------------
# Hypothesis strategies: tiny stacks, coarse scores so that ties are common


@st.composite
def stacks(draw: st.DrawFn, max_side: int = 6) -> tuple[np.ndarray, np.ndarray]:
    shape = (
        draw(st.integers(1, 3)),
        draw(st.integers(1, max_side)),
        draw(st.integers(1, max_side)),
    )
    masks = draw(hnp.arrays(bool, shape))
    coarse = draw(st.booleans())
    elements = st.integers(0, 4) if coarse else st.floats(-1e3, 1e3, allow_subnormal=False)
    maps = draw(hnp.arrays(np.int64 if coarse else np.float64, shape, elements=elements))
    return maps, masks


# ---------------------------------------------------------------------------------------------
# AUPRO


def test_versions_are_exported() -> None:
    assert AUPRO_VERSION == "aupro-exact-v1"
    assert AUPRO_VERSION in METRICS_VERSION


@settings(max_examples=150, deadline=None)
@given(stacks(max_side=4), st.sampled_from([0.3, 0.05, 0.5, 1.0]))
def test_plain_reference_matches_literal_definition(
    stack: tuple[np.ndarray, np.ndarray], limit: float
) -> None:
    maps, masks = stack
    assert same(plain_aupro(maps, masks, limit), literal_aupro(maps, masks, limit))


@settings(max_examples=300, deadline=None)
@given(stacks(), st.sampled_from([0.3, 0.01, 0.1, 0.5, 0.77, 1.0]))
def test_aupro_matches_plain_reference(stack: tuple[np.ndarray, np.ndarray], limit: float) -> None:
    maps, masks = stack
    assert same(aupro(maps, masks, limit), plain_aupro(maps, masks, limit))


@pytest.mark.parametrize("limit", [0.3, 0.02, 0.6, 1.0])
@pytest.mark.parametrize("levels", [None, 7])
def test_aupro_matches_plain_reference_on_blobs(limit: float, levels: int | None) -> None:
    rng = np.random.default_rng(7)
    masks = blob_masks(rng, 12, 48)
    maps = (ndimage.gaussian_filter(rng.random(masks.shape), 1) + 0.2 * masks).astype(np.float32)
    if levels is not None:  # heavy ties between normal and defect pixels
        maps = np.round(maps * levels) / levels
    assert masks.any() and (~masks).any()
    assert same(aupro(maps, masks, limit), plain_aupro(maps, masks, limit))


def test_hand_computed_value() -> None:
    # One 2x3 image, one defect region {(0,0), (0,1)} (area 2), four normal pixels.
    # Thresholds, highest first:  0.9 -> PRO 1/2, FPR 0;   0.8 -> FPR 1/4;
    #                             0.5 -> PRO 1;            0.4 -> FPR 2/4 (past 0.3).
    # Curve (0,0) (0,.5) (.25,.5) (.25,1) (.5,1): area on [0, 0.3] = .25*.5 + .05*1 = 0.175,
    # divided by 0.3 -> 7/12. On [0, 0.5]: 0.125 + 0.25 = 0.375, divided by 0.5 -> 3/4.
    masks = np.array([[[1, 1, 0], [0, 0, 0]]])
    maps = np.array([[[0.9, 0.5, 0.8], [0.4, 0.3, 0.2]]])
    assert aupro(maps, masks) == pytest.approx(7 / 12, abs=1e-12)
    assert aupro(maps, masks, limit=0.5) == pytest.approx(3 / 4, abs=1e-12)


def test_tie_between_normal_and_defect_pixel_is_one_step() -> None:
    # The defect pixel and one of three normal pixels share 0.5: the curve goes straight from
    # (0, 0) to (1/3, 1), so PRO(0.3) = 0.9 and the area is 0.3 * 0.9 / 2; / 0.3 -> 0.45.
    # Defect first would give 1.0, normal first 0.0.
    masks = np.array([[[1, 0], [0, 0]]])
    maps = np.array([[[0.5, 0.5], [0.1, 0.2]]])
    assert aupro(maps, masks) == pytest.approx(0.45, abs=1e-12)


def test_diagonal_neighbours_form_one_region() -> None:
    # (0,0) touches the 2x2 block at (1,1) only by a corner: 8-connectivity makes one region
    # of area 5. Only (0,0) scores above the normal pixels, so PRO stays 1/5 until FPR 1 and
    # AUPRO = 0.2. Two regions (4-connectivity) would give (1 + 0) / 2 = 0.5.
    masks = np.zeros((1, 4, 4), dtype=bool)
    masks[0, 0, 0] = True
    masks[0, 1:3, 1:3] = True
    maps = np.full(masks.shape, 0.5)
    maps[masks] = 0.0
    maps[0, 0, 0] = 1.0
    assert aupro(maps, masks) == pytest.approx(0.2, abs=1e-12)
    assert ndimage.label(masks[0], structure=np.ones((3, 3)))[1] == 1
    assert ndimage.label(masks[0])[1] == 2  # the case really separates the two definitions


def test_regions_are_averaged_over_all_images() -> None:
    # Image 0: a 1-pixel region found at the top; image 1: a 3-pixel region at the bottom;
    # image 2: defect-free, its pixels count as normal. PRO = (1 + 0) / 2 on the whole
    # stretch FPR in [0, 1), so AUPRO = 0.5 at any limit.
    masks = np.zeros((3, 3, 3), dtype=bool)
    masks[0, 1, 1] = True
    masks[1, 0, :] = True
    maps = np.full(masks.shape, 0.5)
    maps[0, 1, 1] = 2.0
    maps[1, 0, :] = -1.0
    for limit in (0.3, 0.9):
        assert aupro(maps, masks, limit) == pytest.approx(0.5, abs=1e-12)


def test_defect_free_images_count_in_fpr() -> None:
    # The same defect image with or without extra defect-free images whose pixels outscore the
    # defect: the extra false positives must lower AUPRO.
    rng = np.random.default_rng(0)
    masks = blob_masks(rng, 1, 32)
    masks[0, 10:16, 10:16] = True
    maps = rng.random(masks.shape) + 0.5 * masks
    clean_maps = np.concatenate([maps, np.full((2, 32, 32), 5.0)])
    clean_masks = np.concatenate([masks, np.zeros((2, 32, 32), dtype=bool)])
    assert aupro(clean_maps, clean_masks) < aupro(maps, masks)
    assert same(aupro(clean_maps, clean_masks), plain_aupro(clean_maps, clean_masks))


@pytest.mark.parametrize("limit", [0.3, 0.1, 1.0])
def test_all_tied_scores(limit: float) -> None:
    # One threshold: the curve is the straight line (0,0)-(1,1); area limit^2/2, / limit.
    masks = blob_masks(np.random.default_rng(1), 4, 16)
    masks[0, 3:6, 3:6] = True
    assert aupro(np.zeros(masks.shape), masks, limit) == pytest.approx(limit / 2, abs=1e-12)


@pytest.mark.parametrize("limit", [0.3, 0.05, 1.0])
def test_perfect_and_inverted_maps(limit: float) -> None:
    rng = np.random.default_rng(2)
    masks = blob_masks(rng, 6, 24)
    masks[0, :4, :4] = True
    noise = rng.random(masks.shape)
    assert aupro(noise + 2 * masks, masks, limit) == pytest.approx(1.0, abs=1e-12)
    assert aupro(noise - 2 * masks, masks, limit) == pytest.approx(0.0, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(stacks())
def test_aupro_depends_only_on_score_order(stack: tuple[np.ndarray, np.ndarray]) -> None:
    maps, masks = stack
    ranks = rankdata(maps, method="dense").reshape(maps.shape)
    assert same(aupro(maps, masks), aupro(ranks, masks))
    shuffled = np.random.default_rng(0).permutation(len(maps))
    assert same(aupro(maps, masks), aupro(maps[shuffled], masks[shuffled]))
    value = aupro(maps, masks)
    assert math.isnan(value) or 0.0 <= value <= 1.0


def test_aupro_undefined_is_nan() -> None:
    maps = np.random.default_rng(3).random((2, 5, 5))
    assert math.isnan(aupro(maps, np.zeros(maps.shape, dtype=bool)))
    assert math.isnan(aupro(maps, np.ones(maps.shape, dtype=bool)))


@pytest.mark.parametrize("limit", [0.0, -0.1, 1.5, math.nan, "0.3x", None])
def test_aupro_rejects_bad_limit(limit: object) -> None:
    masks = np.zeros((1, 3, 3), dtype=bool)
    masks[0, 1, 1] = True
    with pytest.raises(ValueError, match="limit"):
        aupro(np.zeros((1, 3, 3)), masks, limit)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Shape and value checks shared by the pixel metrics


BAD_PIXEL_INPUTS = [
    (np.zeros((4, 4)), np.zeros((4, 4)), "shape"),
    (np.zeros((2, 4, 4)), np.zeros((2, 4, 5)), "shape"),
    (np.zeros((1, 2, 4, 4)), np.zeros((1, 2, 4, 4)), "shape"),
    (np.full((1, 3, 3), 2), np.zeros((1, 3, 3)), "0 and 1"),
    (np.zeros((1, 3, 3)), np.full((1, 3, 3), np.nan), "NaN"),
    (np.zeros((1, 3, 3)), np.full((1, 3, 3), np.inf), "NaN or inf"),
    (np.zeros((1, 3, 3)), np.full((1, 3, 3), "a"), "numeric"),
]


@pytest.mark.parametrize(("masks", "maps", "message"), BAD_PIXEL_INPUTS)
def test_pixel_metrics_reject_bad_input(masks: np.ndarray, maps: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pixel_auroc(masks, maps)
    with pytest.raises(ValueError, match=message):
        aupro(maps, masks)


# ---------------------------------------------------------------------------------------------
# AUROC


@settings(max_examples=200, deadline=None)
@given(stacks())
def test_pixel_auroc_matches_pairwise_count(stack: tuple[np.ndarray, np.ndarray]) -> None:
    maps, masks = stack
    expected = (
        pairwise_auroc(masks.ravel(), maps.ravel()) if 0 < masks.sum() < masks.size else math.nan
    )
    assert same(pixel_auroc(masks, maps), expected, tol=1e-12)


def test_pixel_auroc_matches_sklearn_on_blobs() -> None:
    rng = np.random.default_rng(4)
    masks = blob_masks(rng, 10, 64)
    maps = np.round(rng.random(masks.shape) * 50 + 10 * masks).astype(np.float32)
    expected = roc_auc_score(masks.ravel(), maps.ravel())
    assert pixel_auroc(masks.astype(np.uint8), maps) == pytest.approx(expected, abs=1e-12)


def test_pixel_auroc_undefined_is_nan() -> None:
    maps = np.random.default_rng(5).random((2, 4, 4))
    assert math.isnan(pixel_auroc(np.zeros(maps.shape), maps))
    assert math.isnan(pixel_auroc(np.ones(maps.shape), maps))


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 30).flatmap(
        lambda n: st.tuples(
            hnp.arrays(np.int64, n, elements=st.integers(0, 1)),
            hnp.arrays(np.float64, n, elements=st.sampled_from([0.0, 0.25, 0.5, 1.0, -3.0])),
        )
    )
)
def test_image_auroc_matches_pairwise_count(case: tuple[np.ndarray, np.ndarray]) -> None:
    labels, scores = case
    expected = pairwise_auroc(labels, scores) if 0 < labels.sum() < labels.size else math.nan
    assert same(image_auroc(labels, scores), expected, tol=1e-12)


def test_image_auroc_one_class_is_nan_not_half() -> None:
    assert math.isnan(image_auroc(np.zeros(5), np.arange(5.0)))
    assert math.isnan(image_auroc(np.ones(5, dtype=bool), np.arange(5.0)))
    assert math.isnan(image_auroc(np.zeros(0), np.zeros(0)))


@pytest.mark.parametrize(
    ("labels", "scores", "message"),
    [
        (np.array([0, 1]), np.array([0.1, 0.2, 0.3]), "same length"),
        (np.array([[0, 1]]), np.array([[0.1, 0.2]]), "1-D"),
        (np.array([0, 2]), np.array([0.1, 0.2]), "0 and 1"),
        (np.array([0, 1]), np.array([0.1, np.nan]), "NaN"),
    ],
)
def test_image_auroc_rejects_bad_input(
    labels: np.ndarray, scores: np.ndarray, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        image_auroc(labels, scores)


def test_outputs_are_python_floats() -> None:
    masks = np.zeros((2, 4, 4), dtype=bool)
    masks[0, 1:3, 1:3] = True
    maps = np.random.default_rng(6).random(masks.shape).astype(np.float32)
    values = [image_auroc(np.array([1, 0]), maps.max(axis=(1, 2))), pixel_auroc(masks, maps)]
    values.append(aupro(maps, masks))
    assert all(type(value) is float for value in values)


# ---------------------------------------------------------------------------------------------
# Average precision and F1-max


def sklearn_pr(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """AP and F1-max from scikit-learn on flattened arrays; nan when a class is missing."""
    labels, scores = np.asarray(labels).astype(bool).ravel(), np.asarray(scores).ravel()
    if labels.all() or not labels.any():
        return math.nan, math.nan
    precision, recall, _ = precision_recall_curve(labels, scores)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total > 0)
    return float(average_precision_score(labels, scores)), float(f1.max())


def literal_pr(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """The definitions read aloud: count P and R at each distinct threshold (tiny inputs)."""
    labels, scores = np.asarray(labels).astype(bool).ravel(), np.asarray(scores).ravel()
    if labels.all() or not labels.any():
        return math.nan, math.nan
    ap, f1_max, previous_recall = 0.0, 0.0, 0.0
    for threshold in sorted(set(scores.tolist()), reverse=True):
        above = scores >= threshold
        precision = (above & labels).sum() / above.sum()
        recall = (above & labels).sum() / labels.sum()
        ap += (recall - previous_recall) * precision
        previous_recall = recall
        if precision + recall > 0:
            f1_max = max(f1_max, 2 * precision * recall / (precision + recall))
    return ap, f1_max


def pixel_pr(masks: np.ndarray, maps: np.ndarray) -> tuple[float, float]:
    return pixel_ap(masks, maps), pixel_f1_max(masks, maps)


def image_pr(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    return image_ap(labels, scores), image_f1_max(labels, scores)


def same_pair(a: tuple[float, float], b: tuple[float, float], tol: float = 1e-12) -> bool:
    return same(a[0], b[0], tol) and same(a[1], b[1], tol)


tied_image_cases = st.integers(0, 30).flatmap(
    lambda n: st.tuples(
        hnp.arrays(np.int64, n, elements=st.integers(0, 1)),
        hnp.arrays(np.float64, n, elements=st.sampled_from([0.0, 0.25, 0.5, 1.0, -3.0])),
    )
)


@settings(max_examples=150, deadline=None)
@given(stacks(max_side=4))
def test_literal_pr_reference_matches_sklearn(stack: tuple[np.ndarray, np.ndarray]) -> None:
    maps, masks = stack
    assert same_pair(literal_pr(masks, maps), sklearn_pr(masks, maps))


@settings(max_examples=300, deadline=None)
@given(stacks())
def test_pixel_pr_metrics_match_sklearn(stack: tuple[np.ndarray, np.ndarray]) -> None:
    maps, masks = stack
    assert same_pair(pixel_pr(masks, maps), sklearn_pr(masks, maps))


@settings(max_examples=200, deadline=None)
@given(tied_image_cases)
def test_image_pr_metrics_match_sklearn_and_definition(case: tuple[np.ndarray, np.ndarray]) -> None:
    labels, scores = case
    assert same_pair(image_pr(labels, scores), sklearn_pr(labels, scores))
    assert same_pair(image_pr(labels, scores), literal_pr(labels, scores))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("levels", [None, 3, 7, 50])
def test_pixel_pr_metrics_match_sklearn_on_blobs(dtype: type, levels: int | None) -> None:
    rng = np.random.default_rng(8)
    masks = blob_masks(rng, 16, 64)
    maps = (ndimage.gaussian_filter(rng.random(masks.shape), 1) + 0.2 * masks).astype(dtype)
    if levels is not None:  # heavy ties between normal and defect pixels
        maps = np.round(maps * levels) / levels
    assert masks.any() and (~masks).any()
    assert same_pair(pixel_pr(masks, maps), sklearn_pr(masks, maps))


@pytest.mark.parametrize("levels", [None, 2, 5])
def test_image_pr_metrics_match_sklearn_on_many_images(levels: int | None) -> None:
    rng = np.random.default_rng(9)
    labels = rng.random(500) < 0.4
    scores = rng.standard_normal(500) + 1.0 * labels
    if levels is not None:
        scores = np.round(scores * levels) / levels
    assert same_pair(image_pr(labels.astype(np.uint8), scores), sklearn_pr(labels, scores))


def test_pr_hand_computed_values() -> None:
    # Scores 0.9 (defect), 0.8 (normal), 0.7 (defect), 0.1 (normal). Thresholds give (P, R):
    # (1, 1/2), (1/2, 1/2), (2/3, 1), (1/2, 1). AP = 1/2 * 1 + 1/2 * 2/3 = 5/6.
    # F1 = 2PR/(P+R): 2/3, 1/2, 4/5, 2/3 -> 4/5.
    labels = np.array([1, 0, 1, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.1])
    assert image_ap(labels, scores) == pytest.approx(5 / 6, abs=1e-12)
    assert image_f1_max(labels, scores) == pytest.approx(4 / 5, abs=1e-12)
    masks, maps = labels.reshape(1, 2, 2), scores.reshape(1, 2, 2)
    assert pixel_ap(masks, maps) == pytest.approx(5 / 6, abs=1e-12)
    assert pixel_f1_max(masks, maps) == pytest.approx(4 / 5, abs=1e-12)


def test_pr_tie_between_normal_and_defect_is_one_step() -> None:
    # The defect shares 0.5 with a normal: one threshold with P = 1/2, R = 1, so AP = 1/2 and
    # F1 = 2/3. Counting the tied defect before the normal would give AP = F1 = 1.
    labels = np.array([1, 0, 0])
    assert image_ap(labels, np.array([0.5, 0.5, 0.1])) == pytest.approx(0.5, abs=1e-12)
    assert image_f1_max(labels, np.array([0.5, 0.5, 0.1])) == pytest.approx(2 / 3, abs=1e-12)
    # Two defects, one tied with a normal: thresholds 0.9 -> (P, R) = (1, 1/2), 0.5 -> (2/3, 1).
    # AP = 1/2 + 1/2 * 2/3 = 5/6, F1-max = 4/5; the tied defect first would give 1 and 1.
    labels = np.array([1, 1, 0, 0])
    scores = np.array([0.9, 0.5, 0.5, 0.1])
    assert image_ap(labels, scores) == pytest.approx(5 / 6, abs=1e-12)
    assert image_f1_max(labels, scores) == pytest.approx(4 / 5, abs=1e-12)


def test_pr_all_tied_scores_give_the_positive_rate() -> None:
    # One threshold: P = positive rate p, R = 1. AP = p, F1-max = 2p / (1 + p).
    masks = blob_masks(np.random.default_rng(10), 6, 32)
    masks[0, 3:6, 3:6] = True
    rate = masks.mean()
    maps = np.full(masks.shape, 0.25, dtype=np.float32)
    assert pixel_ap(masks, maps) == pytest.approx(rate, abs=1e-12)
    assert pixel_f1_max(masks, maps) == pytest.approx(2 * rate / (1 + rate), abs=1e-12)


def test_pr_perfect_maps_score_one() -> None:
    rng = np.random.default_rng(11)
    masks = blob_masks(rng, 6, 24)
    masks[0, :4, :4] = True
    maps = rng.random(masks.shape) + 2 * masks
    assert pixel_ap(masks, maps) == pytest.approx(1.0, abs=1e-12)
    assert pixel_f1_max(masks, maps) == pytest.approx(1.0, abs=1e-12)
    assert pixel_ap(masks, -maps) < 0.5  # inverted maps: all normals rank first


@settings(max_examples=100, deadline=None)
@given(stacks())
def test_pr_metrics_depend_only_on_score_order(stack: tuple[np.ndarray, np.ndarray]) -> None:
    maps, masks = stack
    ranks = rankdata(maps, method="dense").reshape(maps.shape)
    assert same_pair(pixel_pr(masks, maps), pixel_pr(masks, ranks))
    shuffled = np.random.default_rng(0).permutation(len(maps))
    assert same_pair(pixel_pr(masks, maps), pixel_pr(masks[shuffled], maps[shuffled]))
    for value in pixel_pr(masks, maps):
        assert math.isnan(value) or 0.0 < value <= 1.0


def test_pr_undefined_is_nan() -> None:
    # No anomalous sample: recall is 0/0. No normal sample: sklearn gives 1 whatever the
    # scores, which says nothing about the method; both are nan.
    maps = np.random.default_rng(12).random((2, 4, 4))
    for masks in (np.zeros(maps.shape), np.ones(maps.shape)):
        assert all(math.isnan(value) for value in pixel_pr(masks, maps))
    assert average_precision_score(np.ones(maps.size), maps.ravel()) == 1.0
    assert average_precision_score(np.ones(maps.size), -maps.ravel()) == 1.0
    for labels in (np.zeros(5), np.ones(5, dtype=bool)):
        assert all(math.isnan(value) for value in image_pr(labels, np.arange(5.0)))
    assert all(math.isnan(value) for value in image_pr(np.zeros(0), np.zeros(0)))


@pytest.mark.parametrize(("masks", "maps", "message"), BAD_PIXEL_INPUTS)
def test_pixel_pr_metrics_reject_bad_input(
    masks: np.ndarray, maps: np.ndarray, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        pixel_ap(masks, maps)
    with pytest.raises(ValueError, match=message):
        pixel_f1_max(masks, maps)


@pytest.mark.parametrize("metric", [image_auroc, image_ap, image_f1_max])
@pytest.mark.parametrize(
    ("labels", "scores", "message"),
    [
        (np.array([0, 1]), np.array([0.1, 0.2, 0.3]), "same length"),
        (np.array([[0, 1]]), np.array([[0.1, 0.2]]), "1-D"),
        (np.array([0, 2]), np.array([0.1, 0.2]), "0 and 1"),
        (np.array([0, 1]), np.array([0.1, np.inf]), "NaN or inf"),
        (np.array([0, 1]), np.array(["a", "b"]), "numeric"),
    ],
)
def test_image_metrics_reject_bad_input(
    metric: object, labels: np.ndarray, scores: np.ndarray, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        metric(labels, scores)  # type: ignore[operator]


def test_pr_metrics_leave_inputs_unchanged_and_return_floats() -> None:
    rng = np.random.default_rng(13)
    masks = blob_masks(rng, 4, 16)
    masks[0, :3, :3] = True
    maps = rng.random(masks.shape).astype(np.float32)
    maps_before, masks_before = maps.copy(), masks.copy()
    labels, scores = masks.any(axis=(1, 2)), maps.max(axis=(1, 2))
    scores_before = scores.copy()
    values = [*pixel_pr(masks, maps), *image_pr(labels, scores)]
    assert all(type(value) is float for value in values)
    assert np.array_equal(maps, maps_before) and np.array_equal(masks, masks_before)
    assert np.array_equal(scores, scores_before)


def test_pixel_pr_metrics_copy_float32_maps_once() -> None:
    # Bounded memory on MVTec-size stacks: one float32 copy of the normal pixels plus small
    # per-threshold arrays; a float64 temporary of the pixels alone would pass 2x.
    import tracemalloc

    rng = np.random.default_rng(14)
    masks = rng.random((10, 128, 128)) < 0.05
    maps = (rng.random(masks.shape) + 0.3 * masks).astype(np.float32)
    for metric in (pixel_ap, pixel_f1_max):
        tracemalloc.start()
        try:
            metric(masks, maps)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 2 * maps.nbytes, f"{metric.__name__} peak {peak / maps.nbytes:.2f}x maps"


def test_every_named_metric_has_a_label_and_a_function() -> None:
    assert len(set(ALL_METRICS)) == len(ALL_METRICS) == 7
    assert list(METRIC_LABELS) == list(ALL_METRICS)
    assert all(callable(getattr(metrics, name)) for name in ALL_METRICS)
    assert METRICS_VERSION.startswith("fsad-metrics-v2+")
