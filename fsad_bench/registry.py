"""Method registry: entry points in group ``fsad_bench.methods``, loaded lazily.

Built-in plugins register exactly like external ones (pyproject entry points), so listing
names never imports torch; a name claimed by two distributions is an error, not a coin toss.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from fsad_bench.errors import PluginError

GROUP = "fsad_bench.methods"
_extra: dict[str, str] = {}


@dataclass(frozen=True)
class ResolvedMethod:
    """A registry name (``name`` or ``name.preset``) turned into a class and parameters."""

    name: str
    preset: str | None
    cls: type
    params: dict[str, Any]

    def build(self) -> Any:
        return self.cls(**self.params)


def register(name: str, target: str) -> None:
    """Register ``module:attr`` in-process (tests, notebooks); packaging is the normal way."""
    if name in _entry_targets():
        raise PluginError(f"method name {name!r} is already registered; choose another name")
    _extra[name] = target


def unregister(name: str) -> None:
    _extra.pop(name, None)


def _entry_targets() -> dict[str, str]:
    targets: dict[str, str] = {}
    for ep in entry_points(group=GROUP):
        if ep.name in targets and targets[ep.name] != ep.value:
            raise PluginError(
                f"method name {ep.name!r} is registered twice ({targets[ep.name]} and "
                f"{ep.value}); uninstall one of the two packages"
            )
        targets[ep.name] = ep.value
    return targets


def list_methods() -> dict[str, str]:
    """Registered names -> ``module:attr`` targets, without importing any plugin."""
    return dict(sorted({**_entry_targets(), **_extra}.items()))


def load_class(name: str) -> type:
    targets = list_methods()
    if name not in targets:
        raise PluginError(
            f"unknown method {name!r}; known methods: {', '.join(targets) or 'none'} "
            "(see `fsad-bench list`)"
        )
    module_name, _, attr = targets[name].partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except Exception as exc:  # a broken plugin must name itself
        raise PluginError(f"method {name!r} ({targets[name]}) failed to import: {exc}") from exc
    if getattr(cls, "info", None) is None or cls.info.name != name:
        raise PluginError(
            f"method {name!r} ({targets[name]}) must declare info = MethodInfo(name={name!r}, ...)"
        )
    return cls


CI_PRESET = "ci"


def available_presets(cls: type) -> dict[str, Any]:
    """The plugin's presets, plus ``ci``: its conformance settings (tiny and fast), which the
    CI regression baselines use unless the plugin defines a ``ci`` preset of its own."""
    presets = dict(getattr(cls, "presets", {}))
    presets.setdefault(CI_PRESET, dict(getattr(cls, "conformance_params", {})))
    return presets


def resolve(spec: str, params: dict[str, Any] | None = None) -> ResolvedMethod:
    """``patchcore`` or ``patchcore.r18`` (a preset) plus explicit overrides."""
    name, _, preset = spec.partition(".")
    cls = load_class(name)
    merged: dict[str, Any] = {}
    if preset:
        presets = available_presets(cls)
        if preset not in presets:
            raise PluginError(
                f"method {name!r} has no preset {preset!r}; presets: "
                f"{', '.join(sorted(presets)) or 'none'}"
            )
        merged.update(presets[preset])
    merged.update(params or {})
    return ResolvedMethod(name=name, preset=preset or None, cls=cls, params=merged)
