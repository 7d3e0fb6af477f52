"""``robustmo run``'s flags, made from ``RunConfig``'s fields: the flag, its type and range,
its help and its default all come from the field (``Field(description=..., ge=...)``), so a
setting is written once (as TRL derives its CLI from ``SFTConfig``)."""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, Union

import annotated_types as at
import click
from pydantic.fields import FieldInfo

from robustmo.core.config import RunConfig


def _bounds(metadata) -> dict:
    out = {}
    for m in metadata:
        if isinstance(m, FieldInfo):
            out.update(_bounds(m.metadata))
        elif isinstance(m, at.Ge):
            out["min"] = m.ge
        elif isinstance(m, at.Gt):
            out.update(min=m.gt, min_open=True)
        elif isinstance(m, at.Le):
            out["max"] = m.le
        elif isinstance(m, at.Lt):
            out.update(max=m.lt, max_open=True)
    return out


def _click_type(annotation, metadata):
    """The click type of a scalar annotation with its constraints."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _click_type(args[0], [*metadata, *args[1:]])
    if origin is Literal:
        return click.Choice([str(a) for a in args])
    bounds = _bounds(metadata)
    if annotation is int:
        return click.IntRange(**bounds) if bounds else int
    if annotation is float:
        return click.FloatRange(**bounds) if bounds else float
    return str


def _unwrap_optional(annotation):
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _default_text(name: str, info: FieldInfo, extra: dict) -> str:
    if "default_text" in extra:
        return extra["default_text"]
    default = info.get_default(call_default_factory=True)
    if default is None or default == [] or default is False:
        return ""
    return ", ".join(map(str, default)) if isinstance(default, list) else str(default)


def field_option(name: str, info: FieldInfo) -> click.Option | None:
    """The click option of one RunConfig field, or None for a field with no flag (``options``)."""
    extra = ((info.json_schema_extra or {}) if isinstance(info.json_schema_extra, dict) else {}).get("cli", {})
    flag = extra.get("flag", "--" + name.replace("_", "-"))
    if not flag:
        return None
    annotation = _unwrap_optional(info.annotation)
    origin = typing.get_origin(annotation)
    help_text = info.description or ""
    default = _default_text(name, info, extra)
    if default:
        help_text += f"  [default: {default}]"
    kwargs: dict[str, Any] = {"help": help_text}
    if "metavar" in extra:
        kwargs["metavar"] = extra["metavar"]
    if annotation is bool:  # --lr-check/--no-lr-check; --no-cache/--cache: a config file's true can be turned off
        off = "--" + name[3:].replace("_", "-") if name.startswith("no_") else "--no-" + name.replace("_", "-")
        return click.Option([f"{flag}/{off}", name], default=None, **kwargs)
    if origin is list:
        (item,) = typing.get_args(annotation)
        if typing.get_origin(item) is typing.Annotated and typing.get_args(item)[0] is int:  # --seeds 0,1,2
            return click.Option([flag, name], multiple=True, **kwargs)
        return click.Option([flag, name], type=_click_type(item, []), multiple=True, **kwargs)
    if origin is dict:  # SET=N pairs (or a bare N for every key)
        return click.Option([flag, name], multiple=True, **kwargs)
    if name == "out":
        return click.Option([flag, name], type=click.Path(file_okay=False), **kwargs)
    return click.Option([flag, name], type=_click_type(annotation, info.metadata), **kwargs)


def config_options(skip: tuple[str, ...] = ()) -> list[click.Option]:
    """One option per user-settable RunConfig field, in the field order."""
    out = []
    for name, info in RunConfig.model_fields.items():
        if name in skip:
            continue
        option = field_option(name, info)
        if option is not None:
            out.append(option)
    return out


def given_values(params: dict[str, Any]) -> dict[str, Any]:
    """The RunConfig values the user actually gave on the command line (unset flags are None or
    empty), converted to what the field takes."""
    out = {}
    for name, value in params.items():
        if name not in RunConfig.model_fields or value is None or value == ():
            continue
        info = RunConfig.model_fields[name]
        annotation = _unwrap_optional(info.annotation)
        if typing.get_origin(annotation) is dict:
            several = typing.get_origin(typing.get_args(annotation)[1]) is list  # --stop SET=S twice: two strings
            pairs: dict[str, Any] = {}
            for text in value:
                key, sep, val = text.partition("=")  # the set names have no "=", a text may
                key, val = (key, val) if sep else ("*", text)
                if several:
                    pairs.setdefault(key, []).append(val)
                else:
                    pairs[key] = val
            value = pairs
        out[name] = list(value) if isinstance(value, tuple) else value
    return out


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")
