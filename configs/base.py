"""Config machinery: frozen keyword-only dataclasses that load strictly, override by dotted key, and hash.

Every component config is declared with ``@config`` (a frozen, keyword-only dataclass). Loading from a
dict (YAML, JSON, command line) is strict: an unknown key or a value of the wrong type raises
``ConfigError`` naming the full dotted key, before any work starts. ``config_hash`` is a stable digest
of the values, used as Flyte cache version and MLflow tag.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
from collections.abc import Iterable, Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config key is unknown, missing or of the wrong type; the message names the dotted key."""


def config(cls: type[T]) -> type[T]:
    """Declare a component config: frozen, keyword-only, slotted dataclass."""
    return dataclasses.dataclass(frozen=True, kw_only=True)(cls)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against annotation ``tp`` and return it in canonical form (tuples, dataclasses)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Union or origin is types.UnionType:
        for arm in get_args(tp):
            try:
                return _coerce(value, arm, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: {value!r} matches none of {_type_name(tp)}")
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{key}: expected null, got {value!r}")
        return None
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{key}: {value!r} is not one of {list(get_args(tp))}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping for {tp.__name__}, got {type(value).__name__}")
        return from_dict(tp, value, prefix=key)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        args = get_args(tp)
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if origin is tuple and args:
            if len(args) != len(value):
                raise ConfigError(f"{key}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
        inner = args[0] if args else Any
        return tuple(_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected bool, got {type(value).__name__} {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected int, got {type(value).__name__} {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected float, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected str, got {type(value).__name__} {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported annotation {_type_name(tp)}")


def from_dict(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build ``cls`` from a mapping; unknown keys, missing required keys and wrong types fail by name."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix or cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"unknown config key {where}{unknown[0]!s} (valid keys of {cls.__name__}: {', '.join(sorted(fields))})"
        )
    kwargs = {}
    for name, field in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], key)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required config key {key}")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"{prefix or cls.__name__}: {err}") from err


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (tuples become lists) suitable for JSON / YAML."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(cfg)


def to_json(cfg: Any) -> str:
    return json.dumps(to_dict(cfg), sort_keys=True, separators=(",", ":"))


def config_hash(cfg: Any, length: int = 16) -> str:
    """Stable digest of the values: equal configs hash equal across processes and machines."""
    return hashlib.sha256(to_json(cfg).encode()).hexdigest()[:length]


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b.c": value}`` view for MLflow params."""
    out: dict[str, Any] = {}
    for k, v in (to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, prefix=f"{key}."))
        else:
            out[key] = v
    return out


def _parse_assignment(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form dotted.key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {item!r} has an empty key")
    return key, yaml.safe_load(raw) if raw.strip() else ""


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if not isinstance(child, dict):
            raise ConfigError(f"unknown config key {'.'.join(parts[: i + 1])} (it is not a section)")
        node = child
    if parts[-1] not in node:
        raise ConfigError(f"unknown config key {key}")
    node[parts[-1]] = value


def parse_overrides(text_or_items: str | Iterable[str] | Mapping[str, Any] | None) -> dict[str, Any]:
    """Overrides as ``{"dotted.key": value}`` from YAML/JSON text, ``k=v`` items, or a mapping.

    A YAML/JSON mapping may be nested (``{curate: {seed: 3}}``) or dotted (``{curate.seed: 3}``).
    """
    if text_or_items is None:
        return {}
    if isinstance(text_or_items, Mapping):
        return flatten(dict(text_or_items))
    if isinstance(text_or_items, str):
        text = text_or_items.strip()
        if not text:
            return {}
        if "=" in text and not text.startswith("{") and ":" not in text.split("=", 1)[0]:
            items: Iterable[str] = [p for p in text.replace(",", " ").split() if p]
        else:
            try:
                loaded = yaml.safe_load(text)
            except yaml.YAMLError as err:
                raise ConfigError(f"overrides are neither k=v items nor valid YAML: {err}") from err
            if not isinstance(loaded, Mapping):
                raise ConfigError(f"overrides must be a mapping, got {type(loaded).__name__}")
            return flatten(dict(loaded))
    else:
        items = text_or_items
    return dict(_parse_assignment(i) for i in items)


def apply_overrides(cfg: T, overrides: Mapping[str, Any]) -> T:
    """Return a new config with dotted-key overrides applied, re-validated as a whole."""
    if not overrides:
        return cfg
    tree = to_dict(cfg)
    for key, value in overrides.items():
        _set_dotted(tree, key, value)
    return from_dict(type(cfg), tree)


def load_yaml(path: str) -> dict[str, Any]:
    """A YAML config file as a mapping (any subset of the config's keys, nested or dotted)."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except FileNotFoundError as err:
        raise ConfigError(f"config file {path} does not exist") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from err
    if not isinstance(data, Mapping):
        raise ConfigError(f"config file {path} must hold a mapping of config keys, got {type(data).__name__}")
    return dict(data)


def schema_fingerprint(cls: type, length: int = 12) -> str:
    """Digest of a config class's field names and annotations (not values): changes when the schema does."""

    def walk(tp: Any) -> Any:
        if dataclasses.is_dataclass(tp):
            hints = get_type_hints(tp)
            return {f.name: walk(hints[f.name]) for f in dataclasses.fields(tp)}
        return str(tp)

    text = json.dumps(walk(cls), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


__all__ = [
    "ConfigError",
    "apply_overrides",
    "config",
    "config_hash",
    "flatten",
    "from_dict",
    "load_yaml",
    "parse_overrides",
    "schema_fingerprint",
    "to_dict",
    "to_json",
]
