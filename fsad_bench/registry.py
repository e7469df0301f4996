"""Registries: names -> ``module:attr`` targets, loaded lazily; one shape for every kind.

Methods come from entry points in group ``fsad_bench.methods`` (built-in plugins register
exactly like external ones), dataset layouts and executors from built-in tables. Listing
names never imports the targets (``fsad-bench list`` stays torch-free), and a name claimed
twice is an error, not a coin toss.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from fsad_bench.errors import FsadError, PluginError

Target = TypeVar("Target")


class Registry(Generic[Target]):
    """Named ``module:attr`` targets of one kind: built-in, from entry points, or added."""

    def __init__(
        self,
        kind: str,
        builtins: Mapping[str, str] | None = None,
        group: str | None = None,
        error: type[FsadError] = PluginError,
    ) -> None:
        self.kind, self.group, self.error = kind, group, error
        self._builtins = dict(builtins or {})
        self._extra: dict[str, str] = {}

    def _entry_targets(self) -> dict[str, str]:
        targets: dict[str, str] = {}
        for ep in entry_points(group=self.group) if self.group else ():
            if ep.name in targets and targets[ep.name] != ep.value:
                raise self.error(
                    f"{self.kind} name {ep.name!r} is registered twice ({targets[ep.name]} and "
                    f"{ep.value}); uninstall one of the two packages"
                )
            targets[ep.name] = ep.value
        return targets

    def targets(self) -> dict[str, str]:
        """Registered names -> ``module:attr``, sorted, without importing anything."""
        return dict(sorted({**self._builtins, **self._entry_targets(), **self._extra}.items()))

    def register(self, name: str, target: str) -> None:
        """Add ``module:attr`` in-process (tests, notebooks); packaging is the normal way."""
        if name in self._builtins or name in self._entry_targets():
            raise self.error(f"{self.kind} name {name!r} is already registered; choose another")
        self._extra[name] = target

    def unregister(self, name: str) -> None:
        self._extra.pop(name, None)

    def load(self, name: str) -> Target:
        targets = self.targets()
        if name not in targets:
            known = ", ".join(targets) or "none"
            raise self.error(f"unknown {self.kind} {name!r}; known: {known}")
        module_name, _, attr = targets[name].partition(":")
        try:
            return getattr(importlib.import_module(module_name), attr)
        except Exception as exc:  # a broken plugin must name itself
            raise self.error(
                f"{self.kind} {name!r} ({targets[name]}) failed to import: {exc}"
            ) from exc


# --- listings: what a plugin adds to `fsad-bench list` (torch-free callables -> text) ---------

LISTINGS: Registry[object] = Registry("listing", group="fsad_bench.listings")


# --- methods ---------------------------------------------------------------------------------

GROUP = "fsad_bench.methods"
METHODS: Registry[type] = Registry("method", group=GROUP)
CI_PRESET = "ci"


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
    METHODS.register(name, target)


def unregister(name: str) -> None:
    METHODS.unregister(name)


def list_methods() -> dict[str, str]:
    """Registered method names -> ``module:attr`` targets, without importing any plugin."""
    return METHODS.targets()


def load_class(name: str) -> type:
    cls = METHODS.load(name)
    if getattr(cls, "info", None) is None or cls.info.name != name:
        raise PluginError(
            f"method {name!r} ({METHODS.targets()[name]}) must declare "
            f"info = MethodInfo(name={name!r}, ...)"
        )
    return cls


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
