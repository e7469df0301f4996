"""The leaderboard: data logic against independent computations, the app through AppTest,
and one real server opened in headless Chromium (screenshot saved)."""

from __future__ import annotations

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
import pytest
from streamlit.testing.v1 import AppTest
from test_submission import edit_lines, make_run

from fsad_bench.records import MethodRef
from fsad_bench.results.report import aggregate
from fsad_bench.results.submission import find_submissions, load_submission, submit
from fsad_bench.store import read_records

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


def expected_cell(folder: Path, k: int) -> str:
    """'mean ± std' of the category-mean image AUROC, via report.aggregate."""
    long = aggregate(read_records(folder))
    row = long.query("category == 'mean' and metric == 'image_auroc' and k == @k").iloc[0]
    return tables.cell(row["mean"], row["std"])


def app_test(monkeypatch: pytest.MonkeyPatch, submissions: Path, runs: list[Path]) -> AppTest:
    monkeypatch.setenv("FSAD_LEADERBOARD_SUBMISSIONS", str(submissions))
    monkeypatch.setenv("FSAD_LEADERBOARD_RUNS", os.pathsep.join(str(r) for r in runs))
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def ranking_frames(at: AppTest) -> list[pd.DataFrame]:
    return [frame.value for frame in at.tabs[0].dataframe]


# ---- data and tables ------------------------------------------------------------------------


def test_ranking_agrees_with_report_and_a_plain_mean() -> None:
    folder = shipped_default()
    board = data.load_board(SUBMISSIONS)
    assert not board.problems
    view = tables.select(board.frame, "synthetic-v1", "synthetic_loo")
    records = read_records(folder)
    for k in sorted({r.k for r in records}):
        table = tables.ranking(view, str(k), "image_auroc")
        row = table[table["entry"] == "patchcore (reproduced)"].iloc[0]
        per_seed = [
            statistics.mean(r.metrics["image_auroc"] for r in records if r.k == k and r.seed == s)
            for s in sorted({r.seed for r in records})
        ]
        assert row["mean"] == pytest.approx(statistics.mean(per_seed), abs=1e-12)
        assert row["std"] == pytest.approx(statistics.stdev(per_seed), abs=1e-12)
        assert row["n_seeds"] == len(per_seed)
        assert row["rank"] == 1 + (table["mean"] > row["mean"]).sum()
        ms = statistics.mean(r.timing["predict_ms_per_image"] for r in records if r.k == k)
        assert row["ms_per_image"] == pytest.approx(ms)


def test_win_counts_count_ties_for_each() -> None:
    values = pd.DataFrame(
        {"A": [0.9, 0.5, 0.7, 0.8], "B": [0.9, 0.6, float("nan"), 0.1]},
        index=["x", "y", "z", "mean"],
    )
    wins = tables.win_counts(values)
    assert wins.loc["A"].tolist() == [2, 3]  # x (tie) and z, of x, y, z
    assert wins.loc["B"].tolist() == [2, 2]  # x (tie) and y, of x, y


def test_category_table_matches_the_thesis_csv() -> None:
    board = data.load_board(SUBMISSIONS)
    view = tables.select(board.frame, "mvtec_ad", "mvtec_ad_loo")
    shown = tables.category_display(view, "1", "image_auroc").set_index("category")
    source = pd.read_csv(SUBMISSIONS / "reference" / "source" /
                         "meta_riad_thesis_mvtec_image_auroc.csv")  # fmt: skip
    k1 = source[source["k"] == 1]
    best = k1.loc[k1.groupby("category")["image_auroc_mean"].idxmax()]
    for method, wins in best["method"].value_counts().items():
        assert shown.at["best in", f"{method} (published)"] == f"{wins} of 15"
    for row in best.itertuples():
        assert shown.at[row.category, f"{row.method} (published)"].startswith(tables.BEST)


