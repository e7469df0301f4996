"""fsad-bench leaderboard (Streamlit). Start it with ``fsad-bench leaderboard [--runs DIR]``.

Reads submissions/ (JSON records validated on load), submissions/reference/published.csv
and optionally local run directories; it never imports or executes submitted code. Names
and notes from submissions are shown only in tables, charts and ``st.text`` (plain text),
never through Markdown or HTML.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from fsad_bench.identity import (
    KIND_LOCAL,
    KIND_PUBLISHED,
    KIND_REPRODUCED,
    METRIC_LABELS,
    metric_label,
)
from fsad_bench.protocols.protocol import Protocol, list_protocol_files, load_protocol
from fsad_bench.results.plots import OKABE_ITO
from fsad_bench.run.config import DEFAULT_PROTOCOL
from fsad_leaderboard import data, tables

TABS = [
    "Ranking", "Per category", "K-shot curve", "Paired comparison", "Seed sensitivity",
    "Speed vs accuracy", "Published vs reproduced", "Anomaly maps",
]  # fmt: skip
KINDS = [KIND_REPRODUCED, KIND_PUBLISHED, KIND_LOCAL]
DASHES = [[1, 0], [2, 2], [7, 3]]  # solid, dotted, dashed: in the order of KINDS
SHAPES = ["circle", "square", "triangle-up"]
SCORE = st.column_config.NumberColumn(format="%.3f")
CHART_HEIGHT = 380
PANEL_WIDTH = 576  # saved panels are 3 x 128 px (run/gallery.py): shown at 1.5 x
INTEGER = st.column_config.NumberColumn(format="%d")


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


def reproduced_first(
    column: pd.Series, reproduced: set[str], preferred: str | None = None
) -> list[str]:
    """Options with reproduced results first, the default benchmark's before the others,
    then the ones with most rows."""
    counts = column.value_counts()
    return sorted(counts.index, key=lambda v: (v not in reproduced, v != preferred, -counts[v], v))


@st.cache_data
def default_protocol() -> Protocol:
    """The protocol `fsad-bench run` plays by default: the view the leaderboard opens on."""
    return load_protocol(DEFAULT_PROTOCOL)


def sidebar(frame: pd.DataFrame) -> dict:
    """Filters: dataset, protocol, metric, K, methods; reproduced datasets come first."""
    reproduced = frame[frame["kind"] != KIND_PUBLISHED]
    default = default_protocol()
    datasets = reproduced_first(frame["dataset"], set(reproduced["dataset"]), default.dataset)
    dataset = st.sidebar.selectbox("Dataset", datasets)
    in_dataset = frame[frame["dataset"] == dataset]
    protocols = reproduced_first(in_dataset["protocol"], set(reproduced["protocol"]), default.name)
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


def context(chosen: dict, k: object = None, metric: bool = True) -> None:
    """What the table below compares, in one line of plain text (names come from files)."""
    st.text(
        tables.context(
            chosen["dataset"], chosen["protocol"], chosen["metric"] if metric else None, k
        )  # fmt: skip
    )


def palette(entries: list[str]) -> alt.Scale:
    """Okabe-Ito colours (distinguishable with colour vision deficiencies), fixed per name."""
    return alt.Scale(domain=entries, range=[OKABE_ITO[i % len(OKABE_ITO)]
                                            for i in range(len(entries))])  # fmt: skip


def legend() -> alt.Legend:
    """Full names (no truncation), one per line, under the chart where a phone has room."""
    return alt.Legend(labelLimit=0, orient="bottom", columns=1, symbolLimit=0, symbolOpacity=1)


def show_chart(chart: alt.TopLevelMixin, n_legend: int) -> None:
    """Full width; tall enough for the plot and a legend of one name per line below it."""
    st.altair_chart(chart, width="stretch", height=CHART_HEIGHT + 90 + 22 * n_legend)


# ---- views -------------------------------------------------------------------------------------


def default_machine(timings: pd.DataFrame) -> str | None:
    counts = tables.machines(timings)
    return counts.index[0] if len(counts) else None


def show_ranking(view: pd.DataFrame, timings: pd.DataFrame, chosen: dict) -> None:
    machine = default_machine(timings)
    timed = tables.speed(timings, machine)
    metric = chosen["metric"]
    config = {
        "rank": st.column_config.NumberColumn(format="%d", width=48),
        metric_label(metric): st.column_config.NumberColumn(format="%.3f", width=92),
        "± std": st.column_config.NumberColumn(format="%.3f", width=64),
        "seeds": INTEGER,
        "ms / image": st.column_config.NumberColumn(
            format="plain", help="prediction, cold feature cache; see Speed vs accuracy"
        ),
    }
    for k in chosen["ks"]:
        context(chosen, k)
        table = tables.ranking_display(tables.ranking(view, k, metric, timed), metric)
        st.dataframe(table, hide_index=True, column_config=config)
    st.caption(
        "Category mean over the held-out categories; mean and sample std over seeds. "
        "Kind: *reproduced* = a validated submission of an fsad-bench run, *published* = a "
        "paper's figure, *local run* = a run directory on this machine that nobody "
        "validated (placed by its score, not ranked). categories = held-out categories "
        "with results at this K / the protocol's: a mean over fewer is not comparable. "
        "Empty cells (None): not measured or not applicable."
    )
    if machine:
        st.text(f"ms / image: measured on {machine}, episodes without feature-cache hits")


def show_categories(view: pd.DataFrame, chosen: dict) -> None:
    ks = chosen["ks"]
    if not ks:
        st.info("Select at least one K in the sidebar.")
        return
    k = st.selectbox("K", ks, key="category_k")
    values = tables.category_values(view, k, chosen["metric"])
    if values.empty:
        st.info("No results for this selection.")
        return
    context(chosen, k)
    best = tables.best_cells(values)
    styled = values.style.apply(
        lambda _: best.map(lambda b: "font-weight: bold; background-color: #dcecf7" if b else ""),
        axis=None,
    ).format("{:.3f}", na_rep=tables.NA)
    st.dataframe(styled, column_config={c: SCORE for c in values.columns})
    st.caption("Highlighted: the best value of each row (mean over seeds).")
    wins = tables.win_counts(values).reset_index(names="method")
    st.dataframe(
        wins.rename(columns={"wins": "best in", "of": "of categories"}),
        hide_index=True,
        column_config={"best in": INTEGER, "of categories": INTEGER},
    )
    stds = tables.category_values(view, k, chosen["metric"], column="std")
    with st.expander("std over seeds per category"):
        st.dataframe(stds, column_config={c: SCORE for c in stds.columns})


def show_curve(view: pd.DataFrame, chosen: dict) -> None:
    metric = chosen["metric"]
    curve = tables.k_curve(view, metric)
    if curve.empty:
        st.info("No per-K results for this selection.")
        return
    context(chosen)
    show_chart(curve_chart(curve, metric), curve["entry"].nunique())
    st.caption(
        "Band: ± std over seeds (support draws). Line style and point shape: solid circles "
        "reproduced, dotted squares published, dashed triangles local runs (not validated)."
    )


def curve_chart(curve: pd.DataFrame, metric: str) -> alt.LayerChart:
    ks = sorted(curve["K"].unique())
    entries = sorted(curve["entry"].unique())
    x = alt.X("K:Q", title="K (support images)",
              scale=alt.Scale(type="log", base=2, domain=[min(ks), max(ks)], nice=False),
              axis=alt.Axis(values=ks, format="d", grid=True))  # fmt: skip
    color = alt.Color("entry:N", title="method", scale=palette(entries), legend=legend())
    kind = {"scale": alt.Scale(domain=KINDS, range=DASHES), "title": "kind"}
    base = alt.Chart(curve)
    band = base.mark_area(opacity=0.15).encode(x=x, y="low:Q", y2="high:Q", color=color)
    line = base.mark_line().encode(
        x=x,
        y=alt.Y("mean:Q", scale=alt.Scale(zero=False), title=metric_label(metric)),
        color=color,
        strokeDash=alt.StrokeDash("kind:N", **kind),
    )
    points = base.mark_point(filled=True, size=60).encode(
        x=x, y="mean:Q", color=color,
        shape=alt.Shape("kind:N", scale=alt.Scale(domain=KINDS, range=SHAPES), title="kind"),
        tooltip=["entry", "kind", "K", alt.Tooltip("mean:Q", format=".3f"),
                 alt.Tooltip("std:Q", format=".3f")],
    )  # fmt: skip
    return alt.layer(band, line, points).properties(height=CHART_HEIGHT)


def show_paired(board: data.Board, chosen: dict) -> None:
    st.caption(
        "Each pair of methods over the same episodes (held-out category × seed at one K): "
        "wins, ties and losses; mean difference (A − B) with a 95% bootstrap interval over "
        "the episodes; Wilcoxon signed-rank p-value. A difference is called real when "
        "p < 0.05 and the interval excludes 0. Published figures have no episodes."
    )
    episodes = tables.select(board.episodes, chosen["dataset"], chosen["protocol"], None,
                             chosen["ks"], chosen["entries"])  # fmt: skip
    if episodes["entry"].nunique() < 2:
        st.info("Select two or more runs or submissions of this protocol to compare.")
        return
    ks = sorted(episodes["k"].unique(), key=tables.k_order)
    k = st.selectbox("K", ks, key="paired_k")
    table = paired_table(episodes, k, chosen["metric"])
    context(chosen, k)
    st.dataframe(
        table.rename(columns={"method_a": "method A", "method_b": "method B",
                              "wins_a": "A wins", "wins_b": "B wins",
                              "mean_diff": "mean A − B", "ci_low": "95% CI low",
                              "ci_high": "95% CI high", "p_value": "p (Wilcoxon)"}),
        hide_index=True,
        column_config={"A wins": INTEGER, "B wins": INTEGER, "ties": INTEGER,
                       "mean A − B": SCORE, "95% CI low": SCORE, "95% CI high": SCORE,
                       "p (Wilcoxon)": st.column_config.NumberColumn(format="%.3g")},
    )  # fmt: skip
    diagram = tables.critical_difference(episodes, k, chosen["metric"])
    if diagram is None:
        st.text("Critical-difference diagram: needs three or more methods on two or more "
                "categories with results for all of them.")  # fmt: skip
        return
    st.subheader("Mean rank over categories")
    st.image(cd_png(diagram))
    st.caption(
        "Rank 1 = best in a category (mean over seeds). Methods joined by a thick line "
        "differ by less than the critical difference (Nemenyi, α = 0.05): these data do not "
        "tell them apart."
    )


@st.cache_data(show_spinner="Bootstrapping ...", max_entries=64)
def paired_table(episodes: pd.DataFrame, k: str, metric: str) -> pd.DataFrame:
    return tables.paired(episodes, k, metric)


def cd_png(diagram: object) -> bytes:
    from fsad_bench.results.plots import critical_difference

    buffer = io.BytesIO()
    critical_difference([diagram], buffer)
    return buffer.getvalue()


def show_spread(view: pd.DataFrame, chosen: dict) -> None:
    st.caption(
        "How much a score moves with the support draw: the sample std over seeds of one "
        "held-out category at one K (the seed picks the K support images, and for trained "
        "methods their training draws), averaged over categories, and its largest. A high "
        "value at K = 1 means a method's number depends on which image was drawn."
    )
    spread = tables.seed_spread(view, chosen["metric"])
    if spread.empty:
        st.info("No method here has two or more seeds per category.")
        return
    context(chosen)
    chart = (
        alt.Chart(spread)
        .mark_line(point=True)
        .encode(
            x=alt.X("K:Q", scale=alt.Scale(type="log", base=2), title="K (support images)",
                    axis=alt.Axis(values=sorted(spread["K"].unique()), format="d")),
            y=alt.Y("mean_seed_std:Q", title=f"std over seeds of {metric_label(chosen['metric'])}"),
            color=alt.Color("entry:N", title="method",
                            scale=palette(sorted(spread["entry"].unique())), legend=legend()),
            tooltip=["entry", "K", alt.Tooltip("mean_seed_std:Q", format=".3f"),
                     alt.Tooltip("max_seed_std:Q", format=".3f"), "worst_category"],
        )
    ).properties(height=CHART_HEIGHT)  # fmt: skip
    show_chart(chart, spread["entry"].nunique())
    st.dataframe(
        spread[["entry", "K", "mean_seed_std", "max_seed_std", "worst_category",
                "n_categories"]].rename(columns={"entry": "method",
                                                 "mean_seed_std": "mean std over seeds",
                                                 "max_seed_std": "largest",
                                                 "worst_category": "in category",
                                                 "n_categories": "categories"}),
        hide_index=True,
        column_config={"mean std over seeds": SCORE, "largest": SCORE,
                       "categories": INTEGER},
    )  # fmt: skip


def show_speed(view: pd.DataFrame, timings: pd.DataFrame, chosen: dict) -> None:
    counts = tables.machines(timings)
    if counts.empty:
        st.info(
            "No comparable timing in this selection: published results carry no speed "
            "figures, and timings taken with feature-cache hits (or, in older records of a "
            "backbone method, with cache use unrecorded) are left out."
        )
        return
    machine = st.selectbox("Machine", list(counts.index), key="speed_machine",
                           format_func=lambda m: f"{m} ({counts[m]} episodes)")  # fmt: skip
    timed = tables.speed(timings, machine)
    metric = chosen["metric"]
    points = tables.speed_accuracy(view, timed, metric)
    left_out = tables.excluded_timings(timings, machine)
    st.text(
        "Prediction time per test image, mean over episodes that computed every backbone "
        f"feature themselves, on {machine}; rounded to the leading digit of the episodes' "
        "spread. Left out: " + ", ".join(f"{n} {why}" for why, n in left_out.items())
    )
    if points.empty:
        st.info("No timed method here has this metric.")
        return
    context(chosen)
    entries = sorted(points["entry"].unique())
    color = alt.Color("entry:N", title="method", scale=palette(entries), legend=legend())
    x = alt.X("ms_per_image:Q", scale=alt.Scale(type="log"), title="ms per image (log)")
    y = alt.Y("mean:Q", scale=alt.Scale(zero=False), title=metric_label(metric))
    base = alt.Chart(points)
    chart = alt.layer(
        base.mark_line(opacity=0.5).encode(x=x, y=y, color=color, order="K:Q"),
        base.mark_circle(size=80).encode(
            x=x, y=y, color=color,
            tooltip=["entry", "k", "ms_per_image", "ms_spread", "n_timed",
                     alt.Tooltip("mean:Q", format=".3f")],
        ),
        base.mark_text(dx=6, dy=-8, align="left", fontSize=11).encode(
            x=x, y=y, text="label:N", color=color
        ),
    ).properties(height=CHART_HEIGHT)  # fmt: skip
    show_chart(chart, len(entries))
    st.dataframe(
        points[["entry", "k", "mean", "ms_per_image", "ms_spread", "n_timed"]].rename(
            columns={"entry": "method", "k": "K", "mean": metric_label(metric),
                     "ms_per_image": "ms / image", "ms_spread": "± (episode std)",
                     "n_timed": "episodes"}),
        hide_index=True,
        column_config={metric_label(metric): SCORE, "ms / image": st.column_config.NumberColumn(
            format="plain"), "± (episode std)": st.column_config.NumberColumn(format="%.2g"),
            "episodes": INTEGER},
    )  # fmt: skip


COMPARISON_NOTE = (
    "A published figure is paired only with a reproduction under the same protocol (a "
    "paper's own split is never paired with our leave-one-out runs). Left out: CI baselines "
    "(`<method>.ci`, tiny test settings), local runs (not validated) and reproductions whose "
    "backbone init is random, mixed or unknown (the papers use pretrained backbones, or none)."
)


def show_comparison(frame: pd.DataFrame) -> None:
    diff = tables.published_vs_reproduced(frame)
    st.caption(COMPARISON_NOTE)
    if diff.empty:
        published = sorted(frame.loc[frame["kind"] == KIND_PUBLISHED, "dataset"].unique())
        reproduced = sorted(frame.loc[frame["kind"] == KIND_REPRODUCED, "dataset"].unique())
        st.info(
            "Nothing to pair yet: the published figures are on real datasets (MVTec AD, "
            "MPDD), which cannot ship here, while the shipped reproductions are on the "
            "embedded synthetic data and ELPV. A submission of a run on one of the datasets "
            "below, under the protocol listed, is paired with the figures beside it."
        )
        st.text(f"published datasets: {', '.join(published) or 'none'}\n"
                f"reproduced datasets: {', '.join(reproduced) or 'none'}")  # fmt: skip
        protocols = [path.stem for path in list_protocol_files()]
        pairable = tables.pairable_published(frame, protocols)
        if not pairable.empty:
            st.subheader("What a run would be paired with")
            st.dataframe(
                pairable,
                hide_index=True,
                column_config={"command": st.column_config.TextColumn(width="large")},
            )
        return
    st.dataframe(
        diff.rename(columns={"entry_published": "published", "mean_published": "published mean",
                             "entry_reproduced": "reproduced", "mean_reproduced":
                             "reproduced mean"}),
        hide_index=True,
        column_config={"published mean": SCORE, "reproduced mean": SCORE, "difference": SCORE},
    )  # fmt: skip
    st.caption("difference = reproduced − published.")


# ---- anomaly maps ------------------------------------------------------------------------------


def colour_bar() -> np.ndarray:
    """The panels' map colour ramp (run/gallery.py), dark = low, as an image strip."""
    from fsad_bench.run.gallery import colourise

    return np.repeat(colourise(np.linspace(0.0, 1.0, 384))[None], 14, axis=0)


