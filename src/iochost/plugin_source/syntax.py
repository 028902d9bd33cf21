"""Stage 2: parse every Python file, so a syntax error anywhere is found before import.

Files are read bounded (``iochost.untrusted``): a checkout may hold a symlink to
``/dev/zero`` or a generated file of many megabytes. A file whose AST exhausts the
parser (deep nesting, or memory under the probe's limit) is a finding, not a crash.
"""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

from iochost.report import Stage, ValidationIssue
from iochost.untrusted import MAX_SOURCE_BYTES, UntrustedFileError, read_bounded


def parse_files(plugin_dir: Path, files: list[str]) -> tuple[dict[str, ast.Module], list[ValidationIssue]]:
    """The AST of each file that parses, and one issue per file that does not."""
    trees: dict[str, ast.Module] = {}
    issues: list[ValidationIssue] = []
    for relative in files:
        def issue(message: str, line: int | None = None, file: str = relative) -> None:
            issues.append(ValidationIssue(stage=Stage.SYNTAX, file=file, line=line, message=message))

        try:
            source = read_bounded(plugin_dir, relative, MAX_SOURCE_BYTES)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # SyntaxWarning (e.g. "\d") is not an error
                trees[relative] = ast.parse(source, filename=relative)
        except SyntaxError as exc:
            where = f" (column {exc.offset})" if exc.offset else ""
            issue(f"{type(exc).__name__}: {exc.msg}{where}", exc.lineno)
        except UntrustedFileError as exc:
            issue(str(exc))
        except RecursionError:
            issue("expressions nested too deeply for the Python parser")
        except MemoryError:
            issue("the file is too large or complex to parse within the validation memory limit")
        except (OSError, ValueError) as exc:  # unreadable, or NUL bytes on older Pythons
            issue(f"cannot parse: {exc}")
    return trees, issues
