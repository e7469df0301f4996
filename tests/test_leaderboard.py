"""The leaderboard: data logic against independent computations, the app through AppTest,
and one real server opened in headless Chromium at desktop and phone width (screenshots
saved, and what the page drew on them checked)."""

from __future__ import annotations

import base64
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest
from test_compare import A, B, method_records
from test_submission import edit_lines, make_run

from fsad_bench.identity import KIND_LOCAL, KIND_PUBLISHED, KIND_REPRODUCED
from fsad_bench.records import MethodRef
from fsad_bench.results import compare
from fsad_bench.results.plots import OKABE_ITO
from fsad_bench.results.report import aggregate, records_frame
from fsad_bench.results.submission import find_submissions, load_submission, submit
from fsad_bench.store import RecordWriter, read_records

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # leaderboard/ is not an installed package
    sys.path.insert(0, str(ROOT))

from fsad_leaderboard import data, tables  # noqa: E402

APP = ROOT / "leaderboard" / "app.py"
SUBMISSIONS = ROOT / "submissions"
CHROMIUM = Path("/usr/bin/chromium")


def shipped_default() -> Path:
    """The shipped PatchCore run of the default benchmark (other methods sit beside it)."""
    for folder in find_submissions(SUBMISSIONS):
        manifest = load_submission(folder).manifest
        if (
            manifest["protocol"]["name"] == "synthetic_loo"
            and manifest["method"]["name"] == "patchcore"
        ):
            return folder
    raise AssertionError("no shipped PatchCore synthetic_loo submission")


def category_mean(folder: Path, k: int) -> pd.Series:
    """The category-mean image AUROC row at K, via report.aggregate."""
    long = aggregate(read_records(folder))
    return long.query("category == 'mean' and metric == 'image_auroc' and k == @k").iloc[0]


def app_test(monkeypatch: pytest.MonkeyPatch, submissions: Path, runs: list[Path]) -> AppTest:
    monkeypatch.setenv("FSAD_LEADERBOARD_SUBMISSIONS", str(submissions))
    monkeypatch.setenv("FSAD_LEADERBOARD_RUNS", os.pathsep.join(str(r) for r in runs))
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def tab(at: AppTest, label: str):  # -> streamlit.testing Tab
    return next(t for t in at.tabs if t.label == label)


def ranking_frames(at: AppTest) -> list[pd.DataFrame]:
    return [frame.value for frame in tab(at, "Ranking").dataframe]


def charts(element) -> list[dict]:
    return [json.loads(e.proto.spec) for e in element if e.type == "vega_lite_chart"]


def reference_only(tmp_path: Path) -> Path:
    """A submissions folder with the published tables and nothing else."""
    subs = tmp_path / "subs"
    shutil.copytree(SUBMISSIONS / "reference", subs / "reference")
    return subs


# ---- data and tables ------------------------------------------------------------------------


def test_ranking_agrees_with_report_and_a_plain_mean() -> None:
    folder = shipped_default()
    board = data.load_board(SUBMISSIONS)
    assert not board.problems
    view = tables.select(board.frame, "synthetic-v1", "synthetic_loo")
    records = read_records(folder)
    for k in sorted({r.k for r in records}):
        table = tables.ranking(view, str(k), "image_auroc")
        row = table[table["entry"] == "patchcore"].iloc[0]
        per_seed = [
            statistics.mean(r.metrics["image_auroc"] for r in records if r.k == k and r.seed == s)
            for s in sorted({r.seed for r in records})
        ]
        assert row["mean"] == pytest.approx(statistics.mean(per_seed), abs=1e-12)
        assert row["std"] == pytest.approx(statistics.stdev(per_seed), abs=1e-12)
        assert row["n_seeds"] == len(per_seed)
        assert row["rank"] == 1 + (table["mean"] > row["mean"]).sum()


def test_win_counts_count_ties_for_each() -> None:
    values = pd.DataFrame(
        {"A": [0.9, 0.5, 0.7, 0.8], "B": [0.9, 0.6, float("nan"), 0.1]},
        index=["x", "y", "z", "mean"],
    )
    wins = tables.win_counts(values)
    assert wins.loc["A"].tolist() == [2, 3]  # x (tie) and z, of x, y, z
    assert wins.loc["B"].tolist() == [2, 2]  # x (tie) and y, of x, y
    best = tables.best_cells(values)
    assert best.loc["x"].tolist() == [True, True] and best.loc["z"].tolist() == [True, False]