def map_sources(board: data.Board, view: pd.DataFrame) -> dict[str, dict[str, list]]:
    """Runs and submissions in the selection that saved maps -> episode label -> panels,
    keeping only the methods and K selected in the sidebar."""
    sources = {}
    for origin in sorted(set(view["origin"]) & set(board.origins)):
        mine = view[view["origin"] == origin]
        methods, ks = set(mine["method"]), set(mine["k"])
        maps = {label: panels for label, panels in data.saved_maps(board.origins[origin]).items()
                if panels[0].method in methods and panels[0].k in ks}  # fmt: skip
        if maps:
            sources[origin] = maps
    return sources


def show_panels(panels: list[data.Panel], width: int | str) -> None:
    for panel in panels:
        st.image(str(panel.image), width=width)
        st.text(panel.caption)  # submitted text: plain, never Markdown or HTML


def show_scale(panels: list[data.Panel], width: int | str) -> None:
    st.image(colour_bar(), width=width)
    scale = panels[0].scale if panels else None
    low, high = (f"{v:.3g}" for v in scale) if scale else ("low", "high")
    st.text(f"map value {low} (dark) … {high} (bright), this episode's scale")


def show_maps(board: data.Board, view: pd.DataFrame) -> None:
    in_view = [o for o in sorted(set(view["origin"])) if o in board.origins]
    if not in_view:
        st.info("No runs or submissions in this selection.")
        return
    sources = map_sources(board, view)
    if not sources:
        st.info(
            "No maps saved for the runs in this selection. Runs save anomaly maps when "
            "asked: `fsad-bench run --save-maps 6 ...`."
        )
        return
    st.caption(
        "Each panel: input | anomaly map | ground truth (grey where the dataset has no "
        "pixel masks). Each episode has its own colour scale (its maps' 1st to 99.9th "
        "percentile), so colours compare within an episode, not across methods."
    )
    origin = st.selectbox("Run", list(sources), key="maps_origin")
    episodes = sources[origin]
    episode = st.selectbox("Episode", list(episodes), key="maps_episode")
    panels = episodes[episode]
    shown_paths = {p.path for p in panels}

    def same_images(candidate: list[data.Panel]) -> bool:
        return bool(shown_paths & {p.path for p in candidate})

    others = [e for e in episodes if e != episode and same_images(episodes[e])] + [
        f"{o}: {e}" for o in sources if o != origin for e in sources[o]
        if same_images(sources[o][e])
    ]  # fmt: skip
    against = st.selectbox("Compare with (same test images)", ["nothing", *others],
                           key="maps_compare")  # fmt: skip
    if against == "nothing":
        show_scale(panels, PANEL_WIDTH)
        show_panels(panels, PANEL_WIDTH)
        return
    if against in episodes:
        other = episodes[against]
    else:
        name, _, label = against.partition(": ")
        other = sources[name][label]
    paths = {p.path for p in other}
    common = [p for p in panels if p.path in paths]
    if not common:
        st.info("These two episodes saved no panel of the same test image.")
        return
    left, right = st.columns(2)
    by_path = {p.path: p for p in other}
    for column, label, shown in ((left, episode, common),
                                 (right, against, [by_path[p.path] for p in common])):  # fmt: skip
        with column:
            st.text(label)
            show_scale(shown, "stretch")
            show_panels(shown, "stretch")


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
    timings = tables.select(board.timings, chosen["dataset"], chosen["protocol"], None,
                            chosen["ks"], chosen["entries"])  # fmt: skip
    st.sidebar.download_button(
        "Download selection (CSV)",
        view.to_csv(index=False).encode("utf-8"),
        file_name="fsad_leaderboard.csv",
        mime="text/csv",
    )
    ranking, categories, curve, paired, spread, speed, comparison, maps = st.tabs(TABS)
    with ranking:
        show_ranking(view, timings, chosen)
    with categories:
        show_categories(view, chosen)
    with curve:
        show_curve(view, chosen)
    with paired:
        show_paired(board, chosen)
    with spread:
        show_spread(view, chosen)
    with speed:
        show_speed(view, timings, chosen)
    with comparison:
        show_comparison(frame)
    with maps:
        show_maps(board, view)


main()
