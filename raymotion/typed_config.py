"""The machinery of raymotion's typed config tree, apart from the tree itself (``raymotion.config``).

A tree is nested ``@dataclass(kw_only=True, slots=True)`` sections whose fields carry their help text and an
optional inclusive numeric range (``leaf``, ``section``); choices are ``Literal`` types. This module turns
YAML values and ``--set a.b=v`` strings into those types (``from_dict``, ``apply_overrides``), checks types,
choices and ranges (``validate_fields``, called by every section's ``__post_init__``; ``check_values`` for
plain arguments), and reads the tree back (``to_dict``, ``config_keys``, ``describe``). Errors name the
dotted key as the user types it (``ConfigError``, ``UnknownKeyError``). It knows no section of raymotion's.
"""

import dataclasses
import difflib
import functools
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import field, fields, is_dataclass
from typing import Any, Literal, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A bad config value. ``key`` is the dotted path as the user types it (``body.gender``)."""

    def __init__(self, key: str, value: Any, expected: str) -> None:
        super().__init__(key, value, expected)  # keeps the error picklable (Ray moves exceptions)
        self.key, self.value, self.expected = key, value, expected

    def __str__(self) -> str:
        return (f"{self.key}={self.value!r} is invalid: {self.expected}. "
                f"Fix it in the config file or with --set {self.key}=<value>.")

    def under(self, prefix: str) -> "ConfigError":
        """The same error with ``prefix`` prepended to its key."""
        return ConfigError(_join(prefix, self.key), self.value, self.expected)


class MovedKeyError(ConfigError):
    """A key that moved to another section (``key`` the old dotted path, ``new_key`` the new one)."""

    def __init__(self, key: str, value: Any, new_key: str) -> None:
        ValueError.__init__(self, key, value, new_key)  # picklable: the args rebuild it
        self.key, self.value, self.new_key = key, value, new_key
        self.expected = f"the key is now {new_key}"

    def __str__(self) -> str:
        return (f"{self.key} is now {self.new_key}: write {self.new_key}: {self.value} in the config file, or "
                f"--set {self.new_key}={self.value}, instead of {self.key}.")


class UnknownKeyError(ValueError):
    """A key that is not in the config tree; ``key`` is its dotted path, the message lists the valid keys."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(key, message)  # picklable, like ConfigError
        self.key, self.message = key, message

    def __str__(self) -> str:
        return self.message


def leaf(default: Any, doc: str, *, range: tuple[float | None, float | None] | None = None) -> Any:
    """A leaf field with its help text and optional inclusive (min, max) range; None = unbounded."""
    return field(default=default, metadata={"help": doc, "range": range})


def section(cls: type) -> Any:
    """A section field; its help text is the section class docstring."""
    return field(default_factory=cls, metadata={"help": cls.__doc__, "range": None})


# ----------------------------------------------------------------------------- types

@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _is_optional(tp: Any) -> bool:
    return typing.get_origin(tp) in (types.UnionType, typing.Union) and type(None) in typing.get_args(tp)


def _non_none(tp: Any) -> Any:
    (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]  # only `X | None` is supported
    return inner


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if _is_optional(tp):
        return f"{_type_name(_non_none(tp))} | None"
    return tp.__name__ if isinstance(tp, type) and not typing.get_args(tp) else str(tp)