def test_category_table_matches_the_thesis_csv() -> None:
    board = data.load_board(SUBMISSIONS)
    view = tables.select(board.frame, "mvtec_ad", "mvtec_ad_loo")
    values = tables.category_values(view, "1", "image_auroc")
    source = pd.read_csv(SUBMISSIONS / "reference" / "source" /
                         "meta_riad_thesis_mvtec_image_auroc.csv")  # fmt: skip
    k1 = source[source["k"] == 1]
    best = k1.loc[k1.groupby("category")["image_auroc_mean"].idxmax()]
    wins = tables.win_counts(values)
    for method, count in best["method"].value_counts().items():
        assert wins.loc[method].tolist() == [count, 15]
    highlighted = tables.best_cells(values)
    for row in best.itertuples():
        assert highlighted.at[row.category, row.method]
        assert values.at[row.category, row.method] == pytest.approx(row.image_auroc_mean)


def test_published_vs_reproduced_difference() -> None:
    published = data.load_published(SUBMISSIONS)
    reproduced = published[published["method"] == "PatchCore (few-shot)"].copy()
    reproduced = reproduced[reproduced["dataset"] == "mvtec_ad"]
    reproduced["kind"], reproduced["entry"] = KIND_REPRODUCED, "patchcore"
    reproduced["backbone_init"] = "pretrained"
    reproduced["mean"] = reproduced["mean"] + 0.01
    diff = tables.published_vs_reproduced(pd.concat([published, reproduced]))
    assert set(diff["entry_published"]) == {"PatchCore (few-shot)"}
    assert set(diff["k"]) == {"2", "4", "8"}
    assert diff["difference"].to_numpy() == pytest.approx(0.01)


def fake_reproduced(
    method: str, protocol: str | None, ks: list[str], init: str = "pretrained",
    kind: str = KIND_REPRODUCED,
) -> pd.DataFrame:  # fmt: skip
    """Reproduced PaDiM-plugin rows on mvtec_ad (bottle and the mean) at each K, image AUROC."""
    rows = [
        {"entry": data.entry_label(method, kind, init), "kind": kind,
         "method": method, "plugin": "padim", "dataset": "mvtec_ad", "protocol": protocol,
         "category": category, "k": k, "metric": "image_auroc", "mean": 0.5, "std": 0.0,
         "n_seeds": 5, "backbone_init": init, "n_categories": 15.0,
         "of_categories": 15.0, "source": "test", "origin": f"test {method} {init} {kind}"}
        for k in ks
        for category in ("bottle", "mean")
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=data.COLUMNS)


def test_published_vs_reproduced_pairs_only_the_same_protocol_and_real_runs() -> None:
    published = data.load_published(SUBMISSIONS)
    padim = published[published["plugin"] == "padim"]
    # the thesis's PaDiM is leave-one-out at K = 1; the PaDiM paper's K = 2 is its own split
    assert set(padim.loc[padim["k"] == "1", "protocol"]) == {"mvtec_ad_loo"}
    assert set(padim.loc[padim["k"] == "2", "protocol"]) == {"paper's own split"}
    unnamed = published[(published["plugin"] == "padim") & (published["k"] == "1")].copy()
    unnamed["protocol"], unnamed["k"] = float("nan"), "3"  # a published row of no protocol
    frame = pd.concat(
        [
            published,
            unnamed,
            fake_reproduced("padim", "mvtec_ad_loo", ["1", "2"]),
            fake_reproduced("padim", float("nan"), ["3"]),
            fake_reproduced("padim.ci", "mvtec_ad_loo", ["1"]),
            fake_reproduced("padim", "mvtec_ad_loo", ["1"], init="random"),
            fake_reproduced("padim", "mvtec_ad_loo", ["1"], init="mixed: pretrained, random"),
            fake_reproduced("padim", "mvtec_ad_loo", ["1"], kind=KIND_LOCAL),
        ],
        ignore_index=True,
    )
    diff = tables.published_vs_reproduced(frame)
    assert set(diff["entry_reproduced"]) == {"padim"}
    assert set(diff["protocol"]) == {"mvtec_ad_loo"} and set(diff["k"]) == {"1"}
    assert set(diff["entry_published"]) == {"PaDiM"}
    assert set(diff["category"]) == {"bottle", "mean"} and len(diff) == 2


