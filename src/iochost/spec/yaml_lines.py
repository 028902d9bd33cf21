"""Read config.yaml keeping what ``yaml.safe_load`` throws away: the line of every key.

Errors must point at the line to fix, and a key written twice must be an error: plain
``safe_load`` silently keeps the last one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

KeyPath = tuple[str, ...]


@dataclass
class YamlDocument:
    data: Any
    lines: dict[KeyPath, int] = field(default_factory=dict)
    duplicates: list[tuple[KeyPath, int, int]] = field(default_factory=list)  # path, line, first line


class YamlSyntaxError(Exception):
    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.line = line


def _walk(node: yaml.Node, path: KeyPath, doc: YamlDocument, active: set[int]) -> None:
    if id(node) in active:  # a recursive alias; safe_load rejects or loops, we just stop
        return
    active.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first_seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key, line = str(key_node.value), key_node.start_mark.line + 1
            if key in first_seen:
                doc.duplicates.append((path + (key,), line, first_seen[key]))
            first_seen.setdefault(key, line)
            doc.lines[path + (key,)] = line
            _walk(value_node, path + (key,), doc, active)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            doc.lines[path + (str(index),)] = item.start_mark.line + 1
            _walk(item, path + (str(index),), doc, active)
    active.discard(id(node))


def parse_yaml(text: str) -> YamlDocument:
    """Parse one YAML document; raises YamlSyntaxError with the line of the problem."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        message = f"{context}, {problem}" if context else str(problem)
        raise YamlSyntaxError(f"invalid YAML: {message}", mark.line + 1 if mark else None) from exc
    doc = YamlDocument(data=data)
    if root is not None:
        _walk(root, (), doc, set())
    return doc