def _item_types(tp: Any, n: int) -> list[Any]:
    """Element types of a tuple/list annotation for a value of length n (fixed tuples: as written)."""
    args = typing.get_args(tp)
    return [args[0]] * n if len(args) == 1 or args[-1] is Ellipsis else list(args)


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Turn a YAML value or a --set string into type ``tp``; range and choice checks come later."""
    origin = typing.get_origin(tp)
    if is_dataclass(tp):
        if isinstance(value, Mapping):
            return from_dict(tp, value, prefix=key)  # type: ignore[arg-type]
        raise ValueError(f"'{key}' is a section, not a value; set one of its keys: "
                         f"{', '.join(_join(key, f.name) for f in fields(tp))}")
    if _is_optional(tp):
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "~")):
            return None
        return _coerce(key, value, _non_none(tp))
    if origin is Literal:  # choices are strings, so a --set value is already the right type
        return value  # membership is checked by __post_init__, which lists the choices
    if origin in (tuple, list):
        if isinstance(value, str):  # "[1,2]", "(1, 2)" or "1,2"
            inner = value.strip().strip("[]()").strip()
            value = [s.strip() for s in inner.split(",")] if inner else []
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, value, f"expected {_type_name(tp)}, e.g. [1,2]")
        item_types = _item_types(tp, len(value))
        if len(item_types) != len(value):
            raise ConfigError(key, value, f"expected {_type_name(tp)}")
        return origin(_coerce(key, v, t) for v, t in zip(value, item_types))
    if tp is bool:
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower()
        if word in ("true", "1", "yes", "on"):
            return True
        if word in ("false", "0", "no", "off"):
            return False
        raise ConfigError(key, value, "expected a bool: true/false/1/0")
    if tp in (int, float) and not isinstance(value, bool):
        if isinstance(value, int) or (tp is float and isinstance(value, float)):
            return tp(value)
        if isinstance(value, str):
            try:
                return tp(value.strip())
            except ValueError:
                pass
    if tp is str and isinstance(value, str):
        return value
    hint = "; quote it in YAML" if tp is str else ""
    raise ConfigError(key, value, f"expected {_type_name(tp)}{hint}")


def _check_value(key: str, value: Any, tp: Any) -> None:
    """Raise ConfigError unless ``value`` already has type ``tp`` (ints are accepted as floats)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        if value not in args:
            close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
            guess = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(key, value, f"expected one of: {', '.join(map(str, args))}{guess}")
    elif _is_optional(tp):
        if value is not None:
            _check_value(key, value, _non_none(tp))
    elif origin in (tuple, list):
        if not isinstance(value, origin) or len(_item_types(tp, len(value))) != len(value):
            raise ConfigError(key, value, f"expected {_type_name(tp)}")
        for v, t in zip(value, _item_types(tp, len(value))):
            _check_value(key, v, t)
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, value, "expected float")
    elif (tp is int and isinstance(value, bool)) or not isinstance(value, tp):
        raise ConfigError(key, value, f"expected {_type_name(tp)}")


def _check_field(key: str, f: dataclasses.Field, value: Any, tp: Any) -> None:
    """Type, choice and range checks of one field's value; errors name ``key``."""
    _check_value(key, value, tp)
    lo, hi = f.metadata["range"] or (None, None)
    if value is not None and ((lo is not None and value < lo) or (hi is not None and value > hi)):
        raise ConfigError(key, value, f"expected a value in range {_range_text(lo, hi)}")


def validate_fields(obj: Any) -> None:
    """Type, choice and range checks for every field of one section (keys relative to it)."""
    for f in fields(obj):
        _check_field(f.name, f, getattr(obj, f.name), _hints(type(obj))[f.name])


def _range_text(lo: float | None, hi: float | None) -> str:
    return f"[{lo}, {hi}]" if lo is not None and hi is not None else f">= {lo}" if lo is not None else f"<= {hi}"

def check_values(root: type, values: Mapping[str, Any]) -> None:
    """Check values against the rules of their dotted config keys (type, choices, range), without building
    a config of ``root`` (the tree's root class): for functions that take config values as plain arguments.

    Raises:
        ConfigError: a value the key does not accept, naming the key, the value and what it expects.
        UnknownKeyError: a key that is not in the config tree.
    """
    for key, value in values.items():
        *parents, leaf = key.split(".")
        cls, prefix = root, ""
        for part in parents:
            cls, prefix = _field_type(cls, prefix, part), _join(prefix, part)
        tp = _field_type(cls, prefix, leaf)
        (f,) = [f for f in fields(cls) if f.name == leaf]
        _check_field(key, f, value, tp)


# ----------------------------------------------------------------------------- dicts and overrides

