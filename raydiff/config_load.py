"""YAML -> frozen :class:`Config`, with ``a.b=value`` overrides and errors that name the key.

Why hand-written rather than pydantic: the stack is fixed by the user and the schema is a handful of
frozen dataclasses; a ~100-line converter that understands ``Literal``/``Optional``/nested
dataclasses gives exact messages ("strategy.name: 'fedsgd' is not one of fedavg, fedasync, fedbuff").
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from .config import Config
from .errors import ConfigError, RaydiffError

# ------------------------------------------------------------------------------------------- reading YAML
# Every YAML raydiff reads (scenario, sweep and cluster files, --set values, a run's config.yaml) goes through
# safe_yaml: PyYAML's safe loader (data only, never code) plus two refusals it lacks. A key given twice in one
# mapping (YAML silently keeps the last: `seed` twice, a second `data:` section) is an error naming the key and
# both lines. Aliases are bounded: a 1 KB "billion laughs" file is cheap to load (aliases share one object)
# but explodes when walked or copied (apply_overrides, build), so the tree's size counted with every alias
# expanded must stay under MAX_YAML_NODES, and an alias that contains itself is refused.
MAX_YAML_NODES = 100_000  # a scenario has ~100; a big sweep a few thousand
MAX_YAML_DEPTH = 64


class YamlRefused(yaml.YAMLError):
    """A YAML text that parses but that raydiff refuses (a duplicate key, an alias bomb); the message is the user's."""


class _StrictLoader(yaml.SafeLoader):
    """The safe loader, refusing a key given twice in one mapping (merge keys ``<<`` still work)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: PyYAML refuses it below, with its own message
                continue
            line = key_node.start_mark.line + 1
            if first is not None:
                raise YamlRefused(
                    f"line {line}: the key {key!r} appears twice in one mapping (first on line {first}); YAML "
                    "would silently keep only the last one, so raydiff refuses: keep one of them"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _check_size(data: Any) -> None:
    """Refuse a tree that is too large with its aliases expanded, too deep, or that contains itself."""
    count = 0

    def walk(obj: Any, depth: int) -> None:
        nonlocal count
        count += 1
        if count > MAX_YAML_NODES:
            raise YamlRefused(
                f"it expands to more than {MAX_YAML_NODES:,} values once its aliases (*name) are expanded "
                "(an alias bomb?); write the values out or use fewer nested aliases"
            )
        if depth > MAX_YAML_DEPTH:
            raise YamlRefused(f"it is nested more than {MAX_YAML_DEPTH} levels deep, or an alias contains itself")
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(k, depth + 1)
                walk(v, depth + 1)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                walk(v, depth + 1)

    walk(data, 0)


def safe_yaml(text: str) -> Any:
    """YAML text -> plain data (safe loader, no duplicate keys, aliases bounded). Raises yaml.YAMLError
    (``YamlRefused`` for raydiff's own refusals) or RecursionError."""
    data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader: data only, never code
    _check_size(data)
    return data


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def convert_value(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert it (ints to floats, dicts to dataclasses).

    Also used for a user strategy's options (``Strategy.from_options``), so errors name ``key`` as given.
    """
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (dict, Mapping, typing.Mapping) or tp in (dict, Mapping):
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{key}: expected a mapping of names to values, got {value!r}")
        kv = typing.get_args(tp)
        inner = kv[1] if len(kv) == 2 else Any
        return {k: convert_value(v, inner, f"{key}.{k}") for k, v in value.items()}
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [convert_value(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            if len(args) != len(typing.get_args(tp)):
                return None
            raise ConfigError(f"{key}: must not be null")
        return convert_value(value, args[0], key)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, allowed))}")
        return value
    if origin is tuple:
        (item, _ellipsis) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return tuple(convert_value(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping of fields, got {value!r}")
        return build(typing.cast(type, tp), value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string; users mean a number
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        if "\x00" in value or any(0xD800 <= ord(c) <= 0xDFFF for c in value):  # no file name or UTF-8 holds these
            raise ConfigError(
                f"{key}: {value!r} holds a NUL character or a lone surrogate, which no file name or UTF-8 text can hold"
            )
        return value
    raise TypeError(f"unsupported config annotation {_type_name(tp)} at {key}")  # a bug, not user input


def build(cls: type, data: Mapping[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys by name."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    where = f"{prefix}." if prefix else ""
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ConfigError(
            f"{where}{unknown[0]}: unknown key; allowed keys{' in ' + prefix if prefix else ''}: {', '.join(names)}"
        )
    kwargs = {k: convert_value(v, hints[k], f"{where}{k}") for k, v in data.items()}
    return cls(**kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (['a', 'b'], value), the value parsed as YAML (so ``0.5``, ``null``, ``true`` work)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, for example strategy.name=fedasync")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: the key is empty or has an empty part")
    try:
        value = safe_yaml(raw) if raw.strip() else ""
    except YamlRefused as exc:
        raise ConfigError(f"override {text!r}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({exc})") from None
    except RecursionError:
        raise ConfigError(f"override {text!r}: the value is nested too deeply") from None
    return key.split("."), value


def apply_overrides(data: dict, overrides: Iterable[str]) -> dict:
    """Return a copy of ``data`` with each ``a.b=value`` set (nested mappings are created as needed)."""
    out = _deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for i, part in enumerate(path[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            elif not isinstance(nxt, dict):
                raise ConfigError(f"override {text!r}: {'.'.join(path[: i + 1])} is not a section")
            node = nxt
        node[path[-1]] = value
    return out


def _deepcopy(d: Any) -> Any:
    return {k: _deepcopy(v) for k, v in d.items()} if isinstance(d, dict) else d


def read_yaml(path: str | Path, what: str = "scenario file") -> dict:
    """Read a YAML mapping; a missing file or malformed YAML becomes a ConfigError naming the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} {str(p)!r} does not exist" + (" (it is a folder)" if p.is_dir() else ""))
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{what} {str(p)!r} is not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{what} {str(p)!r} cannot be read: {exc.strerror or exc}") from None
    try:
        data = safe_yaml(text)
    except YamlRefused as exc:
        raise ConfigError(f"{what} {str(p)!r}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {str(p)!r} is not valid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{what} {str(p)!r} is nested too deeply to be a scenario") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {str(p)!r} must hold a mapping of sections, got {type(data).__name__}")
    return data


def load_config(source: str | Path | Mapping | Config | None = None, overrides: Iterable[str] = ()) -> Config:
    """A path, a mapping or a Config (or None for defaults) plus overrides -> a validated Config."""
    overrides = list(overrides)
    if isinstance(source, Config):
        if not overrides:
            return source
        data = to_dict(source)
    elif source is None:
        data = {}
    elif isinstance(source, Mapping):
        data = dict(source)
    else:
        data = read_yaml(source)
        if "name" not in data:
            data["name"] = Path(source).stem
    data = apply_overrides(data, overrides)
    try:
        return build(Config, data)
    except RaydiffError:
        raise
    except (TypeError, ValueError, RecursionError) as exc:  # e.g. a dataclass refusing a combination
        raise ConfigError(str(exc)) from None


def to_dict(cfg: Any) -> dict:
    """A Config as plain nested dicts and lists (for YAML output and for flattening into analysis columns)."""

    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return plain(dataclasses.asdict(cfg))


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
