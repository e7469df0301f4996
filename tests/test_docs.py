"""The plugin guide's complete example is a working plugin: it passes the conformance suite
as the guide says, built straight from the code block (nothing copied by hand)."""

from __future__ import annotations

import re
import types
from pathlib import Path

from fsad_bench.testing import run_checks

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "writing-a-plugin.md"


def example_module() -> types.ModuleType:
    text = GUIDE.read_text(encoding="utf-8")
    section = text[text.index("## A complete example") :]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None, "the complete example has no python block"
    module = types.ModuleType("meandiff_example")
    exec(compile(code.group(1), str(GUIDE), "exec"), module.__dict__)  # noqa: S102
    return module


def test_the_complete_example_passes_check_plugin() -> None:
    results = {r.check: r.status for r in run_checks(example_module().MeanDiff)}
    failed = [check for check, status in results.items() if status == "fail"]
    assert not failed, results
    assert results["meta_state_roundtrip"] == "skip"
