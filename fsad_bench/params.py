"""Typed, frozen plugin parameters: one declaration gives defaults, checks and get_params.

A plugin declares its parameters as a subclass of ``Params`` (a pydantic model): the field
types, defaults and value constraints (``Field(gt=0, le=1)``, ``Literal[...]`` choices,
``multiple_of``) are the whole specification. Unknown names, wrong types and values out of
range are refused with one line naming the parameter, the value and what is allowed, so the
runner can check every method before the first episode instead of failing every episode.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from fsad_bench.errors import FsadError

__all__ = [
    "Field",
    "NoParams",
    "ParamError",
    "Params",
    "field_validator",
    "model_validator",
]


class ParamError(FsadError, ValueError):
    """A parameter value a plugin cannot take; the message names it and the valid range."""


class Params(BaseModel):
    """Base of every plugin's parameter set. Subclass it and declare typed fields."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    owner: ClassVar[str] = "method"  # the plugin name used in messages (set by MethodBase)

    @classmethod
    def parse(cls, values: Mapping[str, Any], owner: str | None = None) -> Params:
        """The validated parameters, or a one-line ``ParamError``."""
        try:
            return cls.model_validate(dict(values))
        except ValidationError as exc:
            raise ParamError(describe(exc, cls, owner or cls.owner)) from None

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return cls().to_dict()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (tuples become lists), as records and run.json store them."""
        return self.model_dump(mode="json")


class NoParams(Params):
    """For plugins without parameters."""


def describe(exc: ValidationError, model: type[BaseModel], owner: str) -> str:
    """pydantic's errors as one line: the parameter, the value given, and what is allowed."""
    valid = sorted(model.model_fields)
    unknown = [str(e["loc"][0]) for e in exc.errors() if e["type"] == "extra_forbidden"]
    if unknown:
        return f"{owner}: unknown parameter(s) {sorted(unknown)}; valid parameters are {valid}"
    parts = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        if not error["loc"]:  # a check across parameters: its message names them
            parts.append(message)
            continue
        name = ".".join(str(part) for part in error["loc"])
        field = model.model_fields.get(str(error["loc"][0]))
        described = field is not None and field.description and error["type"] != "value_error"
        hint = f" ({field.description})" if described else ""
        parts.append(
            f"parameter {name}={error['input']!r}: {message[:1].lower()}{message[1:]}{hint}"
        )
    return f"{owner}: " + "; ".join(parts)