def _field_type(cls: type, prefix: str, name: str) -> Any:
    """The annotation of field ``name`` of section ``cls``; an unknown name lists the valid ones."""
    hints = _hints(cls)
    if name not in hints:
        where = f"under '{prefix}'" if prefix else "at the top level"
        close = difflib.get_close_matches(str(name), list(hints), n=1)
        guess = f" Did you mean '{_join(prefix, close[0])}'?" if close else ""
        raise UnknownKeyError(_join(prefix, str(name)), f"unknown key '{_join(prefix, str(name))}'; valid keys "
                              f"{where}: {', '.join(sorted(hints))}.{guess}")
    return hints[name]


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dicts of builtins (tuples become lists), as Ray and YAML want them."""
    def plain(v: Any) -> Any:
        return to_dict(v) if is_dataclass(v) else [plain(x) for x in v] if isinstance(v, (list, tuple)) else v
    return {f.name: plain(getattr(cfg, f.name)) for f in fields(cfg)}


def from_dict(cls: type[T], d: Mapping[str, Any], *, prefix: str = "") -> T:
    """Build ``cls`` from a (partial) nested dict; values are coerced, unknown keys raise."""
    if not isinstance(d, Mapping):
        raise ValueError(f"expected a mapping of keys for '{prefix or 'the config'}', got {d!r}")
    kwargs = {k: _coerce(_join(prefix, k), v, _field_type(cls, prefix, k)) for k, v in d.items()}
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise e.under(prefix) from None


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"body": {"gender": "male"}, "run.seed": 1} -> {"body.gender": "male", "run.seed": 1}."""
    flat: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping) and v:
            flat.update(_flatten(v, _join(prefix, str(k))))
        else:
            flat[_join(prefix, str(k))] = v
    return flat


flatten = _flatten  # public: nested config dict -> dotted keys (used to compare configs key by key)


def apply_overrides(cfg: T, overrides: Mapping[str, Any]) -> T:
    """A new validated config with dotted-key ``overrides`` applied; ``cfg`` is not modified."""
    d = to_dict(cfg)
    for key, value in _flatten(overrides).items():
        *parents, leaf = key.split(".")
        node, cls, prefix = d, type(cfg), ""
        for part in parents:
            cls = _field_type(cls, prefix, part)
            if not is_dataclass(cls):
                raise ValueError(f"cannot set '{key}': '{_join(prefix, part)}' is a value, not a section")
            node, prefix = node[part], _join(prefix, part)
        if not (is_dataclass(_field_type(cls, prefix, leaf)) and value == {}):  # "body: {}" sets nothing
            node[leaf] = value  # a section set to a non-mapping is rejected by _coerce
    return from_dict(type(cfg), d)


def parse_set_args(items: Iterable[str]) -> dict[str, str]:
    """["body.gender=male", "run.seed=3"] -> {"body.gender": "male", "run.seed": "3"}."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE (e.g. --set body.gender=male), got {item!r}")
        out[key.strip()] = value.strip()
    return out


# ----------------------------------------------------------------------------- help

def _leaves(cls: type, prefix: str = "") -> Iterable[tuple[str, dataclasses.Field, Any]]:
    for f in fields(cls):
        tp = _hints(cls)[f.name]
        if is_dataclass(tp):
            yield from _leaves(tp, _join(prefix, f.name))  # type: ignore[arg-type]
        else:
            yield _join(prefix, f.name), f, tp


def config_keys(cls: type) -> list[str]:
    """Every dotted leaf key, e.g. ['body.model', ..., 'render.output']."""
    return [key for key, _, _ in _leaves(cls)]


def describe(cls: type) -> str:
    """One entry per leaf key: `key: type = default [range]` then its help text."""
    lines = []
    for key, f, tp in _leaves(cls):
        span = f"  (range {_range_text(*f.metadata['range'])})" if f.metadata["range"] else ""
        lines += [f"{key}: {_type_name(tp)} = {f.default!r}{span}", f"    {f.metadata['help']}"]
    return "\n".join(lines)
