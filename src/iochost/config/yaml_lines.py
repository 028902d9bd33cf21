"""Read config.yaml keeping what ``yaml.safe_load`` throws away: the line of every key.

Errors must point at the line to fix, and a key written twice must be an error: plain
``safe_load`` silently keeps the last one.

The file comes from a plugin author, so parsing is bounded: nesting depth, the number of
aliases, and the number of nodes the document has *once aliases are expanded* (a "billion
laughs" file is a few hundred bytes of nested anchors that expand to 10^9 nodes; it is
refused after composing, before anything walks or constructs the expansion). Recursive
aliases are refused too. Each limit names itself in the error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

KeyPath = tuple[str, ...]

MAX_DEPTH = 32  # nested mappings/sequences
MAX_ALIASES = 1000  # *alias references in one document
MAX_NODES = 100_000  # nodes with every alias expanded
DEPTH_LIMIT = f"nested deeper than {MAX_DEPTH} levels (depth limit)"


@dataclass
class YamlDocument:
    data: Any
    lines: dict[KeyPath, int] = field(default_factory=dict)
    duplicates: list[tuple[KeyPath, int, int]] = field(default_factory=list)  # path, line, first line


class YamlSyntaxError(Exception):
    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.line = line


class YamlLimitError(YamlSyntaxError):
    """The document is well-formed but exceeds a parsing limit."""


if getattr(yaml, "__with_libyaml__", False):
    from yaml._yaml import CParser
    from yaml.composer import Composer
    from yaml.constructor import SafeConstructor
    from yaml.resolver import Resolver

    class _SafeLoader(Composer, CParser, SafeConstructor, Resolver):
        """SafeLoader with libyaml's scanner and parser (~6x faster: every add reads
        config.yaml three times on its way to iocInit) but Python's composer, which pulls
        the events one at a time, so the limits below still apply as they arrive."""

        def __init__(self, text: str) -> None:
            CParser.__init__(self, text)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)
else:  # PyYAML built without libyaml
    _SafeLoader = yaml.SafeLoader  # type: ignore[misc,assignment]


class _BoundedLoader(_SafeLoader):
    """SafeLoader whose composer counts depth and aliases as the events arrive."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._depth = 0
        self._aliases = 0

    def _line(self) -> int | None:
        event = self.peek_event()
        return event.start_mark.line + 1 if event is not None and event.start_mark else None

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise YamlLimitError(f"more than {MAX_ALIASES} aliases (limit of aliases per file)", self._line())
            return super().compose_node(parent, index)
        if self._depth >= MAX_DEPTH:
            raise YamlLimitError(DEPTH_LIMIT, self._line())
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def check_expansion(root: yaml.Node) -> int:
    """Nodes in the document with aliases expanded; YamlLimitError past MAX_NODES or on a
    recursive alias. Linear in the composed nodes: shared (aliased) subtrees are sized once."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    active: set[int] = set()
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            active.discard(key)
            size = 1 + sum(sizes[id(child)] for child in _children(node))
            if size > MAX_NODES:
                raise YamlLimitError(f"aliases expand the document to more than {MAX_NODES} nodes "
                                     "(node limit; an alias bomb?)", node.start_mark.line + 1)
            sizes[key] = size
            continue
        if key in sizes:
            continue
        if key in active:
            raise YamlLimitError("an alias refers to a node that contains it (recursive alias)",
                                 node.start_mark.line + 1)
        active.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)
    return sizes[id(root)]


def _walk(node: yaml.Node, path: KeyPath, doc: YamlDocument) -> None:
    """Record the line of every key; bounded by check_expansion, which ran first."""
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
            _walk(value_node, path + (key,), doc)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            doc.lines[path + (str(index),)] = item.start_mark.line + 1
            _walk(item, path + (str(index),), doc)


def parse_yaml(text: str) -> YamlDocument:
    """Parse one YAML document; raises YamlSyntaxError (YamlLimitError) with the line of the problem."""
    loader = _BoundedLoader(text)
    try:
        root = loader.get_single_node()
        if root is not None:
            check_expansion(root)
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        message = f"{context}, {problem}" if context else str(problem)
        line = mark.line + 1 if mark else None
        if "maximum nesting depth" in message:  # libyaml's own limit (1000), met scanning ahead
            raise YamlLimitError(DEPTH_LIMIT, line) from exc
        raise YamlSyntaxError(f"invalid YAML: {message}", line) from exc
    finally:
        loader.dispose()
    doc = YamlDocument(data=data)
    if root is not None:
        _walk(root, (), doc)
    return doc
