"""fsad-bench leaderboard (Streamlit). Start it with ``fsad-bench leaderboard [--runs DIR]``.

Reads submissions/ (JSON records validated on load), submissions/reference/published.csv
and optionally local run directories; it never imports or executes submitted code. Names
and notes from submissions are shown only in tables, charts and ``st.text`` (plain text),
never through Markdown or HTML.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from fsad_bench.identity import KIND_PUBLISHED, KIND_REPRODUCED, METRIC_LABELS
from fsad_leaderboard import data, tables

TABS = [
    "Ranking", "Per category", "K-shot curve", "Speed vs accuracy",
    "Published vs reproduced", "Anomaly maps",
]  # fmt: skip


def parse_args(argv: list[str]) -> argparse.Namespace:
    """`streamlit run app.py -- --submissions DIR --runs DIR`; env vars serve AppTest."""
    env_runs = [p for p in os.environ.get("FSAD_LEADERBOARD_RUNS", "").split(os.pathsep) if p]
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(
        "--submissions",
        default=os.environ.get("FSAD_LEADERBOARD_SUBMISSIONS", "submissions"),
    )
    parser.add_argument("--runs", action="append", default=None)
    args, _ = parser.parse_known_args(argv)
    args.runs = args.runs or env_runs
    return args


@st.cache_data(show_spinner="Reading submissions ...", ttl=60)
def load(submissions: str, runs: tuple[str, ...]) -> data.Board:
    return data.load_board(Path(submissions), [Path(r) for r in runs])


def reproduced_first(column: pd.Series, reproduced: set[str]) -> list[str]:
    """Options with reproduced results first, then the ones with most rows."""
    counts = column.value_counts()
    return sorted(counts.index, key=lambda v: (v not in reproduced, -counts[v], v))


def sidebar(frame: pd.DataFrame) -> dict:
    """Filters: dataset, protocol, metric, K, methods; reproduced datasets come first."""
    reproduced = frame[frame["kind"] == KIND_REPRODUCED]
    datasets = reproduced_first(frame["dataset"], set(reproduced["dataset"]))
    dataset = st.sidebar.selectbox("Dataset", datasets)
    in_dataset = frame[frame["dataset"] == dataset]
    protocols = reproduced_first(in_dataset["protocol"], set(reproduced["protocol"]))
    protocol = st.sidebar.selectbox("Protocol", protocols)
    part = in_dataset[in_dataset["protocol"] == protocol]
    metrics = [m for m in METRIC_LABELS if m in set(part["metric"])]
    metric = st.sidebar.selectbox("Metric", metrics, format_func=METRIC_LABELS.get)
    ks_all = sorted(part["k"].unique(), key=tables.k_order)
    ks = st.sidebar.multiselect("K (shots)", ks_all, default=ks_all)
    entries_all = sorted(part["entry"].unique())
    shown = tables.default_entries(part)
    entries = st.sidebar.multiselect("Methods", entries_all, default=shown)
    if len(shown) < len(entries_all):
        st.sidebar.caption(
            "CI baselines (`<method>.ci`: tiny test settings) are hidden; add them above."
        )
    return {"dataset": dataset, "protocol": protocol, "metric": metric, "ks": ks,
            "entries": entries}  # fmt: skip


def show_ranking(view: pd.DataFrame, ks: list[str], metric: str) -> None:
    st.caption(
        "Category mean over the held-out categories, mean ± sample std over seeds. "
        "Published rows are figures from papers; reproduced rows are fsad-bench runs. "
        "categories = held-out categories with results at this K / the protocol's categories: "
        "a mean over fewer categories is not comparable with a full run's."
    )
    for k in ks:
        st.subheader(f"K = {k}" if str(k).isalnum() else "K = ?")
        st.dataframe(tables.ranking_display(tables.ranking(view, k, metric)), hide_index=True)


def show_categories(view: pd.DataFrame, ks: list[str], metric: str) -> None:
    if not ks:
        st.info("Select at least one K in the sidebar.")
        return
    k = st.selectbox("K", ks, key="category_k")
    table = tables.category_display(view, k, metric)
    if table.empty:
        st.info("No results for this selection.")
        return
    st.dataframe(table, hide_index=True)
    st.caption(
        "★ marks the best value of each row. The last row counts the categories where a "
        "method is best, out of the categories it has a value for."
    )


def show_curve(view: pd.DataFrame, metric: str) -> None:
    curve = tables.k_curve(view, metric)
    if curve.empty:
        st.info("No per-K results for this selection.")
        return
    chart = (
        alt.Chart(curve)
        .mark_line(point=True)
        .encode(
            x=alt.X("K:Q", scale=alt.Scale(type="log", base=2), title="K (shots)"),
            y=alt.Y("mean:Q", scale=alt.Scale(zero=False), title=METRIC_LABELS[metric]),
            color=alt.Color("entry:N", title="method"),
            strokeDash=alt.StrokeDash("kind:N"),
            tooltip=["entry", "K", "mean", "std"],
        )
    )
    st.altair_chart(chart, width="stretch")


def show_speed(view: pd.DataFrame) -> None:
    points = tables.speed_accuracy(view, "image_auroc")
    if points.empty:
        st.info("No timing for this selection: published results carry no speed figures.")
        return
    chart = (
        alt.Chart(points)
        .mark_circle(size=90)
        .encode(
            x=alt.X("ms_per_image:Q", scale=alt.Scale(type="log"), title="ms per image"),
            y=alt.Y("mean:Q", scale=alt.Scale(zero=False), title="image AUROC"),
            color=alt.Color("entry:N", title="method"),
            tooltip=["entry", "k", "ms_per_image", "mean"],
        )
    )
    st.altair_chart(chart, width="stretch")
    st.caption("Prediction time per test image on the machine that made the run.")


COMPARISON_NOTE = (
    "A published figure is paired only with a reproduction under the same protocol (a "
    "paper's own split is never paired with our leave-one-out runs). Left out: CI baselines "
    "(`<method>.ci`, tiny test settings) and reproductions whose backbone init is random, "
    "mixed or unknown (the papers use pretrained backbones, or none)."
)


def show_comparison(frame: pd.DataFrame) -> None:
    diff = tables.published_vs_reproduced(frame)
    st.caption(COMPARISON_NOTE)
    if diff.empty:
        st.info(
            "No method has the same dataset, protocol and K both as published and as "
            "reproduced yet."
        )
        published = sorted(frame.loc[frame["kind"] == KIND_PUBLISHED, "dataset"].unique())
        reproduced = sorted(frame.loc[frame["kind"] == KIND_REPRODUCED, "dataset"].unique())
        st.text(f"published datasets: {', '.join(published) or 'none'}\n"
                f"reproduced datasets: {', '.join(reproduced) or 'none'}")  # fmt: skip
        return
    st.dataframe(diff, hide_index=True)
    st.caption("difference = reproduced − published.")


def show_maps(board: data.Board) -> None:
    if not board.origins:
        st.info("No runs or submissions loaded.")
        return
    origin = st.selectbox("Run", sorted(board.origins), key="maps_origin")
    episodes = data.saved_maps(board.origins[origin])
    if not episodes:
        st.info(
            "No maps saved for this run. Runs save anomaly maps when asked: "
            "`fsad-bench run --save-maps 6 ...`."
        )
        return
    episode = st.selectbox("Episode", list(episodes), key="maps_episode")
    st.caption(
        "Each panel: input | anomaly map (one colour scale per episode, dark = normal) | "
        "ground truth (grey where the dataset has no pixel masks)."
    )
    for panel in episodes[episode]:
        st.image(str(panel.image), width=384)
        st.text(panel.caption)  # submitted text: plain, never Markdown or HTML


def main() -> None:
    st.set_page_config(page_title="fsad-bench leaderboard", layout="wide")
    st.title("fsad-bench leaderboard")
    args = parse_args(sys.argv[1:])
    board = load(str(args.submissions), tuple(str(r) for r in args.runs))
    if board.problems:
        with st.expander(f"{len(board.problems)} submission(s) or run(s) refused"):
            st.text("\n".join(board.problems))
    frame = board.frame
    if frame.empty:
        st.info("Nothing to show yet.")
        st.text(f"No submissions or published tables under {args.submissions}")
        return
    chosen = sidebar(frame)
    view = tables.select(frame, chosen["dataset"], chosen["protocol"], None, chosen["ks"],
                         chosen["entries"])  # fmt: skip
    st.sidebar.download_button(
        "Download selection (CSV)",
        view.to_csv(index=False).encode("utf-8"),
        file_name="fsad_leaderboard.csv",
        mime="text/csv",
    )
    ranking, categories, curve, speed, comparison, maps = st.tabs(TABS)
    with ranking:
        show_ranking(view, chosen["ks"], chosen["metric"])
    with categories:
        show_categories(view, chosen["ks"], chosen["metric"])
    with curve:
        show_curve(view, chosen["metric"])
    with speed:
        show_speed(view)
    with comparison:
        show_comparison(frame)
    with maps:
        show_maps(board)


main()