def test_published_vs_reproduced_difference() -> None:
    published = data.load_published(SUBMISSIONS)
    reproduced = published[published["method"] == "PatchCore (few-shot)"].copy()
    reproduced = reproduced[reproduced["dataset"] == "mvtec_ad"]
    reproduced["kind"], reproduced["entry"] = "reproduced", "patchcore (reproduced)"
    reproduced["backbone_init"] = "pretrained"
    reproduced["mean"] = reproduced["mean"] + 0.01
    diff = tables.published_vs_reproduced(pd.concat([published, reproduced]))
    assert set(diff["entry_published"]) == {"PatchCore (few-shot) (published)"}
    assert set(diff["k"]) == {"2", "4", "8"}
    assert diff["difference"].to_numpy() == pytest.approx(0.01)


def fake_reproduced(
    method: str, protocol: str | None, ks: list[str], init: str = "pretrained"
) -> pd.DataFrame:
    """Reproduced PaDiM-plugin rows on mvtec_ad (bottle and the mean) at each K, image AUROC."""
    rows = [
        {"entry": data.entry_label(method, "reproduced", init), "kind": "reproduced",
         "method": method, "plugin": "padim", "dataset": "mvtec_ad", "protocol": protocol,
         "category": category, "k": k, "metric": "image_auroc", "mean": 0.5, "std": 0.0,
         "n_seeds": 5, "backbone_init": init, "ms_per_image": 1.0, "n_categories": 15.0,
         "of_categories": 15.0, "source": "test", "origin": f"test {method} {init}"}
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
        ],
        ignore_index=True,
    )
    diff = tables.published_vs_reproduced(frame)
    assert set(diff["entry_reproduced"]) == {"padim (reproduced)"}
    assert set(diff["protocol"]) == {"mvtec_ad_loo"} and set(diff["k"]) == {"1"}
    assert set(diff["entry_published"]) == {"PaDiM (published)"}
    assert set(diff["category"]) == {"bottle", "mean"} and len(diff) == 2


def test_entry_label_names_every_init_that_is_not_plainly_pretrained(tmp_path: Path) -> None:
    assert data.entry_label("m", "reproduced", "pretrained") == "m (reproduced)"
    assert data.entry_label("m", "reproduced", "none") == "m (reproduced)"
    assert data.entry_label("m", "reproduced", "random") == "m (reproduced, random-init backbone)"
    assert data.entry_label("m", "reproduced", "unknown") == "m (reproduced, backbone init unknown)"
    assert data.entry_label("m", "reproduced", "imagenet?") == (
        "m (reproduced, backbone init unknown)"
    )
    # through the loader: no weights param and no recorded init -> "unknown"
    method = MethodRef("patchcore", "1.0", None, {}, True)
    unknown = data.load_run(make_run(tmp_path / "unknown", method=method))
    assert set(unknown["backbone_init"]) == {"unknown"}
    assert set(unknown["entry"]) == {"patchcore (reproduced, backbone init unknown)"}
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
    assert set(mixed["entry"]) == {"patchcore (reproduced, mixed backbone init)"}


def categories_shown(frame: pd.DataFrame, k: str) -> dict[str, str]:
    """Method -> the ranking's 'categories' cell at K."""
    table = tables.ranking_display(tables.ranking(frame, k, "image_auroc"))
    return dict(zip(table["method"], table["categories"], strict=True))


def test_ranking_shows_how_many_categories_each_entry_covers(tmp_path: Path) -> None:
    subs = tmp_path / "subs"
    shutil.copytree(SUBMISSIONS / "reference", subs / "reference")
    full = load_submission(submit(make_run(tmp_path / "run"), subs))
    assert full.manifest["protocol"]["categories"] == ["brick", "pill"]
    brick_only = replace(full, records=tuple(r for r in full.records if r.category == "brick"))
    for k in ("1", "4"):
        assert categories_shown(data.submission_rows(full), k) == {"patchcore (reproduced)": "2/2"}
        subset = data.submission_rows(brick_only)
        assert categories_shown(subset, k) == {"patchcore (reproduced)": "1/2"}
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
    full = curve[curve["entry"] == "PatchCore (full-shot WRN50) (published)"]
    assert full.empty and curve["K"].dtype.kind == "f"
    regad = curve[curve["entry"] == "RegAD (published)"]
    assert regad["K"].tolist() == sorted(regad["K"])


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
        row = frame[frame["method"] == "patchcore (reproduced)"].iloc[0]
        assert row["mean ± std"] == expected_cell(folder, k)
        assert row["kind"] == "reproduced" and row["backbone"] == "pretrained"
        n = len(load_submission(folder).manifest["protocol"]["categories"])
        assert row["categories"] == f"{n}/{n}"
    assert any(".ci" in c.value and "random" in c.value for c in at.tabs[4].caption)
    assert at.get("download_button")
    assert any("No maps saved for this run" in i.value for i in at.tabs[5].info)