def test_entry_label_names_what_the_kind_column_cannot(tmp_path: Path) -> None:
    assert data.entry_label("m", KIND_REPRODUCED, "pretrained") == "m"
    assert data.entry_label("m", KIND_REPRODUCED, "none") == "m"
    assert data.entry_label("m", KIND_REPRODUCED, "random") == "m (random-init backbone)"
    assert data.entry_label("m", KIND_REPRODUCED, "unknown") == "m (backbone init unknown)"
    assert data.entry_label("m", KIND_REPRODUCED, "imagenet?") == "m (backbone init unknown)"
    assert data.entry_label("m", KIND_LOCAL, "pretrained") == "m (local run)"
    # through the loader: no weights param and no recorded init -> "unknown"
    method = MethodRef("patchcore", "1.0", None, {}, True)
    unknown = data.load_run(make_run(tmp_path / "unknown", method=method))
    assert set(unknown["backbone_init"]) == {"unknown"} and set(unknown["kind"]) == {KIND_LOCAL}
    assert set(unknown["entry"]) == {"patchcore (local run, backbone init unknown)"}
    # half the episodes recorded with a random-init backbone -> "mixed: pretrained, random"
    run = make_run(tmp_path / "mixed", provenance={"backbone_init": "pretrained"})

    def randomise_pill(rows: list[dict]) -> list[dict]:
        for row in rows:
            if row["category"] == "pill":
                row["provenance"]["backbone_init"] = "random"
        return rows

    edit_lines(run / "records.jsonl", randomise_pill)
    mixed = data.load_run(run)
    assert set(mixed["backbone_init"]) == {"mixed: pretrained, random"}
    assert set(mixed["entry"]) == {"patchcore (local run, mixed backbone init)"}


def categories_shown(frame: pd.DataFrame, k: str) -> dict[str, str]:
    """Method -> the ranking's 'categories' cell at K."""
    table = tables.ranking_display(tables.ranking(frame, k, "image_auroc"), "image_auroc")
    return dict(zip(table["method"], table["categories"], strict=True))


def test_ranking_shows_how_many_categories_each_entry_covers(tmp_path: Path) -> None:
    subs = reference_only(tmp_path)
    full = load_submission(submit(make_run(tmp_path / "run"), subs))
    assert full.manifest["protocol"]["categories"] == ["brick", "pill"]
    brick_only = replace(full, records=tuple(r for r in full.records if r.category == "brick"))
    for k in ("1", "4"):
        assert categories_shown(data.submission_rows(full), k) == {"patchcore": "2/2"}
        assert categories_shown(data.submission_rows(brick_only), k) == {"patchcore": "1/2"}
    # a local run (counted against its run.json) that lost pill at K = 4
    partial = make_run(tmp_path / "partial")

    def drop_pill_at_4(rows: list[dict]) -> list[dict]:
        return [r for r in rows if r["k"] == 1 or r["category"] == "brick"]

    edit_lines(partial / "records.jsonl", drop_pill_at_4)
    board = data.load_board(subs, [partial])
    local = tables.select(board.frame, entries=[e for e in board.frame["entry"] if "local" in e])
    assert list(categories_shown(local, "1").values()) == ["2/2"]
    assert list(categories_shown(local, "4").values()) == ["1/2"]
    # like its report, no mean over only the categories it has (no ranking on one of two),
    # even when a category is missing at every K (as with --categories)
    means = local[(local["category"] == "mean") & (local["metric"] == "image_auroc")]
    assert means.set_index("k")["mean"].isna().to_dict() == {"1": False, "4": True}
    brick = make_run(tmp_path / "brick")
    edit_lines(brick / "records.jsonl", lambda rows: [r for r in rows if r["category"] == "brick"])
    rows = data.load_run(brick)
    assert rows[(rows["category"] == "mean")]["mean"].isna().all()
    (partial / "run.json").unlink()
    assert list(categories_shown(data.load_run(partial), "4").values()) == ["1/?"]
    # a published figure covers what the paper covers
    published = categories_shown(data.load_published(SUBMISSIONS), "1")
    assert set(published.values()) == {"as published"}


def test_k_curve_is_numeric_and_leaves_out_full_shot() -> None:
    board = data.load_board(SUBMISSIONS)
    curve = tables.k_curve(tables.select(board.frame, "mvtec_ad"), "image_auroc")
    assert curve[curve["entry"] == "PatchCore (full-shot WRN50)"].empty
    assert curve["K"].dtype.kind == "f"
    regad = curve[curve["entry"] == "RegAD"]
    assert regad["K"].tolist() == sorted(regad["K"])
    assert (curve["low"] <= curve["mean"]).all() and (curve["mean"] <= curve["high"]).all()


