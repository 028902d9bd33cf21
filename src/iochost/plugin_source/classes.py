"""Stage 3: find the plugin class by reading the code, without running any of it.

A class is a plugin class when one of its bases is TaskBase/JobBase imported from
``iochost`` or ``iocmng`` (any of their modules, under any alias), or another class of the
same plugin that is one. Required methods may come from such an in-plugin base.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

from iochost.kinds import Kind
from iochost.loader import module_name_for
from iochost.plugin_source.files import is_test_file
from iochost.report import Stage, ValidationIssue

_TASK_MODULES = ("iochost", "iochost.sdk", "iochost.sdk.task", "iocmng", "iocmng.base", "iocmng.base.task")
_JOB_MODULES = ("iochost", "iochost.sdk", "iochost.sdk.job", "iocmng", "iocmng.base", "iocmng.base.job")
SDK_BASES: dict[str, Kind] = {
    **{f"{module}.TaskBase": "task" for module in _TASK_MODULES},
    **{f"{module}.JobBase": "job" for module in _JOB_MODULES},
}
# DeclarativeTask brings every required method with it (its behaviour is the config's).
_DECLARATIVE = ("iochost.DeclarativeTask", "iochost.sdk.DeclarativeTask", "iochost.sdk.declarative.DeclarativeTask",
                "iocmng.DeclarativeTask", "iocmng.declarative.DeclarativeTask")
SDK_BASES.update({name: "task" for name in _DECLARATIVE})
REQUIRED_METHODS: dict[Kind, tuple[str, ...]] = {
    "task": ("initialize", "execute", "cleanup"),
    "job": ("initialize", "execute"),
}


@dataclass
class ClassInfo:
    name: str
    qualname: str  # module.Name
    file: str
    line: int
    bases: list[str]  # qualified names, as far as imports tell
    methods: set[str]
    kind: Kind | None = None
    all_methods: set[str] = field(default_factory=set)

    def missing(self) -> list[str]:
        assert self.kind is not None
        return [m for m in REQUIRED_METHODS[self.kind] if m not in self.all_methods]


@dataclass
class Discovered:
    kind: Kind
    class_name: str
    module_file: str
    line: int


def _top_level(body: list[ast.stmt]) -> list[ast.stmt]:
    """Module-level statements, including those under if/try (``try: import x``)."""
    out: list[ast.stmt] = []
    for stmt in body:
        out.append(stmt)
        if isinstance(stmt, ast.If):
            out += _top_level(stmt.body) + _top_level(stmt.orelse)
        elif isinstance(stmt, ast.Try):
            out += _top_level(stmt.body) + _top_level(stmt.orelse) + _top_level(stmt.finalbody)
            for handler in stmt.handlers:
                out += _top_level(handler.body)
    return out


def _dotted(expr: ast.expr) -> str | None:
    if isinstance(expr, ast.Subscript):  # Generic[T], TaskBase[...]
        return _dotted(expr.value)
    if isinstance(expr, ast.Name):
        return expr.id
    if isinstance(expr, ast.Attribute):
        inner = _dotted(expr.value)
        return f"{inner}.{expr.attr}" if inner else None
    return None


class _Module:
    """What one file binds at top level: imported names and classes."""

    def __init__(self, relative: str, tree: ast.Module) -> None:
        self.file = relative
        self.name = module_name_for(relative)
        is_package = relative.endswith("__init__.py")
        self.package = self.name if is_package else self.name.rpartition(".")[0]
        self.imports: dict[str, str] = {}
        self.class_nodes: list[ast.ClassDef] = []
        for stmt in _top_level(tree.body):
            if isinstance(stmt, ast.Import):
                for alias in stmt.names:
                    if alias.asname:
                        self.imports[alias.asname] = alias.name
                    else:
                        root = alias.name.partition(".")[0]
                        self.imports[root] = root
            elif isinstance(stmt, ast.ImportFrom):
                source = self._absolute(stmt.module, stmt.level)
                for alias in stmt.names:
                    if alias.name != "*":
                        self.imports[alias.asname or alias.name] = f"{source}.{alias.name}" if source else alias.name
            elif isinstance(stmt, ast.ClassDef):
                self.class_nodes.append(stmt)
                self.imports.pop(stmt.name, None)

    def _absolute(self, module: str | None, level: int) -> str:
        if level == 0:
            return module or ""
        parts = self.package.split(".") if self.package else []
        base = parts[: len(parts) - (level - 1)] if level > 1 else parts
        return ".".join(base + ([module] if module else []))

    def qualify(self, dotted: str) -> str:
        head, _, rest = dotted.partition(".")
        if head in self.imports:
            target = self.imports[head]
        elif any(node.name == head for node in self.class_nodes):
            target = f"{self.name}.{head}"
        else:
            target = head
        return f"{target}.{rest}" if rest else target


def _methods(node: ast.ClassDef) -> set[str]:
    names: set[str] = set()
    for stmt in node.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(stmt.name)
        elif isinstance(stmt, ast.Assign):
            names.update(t.id for t in stmt.targets if isinstance(t, ast.Name))
    return names


class _Index:
    """All classes of the plugin, with bases resolved across its modules."""

    def __init__(self, trees: dict[str, ast.Module]) -> None:
        self.modules = {m.name: m for m in (_Module(rel, tree) for rel, tree in trees.items())}
        self.classes: dict[str, ClassInfo] = {}
        for module in self.modules.values():
            for node in module.class_nodes:
                bases = [module.qualify(d) for d in (_dotted(b) for b in node.bases) if d]
                qualname = f"{module.name}.{node.name}"
                self.classes[qualname] = ClassInfo(node.name, qualname, module.file, node.lineno, bases, _methods(node))
        for info in self.classes.values():
            info.kind = self._kind(info.qualname, set())
            info.all_methods = self._all_methods(info.qualname, set())

    def resolve(self, qualname: str, depth: int = 0) -> str:
        """Follow re-exports (``from .impl import Base`` in ``__init__``) to the defining module."""
        if qualname in self.classes or qualname in SDK_BASES or depth > 10:
            return qualname
        module_name, _, attr = qualname.rpartition(".")
        module = self.modules.get(module_name)
        if module is not None and attr in module.imports:
            return self.resolve(module.imports[attr], depth + 1)
        return qualname

    def _kind(self, qualname: str, seen: set[str]) -> Kind | None:
        qualname = self.resolve(qualname)
        if qualname in SDK_BASES:
            return SDK_BASES[qualname]
        info = self.classes.get(qualname)
        if info is None or qualname in seen:
            return None
        seen.add(qualname)
        for base in info.bases:
            kind = self._kind(base, seen)
            if kind is not None:
                return kind
        return None

    def _all_methods(self, qualname: str, seen: set[str]) -> set[str]:
        if self.resolve(qualname) in _DECLARATIVE:
            return set(REQUIRED_METHODS["task"])
        info = self.classes.get(self.resolve(qualname))
        if info is None or info.qualname in seen:
            return set()
        seen.add(info.qualname)
        methods = set(info.methods)
        for base in info.bases:
            methods |= self._all_methods(base, seen)
        return methods

    def plugin_classes(self) -> list[ClassInfo]:
        return [c for c in self.classes.values() if c.kind is not None and not is_test_file(c.file)]

    def leaves(self, classes: list[ClassInfo]) -> list[ClassInfo]:
        """Drop classes that another candidate derives from: the most derived one is the plugin."""
        bases = {self.resolve(b) for c in classes for b in c.bases}
        return [c for c in classes if c.qualname not in bases]


def _issue(message: str, file: str | None = None, line: int | None = None) -> ValidationIssue:
    return ValidationIssue(stage=Stage.DISCOVERY, file=file, line=line, message=message)


def _label(info: ClassInfo) -> str:
    return f"{info.name} ({info.file}:{info.line})"


def _missing_issue(info: ClassInfo) -> ValidationIssue:
    missing = ", ".join(f"{m}()" for m in info.missing())
    return _issue(f"{info.name} is a {info.kind} but does not define {missing}", info.file, info.line)


def _no_plugin_class(index: _Index) -> ValidationIssue:
    """Names every class the code defines, with its bases as the imports resolve them: a
    misspelt base (``iochost.Taskbase``) is then plain to see."""
    found = [c for c in index.classes.values() if not is_test_file(c.file)]
    listed = "; ".join(f"{c.name} ({c.file}:{c.line}, bases: {', '.join(c.bases) or 'none'})" for c in found)
    where = (found[0].file, found[0].line) if len(found) == 1 else (None, None)
    return _issue("no class deriving TaskBase or JobBase (from iochost or iocmng) found; "
                  f"classes found: {listed or 'none'}", *where)


def class_files(trees: dict[str, ast.Module]) -> list[str]:
    """The plugin's own files (tests aside) that define a class at top level: the modules to
    import when discovery finds no plugin class, for the import error that explains it."""
    return [file for file, tree in trees.items() if not is_test_file(file)
            and any(isinstance(stmt, ast.ClassDef) for stmt in _top_level(tree.body))]


def discover(trees: dict[str, ast.Module],
             class_name: str | None = None) -> tuple[Discovered | None, list[ValidationIssue]]:
    """The plugin class, or the issues explaining why there is not exactly one."""
    if not trees:
        return None, [_issue("no Python files in the plugin directory")]
    index = _Index(trees)
    plugin_classes = index.plugin_classes()
    if class_name is not None:
        matches = [c for c in plugin_classes if c.name == class_name]
        if not matches:
            others = [c for c in index.classes.values() if c.name == class_name]
            if others:
                return None, [_issue(f"{class_name} does not derive from TaskBase or JobBase "
                                     "(imported from iochost or iocmng)", others[0].file, others[0].line)]
            known = ", ".join(_label(c) for c in plugin_classes) or "none"
            return None, [_issue(f"no plugin class named {class_name!r}; plugin classes found: {known}")]
        if len(matches) > 1:
            return None, [_issue(f"class {class_name} is defined in several files: "
                                 f"{', '.join(c.file for c in matches)}")]
        chosen = matches[0]
        if chosen.missing():
            return None, [_missing_issue(chosen)]
    else:
        if not plugin_classes:
            return None, [_no_plugin_class(index)]
        complete = index.leaves([c for c in plugin_classes if not c.missing()])
        if not complete:
            return None, [_missing_issue(c) for c in index.leaves(plugin_classes)]
        if len(complete) > 1:
            names = ", ".join(_label(c) for c in complete)
            return None, [_issue(f"several plugin classes: {names}; choose one with --class (class_name)")]
        chosen = complete[0]
    assert chosen.kind is not None
    return Discovered(chosen.kind, chosen.name, chosen.file, chosen.line), []
