"""The ``fsad-bench`` command line (typer). Heavy modules are imported inside commands so
that ``fsad-bench list`` stays fast and imports no method code."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from fsad_bench.errors import FsadError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Benchmark harness for K-shot image anomaly detection.",
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Datasets: generate the embedded synthetic set.", no_args_is_help=True)
protocol_app = typer.Typer(
    help="Protocol files and frozen support manifests.", no_args_is_help=True
)
app.add_typer(data_app, name="data")
app.add_typer(protocol_app, name="protocol")


def _fail(exc: Exception) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(2)


def _unwritable(exc: OSError, where: Path | None, fix: str) -> FsadError:
    """A full disk or a read-only place, as the one line a user can act on."""
    return FsadError(f"{exc.filename or where}: cannot write ({exc.strerror or exc}); {fix}")


@app.command()
def run(
    protocol: Annotated[str | None, typer.Option(help="Protocol name or .yaml path.")] = None,
    data_root: Annotated[Path | None, typer.Option(help="Dataset folder.")] = None,
    layout: Annotated[
        str | None, typer.Option(help="mvtec|mpdd|folder|elpv: run a folder without a protocol")
    ] = None,
    method: Annotated[
        list[str] | None,
        typer.Option(help="Method name or preset (repeatable); 'all' for every one."),
    ] = None,
    shots: Annotated[str | None, typer.Option(help="K values, e.g. 1,2,4,8.")] = None,
    seeds: Annotated[str | None, typer.Option(help="Seeds, e.g. 0,1,2.")] = None,
    categories: Annotated[str | None, typer.Option(help="Only these held-out categories.")] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory (resumable).")] = None,
    workers: Annotated[int | None, typer.Option(help="Parallel episode processes.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 ...")] = None,
    param: Annotated[
        list[str] | None, typer.Option(help="METHOD.KEY=VALUE, e.g. patchcore.coreset_ratio=0.25")
    ] = None,
    image_size: Annotated[int | None, typer.Option(help="Override the protocol's size.")] = None,
    weights: Annotated[
        str | None,
        typer.Option(help="Backbone weights for every method: pretrained, random, or a file."),
    ] = None,
    retry_failed: Annotated[bool, typer.Option(help="Replay episodes that failed.")] = False,
    episode_timeout: Annotated[
        float | None,
        typer.Option(help="Seconds per episode; overruns are recorded as failed (isolated runs)."),
    ] = None,
    episode_memory_mb: Annotated[
        float | None,
        typer.Option(help="MB an episode may grow; beyond it the episode is killed and failed."),
    ] = None,
    executor: Annotated[
        str | None, typer.Option(help="local (process pool, default) or ray.")
    ] = None,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address (default: start a local Ray).")
    ] = None,
    save_maps: Annotated[
        int | None,
        typer.Option(help="Save N anomaly-map panels per episode for the leaderboard gallery."),
    ] = None,
    config: Annotated[Path | None, typer.Option(help="YAML file with the same options.")] = None,
) -> None:
    """Play every episode of a protocol for the given methods and print the table.

    With no options: PatchCore on the embedded synthetic dataset (generated on first use),
    K = 1, 2, 4, 8 and seeds 0, 1, 2.
    """
    from fsad_bench.results.report import write_report
    from fsad_bench.run.config import build_run_config, load_options_file
    from fsad_bench.run.runner import run as run_benchmark

    cli: dict[str, Any] = {
        "protocol": protocol, "data_root": data_root, "layout": layout, "methods": method,
        "shots": shots, "seeds": seeds, "categories": categories, "out": out,
        "workers": workers, "device": device, "params": param, "image_size": image_size,
        "weights": weights, "episode_timeout": episode_timeout,
        "episode_memory_mb": episode_memory_mb, "executor": executor, "address": address,
        "save_maps": save_maps,
        "retry_failed": retry_failed or None,
    }  # fmt: skip
    try:
        options = load_options_file(config) if config else {}
        options.update({k: v for k, v in cli.items() if v is not None})
        run_config = None
        run_config = build_run_config(options)
        summary = run_benchmark(run_config)
        _, text = write_report(summary.out_dir)
    except FsadError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        where = f" in {run_config.out_dir}" if run_config else ""
        typer.echo(
            f"interrupted: the finished episodes are kept{where}; run the same command again "
            "to play the rest",
            err=True,
        )
        raise typer.Exit(130) from None
    typer.echo(text)
    typer.echo(
        f"records: {summary.out_dir / 'records.jsonl'}; report: {summary.out_dir / 'report.csv'}"
    )
    if summary.skipped:
        typer.echo(
            f"note: {summary.skipped} of this run's {summary.skipped + summary.played} "
            f"episodes were already in {summary.out_dir} from an earlier run and were not "
            "rerun; pass a fresh --out to recompute them"
        )
    if summary.failed_earlier:
        typer.echo(
            f"{summary.failed_earlier} episode(s) failed in an earlier run here and were not "
            "retried; pass --retry-failed to play them again",
            err=True,
        )
    if summary.failed:
        typer.echo(f"{len(summary.failed)} episode(s) failed; see records.jsonl", err=True)
    if summary.failed or summary.failed_earlier:
        raise typer.Exit(1)


@app.command()
def report(
    run_dir: Path,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Write the report files here.",
            show_default="the run directory; a submission: none",
        ),
    ] = None,
    by_defect: Annotated[
        bool, typer.Option("--by-defect", help="Also report each defect kind separately.")
    ] = False,
) -> None:
    """Print the per-category table of a run; write report.csv, report.md (with the command,
    settings, timing and failures), comparisons.csv (paired tests between methods) and
    plots/*.png.

    A submission folder is never modified: its tables are printed, and files are written
    only where --out says."""
    from fsad_bench.results.by_defect import FILE
    from fsad_bench.results.by_defect import by_defect as defect_table
    from fsad_bench.results.compare import FILE as COMPARISONS
    from fsad_bench.results.plots import PLOTS
    from fsad_bench.results.report import build_report, write_report
    from fsad_bench.results.submission import MANIFEST
    from fsad_bench.store import write_bytes_atomic

    submission = (run_dir / MANIFEST).is_file()
    target = out if out is not None else (None if submission else run_dir)
    try:
        if target is None:
            _, text, _ = build_report(run_dir)
        else:
            target.mkdir(parents=True, exist_ok=True)
            _, text = write_report(run_dir, target)
        typer.echo(text)
        if by_defect:
            from fsad_bench.store import read_records

            table = defect_table(run_dir, read_records(run_dir))
            typer.echo("by defect kind (mean over seeds):")
            typer.echo(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
            if target is not None:
                csv = table.to_csv(index=False, float_format="%.6f").encode()
                write_bytes_atomic(target / FILE, csv)
    except FsadError as exc:
        _fail(exc)
    except OSError as exc:
        _fail(
            FsadError(
                f"{exc.filename or target}: cannot write the report ({exc.strerror}); "
                "pass --out DIR to write it elsewhere"
            )
        )
    if target is None:
        typer.echo(
            f"nothing written: {run_dir} is a submission, which report never modifies; "
            "pass --out DIR to write the files"
        )
    else:
        written = ["report.csv", "report.md", COMPARISONS] + ([FILE] if by_defect else [])
        written += [
            p.relative_to(target).as_posix() for p in sorted((target / PLOTS).glob("*.png"))
        ]
        typer.echo(f"wrote {', '.join(str(target / name) for name in written)}")


@app.command()
def rescore(
    path: Path,
    out: Annotated[
        Path | None,
        typer.Option(help="For a submission: the submissions folder its rescored copy goes to."),
    ] = None,
) -> None:
    """Fill in the image-level metrics (AP, F1-max) of older records from their score files.

    A run directory is updated in place; a submission is never modified: pass --out and a
    rescored copy is written as a new submission. Pixel-level metrics need the anomaly
    maps, which runs do not keep: they are recorded as absent.
    """
    from fsad_bench.results.rescore import rescore_run, rescore_submission
    from fsad_bench.results.submission import MANIFEST

    try:
        if (path / MANIFEST).is_file() and out is not None:
            command = f"fsad-bench rescore {path} --out {out}"
            typer.echo(f"wrote {rescore_submission(path, out, command)}")
        else:
            typer.echo(f"{rescore_run(path)} record(s) of {path} rescored")
    except FsadError as exc:
        _fail(exc)
    except OSError as exc:
        _fail(_unwritable(exc, out or path, "free space or pass another --out"))


@app.command("list")
def list_all(
    presets: Annotated[
        bool,
        typer.Option(
            "--presets",
            help="Also list each method's presets (imports every plugin, and with it torch).",
        ),
    ] = False,
) -> None:
    """Registered methods and built-in protocols (imports no method code unless --presets)."""
    from fsad_bench.protocols.protocol import list_protocol_files
    from fsad_bench.registry import LISTINGS, list_methods

    try:
        methods = list_methods()
    except FsadError as exc:
        _fail(exc)
    protocols = list_protocol_files()
    width = max(len(n) for n in [*methods, *(p.stem for p in protocols), ""]) + 1
    typer.echo("methods:")
    for name, target in methods.items():
        typer.echo(f"  {name:<{width}} {target}")
        if presets:
            typer.echo(f"  {'':<{width}} presets: {_presets_of(name)}")
    typer.echo("protocols:")
    for path in protocols:
        typer.echo(f"  {path.stem:<{width}} {path}")
    for name in LISTINGS.targets():  # plugins' own torch-free listings (e.g. bridged models)
        try:
            typer.echo(LISTINGS.load(name)())
        except Exception as exc:  # noqa: BLE001 - a broken listing must not hide the rest
            typer.echo(f"{name}: listing unavailable ({type(exc).__name__}: {exc})")
    if not presets:
        typer.echo("presets (NAME.TAG, e.g. patchcore.ci): fsad-bench list --presets")


def _presets_of(name: str) -> str:
    """A method's presets, read from its class (importing the plugin); a broken plugin
    names its error instead of stopping the listing."""
    from fsad_bench.registry import available_presets, load_class

    try:
        tags = sorted(available_presets(load_class(name)))
    except FsadError as exc:
        return f"unavailable ({exc})"
    return ", ".join(f"{name}.{tag}" for tag in tags)


@app.command("check-plugin")
def check_plugin(name: str) -> None:
    """Run the conformance suite on a registered method; exit 1 if any check fails."""
    from fsad_bench.testing import run_checks

    try:
        results = run_checks(name)
    except FsadError as exc:
        _fail(exc)
    for result in results:
        mark = result.status.upper()  # PASS, FAIL or SKIP
        typer.echo(f"{mark} {result.check}" + (f": {result.message}" if result.message else ""))
    failed = sum(r.status == "fail" for r in results)
    skipped = sum(r.status == "skip" for r in results)
    typer.echo(f"{len(results) - failed - skipped} passed, {failed} failed, {skipped} skipped")
    if failed:
        raise typer.Exit(1)


@app.command()
def submit(
    run_dir: Path,
    out: Annotated[Path, typer.Option(help="Submissions folder.")] = Path("submissions"),
    command: Annotated[
        str | None, typer.Option(help="The command that produced the run (recorded).")
    ] = None,
    method: Annotated[
        str | None, typer.Option(help="Method label, when the run holds several.")
    ] = None,
) -> None:
    """Validate a run against its protocol and write it as a submission folder."""
    from fsad_bench.results.submission import submit as submit_run

    try:
        path = submit_run(run_dir, out, command=command, method=method)
    except FsadError as exc:
        _fail(exc)
    except OSError as exc:  # nothing is left half-written: the folder is renamed into place
        _fail(_unwritable(exc, out, "free space or pass another --out; nothing was written"))
    typer.echo(f"wrote {path}")
    sources = json.loads((path / "manifest.json").read_text(encoding="utf-8"))["record_sources"]
    for key, values in sources.items():
        if len(values) > 1:
            typer.echo(
                f"note: the records were made with more than one {key} ({', '.join(values)}), "
                "e.g. by a resumed run; rerun into a fresh --out to make them in one go"
            )


@app.command()
def leaderboard(
    runs: Annotated[
        list[Path] | None, typer.Option(help="Also show this local run directory (repeatable).")
    ] = None,
    submissions: Annotated[
        Path | None,
        typer.Option(help="Submissions folder.", show_default="./submissions, else the clone's"),
    ] = None,
    address: Annotated[
        str,
        typer.Option(help="Interface to listen on; 0.0.0.0 makes it reachable from other hosts."),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the Streamlit server.")] = 8501,
) -> None:
    """Start the Streamlit leaderboard (reads result files only, runs no submitted code)."""
    from importlib import resources

    from fsad_bench.store import RECORDS

    app_file = Path(str(resources.files("fsad_leaderboard") / "app.py"))
    if submissions is None:  # ./submissions, else the clone's (an editable install has one)
        local, clone = Path("submissions"), app_file.parent.parent / "submissions"
        submissions = local if local.is_dir() or not clone.is_dir() else clone
    if not submissions.is_dir() and not runs:
        _fail(FsadError(f"{submissions}: no such submissions folder; pass --submissions DIR"))
    for run_dir in runs or []:
        if not (run_dir / RECORDS).is_file():
            what = "no such directory" if not run_dir.is_dir() else f"no {RECORDS} in it"
            _fail(FsadError(f"--runs {run_dir}: {what}; pass the --out folder of a run"))
    argv = [sys.executable, "-m", "streamlit", "run", str(app_file), "--client.toolbarMode=viewer"]
    argv += ["--browser.gatherUsageStats=false"]
    argv += [f"--server.address={address}", f"--server.port={port}"]
    argv += ["--", "--submissions", str(submissions.resolve())]
    for run_dir in runs or []:
        argv += ["--runs", str(run_dir.resolve())]
    # streamlit takes this process's place, so a `kill` of it reaches the server itself
    os.execv(sys.executable, argv)


@app.command()
def check(
    baseline: Annotated[Path, typer.Option(help="Submission folder to compare against.")],
    tolerance: Annotated[float, typer.Option(help="Allowed drop per cell.")] = 0.01,
    quick: Annotated[
        bool, typer.Option(help="Rerun only 2 categories, the smallest and largest K, 1 seed.")
    ] = False,
    out: Annotated[Path | None, typer.Option(help="Keep the rerun in this new folder.")] = None,
    workers: Annotated[int, typer.Option(help="Parallel episode processes.")] = 1,
    data_root: Annotated[Path | None, typer.Option(help="Dataset folder.")] = None,
    run: Annotated[
        Path | None, typer.Option(help="Compare this finished run instead of rerunning.")
    ] = None,
) -> None:
    """Rerun a baseline's method on its protocol; exit 1 if a mean dropped by > tolerance."""
    from fsad_bench.results.regression import check as run_check
    from fsad_bench.results.regression import render

    try:
        comparison = run_check(baseline, tolerance, quick, out, workers, data_root, run)
    except FsadError as exc:
        _fail(exc)
    typer.echo(render(comparison.table))
    if not comparison.passed:
        failures = comparison.failures
        typer.echo(
            f"\n{len(failures)} value(s) dropped by more than {tolerance} or went missing:",
            err=True,
        )
        typer.echo(render(failures), err=True)
        raise typer.Exit(1)
    typer.echo(f"\nno mean dropped by more than {tolerance}")


@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Option(help="Folder to write the dataset into.")],
    seed: Annotated[int, typer.Option(help="Generator seed.")] = 0,
    image_size: Annotated[int, typer.Option(help="Image side in pixels.")] = 256,
    version: Annotated[int, typer.Option(help="Dataset version: 1 (default) or 2.")] = 1,
) -> None:
    """Write the synthetic MVTec-layout dataset (the embedded default) to a folder."""
    from fsad_bench.datasets.synthetic_versions import generate

    try:
        path = generate(version, out, seed=seed, image_size=image_size, progress=typer.echo)
    except FsadError as exc:
        _fail(exc)
    typer.echo(f"wrote {path}")


@protocol_app.command("freeze")
def protocol_freeze(
    name: str,
    data_root: Annotated[Path | None, typer.Option(help="Dataset folder.")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Support manifest path (default: the protocol's).")
    ] = None,
    test_out: Annotated[
        Path | None, typer.Option(help="Test manifest path (default: the protocol's).")
    ] = None,
) -> None:
    """Write the support manifest (paths + pixel hashes of every episode's supports) and,
    when the protocol names one or --test-out is given, the test manifest (every test
    image's path, label, defect kind and pixel hash)."""
    from fsad_bench.protocols.manifests import freeze_manifest, freeze_test_manifest
    from fsad_bench.run.config import resolve_protocol

    try:
        protocol = resolve_protocol({"protocol": name, "data_root": data_root})
        written = [freeze_manifest(protocol, out)]
        if test_out is not None or protocol.test_manifest:
            written.append(freeze_test_manifest(protocol, test_out))
    except FsadError as exc:
        _fail(exc)
    for path in written:
        typer.echo(f"wrote {path}")


@protocol_app.command("show")
def protocol_show(name: str) -> None:
    """Print a protocol's settings (YAML) and its definition hash."""
    from fsad_bench.protocols.protocol import describe

    try:
        lines = describe(name)
    except FsadError as exc:
        _fail(exc)
    for line in lines:
        typer.echo(line)


def main() -> None:  # pragma: no cover - console entry
    sys.exit(app())