def test_reference_conversion_reproduces_the_committed_csv(tmp_path: Path) -> None:
    out = tmp_path / "published.csv"
    script = ROOT / "scripts" / "convert_reference.py"
    subprocess.run([sys.executable, str(script), "--out", str(out)], check=True)
    committed = SUBMISSIONS / "reference" / "published.csv"
    assert out.read_bytes() == committed.read_bytes()
    frame = pd.read_csv(out, dtype={"k": str})
    assert set(frame["kind"]) == {"published"}
    thesis = frame[frame["source"].str.startswith("Meta-RIAD thesis")]
    per_category = thesis[thesis["category"] != "mean"]
    means = thesis[thesis["category"] == "mean"].set_index(["method", "k"])["mean"]
    expected = per_category.groupby(["method", "k"])["mean"].mean()
    assert means.sort_index().to_numpy() == pytest.approx(expected.sort_index(), abs=1e-6)
    assert len(per_category) == 4 * 3 * 15


# ---- the app (AppTest) ----------------------------------------------------------------------


def test_app_ranking_shows_the_submission_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    at = app_test(monkeypatch, SUBMISSIONS, [])
    assert [s.value for s in at.sidebar.selectbox][:2] == ["synthetic-v1", "synthetic_loo"]
    frames = ranking_frames(at)
    assert len(frames) == 4  # K = 1, 2, 4, 8
    folder = shipped_default()
    for frame, k in zip(frames, (1, 2, 4, 8), strict=True):
        row = frame[frame["method"] == "patchcore"].iloc[0]
        expected = category_mean(folder, k)
        assert row["image AUROC"] == pytest.approx(expected["mean"], abs=1e-12)
        assert row["± std"] == pytest.approx(expected["std"], abs=1e-12)
        assert row["kind"] == KIND_REPRODUCED and row["backbone"] == "pretrained"
        n = len(load_submission(folder).manifest["protocol"]["categories"])
        assert row["categories"] == f"{n}/{n}"
    comparison = tab(at, "Published vs reproduced")
    assert any(".ci" in c.value and "random" in c.value for c in comparison.caption)
    assert at.get("download_button")
    assert any("No maps saved" in i.value for i in tab(at, "Anomaly maps").info)


def test_app_puts_what_is_compared_above_each_table_and_the_score_beside_the_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Item 2: dataset, protocol, metric and K in the main area; score next to the name."""
    at = app_test(monkeypatch, SUBMISSIONS, [])
    at.sidebar.selectbox[2].select("pixel_auroc").run()
    ranking = list(tab(at, "Ranking"))
    frames = [i for i, e in enumerate(ranking) if e.type == "dataframe"]
    assert len(frames) == 4
    for index, k in zip(frames, ("1", "2", "4", "8"), strict=True):
        line = ranking[index - 1]
        assert line.type == "text"
        assert (
            line.value == f"dataset synthetic-v1 · protocol synthetic_loo · pixel AUROC · K = {k}"
        )
        assert list(ranking[index].value.columns[:3]) == ["rank", "method", "pixel AUROC"]
    for label in ("Per category", "K-shot curve", "Paired comparison", "Seed sensitivity"):
        texts = [t.value for t in tab(at, label).text]
        assert any(t.startswith("dataset synthetic-v1 · protocol synthetic_loo · pixel AUROC")
                   for t in texts), label  # fmt: skip


def local_timed_runs(tmp_path: Path) -> list[Path]:
    """Three local runs of synthetic_quick predicting at about 12.8, 2.32 and 223 ms per
    image on one CPU (brick and pill differ a little), plus a second seed a speed view must
    leave out: at K = 1 its features came from the cache, at K = 4 another machine ran it."""
    runs = []
    for name, ms in (("alpha", 12.7), ("beta", 2.3), ("gamma", 220.8)):
        method = MethodRef(name, "1", None, {"weights": "pretrained"}, True)
        run = make_run(tmp_path / name, method=method)

        def timed(rows: list[dict], ms: float = ms) -> list[dict]:
            for row in rows:
                row["env"].update(cpu="CPU one", device="cpu", torch_threads=1)
                scale = 1.0 if row["category"] == "brick" else 1.02
                row["timing"].update(predict_ms_per_image=ms * scale, feature_cache_hits=0)
            extra = json.loads(json.dumps(rows))
            for row in extra:
                row["seed"] = 1
                if row["k"] == 1:  # features from the cache: many times faster
                    row["timing"].update(predict_ms_per_image=0.1, feature_cache_hits=2)
                else:
                    row["env"]["cpu"] = "CPU two"
                    row["timing"]["predict_ms_per_image"] = 9999.0
            return [*rows, *extra]

        edit_lines(run / "records.jsonl", timed)
        runs.append(run)
    return runs


def noise_rounded(ms: float) -> float:
    """What the views must show for ``local_timed_runs``'s two cold timings ms, 1.02 ms."""
    values = [ms, 1.02 * ms]
    spread = statistics.stdev(values)
    return round(statistics.mean(values), -math.floor(math.log10(spread)))


