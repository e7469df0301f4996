"""Fuzzing the two readers of untrusted bytes: image/mask decoding and submission validation.

Whatever the input, the only way out is a result or the project's own one-line error
(DatasetError, SubmissionError): never another exception type, never a crash. Bounded to a
few seconds (max_examples ~30, fixed seed via derandomize) so CI stays fast and repeatable.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from test_submission import make_run

from fsad_bench.datasets.io import image_size_of, load_image, load_mask
from fsad_bench.errors import DatasetError, FsadError
from fsad_bench.results.submission import build_submission
from fsad_bench.store import RECORDS

FUZZ = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def png_bytes(mode: str = "RGB", size: int = 12) -> bytes:
    rng = np.random.default_rng(0)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


VALID = {"rgb": png_bytes("RGB"), "mask": png_bytes("L")}


def damaged(data: bytes, draw: Any) -> bytes:
    """Truncate, flip bytes in, or splice garbage into a valid file."""
    how = draw(st.sampled_from(["truncate", "flip", "splice"]))
    if how == "truncate":
        return data[: draw(st.integers(0, len(data) - 1))]
    if how == "flip":
        out = bytearray(data)
        for index in draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=8)):
            out[index] ^= draw(st.integers(1, 255))
        return bytes(out)
    at = draw(st.integers(0, len(data)))
    return data[:at] + draw(st.binary(min_size=1, max_size=64)) + data[at:]


@st.composite
def image_files(draw: Any) -> bytes:
    source = draw(st.sampled_from(["random", "rgb", "mask"]))
    if source == "random":
        return draw(st.binary(min_size=0, max_size=256))
    return damaged(VALID[source], draw)


def check_decoders(path: Path) -> None:
    """Each decoder returns a well-formed tensor or raises DatasetError; nothing else."""
    calls = {
        "size": lambda: image_size_of(path),
        "image": lambda: load_image(path, 8),
        "mask": lambda: load_mask(path, 8, image_size_of(path)),
    }
    for name, call in calls.items():
        try:
            out = call()
        except DatasetError as exc:
            assert str(path) in str(exc) and "\n" not in str(exc), (name, str(exc))
            continue
        if name == "image":
            assert out.shape == (3, 8, 8) and torch.isfinite(out).all()
            assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
        elif name == "mask":
            assert out.shape == (8, 8) and out.dtype == torch.bool


@settings(FUZZ, max_examples=100)  # decoding is cheap: ~1 s for 100 files
@given(data=image_files())
def test_decoders_raise_only_dataset_errors(data: bytes, tmp_path: Path) -> None:
    path = tmp_path / "fuzzed.png"
    path.write_bytes(data)
    check_decoders(path)


def test_the_damage_is_real(tmp_path: Path) -> None:
    """Truncated files must actually fail to decode, or the fuzz test above proves little."""
    path, cuts = tmp_path / "cut.png", range(8, len(VALID["rgb"]) - 12, 16)
    for cut in cuts:
        path.write_bytes(VALID["rgb"][:cut])
        with pytest.raises(DatasetError, match="cannot decode"):
            load_image(path, 8)
    assert len(cuts) >= 3


# ---- submissions ----------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),  # fmt: skip
    max_leaves=6,
)


@st.composite
def mutated_lines(draw: Any, line: bytes) -> bytes:
    """One record line with a field replaced, deleted or added, or the bytes damaged."""
    record = json.loads(line)
    how = draw(st.sampled_from(["replace", "replace_nested", "delete", "add", "bytes"]))
    if how == "bytes":
        return damaged(line, draw).replace(b"\n", b" ")
    key = draw(st.sampled_from(sorted(record)))
    if how == "replace":
        record[key] = draw(json_values)
    elif how == "replace_nested":
        parent = draw(st.sampled_from(["method", "metrics", "timing", "provenance"]))
        inner = record[parent]
        target = draw(st.sampled_from(sorted(inner) or ["x"]))
        inner[target] = draw(json_values)
    elif how == "delete":
        del record[key]
    else:
        record[draw(st.text(max_size=6))] = draw(json_values)
    top = draw(st.sampled_from(["dict", "dict", "dict", "list", "scalar"]))
    value: Any = record if top == "dict" else [record] if top == "list" else 3
    return json.dumps(value).encode()


@pytest.fixture(scope="module")
def fabricated_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = make_run(tmp_path_factory.mktemp("fuzz") / "run")
    build_submission(run_dir)  # the unmutated run is accepted
    return run_dir


@FUZZ
@given(data=st.data())
def test_submission_validator_raises_only_its_own_errors(data: Any, fabricated_run: Path) -> None:
    path = fabricated_run / RECORDS
    original = path.read_bytes()
    lines = original.split(b"\n")[:-1]
    index = data.draw(st.integers(0, len(lines) - 1))
    lines[index] = data.draw(mutated_lines(lines[index]))
    path.write_bytes(b"\n".join(lines) + b"\n")
    try:
        build_submission(fabricated_run)
    except FsadError as exc:
        assert "\n" not in str(exc)
    finally:
        path.write_bytes(original)
