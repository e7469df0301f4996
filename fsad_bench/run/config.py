"""Build the one RunConfig from a mapping of options, whether they came from the CLI or a file.

lm-evaluation-harness users suffered from CLI and file configs drifting apart; here both
paths produce the same dict and go through ``build_run_config`` alone.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fsad_bench.errors import FsadError, ProtocolError
from fsad_bench.protocols.protocol import Protocol, adhoc_protocol, load_protocol
from fsad_bench.records import Episode


@dataclass(frozen=True)
class RunConfig:
    """The one run configuration, built the same way from CLI options and from a file."""

    protocol: Protocol
    methods: tuple[str, ...]
    out_dir: Path
    method_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    workers: int = 1
    device: str = "cpu"
    batch_size: int = 16
    retry_failed: bool = False
    only_categories: tuple[str, ...] | None = None
    episode_timeout_s: float | None = None  # set: every episode in its own killable process
    episode_memory_mb: float | None = None  # likewise; growth beyond it kills the episode
    executor: str = "local"  # a name of fsad_bench.execution.EXECUTORS
    address: str | None = None  # Ray cluster address; None starts a local Ray
    save_maps: int = 0  # anomaly-map panels saved per episode under maps/ (0: none)

    def episodes(self) -> list[Episode]:
        """The protocol's episodes, optionally restricted to some held-out categories."""
        only = self.only_categories
        return [e for e in self.protocol.episodes() if not only or e.category in only]

    def identity(self) -> dict[str, Any]:
        """What must not change when a run directory is resumed."""
        return {
            "protocol": self.protocol.ref,
            "protocol_hash": self.protocol.definition_hash(),
            "image_size": self.protocol.image_size,
            "batch_size": self.batch_size,  # convolutions round differently per batch size
            "method_params": {m: self.method_params.get(m, {}) for m in self.methods},
        }


DEFAULT_PROTOCOL = "synthetic2_loo"  # the embedded default dataset, version 2


def parse_int_list(text: str | int | list | None, what: str) -> tuple[int, ...] | None:
    if text is None or text == "":
        return None
    if isinstance(text, int):
        return (text,)
    items = text if isinstance(text, list) else str(text).split(",")
    try:
        return tuple(int(str(item).strip()) for item in items if str(item).strip())
    except ValueError as exc:
        raise FsadError(
            f"--{what} must be comma-separated integers like 1,2,4, got {text!r}"
        ) from exc


def parse_str_list(text: str | list | None) -> tuple[str, ...] | None:
    if text is None or text == "":
        return None
    items = text if isinstance(text, list) else str(text).split(",")
    return tuple(str(item).strip() for item in items if str(item).strip())


def parse_params(items: list[str] | Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """``method.key=value`` strings (values parsed as YAML scalars) or a nested mapping."""
    if not items:
        return {}
    if isinstance(items, Mapping):
        return {str(m): dict(p) for m, p in items.items()}
    params: dict[str, dict[str, Any]] = {}
    for item in items:
        target, sep, value = item.partition("=")
        method, dot, key = target.rpartition(".")
        if not sep or not dot:
            raise FsadError(
                f"--param {item!r}: use METHOD.KEY=VALUE, e.g. patchcore.coreset_ratio=0.25"
            )
        params.setdefault(method, {})[key] = _scalar(value)
    return params


def _scalar(text: str) -> Any:
    """A YAML scalar, except that ``1e-4`` is a number (YAML 1.1 reads it as text)."""
    value = yaml.safe_load(text)
    if isinstance(value, str) and any(ch.isdigit() for ch in value):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def apply_weights(
    methods: tuple[str, ...], params: dict[str, dict[str, Any]], weights: str
) -> dict[str, dict[str, Any]]:
    """``--weights`` sets the ``weights`` parameter of every method that has one."""
    from fsad_bench.method import method_defaults
    from fsad_bench.registry import resolve

    params = {name: dict(values) for name, values in params.items()}
    takers = [m for m in methods if "weights" in method_defaults(resolve(m).cls)]
    if not takers:
        raise FsadError(f"--weights given but none of {list(methods)} takes backbone weights")
    for spec in takers:
        params.setdefault(spec, {}).setdefault("weights", weights)
    return params


_TEXT = (str,)
_NUMBER = (int, float)
_LIST_OR_TEXT = (list, str)
# what each key of a run config file may hold, and how a message describes it
OPTION_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "protocol": (_TEXT, "text (a protocol name or .yaml path)"),
    "data_root": (_TEXT, "text (a folder)"),
    "layout": (_TEXT, "text"),
    "out": (_TEXT, "text (a folder)"),
    "device": (_TEXT, "text"),
    "executor": (_TEXT, "text"),
    "address": (_TEXT, "text"),
    "weights": (_TEXT, "text"),
    "methods": (_LIST_OR_TEXT, "a list of method names"),
    "categories": (_LIST_OR_TEXT, "a list of category names"),
    "shots": ((list, int, str), "a list of whole numbers like [1, 2, 4]"),
    "seeds": ((list, int, str), "a list of whole numbers like [0, 1, 2]"),
    "params": ((dict, list), "a mapping like {patchcore: {coreset_ratio: 0.25}}"),
    "workers": ((int,), "a whole number"),
    "batch_size": ((int,), "a whole number"),
    "image_size": ((int,), "a whole number"),
    "save_maps": ((int,), "a whole number"),
    "episode_timeout": (_NUMBER, "a number of seconds"),
    "episode_memory_mb": (_NUMBER, "a number of MB"),
    "retry_failed": ((bool,), "true or false"),
}


