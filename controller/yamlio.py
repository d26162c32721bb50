"""YAML loading that refuses what PyYAML's safe_load lets through silently.

Duplicate keys (safe_load keeps the last one), aliases (billion-laughs expansion), files over
a size limit, nesting deeper than a limit, text that is not UTF-8 and anything that is not a
regular file are errors with the file (and line), in one line. Any file at all gives a
YamlError, never another exception.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

MAX_BYTES = 256 * 1024
#: Mappings and sequences nested deeper than this are refused (recipes need 4).
MAX_DEPTH = 32


class YamlError(Exception):
    """A YAML file that cannot be used; the message names the file and line."""


class _StrictLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
        try:
            hash(key)
        except TypeError:
            line = key_node.start_mark.line + 1
            kind = type(key).__name__
            raise YamlError(f"line {line}: a key must be a plain value, found a {kind}") from None
        if key in seen:
            raise YamlError(
                f"line {key_node.start_mark.line + 1}: duplicate key {key!r} (first at line {seen[key] + 1})"
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


def _no_alias(loader: _StrictLoader, node: yaml.Node) -> Any:
    raise YamlError(f"line {node.start_mark.line + 1}: YAML anchors and aliases are not allowed")


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)  # type: ignore[arg-type]


class _NoAliasComposer(_StrictLoader):
    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if self.check_event(yaml.AliasEvent):
            raise YamlError(f"line {event.start_mark.line + 1}: YAML anchors and aliases are not allowed")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:  # before Python's recursion limit, with a line number
                raise YamlError(f"line {event.start_mark.line + 1}: nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


#: PyYAML's token names in plain words.
_TOKENS = {
    "'<stream end>'": "the end of the file",
    "<stream end>": "the end of the file",
    "<block end>": "the end of the indented block",
    "'<block mapping start>'": "an indented mapping",
    "'<block sequence start>'": "an indented list",
    "'<document start>'": "the start of a document",
    "'?'": "a key",
}


def _plain(problem: str) -> str:
    """PyYAML's problem text in words that read after `found` (`found a tab character …`),
    never `found found …` or `… but got …`."""
    char = re.fullmatch(r"found character '(.*)' that cannot start any token", problem)
    if char:
        if char.group(1) == "\\t":
            return "a tab character, which YAML does not allow here (indent with spaces)"
        return f"the character '{char.group(1)}', which cannot start a value (put the value in quotes)"
    pair = re.fullmatch(r"expected (.+?), but (?:found|got) (.+)", problem)
    if pair:
        want, got = (_TOKENS.get(x, x) for x in pair.groups())
        return f"{got} where {want} should be"
    if problem == "mapping values are not allowed here":
        return "a ':' where no key can start (a value holding ': ' needs quotes)"
    if problem == "found unexpected end of stream":
        return "the end of the file inside a value (a quote left open?)"
    return problem.removeprefix("found ")


def _one_line(text: object, limit: int = 200) -> str:
    return " ".join(str(text).split())[:limit]


def read_text(path: Path, max_bytes: int = MAX_BYTES) -> str:
    """The UTF-8 text of a regular file of at most `max_bytes`. Raises YamlError naming `path`."""
    try:
        st = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise YamlError(
                f"{path}: cannot read: a link to {path.readlink()}, which does not exist"
            ) from None
        raise YamlError(f"{path}: no such file") from None
    except OSError as exc:
        raise YamlError(f"{path}: cannot read: {exc.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise YamlError(f"{path}: a folder (directory), not a file")
    if not stat.S_ISREG(st.st_mode):
        raise YamlError(f"{path}: not a regular file")
    if st.st_size > max_bytes:
        raise YamlError(f"{path}: {st.st_size} bytes, over the {max_bytes} byte limit")
    try:
        with path.open("rb") as f:
            data = f.read(max_bytes + 1)  # the file may have grown since stat
    except OSError as exc:
        raise YamlError(f"{path}: cannot read: {exc.strerror}") from None
    if len(data) > max_bytes:
        raise YamlError(f"{path}: over the {max_bytes} byte limit")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise YamlError(
            f"{path}: line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "save it as UTF-8"
        ) from None


def load_yaml(path: Path, max_bytes: int = MAX_BYTES) -> Any:
    """Parse one YAML file strictly. Raises YamlError naming `path`, and nothing else."""
    text = read_text(path, max_bytes)
    try:
        return yaml.load(text, Loader=_NoAliasComposer)
    except YamlError as exc:
        raise YamlError(f"{path}: {exc}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise YamlError(
            f"{path}: {where}{_one_line(_plain(str(exc.problem or exc.context or exc)))}"
        ) from None
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise YamlError(
            f"{path}: line {line}: character #x{char:04x} is not allowed in YAML (binary data?)"
        ) from None
    except (yaml.YAMLError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        # PyYAML's constructors raise plain ValueError and the like (a date such as 2001-13-45).
        raise YamlError(f"{path}: cannot parse: {_one_line(exc)}") from None


Field = tuple[str | int, ...]


def _nodes(path: Path) -> Iterator[tuple[Field, yaml.Node | None, yaml.Node]]:
    """Every node of the file in document order, with its field path and the mapping key that
    names it (None for the root and list items); nothing for a file that does not compose."""

    def walk(
        node: yaml.Node, at: Field, key: yaml.Node | None
    ) -> Iterator[tuple[Field, yaml.Node | None, yaml.Node]]:
        yield at, key, node
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                yield from walk(v, (*at, str(k.value)), k)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                yield from walk(item, (*at, i), None)

    try:
        root = yaml.compose(read_text(path), Loader=_NoAliasComposer)
    except (YamlError, yaml.YAMLError, ValueError, RecursionError):
        return
    if root is not None:
        yield from walk(root, (), None)


def key_lines(path: Path) -> dict[Field, int]:
    """Line number (1-based) of every mapping key and sequence item, by its field path."""
    lines: dict[Field, int] = {}
    for at, key, node in _nodes(path):
        lines.setdefault(at, (key or node).start_mark.line + 1)
    return lines


def key_path_at(path: Path, line: int, key: str) -> Field:
    """The field path of mapping key `key` (as written, or its repr) on `line` (1-based); () if
    none. For naming a duplicate key, which the strict loader refuses before a path is known."""
    found: Field = ()
    for at, k, _ in _nodes(path):
        if k is not None and k.start_mark.line + 1 == line and key in (str(k.value), repr(k.value)):
            found = at
    return found
