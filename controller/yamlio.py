"""YAML loading that refuses what PyYAML's safe_load lets through silently.

Duplicate keys (safe_load keeps the last one), aliases (billion-laughs expansion) and files
over a size limit are errors with the file and line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

MAX_BYTES = 256 * 1024


class YamlError(Exception):
    """A YAML file that cannot be used; the message names the file and line."""


class _StrictLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
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
    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise YamlError(f"line {event.start_mark.line + 1}: YAML anchors and aliases are not allowed")
        return super().compose_node(parent, index)


def load_yaml(path: Path, max_bytes: int = MAX_BYTES) -> Any:
    """Parse one YAML file strictly. Raises YamlError naming `path`."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise YamlError(f"{path}: cannot read: {exc.strerror}") from None
    if size > max_bytes:
        raise YamlError(f"{path}: {size} bytes, over the {max_bytes} byte limit")
    text = path.read_text(encoding="utf-8", errors="strict")
    try:
        return yaml.load(text, Loader=_NoAliasComposer)
    except YamlError as exc:
        raise YamlError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "?"
        raise YamlError(f"{path}: {where}: {getattr(exc, 'problem', None) or exc}") from None


def key_lines(path: Path) -> dict[tuple[str | int, ...], int]:
    """Line number (1-based) of every mapping key and sequence item, by its field path."""
    lines: dict[tuple[str | int, ...], int] = {}

    def walk(node: yaml.Node, at: tuple[str | int, ...]) -> None:
        lines.setdefault(at, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = (*at, str(k.value))
                lines[key] = k.start_mark.line + 1
                walk(v, key)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*at, i))

    try:
        root = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines
    if root is not None:
        walk(root, ())
    return lines