def test_app_numbers_stay_numbers_and_sort_as_numbers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Item 3 (and 5 in the ranking): numeric columns formatted by the display."""
    at = app_test(monkeypatch, reference_only(tmp_path), local_timed_runs(tmp_path))
    element = tab(at, "Ranking").dataframe[0]
    frame = element.value
    for column in ("rank", "image AUROC", "± std", "seeds", "ms / image"):
        assert pd.api.types.is_numeric_dtype(frame[column]), column
    # ms / image over the cold episodes on the common CPU only: the cache hits (0.1 ms) and
    # the other machine (9999 ms) are left out; rounded to the timings' spread
    ordered = frame.sort_values("ms / image")["ms / image"].tolist()
    assert ordered == [noise_rounded(2.3), noise_rounded(12.7), noise_rounded(220.8)]
    assert ordered == [2.32, 12.8, 223]
    config = json.loads(element.proto.columns)
    assert config["image AUROC"]["type_config"]["format"] == "%.3f"
    assert config["ms / image"]["type_config"]["format"] == "plain"
    assert config["rank"]["type_config"]["format"] == "%d"


def test_app_marks_local_runs_as_unvalidated(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Item 4: a local copy of a submission is a 'local run', unranked, plainly named, and
    drawn in its own dash and shape on the K-shot curve."""
    subs = reference_only(tmp_path)
    run = make_run(tmp_path / "mine")
    submit(run, subs)
    at = app_test(monkeypatch, subs, [run])
    for frame in ranking_frames(at):
        assert set(frame["method"]) == {"patchcore", "patchcore (local run)"}
        rows = frame.set_index("method")
        assert rows.at["patchcore", "kind"] == KIND_REPRODUCED and rows.at["patchcore", "rank"] == 1
        assert rows.at["patchcore (local run)", "kind"] == KIND_LOCAL
        assert pd.isna(rows.at["patchcore (local run)", "rank"])  # same score, not tied
        assert not any("[" in name for name in frame["method"])
    (spec,) = charts(tab(at, "K-shot curve"))
    line = next(layer for layer in spec["layer"] if layer["mark"]["type"] == "line")
    dash = line["encoding"]["strokeDash"]
    assert dash["field"] == "kind"
    styles = dict(zip(dash["scale"]["domain"], map(tuple, dash["scale"]["range"]), strict=True))
    assert styles[KIND_LOCAL] != styles[KIND_REPRODUCED] != styles[KIND_PUBLISHED]
    assert styles[KIND_LOCAL] != styles[KIND_PUBLISHED]


