"""The plugins file (``--plugins-file``): plugins an operator declares, added at start (GitOps).

A YAML mapping with a top-level ``plugins:`` list; each entry has the fields of the
``POST /api/v1/plugins`` body (the same model, ``PluginRequest``), and a token for a
private repository comes from ``pat_file`` (a mounted Secret), not from the file itself.
iocmng's startup file (``plugins.yaml``, ``IOCMNG_PLUGINS_CONFIG``) has the same shape, and
its inline ``pat`` is accepted with a warning so that such a file works unchanged.

What the daemon does with the entries is the supervisor's (``supervisor.boot.Boot._apply_declared``).
Here: a file that cannot be read, or is not such a list, stops ``iochost serve`` (exit 2,
naming the file); an entry that is wrong is reported with its index, name and field, and
the other entries still apply. A wrong entry's name still counts as declared (``names``):
a typo in an entry must not make its plugin look as if it had left the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretStr, ValidationError

from iochost.api.bodies import PluginRequest
from iochost.supervisor.adding import AddRequest, Declared

MAX_FILE_BYTES = 1024 * 1024


class PluginsFileError(ValueError):
    """The file as a whole is unusable: the daemon must not start without what it declares."""


@dataclass
class PluginsFile:
    path: Path
    requests: list[AddRequest] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # one line per entry left out
    warnings: list[str] = field(default_factory=list)
    named: set[str] = field(default_factory=set)  # every entry's name, the left-out ones' too
    unnamed: int = 0  # entries left out without a name one can read

    def declared(self) -> Declared:
        """What the supervisor applies: the entries that passed, and the names the file
        declares, or None when an entry left out had no readable name (then the daemon
        cannot tell which plugins left the file, and none does)."""
        return Declared(list(self.requests), None if self.unnamed else frozenset(self.named))


def _entry_problem(where: str, exc: ValidationError) -> str:
    details = "; ".join(f"{'.'.join(str(p) for p in error['loc']) or 'entry'}: {error['msg']}"
                        for error in exc.errors())
    return f"{where}: {details}"


def load_plugins_file(path: Path) -> PluginsFile:
    """Parse and check every entry; raise PluginsFileError if the file itself is unusable."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise PluginsFileError(f"plugins file {path}: larger than {MAX_FILE_BYTES} bytes")
        document = yaml.safe_load(data.decode("utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise PluginsFileError(f"plugins file {path}: cannot be read: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise PluginsFileError(f"plugins file {path}{where}: not YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(document, dict) or not isinstance(document.get("plugins"), list):
        raise PluginsFileError(f"plugins file {path}: expected a mapping with a `plugins:` list")
    result = PluginsFile(path)
    seen: set[str] = set()
    for index, raw in enumerate(document["plugins"]):
        name = raw.get("name") if isinstance(raw, dict) else None
        where = f"plugins file {path}: plugins[{index}]" + (f" ({name})" if isinstance(name, str) else "")
        if isinstance(name, str):
            result.named.add(name)
        else:
            result.unnamed += 1
        if not isinstance(raw, dict):
            result.problems.append(f"{where}: an entry is a mapping of POST body fields")
            continue
        entry: dict[str, Any] = dict(raw)
        pat_file = entry.pop("pat_file", None)
        if "pat" in entry:
            result.warnings.append(f"{where}: the token is inline (`pat`): anyone who reads the file has it; "
                                   "prefer `pat_file` naming a mounted secret")
        if pat_file is not None:
            if "pat" in entry:
                result.problems.append(f"{where}: give `pat` or `pat_file`, not both")
                continue
            try:
                entry["pat"] = SecretStr(Path(str(pat_file)).read_text().strip())
            except OSError as exc:
                result.problems.append(f"{where}: pat_file {pat_file}: cannot be read: {exc.strerror}")
                continue
        try:
            request = PluginRequest.model_validate(entry)
        except ValidationError as exc:
            result.problems.append(_entry_problem(where, exc))
            continue
        if request.name in seen:
            result.problems.append(f"{where}: name {request.name!r} is declared twice; the first entry counts")
            continue
        seen.add(request.name)
        result.requests.append(request.to_add())
    return result
