"""Saved anomaly maps: rendered by the runner, carried by submissions, shown by the gallery."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest
from test_submission import forge, make_run

from fsad_bench.results.submission import SubmissionError, load_submission, submit
from fsad_bench.run import gallery
from fsad_bench.run.config import build_run_config
from fsad_bench.run.runner import run
from fsad_bench.store import read_records
from fsad_leaderboard import data

APP = Path(__file__).resolve().parents[1] / "leaderboard" / "app.py"


def decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_choose_takes_defects_first_then_normals_in_order() -> None:
    labels = torch.tensor([0, 1, 0, 1, 1, 0])
    assert gallery.choose(labels, 4) == [1, 3, 0, 2]
    assert gallery.choose(labels, 1) == [1]
    assert gallery.choose(torch.tensor([0, 0, 0]), 2) == [0, 1]
    assert gallery.choose(torch.tensor([1, 1]), 5) == [0, 1]


def test_panel_shows_input_map_and_truth_side_by_side() -> None:
    image = torch.zeros(3, 64, 64)
    image[0] = 1.0  # pure red input
    amap = torch.zeros(64, 64)
    amap[:, 32:] = 1.0  # right half anomalous
    mask = torch.zeros(64, 64, dtype=torch.bool)
    mask[:32] = True  # top half in the ground truth
    panel = decode(gallery.panel_png(image, amap, mask, 0.0, 1.0))
    size = gallery.PANEL_PX
    assert panel.shape == (size, 3 * size, 3)
    assert tuple(panel[10, 10]) == (255, 0, 0)
    left, right = panel[10, size + 10], panel[10, 2 * size - 10]
    assert tuple(left) == (0, 0, 4) and tuple(right) == (252, 255, 164)  # ends of the ramp
    assert tuple(panel[10, 2 * size + 10]) == (255, 255, 255)
    assert tuple(panel[size - 10, 2 * size + 10]) == (0, 0, 0)
    no_truth = decode(gallery.panel_png(image, amap, None, 0.0, 1.0))
    assert tuple(no_truth[10, 2 * size + 10]) == (128, 128, 128)


@pytest.mark.usefixtures("fake_methods")
def test_run_saves_panels_and_the_gallery_lists_them(mvtec_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    options = {"data_root": mvtec_root, "layout": "mvtec", "methods": "meandist", "shots": "1",
               "seeds": "0", "out": out, "image_size": 32, "save_maps": 3}  # fmt: skip
    run(build_run_config(options), log=lambda _: None)
    records = read_records(out)
    assert len(records) == 3
    for record in records:
        folder = out / gallery.maps_folder(record.result_key)
        index = json.loads((folder / "index.json").read_text())
        assert [p["label"] for p in index["panels"]] == [1, 1, 0]
        for panel in index["panels"]:
            assert decode((folder / panel["file"]).read_bytes()).shape[1] == 3 * gallery.PANEL_PX
            assert panel["path"].startswith(f"{record.category}/test/")
    episodes = data.saved_maps(out)
    assert sorted(episodes) == [f"meandist {c} K=1 seed=0" for c in ("alpha", "beta", "gamma")]
    assert "(defective, score" in episodes["meandist alpha K=1 seed=0"][0].caption


@pytest.mark.usefixtures("fake_methods")
def test_two_presets_of_one_method_keep_their_own_panels(mvtec_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    options = {"data_root": mvtec_root, "layout": "mvtec", "methods": "meandist,meandist.ci",
               "shots": "1", "seeds": "0", "categories": "alpha", "out": out, "image_size": 32,
               "save_maps": 2}  # fmt: skip
    run(build_run_config(options), log=lambda _: None)
    assert sorted(data.saved_maps(out)) == [
        "meandist alpha K=1 seed=0",
        "meandist.ci alpha K=1 seed=0",
    ]


def test_no_maps_without_the_option_or_without_maps(tmp_path: Path) -> None:
    labels = torch.tensor([0, 1])
    maps = torch.rand(2, 8, 8)
    files = gallery.render("k", torch.rand(2, 3, 8, 8), labels, None, maps, maps.amax((1, 2)),
                           ("a.png", "b.png"), 0)  # fmt: skip
    assert files == {}
    assert data.saved_maps(tmp_path) == {}


def add_maps(run_dir: Path) -> None:
    """Panels for every record of a fabricated run, rendered by the real renderer."""
    generator = torch.Generator().manual_seed(0)
    for record in read_records(run_dir):
        images = torch.rand(4, 3, 16, 16, generator=generator)
        maps = torch.rand(4, 16, 16, generator=generator)
        labels = torch.tensor([0, 1, 0, 1])
        files = gallery.render(record.result_key, images, labels, maps > 0.9, maps,
                               maps.amax((1, 2)), ("n0", "d0", "n1", "d1"), 2)  # fmt: skip
        for relative, payload in files.items():
            (run_dir / relative).parent.mkdir(parents=True, exist_ok=True)
            (run_dir / relative).write_bytes(payload)


def test_submission_carries_maps_and_refuses_tampered_ones(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run")
    add_maps(run_dir)
    folder = submit(run_dir, out_root=tmp_path / "subs", command="test")
    pngs = sorted(folder.glob("maps/*/*.png"))
    assert len(pngs) == 2 * len(read_records(run_dir))
    assert load_submission(folder).manifest["files"].keys() >= {
        p.relative_to(folder).as_posix() for p in pngs
    }
    assert data.saved_maps(folder)
    # a non-PNG file under maps/ is refused when submitting, and nothing is written
    bad = next(run_dir.glob("maps/*")) / "01-defect.png"
    bad.write_bytes(b"<script>alert(1)</script>")
    with pytest.raises(SubmissionError, match="01-defect.png: not a PNG image"):
        submit(run_dir, out_root=tmp_path / "subs2", command="test")
    assert not (tmp_path / "subs2").exists()


def test_a_stray_file_in_a_submission_is_refused(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run")
    add_maps(run_dir)
    folder = submit(run_dir, out_root=tmp_path / "subs", command="test")
    manifest = json.loads((folder / "manifest.json").read_text())
    stray = folder / "maps" / "run_me.py"
    stray.write_text("print('hi')")
    manifest["files"]["maps/run_me.py"] = "0" * 64  # listed, so only the map check can object
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SubmissionError, match="maps/run_me.py"):
        load_submission(folder)


def gallery_app(monkeypatch: pytest.MonkeyPatch, submissions: Path, runs: list[Path]) -> AppTest:
    monkeypatch.setenv("FSAD_LEADERBOARD_SUBMISSIONS", str(submissions))
    monkeypatch.setenv("FSAD_LEADERBOARD_RUNS", os.pathsep.join(str(r) for r in runs))
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def maps_tab(at: AppTest):  # -> the "Anomaly maps" tab
    return next(t for t in at.tabs if t.label == "Anomaly maps")


def choice(tab, label: str):  # -> the tab's selectbox of that label
    return next(s for s in tab.selectbox if s.label == label)


def panel_texts(element) -> list[str]:
    return [t.value for t in element.text if "score" in t.value]


def played(mvtec_root: Path, out: Path, methods: str, maps: int = 2) -> Path:
    options = {"data_root": mvtec_root, "layout": "mvtec", "methods": methods, "shots": "1",
               "seeds": "0", "categories": "alpha", "out": out, "image_size": 32,
               "save_maps": maps}  # fmt: skip
    run(build_run_config(options), log=lambda _: None)
    return out


@pytest.mark.usefixtures("fake_methods")
def test_app_gallery_shows_the_panels_of_a_run(
    mvtec_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    options = {"data_root": mvtec_root, "layout": "mvtec", "methods": "meandist", "shots": "1",
               "seeds": "0", "out": out, "image_size": 32, "save_maps": 2}  # fmt: skip
    run(build_run_config(options), log=lambda _: None)
    at = gallery_app(monkeypatch, tmp_path / "none", [out])
    gallery_tab = maps_tab(at)
    assert choice(gallery_tab, "Episode").value == "meandist alpha K=1 seed=0"
    images = [element for element in gallery_tab if element.type == "image"]
    assert len(images) == 3  # the colour bar, then two panels
    captions = panel_texts(gallery_tab)
    assert len(captions) == 2
    assert captions[0].startswith("alpha/test/") and "(defective, score" in captions[0]
    assert "(normal, score" in captions[1]
    (record,) = [r for r in read_records(out) if r.category == "alpha"]
    index = json.loads((out / gallery.maps_folder(record.result_key) / "index.json").read_text())
    low, high = index["scale"]
    scale = f"map value {low:.3g} (dark) … {high:.3g} (bright), this episode's scale"
    assert scale in [t.value for t in gallery_tab.text]


@pytest.mark.usefixtures("fake_methods")
def test_app_gallery_opens_on_a_run_with_maps_and_follows_the_filters(
    mvtec_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 7: the first run in name order has no maps; the gallery opens on one that has,
    and a run whose method is filtered out of the sidebar leaves the list."""
    without = played(mvtec_root, tmp_path / "a_without", "meandist", maps=0)
    with_maps = played(mvtec_root, tmp_path / "b_with", "scribbles")
    at = gallery_app(monkeypatch, tmp_path / "none", [without, with_maps])
    tab = maps_tab(at)
    assert choice(tab, "Run").options == ["local run b_with"]
    assert choice(tab, "Run").value == "local run b_with" and panel_texts(tab)
    methods = at.sidebar.multiselect[1]
    methods.unselect("scribbles (local run)").run()
    tab = maps_tab(at)
    assert not [s for s in tab.selectbox if s.label == "Run"]
    assert any("No maps saved for the runs in this selection" in i.value for i in tab.info)