def test_app_labels_published_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    at = app_test(monkeypatch, SUBMISSIONS, [])
    at.sidebar.selectbox[0].select("mvtec_ad").run()
    at.sidebar.selectbox[1].select("mvtec_ad_loo").run()
    for frame in ranking_frames(at):
        assert set(frame["kind"]) == {"published"}
        assert frame["method"].str.endswith("(published)").all()
    table = at.tabs[1].dataframe[0].value
    assert table.iloc[-1]["category"] == "best in"


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
        assert row["mean ± std"] == "n/a" and row["rank"] == "n/a"
    rendered = [e.value for e in (*at.markdown, *at.caption, *at.info, *at.subheader)]
    assert not [v for v in rendered if "<img" in v or "**bold**" in v]
    assert "unsafe_allow_html" not in APP.read_text()


def test_app_refuses_a_tampered_submission(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    subs = tmp_path / "subs"
    shutil.copytree(SUBMISSIONS / "reference", subs / "reference")
    folder = submit(make_run(tmp_path / "run"), subs)
    (folder / "records.jsonl").write_text("")
    at = app_test(monkeypatch, subs, [])
    assert "refused" in at.expander[0].label
    assert "records.jsonl" in at.expander[0].text[0].value
    assert "synthetic-v1" not in at.sidebar.selectbox[0].options  # only published data left


# ---- the real server in headless Chromium ---------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _chromium(url: str, profile: Path, *args: str) -> str:
    command = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", f"--user-data-dir={profile}", "--window-size=1400,1000",
        "--virtual-time-budget=15000", *args, url,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    return done.stdout


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


def test_browser_shows_the_ranking(tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing; install it with: apt-get install -y chromium")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "STREAMLIT_SERVER_HEADLESS": "true",
        "STREAMLIT_SERVER_ADDRESS": "127.0.0.1",
        "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
    }
    command = [sys.executable, "-c", "from fsad_bench.cli import app; app()", "leaderboard",
               "--port", str(port), "--submissions", str(SUBMISSIONS)]  # fmt: skip
    server = subprocess.Popen(
        command, env=env, cwd=tmp_path, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    expected = expected_cell(shipped_default(), 1)
    shot = tmp_path / "leaderboard.png"
    try:
        _wait_healthy(url, server, 60)
        deadline, dom = time.monotonic() + 120, ""
        while time.monotonic() < deadline:  # first script runs import pandas & read files
            shot.unlink(missing_ok=True)
            dom = _chromium(url, tmp_path / "profile", "--dump-dom", f"--screenshot={shot}")
            if 'data-testid="stDataFrame"' in dom and expected in dom:
                break
        assert expected in dom, "the ranking table with the submission's K=1 mean never showed"
    finally:
        os.kill(server.pid, signal.SIGTERM)  # the pid alone: `kill PID` must stop the server
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
    with socket.socket() as probe:  # nothing left listening (streamlit is not orphaned)
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (1400, 1000)
        assert len(image.convert("L").getcolors(256)) > 20  # not a blank page
    shutil.copyfile(shot, "/tmp/leaderboard.png")


def test_ci_baselines_are_hidden_by_default_but_selectable(monkeypatch: pytest.MonkeyPatch) -> None:
    at = app_test(monkeypatch, SUBMISSIONS, [])
    at.sidebar.selectbox[1].select("synthetic_quick").run()
    methods = at.sidebar.multiselect[1]
    hidden = [o for o in methods.options if ".ci (" in o]
    assert len(hidden) == 5 and not set(hidden) & set(methods.value)
    assert methods.value == ["patchcore (reproduced)"]
    assert any("CI baselines" in c.value for c in at.sidebar.caption)
    methods.select(hidden[0]).run()
    shown = set(pd.concat(ranking_frames(at))["method"])
    assert hidden[0] in shown and "patchcore (reproduced)" in shown
