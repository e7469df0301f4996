"""Every registered ``name.preset`` builds (timm-style: a new plugin or preset is tested
without anyone writing a test), and its parameters survive JSON as the records store them."""

from __future__ import annotations

import json

import pytest

from fsad_bench.registry import available_presets, list_methods, load_class, resolve


def every_preset() -> list[str]:
    specs = []
    for name in list_methods():
        specs.append(name)
        specs += [f"{name}.{preset}" for preset in available_presets(load_class(name))]
    return specs


@pytest.mark.parametrize("spec", every_preset())
def test_every_preset_builds(spec: str) -> None:
    method = resolve(spec).build()
    params = method.get_params()
    assert json.loads(json.dumps(params)) == params
    name, _, preset = spec.partition(".")
    for key, value in (available_presets(type(method)).get(preset) or {}).items():
        assert key in params, f"{spec}: preset sets {key}, which get_params does not report"
        if key != "backbone":  # "auto" is resolved at construction
            assert params[key] == json.loads(json.dumps(value)), (spec, key)


def test_the_list_covers_paper_and_ci_presets() -> None:
    specs = set(every_preset())
    assert {"patchcore.ci", "regad.paper", "meta_riad.paper", "riad.ci"} <= specs