def _check_options_file(path: Path, data: Any) -> None:
    """One line for the first key that is unknown or holds the wrong type of value."""
    if not isinstance(data, dict):
        raise FsadError(f"{path}: a run config must be a YAML mapping of option: value")
    for key, value in data.items():
        if key not in OPTION_TYPES:
            close = difflib.get_close_matches(str(key), OPTION_TYPES, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise FsadError(
                f"{path}: unknown key {key!r}{hint} (valid keys: {', '.join(sorted(OPTION_TYPES))})"
            )
        kinds, described = OPTION_TYPES[key]
        wrong_bool = isinstance(value, bool) and bool not in kinds
        if value is not None and (wrong_bool or not isinstance(value, kinds)):
            raise FsadError(
                f"{path}: {key} must be {described}, got {value!r} ({type(value).__name__})"
            )
    params = data.get("params")
    if isinstance(params, dict):
        for method, values in params.items():
            if not isinstance(values, dict):
                raise FsadError(
                    f"{path}: params.{method} must be a mapping of parameter: value, got "
                    f"{values!r} (e.g. params: {{{method}: {{sigma: 2.0}}}})"
                )


def load_options_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise FsadError(f"{path}: cannot read run config ({exc})") from exc
    _check_options_file(path, data)
    return data


def resolve_protocol(options: Mapping[str, Any]) -> Protocol:
    data_root = options.get("data_root")
    layout = options.get("layout")
    name = options.get("protocol")
    if name is None and layout is not None:
        if data_root is None:
            raise ProtocolError("--layout needs --data-root DIR (the folder of categories)")
        from fsad_bench.datasets import get_layout

        root = Path(data_root)
        categories = get_layout(layout).discover_categories(root if layout != "elpv" else None)
        protocol = adhoc_protocol(layout, root, categories)
    else:
        protocol = load_protocol(name or DEFAULT_PROTOCOL)
        if data_root is not None:
            protocol = protocol.with_overrides(data_root=str(Path(data_root).resolve()))
        elif layout is not None and layout != protocol.layout:
            raise ProtocolError(f"--layout {layout} contradicts protocol layout {protocol.layout}")
    if protocol.data_root is None and protocol.layout == "synthetic":
        import sys

        from fsad_bench.datasets.synthetic_versions import ensure_default_dataset

        def say(line: str) -> None:
            print(f"{protocol.dataset} data: {line}", file=sys.stderr, flush=True)

        root = ensure_default_dataset(protocol.dataset, progress=say)  # the version it names
        protocol = protocol.with_overrides(data_root=str(root))
    if protocol.data_root is None and protocol.layout != "elpv":
        raise ProtocolError(
            f"protocol {protocol.ref} needs --data-root pointing at its dataset "
            f"({protocol.dataset})"
        )
    return protocol.with_overrides(
        shots=parse_int_list(options.get("shots"), "shots"),
        seeds=parse_int_list(options.get("seeds"), "seeds"),
        image_size=_image_size(options.get("image_size")),
    )


MIN_IMAGE_SIZE = 32  # the backbones' coarsest stride: a smaller image has no feature map


def _image_size(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        size = int(value)
    except (TypeError, ValueError):
        size = 0
    if size < MIN_IMAGE_SIZE or str(size) != str(value).strip():
        raise FsadError(
            f"--image-size must be a whole number of pixels >= {MIN_IMAGE_SIZE} (e.g. 256), "
            f"got {value!r}"
        )
    return size


def build_run_config(options: Mapping[str, Any]) -> RunConfig:
    unknown = set(options) - set(OPTION_TYPES)
    if unknown:
        raise FsadError(f"unknown run options {sorted(unknown)}")
    protocol = resolve_protocol(options)
    methods = parse_str_list(options.get("methods")) or ("patchcore",)
    if "all" in methods:  # every registered plugin, in registry order
        from fsad_bench.registry import list_methods

        methods = tuple(list_methods())
    out = Path(options.get("out") or Path("runs") / protocol.name)
    params = parse_params(options.get("params"))
    if options.get("weights"):
        params = apply_weights(methods, params, str(options["weights"]))
    return RunConfig(
        protocol=protocol,
        methods=methods,
        out_dir=out,
        method_params=params,
        workers=_whole(options.get("workers"), "workers", 1, minimum=1),
        device=_device(options.get("device"), options.get("executor")),
        batch_size=_whole(options.get("batch_size"), "batch-size", 16, minimum=1),
        retry_failed=bool(options.get("retry_failed")),
        only_categories=parse_str_list(options.get("categories")),
        episode_timeout_s=_positive(options.get("episode_timeout"), "episode-timeout", "s"),
        episode_memory_mb=_positive(options.get("episode_memory_mb"), "episode-memory-mb", "MB"),
        executor=_executor(options.get("executor")),
        address=str(options["address"]) if options.get("address") else None,
        save_maps=_whole(options.get("save_maps"), "save-maps", 0, minimum=0),
    )


def _device(value: Any, executor: Any) -> str:
    """Checked here, not in every episode: a missing GPU is one line, not N failures. With
    Ray the GPUs are the workers', which this machine cannot see."""
    device = str(value or "cpu")
    if device == "cpu" or executor == "ray":
        return device
    import torch

    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise FsadError(f"--device {device!r} is not a device; use cpu, cuda or cuda:N") from None
    if parsed.type != "cuda":
        raise FsadError(f"--device {device!r} is not supported; use cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise FsadError(f"--device {device}: no CUDA GPU is visible here; use --device cpu")
    if parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise FsadError(
            f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here; "
            "use cuda:0 .. cuda:N-1"
        )
    return device


def _whole(value: Any, option: str, default: int, minimum: int) -> int:
    """A whole-number option, checked here so that a bad value is one line before any work."""
    if value is None or value == "":
        return default
    try:
        number = int(value)
        if isinstance(value, bool) or number != float(value):
            raise ValueError(value)
    except (TypeError, ValueError):
        raise FsadError(f"--{option} must be a whole number, got {value!r}") from None
    if number < minimum:
        raise FsadError(f"--{option} must be at least {minimum}, got {number}")
    return number


def _positive(value: Any, option: str, unit: str) -> float | None:
    """A limit: absent (no limit) or a finite number > 0; 0, negative and nan are refused
    rather than read as "no limit" or as a limit every episode breaks."""
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or number <= 0:
        raise FsadError(
            f"--{option} must be a number of {unit} > 0 (leave it out for no limit), got {value!r}"
        )
    return number


def _executor(name: Any) -> str:
    from fsad_bench.execution import EXECUTORS

    name = str(name or "local")
    known = EXECUTORS.targets()
    if name not in known:
        raise FsadError(f"unknown --executor {name!r}; choose one of {', '.join(known)}")
    return name
