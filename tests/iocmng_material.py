"""iocmng 2.7.9's own README, fetched from the package index when a test (or the bench) needs it.

The project keeps none of iocmng's text: this module downloads the sdist once per machine
(``pip download``, into pytest's cache dir or a directory the caller names), reads README.md
out of it, and finds the README's complete plugin examples -- a Python plugin class and the
config.yaml that goes with it -- so tests run exactly what an iocmng user copies from it.

Which blocks belong together is decided from their content, not their position alone: a plugin
block is Python that defines a class deriving from one of iocmng's plugin bases; its config is
the first YAML block after it in the same section whose top level holds config.yaml's keys.
The tests assert how many examples that finds, so a parse regression cannot pass unnoticed.

Importable without pytest (the bench uses it); only ``readme_examples_for_tests`` needs it.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

IOCMNG_VERSION = "2.7.9"
SDIST = f"iocmng-{IOCMNG_VERSION}.tar.gz"
# The classes an iocmng plugin module derives its plugin from (iocmng's public names).
PLUGIN_BASES = frozenset({"TaskBase", "DeclarativeTask", "JobBase"})
# A config.yaml's top level holds at least one of these (``pvs`` is iocmng's older name).
CONFIG_KEYS = frozenset({"parameters", "arguments", "pvs"})
# The PV names iocmng 2.7.9 serves for each README example, prefix removed, recorded by running
# iocmng-run (bench/iocmng_compat.py --record): our own measurement, not iocmng's text.
RECORDED_PVS = Path(__file__).resolve().parent / "fixtures" / "iocmng-2.7.9-pvs"


class MaterialUnavailable(Exception):
    """The sdist could not be fetched (no package index here); the message says why."""


@dataclass(frozen=True)
class CodeBlock:
    """One fenced block of a Markdown document: where it is and what it holds."""

    lang: str
    text: str
    line: int  # 1-based line of the opening fence
    section: str  # the nearest heading above it
    label: str  # the bold or backticked caption right above it ("my_monitor.py"), else ""


@dataclass(frozen=True)
class PluginExample:
    """A complete plugin of a document: module file name, class, code and config.yaml."""

    module_file: str
    class_name: str
    base: str
    code: str
    config: str
    section: str
    code_line: int
    config_line: int

    @property
    def name(self) -> str:
        """The module's name ("my_interlock"): how tests and recorded data refer to it."""
        return Path(self.module_file).stem

    def write(self, directory: Path) -> Path:
        """The plugin as a user lays it out: ``<module>.py`` and ``config.yaml`` in one directory."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / self.module_file).write_text(self.code)
        (directory / "config.yaml").write_text(self.config)
        return directory

    def recorded_pvs(self) -> list[str]:
        """The PV names (prefix removed) iocmng 2.7.9 served for this example when last recorded."""
        return (RECORDED_PVS / f"{self.name}.pvs").read_text().split()


def download_sdist(cache_dir: Path, python: str = sys.executable) -> Path:
    """iocmng's sdist in ``cache_dir``, downloaded first if it is not there yet.

    The download lands in a temporary directory and is renamed into place, so a concurrent or
    interrupted run never leaves (or reads) half a tarball.
    """
    target = cache_dir / SDIST
    if target.is_file() and tarfile.is_tarfile(target):
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".download-") as tmp:
        pip = subprocess.run([python, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                              f"iocmng=={IOCMNG_VERSION}", "-d", tmp], capture_output=True, text=True)
        fetched = Path(tmp) / SDIST
        if pip.returncode != 0 or not fetched.is_file():
            raise MaterialUnavailable(f"pip download iocmng=={IOCMNG_VERSION} failed "
                                      f"(exit {pip.returncode}): {pip.stderr.strip()[-1500:]}")
        os.replace(fetched, target)
    return target


def sdist_file(sdist: Path, member: str) -> str:
    """The text of ``member`` (a path inside the unpacked sdist, e.g. "README.md")."""
    with tarfile.open(sdist) as archive:
        extracted = archive.extractfile(f"iocmng-{IOCMNG_VERSION}/{member}")
        if extracted is None:
            raise KeyError(f"{member} is not a file in {sdist.name}")
        return extracted.read().decode("utf-8")


_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
_HEADING = re.compile(r"^#{1,6}\s+(?P<title>.+?)\s*#*\s*$")
_LABEL = re.compile(r"^\s*(?:\*\*|__)?`?(?P<label>[^*`_][^*`]*?)`?(?:\*\*|__)?:?\s*$")


def code_blocks(markdown: str) -> list[CodeBlock]:
    """Every fenced block of ``markdown``, with its section and caption.

    An unclosed fence is an error: a silently swallowed rest-of-document would hide examples.
    """
    lines = markdown.splitlines()
    blocks: list[CodeBlock] = []
    section, i = "", 0
    while i < len(lines):
        line = lines[i]
        heading = _HEADING.match(line)
        fence = _FENCE.match(line)
        if heading:
            section = heading.group("title")
        if not fence:
            i += 1
            continue
        closer = fence.group("fence")
        start, body = i, []
        i += 1
        while i < len(lines) and not (lines[i].strip().startswith(closer[0] * len(closer))
                                      and not lines[i].strip().strip(closer[0])):
            indent = fence.group("indent")
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
            i += 1
        if i == len(lines):
            raise ValueError(f"line {start + 1}: code block never closed")
        i += 1
        caption = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        label = _LABEL.match(caption)
        is_caption = label is not None and caption.strip()[:1] in "*_`" and not _HEADING.match(caption)
        blocks.append(CodeBlock(fence.group("lang").lower(), "\n".join(body) + "\n", start + 1, section,
                                label.group("label").strip() if label and is_caption else ""))
    return blocks


def plugin_class(code: str) -> tuple[str, str] | None:
    """``(class name, base)`` of the plugin class ``code`` defines, if it is a plugin module.

    A plugin module imports from iocmng and defines a class with one of PLUGIN_BASES as a
    direct base. Code that does not parse (a fragment with ``...``) is not a complete plugin.
    """
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    imports_iocmng = any(isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "iocmng"
                         for node in ast.walk(tree))
    if not imports_iocmng:
        return None
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            for base in node.bases:
                name = base.id if isinstance(base, ast.Name) else base.attr if isinstance(base, ast.Attribute) else ""
                if name in PLUGIN_BASES:
                    return node.name, name
    return None


def is_config(block: CodeBlock) -> bool:
    """A YAML block that is a whole config.yaml (a mapping with config.yaml's top-level keys)."""
    if block.lang not in ("yaml", "yml"):
        return False
    try:
        data = yaml.safe_load(block.text)
    except yaml.YAMLError:
        return False
    return isinstance(data, dict) and bool(CONFIG_KEYS & set(data))


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def plugin_examples(markdown: str) -> list[PluginExample]:
    """The document's complete plugins: each plugin class with the config.yaml after it.

    The config is the first whole config.yaml after the class in the same section, before any
    other plugin class; a class without one is not complete and is left out. The module's file
    name is the block's caption when that names a .py file, else the class name in snake case.
    """
    blocks = code_blocks(markdown)
    examples: list[PluginExample] = []
    for index, block in enumerate(blocks):
        found = plugin_class(block.text) if block.lang in ("python", "py") else None
        if found is None:
            continue
        config = None
        for later in blocks[index + 1:]:
            if later.section != block.section:
                break
            if later.lang in ("python", "py") and plugin_class(later.text):
                break
            if is_config(later):
                config = later
                break
        if config is None:
            continue
        module_file = block.label if block.label.endswith(".py") else f"{_snake(found[0])}.py"
        examples.append(PluginExample(module_file, found[0], found[1], block.text, config.text,
                                      block.section, block.line, config.line))
    return examples


def shell_commands(script: str) -> list[list[str]]:
    """The commands of a shell block, each split into words as a shell would: a line ending in
    a backslash, or inside an open quote (a JSON body over several lines), goes on to the next."""
    commands: list[list[str]] = []
    pending = ""
    for line in script.splitlines():
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        pending += line + "\n"
        try:
            words = shlex.split(pending, comments=True)
        except ValueError:  # a quote still open
            continue
        if words:
            commands.append(words)
        pending = ""
    if pending.strip():
        raise ValueError(f"shell text never closes its quote: {pending.strip()[:80]!r}")
    return commands


def readme_examples(cache_dir: Path, python: str = sys.executable) -> list[PluginExample]:
    """The complete plugin examples of iocmng 2.7.9's README, from the downloaded sdist."""
    return plugin_examples(sdist_file(download_sdist(cache_dir, python), "README.md"))


def readme_examples_for_tests(config: Any) -> list[PluginExample]:
    """For a test: the README's examples, from the sdist of ``sdist_for_tests``."""
    return plugin_examples(sdist_file(sdist_for_tests(config), "README.md"))


def sdist_for_tests(config: Any) -> Path:
    """For a test: the sdist, downloaded into pytest's cache dir (once per machine).

    Without a package index the test is skipped, saying why -- except on CI (``CI`` set), which
    has the index, so there an unreachable index fails the test instead of hiding it.
    """
    import pytest

    cache_dir = Path(config.cache.mkdir(f"iocmng-{IOCMNG_VERSION}-sdist"))
    try:
        return download_sdist(cache_dir)
    except MaterialUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI has the package index, yet: {exc}")
        pytest.skip(f"iocmng {IOCMNG_VERSION}'s README is downloaded at test time and the package "
                    f"index cannot be reached here: {exc}")


def example_named(examples: list[PluginExample], name: str) -> PluginExample:
    """The example whose module is ``name`` (e.g. "my_monitor"), naming what there is if none."""
    for example in examples:
        if example.name == name:
            return example
    raise LookupError(f"no README example {name!r}; found {[e.name for e in examples]}")