def test_app_speed_view_uses_comparable_timings_and_the_selected_metric(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Item 5: cold-cache timings of one machine, rounded to their noise, the metric the
    sidebar selects on the y axis, K labelled."""
    runs = local_timed_runs(tmp_path)
    at = app_test(monkeypatch, reference_only(tmp_path), runs)
    at.sidebar.selectbox[2].select("pixel_auroc").run()
    speed = tab(at, "Speed vs accuracy")
    assert speed.selectbox[0].value == "CPU one, cpu, 1 thread(s)"
    assert any("6 feature-cache hits" in t.value and "6 other machines" in t.value
               for t in [*speed.text, *speed.caption])  # fmt: skip
    table = speed.dataframe[0].value
    assert "pixel AUROC" in table.columns
    gamma = table[table["method"] == "gamma (local run)"]
    assert gamma["ms / image"].tolist() == [noise_rounded(220.8)] * 2  # K = 1 and 4
    (chart,) = [e for e in speed if e.type == "vega_lite_chart"]
    encodings = [layer["encoding"] for layer in json.loads(chart.proto.spec)["layer"]]
    assert {e["y"]["title"] for e in encodings if "title" in e["y"]} == {"pixel AUROC"}
    labels = next(e for e in encodings if "text" in e)
    assert labels["text"]["field"] == "label"
    points = pa.ipc.open_stream(chart.proto.datasets[0].data.data).read_pandas()
    assert set(points["label"]) == {"K=1", "K=4"} and len(points) == 6


def test_app_k_curve_is_readable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Item 6: integer K ticks on a log-2 axis, a band for the seed spread, whole legend
    names, Okabe-Ito colours."""
    at = app_test(monkeypatch, SUBMISSIONS, [])
    (spec,) = charts(tab(at, "K-shot curve"))
    layers = {layer["mark"]["type"]: layer["encoding"] for layer in spec["layer"]}
    x = layers["line"]["x"]
    assert x["scale"]["type"] == "log" and x["scale"]["base"] == 2
    assert x["axis"]["values"] == [1, 2, 4, 8] and x["axis"]["format"] == "d"
    assert (layers["area"]["y"]["field"], layers["area"]["y2"]["field"]) == ("low", "high")
    color = layers["line"]["color"]
    assert color["legend"]["labelLimit"] == 0
    assert color["scale"]["range"] == OKABE_ITO[: len(color["scale"]["domain"])]


def test_app_published_vs_reproduced_explains_itself_and_shows_what_it_will_pair(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Item 8: empty out of the box, with the reason and the pairs an MVTec run would get;
    names carry no '(reproduced)' beside the kind column."""
    at = app_test(monkeypatch, SUBMISSIONS, [])
    view = tab(at, "Published vs reproduced")
    (info,) = view.info
    assert "MVTec AD" in info.value and "synthetic" in info.value
    pairable = view.dataframe[0].value
    padim = pairable[(pairable["plugin"] == "padim")].iloc[0]
    assert padim["protocol"] == "mvtec_ad_loo" and padim["published method"] == "PaDiM"
    assert padim["command"].startswith("fsad-bench run --protocol mvtec_ad_loo")
    assert padim["K"] == "1, 5, 10"
    assert "paper's own split" not in set(pairable["protocol"])
    names = pd.concat(ranking_frames(at))["method"]
    assert not names.str.contains("reproduced|published").any()


def seeded_runs(tmp_path: Path) -> list[Path]:
    """Three local runs of the same 3 categories x 3 seeds at K = 1 (A, B and A shifted)."""
    shifted = {key: value - 0.1 for key, value in A.items()}
    runs = []
    for name, values in (("a", A), ("b", B), ("c", shifted)):
        writer = RecordWriter(tmp_path / name)
        for record in method_records(name, values):
            writer.append(record)
        runs.append(tmp_path / name)
    return runs


def test_app_paired_comparison_matches_compare(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    runs = seeded_runs(tmp_path)
    at = app_test(monkeypatch, reference_only(tmp_path), runs)
    paired = tab(at, "Paired comparison")
    shown = paired.dataframe[0].value.set_index(["method A", "method B"])
    records = [r for run in runs for r in read_records(run)]
    values = records_frame(records)
    values["method"] = values["method"] + " (local run)"
    expected = compare.paired(values)
    assert len(shown) == len(expected) == 3
    for row in expected.itertuples():
        got = shown.loc[(row.method_a, row.method_b)]
        assert (got["A wins"], got["B wins"], got["ties"]) == (row.wins_a, row.wins_b, row.ties)
        assert got["mean A − B"] == pytest.approx(row.mean_diff)
        assert got["p (Wilcoxon)"] == pytest.approx(row.p_value)
    # a minus (a shifted down by 0.1) wins every episode
    assert shown.loc[("a (local run)", "c (local run)"), "verdict"] == "a (local run) better"
    assert len(paired.image) == 1  # the critical-difference diagram (three methods)


def test_app_seed_sensitivity_is_the_spread_over_support_draws(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    at = app_test(monkeypatch, reference_only(tmp_path), seeded_runs(tmp_path))
    table = tab(at, "Seed sensitivity").dataframe[0].value.set_index("method")
    stds = [statistics.stdev([B[(c, s)] for s in range(3)]) for c in ("c1", "c2", "c3")]
    assert table.at["b (local run)", "mean std over seeds"] == pytest.approx(statistics.mean(stds))
    assert table.at["b (local run)", "largest"] == pytest.approx(max(stds))


def test_app_labels_published_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    at = app_test(monkeypatch, SUBMISSIONS, [])
    at.sidebar.selectbox[0].select("mvtec_ad").run()
    at.sidebar.selectbox[1].select("mvtec_ad_loo").run()
    for frame in ranking_frames(at):
        assert set(frame["kind"]) == {KIND_PUBLISHED}
        assert frame["rank"].notna().all()
    categories = tab(at, "Per category")
    table = categories.dataframe[0].value
    assert table.index[-1] == "mean" and table.shape[1] == 4  # RIAD, PaDiM, AnoGrad, Meta-RIAD
    wins = categories.dataframe[1].value
    assert wins["of categories"].tolist() == [15] * 4 and wins["best in"].sum() >= 15


def test_app_local_run_na_random_init_and_plain_text(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    name = "<img src=x onerror=alert(1)>**bold**"
    method = MethodRef(name, "1", None, {"weights": "random"}, False)
    run = make_run(tmp_path / "run", method=method, produces_maps=False)
    at = app_test(monkeypatch, SUBMISSIONS, [run])
    at.sidebar.selectbox[1].select("synthetic_quick").run()
    at.sidebar.selectbox[2].select("pixel_auroc").run()
    assert not at.exception
    frames = ranking_frames(at)
    local = [f[f["method"].str.startswith(name)] for f in frames]
    assert all(len(f) == 1 for f in local)
    for frame in local:
        row = frame.iloc[0]
        assert "random-init backbone" in row["method"] and row["backbone"] == "random"
        assert pd.isna(row["pixel AUROC"]) and pd.isna(row["rank"])
    rendered = [e.value for e in (*at.markdown, *at.caption, *at.info, *at.subheader)]
    assert not [v for v in rendered if "<img" in v or "**bold**" in v]
    assert "unsafe_allow_html" not in APP.read_text()


def test_app_refuses_a_tampered_submission(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    subs = reference_only(tmp_path)
    folder = submit(make_run(tmp_path / "run"), subs)
    (folder / "records.jsonl").write_text("")
    at = app_test(monkeypatch, subs, [])
    assert "refused" in at.expander[0].label
    assert "records.jsonl" in at.expander[0].text[0].value
    assert "synthetic-v1" not in at.sidebar.selectbox[0].options  # only published data left


def test_ci_baselines_are_hidden_by_default_but_selectable(monkeypatch: pytest.MonkeyPatch) -> None:
    at = app_test(monkeypatch, SUBMISSIONS, [])
    at.sidebar.selectbox[1].select("synthetic_quick").run()
    methods = at.sidebar.multiselect[1]
    hidden = [o for o in methods.options if o.endswith(".ci")]
    assert len(hidden) == 5 and not set(hidden) & set(methods.value)
    assert methods.value == ["patchcore"]
    assert any("CI baselines" in c.value for c in at.sidebar.caption)
    methods.select(hidden[0]).run()
    shown = set(pd.concat(ranking_frames(at))["method"])
    assert hidden[0] in shown and "patchcore" in shown


# ---- the real server in headless Chromium ---------------------------------------------------

# Records what the page draws on canvases (the data grid is a canvas): text and position.
DRAW_HOOK = """
(() => {
  window.__drawn = [];
  const fill = CanvasRenderingContext2D.prototype.fillText;
  CanvasRenderingContext2D.prototype.fillText = function (text, x, y, ...rest) {
    try {
      const m = this.getTransform(), box = this.canvas.getBoundingClientRect();
      const ratio = window.devicePixelRatio || 1;
      window.__drawn.push({text: String(text), left: box.left + (m.a * x + m.e) / ratio,
                           top: box.top + (m.d * y + m.f) / ratio,
                           width: m.a * this.measureText(String(text)).width / ratio,
                           shown: this.canvas.isConnected});
    } catch (error) {}
    return fill.call(this, text, x, y, ...rest);
  };
})();
"""


class Chromium:
    """Headless Chromium driven over the DevTools protocol (the `websockets` client that
    ships with Streamlit's server): set a width, load a page, evaluate, screenshot."""

    def __init__(self, profile: Path) -> None:
        from contextlib import ExitStack

        from websockets.sync.client import connect

        self.connection = ExitStack()
        self.process = subprocess.Popen(
            [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--no-first-run", f"--user-data-dir={profile}", "--remote-debugging-port=0",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            port_file, deadline = profile / "DevToolsActivePort", time.monotonic() + 30
            while not (port_file.is_file() and port_file.read_text().strip()):
                assert time.monotonic() < deadline, "Chromium did not open its DevTools port"
                time.sleep(0.1)
            port = int(port_file.read_text().split()[0])
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as response:
                pages = [t for t in json.load(response) if t["type"] == "page"]
            url = pages[0]["webSocketDebuggerUrl"]
            self.socket = self.connection.enter_context(connect(url, max_size=None))
        except BaseException:
            self.close()
            raise
        self.calls = 0

    def call(self, method: str, **params: object) -> dict:
        self.calls += 1
        self.socket.send(json.dumps({"id": self.calls, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=60))
            if message.get("id") == self.calls:
                assert "error" not in message, message
                return message.get("result", {})

    def evaluate(self, expression: str) -> object:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def close(self) -> None:
        self.connection.close()
        os.killpg(self.process.pid, signal.SIGTERM)  # its own session: renderers go too
        self.process.wait(timeout=15)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, server: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"leaderboard server exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not become healthy in {seconds} s")


def listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net/tcp{,6} write them) listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if int(hex_port, 16) == port and state == "0A":  # LISTEN
                found.add(address)
    return found


def screenshot_at(browser: Chromium, url: str, width: int, shot: Path) -> dict:
    """Load the page at ``width`` x 1000, wait for the ranking, save a screenshot; what the
    first table's caption and drawn cells were, in page pixels."""
    browser.call("Emulation.setDeviceMetricsOverride", width=width, height=1000,
                 deviceScaleFactor=1, mobile=width < 600)  # fmt: skip
    browser.call("Page.navigate", url=url)
    deadline, drawn = time.monotonic() + 120, []
    while time.monotonic() < deadline:  # first script run: imports and reading files
        time.sleep(1)
        drawn = browser.evaluate("(window.__drawn || []).filter(d => d.shown)") or []
        if any(d["text"] == "method" for d in drawn) and len(drawn) > 20:
            break
    time.sleep(1)  # let the grid finish painting
    drawn = browser.evaluate("(window.__drawn || []).filter(d => d.shown)") or []
    caption = browser.evaluate(
        "(() => { const e = document.querySelector('[data-testid=\"stText\"]');"
        " if (!e) return null; const r = e.getBoundingClientRect();"
        " return {text: e.innerText, left: r.left, right: r.right, top: r.top,"
        " bottom: r.bottom}; })()"
    )
    png = base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
    shot.write_bytes(png)
    return {"drawn": drawn, "caption": caption}


def test_browser_shows_caption_and_score_at_desktop_and_phone_width(tmp_path: Path) -> None:
    """The real server (bound to 127.0.0.1 by default) in headless Chromium at 1400 and
    390 px: above the first table the line naming dataset, protocol, metric and K, and the
    score column with the submission's K=1 mean drawn inside the visible screen."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing; install it with: apt-get install -y chromium")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "STREAMLIT_SERVER_HEADLESS": "true"}  # no browser tab, no prompt
    command = [sys.executable, "-c", "from fsad_bench.cli import app; app()", "leaderboard",
               "--port", str(port), "--submissions", str(SUBMISSIONS)]  # fmt: skip
    server = subprocess.Popen(
        command, env=env, cwd=tmp_path, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    expected = f"{category_mean(shipped_default(), 1)['mean']:.3f}"
    seen = {}
    try:
        _wait_healthy(url, server, 60)
        bound = listening_addresses(port)
        assert bound and bound <= {"0100007F", "00000000000000000000000001000000"}, bound
        browser = Chromium(tmp_path / "profile")
        try:
            browser.call("Page.enable")
            browser.call("Runtime.enable")
            browser.call("Page.addScriptToEvaluateOnNewDocument", source=DRAW_HOOK)
            for width in (1400, 390):
                seen[width] = screenshot_at(browser, url, width, tmp_path / f"board_{width}.png")
        finally:
            browser.close()
    finally:
        os.kill(server.pid, signal.SIGTERM)  # the pid alone: `kill PID` must stop the server
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
    with socket.socket() as probe:  # nothing left listening (streamlit is not orphaned)
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    from PIL import Image

    for width, page in seen.items():
        shot = tmp_path / f"board_{width}.png"
        with Image.open(shot) as image:
            assert image.size == (width, 1000)
            assert len(image.convert("L").getcolors(256)) > 20  # not a blank page
        caption = page["caption"]
        assert caption and caption["text"] == (
            "dataset synthetic-v1 · protocol synthetic_loo · image AUROC · K = 1"
        )
        assert caption["left"] >= 0 and caption["right"] <= width and caption["bottom"] < 1000
        drawn: dict[str, dict] = {}
        for item in page["drawn"]:  # the first time each text was drawn: the first table
            drawn.setdefault(item["text"], item)
        for text in ("method", "image AUROC", "patchcore", expected):
            item = drawn.get(text)
            assert item is not None, f"{text!r} was not drawn at {width} px"
            assert item["left"] >= 0 and item["left"] + item["width"] <= width, (width, item)
            assert caption["bottom"] <= item["top"] < 1000, (width, item)  # below the caption
        shutil.copyfile(shot, f"/tmp/leaderboard_{width}.png")