@pytest.mark.usefixtures("fake_methods")
def test_app_gallery_compares_two_methods_on_the_same_image(
    mvtec_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = played(mvtec_root, tmp_path / "run", "meandist,scribbles")
    at = gallery_app(monkeypatch, tmp_path / "none", [out])
    tab = maps_tab(at)
    assert choice(tab, "Episode").value == "meandist alpha K=1 seed=0"
    compare = choice(tab, "Compare with (same test images)")
    assert compare.options == ["nothing", "scribbles alpha K=1 seed=0"]
    compare.select("scribbles alpha K=1 seed=0").run()
    tab = maps_tab(at)
    left, right = tab.columns[:2]
    assert left.text[0].value == "meandist alpha K=1 seed=0"
    assert right.text[0].value == "scribbles alpha K=1 seed=0"
    paths = [[t.split(" (")[0] for t in panel_texts(column)] for column in (left, right)]
    assert paths[0] and paths[0] == paths[1]  # the same test images side by side
    for column in (left, right):  # each with its episode's colour bar, then its panels
        assert len([e for e in column if e.type == "image"]) == 1 + len(paths[0])


def forged_index(folder: Path, index: object) -> None:
    """Replace every index.json of a submission and re-hash it, as a forger would."""
    for path in folder.glob("maps/*/index.json"):
        path.write_text(json.dumps(index))
    forge(folder)


def test_a_malformed_gallery_index_is_refused_when_the_submission_is_loaded(
    tmp_path: Path,
) -> None:
    run_dir = make_run(tmp_path / "run")
    add_maps(run_dir)
    folder = submit(run_dir, out_root=tmp_path / "subs", command="test")
    forged_index(folder, {"panels": [1, 2]})
    with pytest.raises(SubmissionError, match="index.json: panel 0 must be an object"):
        load_submission(folder)


def test_submitted_text_in_the_gallery_is_plain_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A forged image path with Markdown (bold text, a link to an outside script) shows as
    the characters it is, never rendered."""
    run_dir = make_run(tmp_path / "run")
    add_maps(run_dir)
    folder = submit(run_dir, out_root=tmp_path / "subs", command="test")
    trick = "**pwned** [click](https://evil.example/x.js)"
    for path in folder.glob("maps/*/index.json"):
        index = json.loads(path.read_text())
        for panel in index["panels"]:
            panel["path"] = trick
        path.write_text(json.dumps(index))
    forge(folder)
    load_submission(folder)  # a string is a valid path field: it must be shown safely
    monkeypatch.setenv("FSAD_LEADERBOARD_SUBMISSIONS", str(tmp_path / "subs"))
    monkeypatch.setenv("FSAD_LEADERBOARD_RUNS", "")
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    gallery_tab = maps_tab(at)
    texts = panel_texts(gallery_tab)
    assert texts and all(text.startswith(trick) for text in texts)
    rendered = [m.value for m in gallery_tab.markdown] + [c.value for c in gallery_tab.caption]
    assert not any("pwned" in value for value in rendered)
