"""Reading a YAML or TOML config file into plain values plus the line of every key.

A key's place is a path of mapping keys and list indexes, ("models", 1, "type"); `Lines`
answers the line of a path, or of its nearest ancestor that has one.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

from bundler.errors import FileNotFound, UsageError

Path = tuple[Any, ...]


class ConfigError(UsageError):
    """A config file that does not follow the schema; lists every problem with its file,
    line and key. Exit 3 when every problem is a missing input, else 2."""

    def __init__(self, problems: list[tuple[str, str]], not_found: bool = False):
        self.problems = problems  # (place, problem)
        if not_found:
            self.exit_code = FileNotFound.exit_code
        lines = [f"{place}: {problem}" for place, problem in problems]
        head = lines[0] if len(lines) == 1 else f"{len(lines)} problems in the config:\n  "
        super().__init__(head if len(lines) == 1 else head + "\n  ".join(lines))


class Lines:
    """The line of each key path in one file."""

    def __init__(self, path: str, lines: dict[Path, int]):
        self.path = path
        self.lines = lines

    def line(self, key: Path) -> int | None:
        for end in range(len(key), -1, -1):
            found = self.lines.get(key[:end])
            if found is not None:
                return found
        return None

    def place(self, key: Path) -> str:
        """ "config.yaml:12: models[1].type"."""
        line = self.line(key)
        return f"{self.path}:{line}: {dotted(key)}" if line else f"{self.path}: {dotted(key)}"


def dotted(key: Path) -> str:
    out = ""
    for part in key:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out or "(top level)"


def load(path: str | os.PathLike[str]) -> tuple[Any, Lines]:
    """The file's values and key lines; the format comes from the extension."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise FileNotFound(path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the config: {exc}") from None
    ext = path.rsplit(".", 1)[-1].lower()
    if ext in ("yaml", "yml"):
        return _yaml(path, text)
    if ext == "toml":
        return _toml(path, text)
    raise UsageError(f"{path}: a config is a .yaml, .yml or .toml file")


def _yaml(path: str, text: str) -> tuple[Any, Lines]:
    import yaml

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([(f"{path}{at}", f"not valid YAML: {problem}")]) from None
    if root is None:
        return {}, Lines(path, {})
    walk = _YamlWalk(path, yaml.SafeLoader(""))
    value = walk.node(root, ())
    if walk.problems:
        raise ConfigError(walk.problems)
    return value, Lines(path, walk.lines)


class _YamlWalk:
    """Builds values from composed YAML nodes, noting each key's line from its mark."""

    def __init__(self, path: str, loader: Any):
        self.path, self.loader = path, loader
        self.lines: dict[Path, int] = {}
        self.problems: list[tuple[str, str]] = []

    def node(self, node: Any, key: Path) -> Any:
        import yaml

        self.lines.setdefault(key, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for knode, vnode in node.value:
                name = self.loader.construct_object(knode, deep=True)
                sub = (*key, name)
                line = knode.start_mark.line + 1
                if name in out:
                    self.problems.append((f"{self.path}:{line}: {dotted(sub)}", "repeated key"))
                self.lines[sub] = line
                out[name] = self.node(vnode, sub)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.node(v, (*key, i)) for i, v in enumerate(node.value)]
        return self.loader.construct_object(node, deep=True)


def _toml(path: str, text: str) -> tuple[Any, Lines]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - python 3.10
        import tomli as tomllib
    try:
        value = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"\(at line (\d+)", str(exc))
        at = f":{match[1]}" if match else ""
        raise ConfigError([(f"{path}{at}", f"not valid TOML: {exc}")]) from None
    return value, Lines(path, _toml_lines(text))


_TABLE = re.compile(r"^\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
_ARRAY_TABLE = re.compile(r"^\[\[\s*([^\[\]]+?)\s*\]\]\s*(#.*)?$")
_PART = r"""(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')"""
_KEY = re.compile(rf"^({_PART}(?:\s*\.\s*{_PART})*)\s*=")


def _toml_lines(text: str) -> dict[Path, int]:
    """The line of every table header and `key =` line (keys inside inline tables take
    the line of the key that holds them)."""
    lines: dict[Path, int] = {}
    counts: dict[Path, int] = {}
    table: Path = ()
    in_string = None
    for number, raw in enumerate(text.splitlines(), 1):
        s = raw.strip()
        if in_string:
            if s.count(in_string) % 2:
                in_string = None
            continue
        if not s or s.startswith("#"):
            continue
        found = _ARRAY_TABLE.match(s)
        if found:
            name = _split_key(found[1])
            counts[name] = counts.get(name, -1) + 1
            table = (*name, counts[name])
            lines.setdefault(name, number)
            lines[table] = number
            continue
        found = _TABLE.match(s)
        if found:
            table = _split_key(found[1])
            lines.setdefault(table, number)
            continue
        found = _KEY.match(s)
        if found:
            lines.setdefault((*table, *_split_key(found[1])), number)
            rest = s[found.end() :]
            for quote in ('"""', "'''"):
                if rest.count(quote) % 2:
                    in_string = quote
    return lines


def _split_key(text: str) -> Path:
    parts = re.findall(_PART, text)
    return tuple(p[1:-1] if p[:1] in "\"'" else p for p in parts)
