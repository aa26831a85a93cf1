"""Config files: YAML in, typed `Config` out (strict: an unknown key names the nearest valid one, a
wrong type says which type was expected), `--set` overrides, and the resolved config written back.
The dataclasses and their checks are in config.py; this module knows nothing of torch."""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from mtrain.config import Config, DecodeConfig
from mtrain.config_checks import validate, validate_decode
from mtrain.errors import MtrainError
from mtrain.files import atomic_write_text


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Check (and gently coerce) one YAML value against a field's type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):  # X | None: null (or unset) is None
        (inner,) = [arg for arg in typing.get_args(tp) if arg is not type(None)]
        return None if value is None else _convert(value, inner, where)
    if dataclasses.is_dataclass(tp):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise MtrainError(f"config: '{where}' must be a mapping of keys, got {value!r}")
        return _build(tp, value, where)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, (str, int, float)) or (isinstance(value, dict) and dataclasses.is_dataclass(item_tp)):
            value = [value]
        if not isinstance(value, list):
            raise MtrainError(f"config: '{where}' must be a list, got {value!r}")
        return [_convert(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-9 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    raise MtrainError(f"config: '{where}' must be {_type_name(tp)}, got {value!r}")


def _build(cls: type, values: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        where = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean '{prefix + '.' if prefix else ''}{close[0]}'?" if close else ""
            valid = ", ".join(names)
            raise MtrainError(f"config: unknown key '{where}'{hint} (valid keys here: {valid})")
        kwargs[key] = _convert(value, hints[key], where)
    return cls(**kwargs)


def _set_path(tree: dict, dotted: str, value: Any) -> None:
    """Set one dotted key. In a list of corpora, `data.train.1.weight` names the second one and
    `data.train.path` the only one."""
    node = tree
    keys = dotted.split(".")
    for i, key in enumerate(keys[:-1]):
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise MtrainError(f"--set {dotted}: '{key}' is not an item of the list (0..{len(node) - 1})")
            node = node[int(key)]
            continue
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if isinstance(child, list) and len(child) == 1 and not keys[i + 1].isdigit():
            child = child[0]
        if not isinstance(child, (dict, list)):
            raise MtrainError(f"--set {dotted}: '{key}' is not a section")
        node = child
    if isinstance(node, list):
        raise MtrainError(f"--set {dotted}: name an item of the list and its key, e.g. data.train.0.weight=2")
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, object]:
    """`train.max_steps=200` -> ('train.max_steps', 200); the value is read as YAML."""
    if "=" not in text:
        raise MtrainError(f"--set '{text}': expected KEY=VALUE, e.g. --set train.max_steps=200")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


MAX_NODES = 100_000  # values in a config tree once aliases are expanded; real configs hold a few hundred


def plain_copy(value: Any) -> Any:
    """A deep copy of a YAML tree that we may change, refusing a tree that refers to itself
    (`data: &x {self: *x}`) or whose aliases expand past MAX_NODES values (a few hundred bytes
    of nested aliases can stand for billions: "billion laughs")."""
    count = 0

    def copy(node: Any, ancestors: tuple[int, ...]) -> Any:
        nonlocal count
        count += 1
        if count > MAX_NODES:
            raise MtrainError(f"the config expands to more than {MAX_NODES} values (aliases); write the values out")
        if isinstance(node, (dict, list)):
            if id(node) in ancestors:
                raise MtrainError("the config refers to itself (an alias inside its own anchor); write the values out")
            inner = (*ancestors, id(node))
            if isinstance(node, dict):
                return {key: copy(item, inner) for key, item in node.items()}
            return [copy(item, inner) for item in node]
        return node

    return copy(value, ())


def from_dict(values: dict, overrides: list[str] = ()) -> Config:
    tree = plain_copy(values)
    for text in overrides:
        key, value = parse_override(text)
        _set_path(tree, key, value)
    config = _build(Config, tree)
    validate(config)
    config.stated = frozenset(
        f"{section}.{key}" for section, values in tree.items() if isinstance(values, dict) for key in values
    )
    return config


def corpus_lists(values: dict) -> dict:
    """A config dict whose data.train is a list of corpora (configs written before mtrain read
    several training corpora hold one mapping there)."""
    data = values.get("data")
    if isinstance(data, dict) and isinstance(data.get("train"), dict):
        return {**values, "data": {**data, "train": [data["train"]]}}
    return values


MAX_ALIASES = 100  # a config needs few; billions are an attack ("billion laughs")


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but a key given twice in one mapping is an error instead of the last
    one silently winning."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise MtrainError(f"key '{key}' appears twice in one mapping (line {key_node.start_mark.line + 1})")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(text: str) -> object:
    """A YAML document, with duplicate keys and alias floods refused."""
    aliases = sum(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text, Loader=yaml.SafeLoader))
    if aliases > MAX_ALIASES:
        raise MtrainError(f"the YAML uses {aliases} aliases (*name); at most {MAX_ALIASES}: write the values out")
    return yaml.load(text, Loader=_StrictLoader)


def load_config(path: str | os.PathLike, overrides: list[str] = ()) -> Config:
    """Read a YAML experiment file, apply `--set` overrides, check everything once."""
    path = Path(path)
    if not path.is_file():
        raise MtrainError(f"config file not found: {path} (pass an existing YAML file, e.g. configs/demo.yaml)")
    try:
        values = read_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise MtrainError(f"invalid YAML in {path}{line}: {problem}") from None
    except MtrainError as e:
        raise MtrainError(f"{path}: {e}") from None
    except UnicodeDecodeError as e:
        raise MtrainError(f"config file {path} is not UTF-8 text ({e.reason})") from None
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise MtrainError(f"{path}: the top level must be a mapping of sections (data, model, train, ...)")
    return from_dict(values, overrides)


def save_config(config: Config, path: str | os.PathLike, comment: str = "") -> None:
    """The resolved config as YAML, with an optional comment line on top (a run's origin)."""
    header = f"# {comment}\n" if comment else ""
    atomic_write_text(Path(path), header + yaml.safe_dump(config.to_dict(), sort_keys=False))


def decode_config(saved: dict, **overrides: object) -> DecodeConfig:
    """A checkpoint's decode section with the command line's overrides (None = keep), type-checked
    and validated like the config file."""
    values = {**saved, **{k: v for k, v in overrides.items() if v is not None}}
    dec = _build(DecodeConfig, values, "decode")
    validate_decode(dec)
    return dec
