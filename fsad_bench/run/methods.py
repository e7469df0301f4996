"""Every method of a run, built once in the parent before any episode.

A bad ``--param`` value, a preset that does not build, or a weights file that is not there
stops the run here with one line and exit 2, instead of failing every episode (and leaving
a failed run that then locks its ``--out``). The built instances also give the resolved
parameters (defaults, preset, --param, and choices a plugin makes at construction, such as
RegAD's ``backbone: auto``) that the run's identity and the meta-training cache key use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fsad_bench.errors import FsadError, PluginError, ProtocolError
from fsad_bench.registry import resolve
from fsad_bench.run.config import RunConfig


def build_checked(spec: str, params: dict[str, Any] | None = None) -> Any:
    """The method ``spec`` (``name`` or ``name.preset``) built and checked for this machine."""
    resolved = resolve(spec, params)
    try:
        method = resolved.build()
    except FsadError:
        raise
    except (TypeError, ValueError) as exc:  # plugins without typed parameters
        raise PluginError(f"{spec}: {exc}; fix the --param or the preset") from exc
    preflight = getattr(method, "preflight", None)
    if preflight is not None:
        preflight()
    return method


@dataclass(frozen=True)
class Prepared:
    """Each method's version and resolved parameters (what the run's identity holds), and
    the fewest support images it accepts (episodes with a smaller K are not played)."""

    identity: dict[str, dict[str, Any]]
    min_k: dict[str, int]


def prepare_methods(config: RunConfig) -> Prepared:
    """Every method built and checked once, before any episode."""
    stray = sorted(set(config.method_params) - set(config.methods))
    if stray:
        raise PluginError(
            f"--param given for {', '.join(stray)}, which this run does not play (methods: "
            f"{', '.join(config.methods)}); write it as METHOD.KEY=VALUE with METHOD exactly "
            "as given to --method"
        )
    identity, min_k = {}, {}
    for spec in config.methods:
        method = build_checked(spec, config.method_params.get(spec))
        info = method.info  # per instance where a plugin refines it
        if info.needs_meta_train and config.protocol.meta_train == "none":
            raise ProtocolError(f"{spec} needs meta-training but the protocol has meta_train: none")
        identity[spec] = {"version": info.version, "params": method.get_params()}
        min_k[spec] = info.min_k
    return Prepared(identity, min_k)
