"""Stage 2: parse every Python file, so a syntax error anywhere is found before import."""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

from iochost.validate.report import Stage, ValidationIssue


def parse_files(plugin_dir: Path, files: list[str]) -> tuple[dict[str, ast.Module], list[ValidationIssue]]:
    """The AST of each file that parses, and one issue per file that does not."""
    trees: dict[str, ast.Module] = {}
    issues: list[ValidationIssue] = []
    for relative in files:
        try:
            source = (plugin_dir / relative).read_bytes()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # SyntaxWarning (e.g. "\d") is not an error
                trees[relative] = ast.parse(source, filename=relative)
        except SyntaxError as exc:
            where = f" (column {exc.offset})" if exc.offset else ""
            issues.append(ValidationIssue(
                stage=Stage.SYNTAX, file=relative, line=exc.lineno,
                message=f"{type(exc).__name__}: {exc.msg}{where}",
            ))
        except (OSError, ValueError) as exc:  # unreadable, or NUL bytes on older Pythons
            issues.append(ValidationIssue(stage=Stage.SYNTAX, file=relative, message=f"cannot parse: {exc}"))
    return trees, issues
