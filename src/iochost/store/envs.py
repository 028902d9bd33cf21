"""A plugin's own Python environment for its `requirements.txt`, under `data_dir/envs/<name>`.

Layering: the environment is a venv whose site-packages holds the plugin's requirements
and a `.pth` file that appends the daemon's own site directories. So the plugin's packages
come first, the daemon's (iochost, softioc, ...) are found after them, and one plugin's
dependencies can break neither another plugin nor the daemon. The daemon's exact site
directories are used rather than `--system-site-packages`, which, when the daemon itself
runs in a venv, would expose the base interpreter's packages instead of the daemon's.

Installing: `python -m pip install -r requirements.txt -c <constraints>` run by the venv's
interpreter (pip comes from the daemon's environment through the `.pth`), in its own
process group, killed at the time limit. It runs in a scratch copy of the checkout, so a
relative requirement (`./vendor/pkg`) resolves as in the repository while the build
artefacts pip leaves (`build/`, `*.egg-info`) never touch the checkout. The constraints
pin the daemon's runtime (the packages below and everything they depend on) to the
installed versions, so even a transitive requirement cannot shadow them; a line that names
one of them with another version is refused before pip runs, with the line number.

On any failure the environment directory is removed: nothing is left behind.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as metadata
import logging
import os
import re
import shutil
import site
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from iochost.environ import plugin_environ
from iochost.errors import ErrorCode, IochostError
from iochost.proctree import kill_group, popen_session, wait_exit
from iochost.store.paths import check_name, upgrade_area
from iochost.store.policy import redact_url
from iochost.untrusted import MAX_REQUIREMENTS_BYTES, UntrustedFileError, read_bounded, read_tail

log = logging.getLogger("iochost.store")

REQUIREMENTS_FILE = "requirements.txt"
_STAGED, _PREVIOUS = "upgrade", "previous"  # an upgrade's environments, beside the running one, named by its id
MARKER = ".iochost-requirements.sha256"  # written last: an environment without it is incomplete
PTH_NAME = "_iochost_daemon_site.pth"
ERROR_TAIL_LINES = 12
ERROR_TAIL_CHARS = 2000

# The daemon's runtime, which a plugin may use but not replace: name as written -> distribution.
PROTECTED = {
    "iochost": "iochost",
    "softioc": "softioc",
    "pythonsoftioc": "softioc",  # the old name of softioc: installing it would shadow the module
    "epicscorelibs": "epicscorelibs",
    "pvxslibs": "pvxslibs",
    "p4p": "p4p",
    "cothread": "cothread",
    "pydantic": "pydantic",
}
# Worker-side packages whose dependencies are pinned too (iochost's own web stack is not).
WORKER_ROOTS = frozenset({"softioc", "cothread", "pydantic", "pyyaml"})
# Linear-time patterns: the file is the plugin author's, and pip's own `(^|\s+)#.*$` takes
# quadratic time on a long run of spaces (seconds for one 16 KiB line, holding the GIL).
_PER_REQUIREMENT_OPTION = re.compile(r"(?<=\s)--?[A-Za-z]")


def strip_comment(line: str) -> str:
    """The line without a `#` comment (one at the start or after whitespace, as pip has it)."""
    at = line.find("#")
    while at > 0 and not line[at - 1].isspace():
        at = line.find("#", at + 1)
    return line if at < 0 else line[:at]


class Problem(NamedTuple):
    """One thing wrong with requirements.txt, at ``line`` (1-based; None: the file as a whole)."""

    line: int | None
    message: str


class RequirementsError(IochostError):
    """requirements.txt cannot be installed: a VALIDATION_FAILED error whose message is
    ``summary``, with every ``problem``. The store builds no validation reports:
    ``iochost.validate.requirements.requirements_failure`` turns this into the issues
    clients see."""

    def __init__(self, summary: str, problems: list[Problem]) -> None:
        super().__init__(ErrorCode.VALIDATION_FAILED, summary)
        self.summary = summary
        self.problems = problems


def read_requirements(plugin_dir: Path) -> bytes | None:
    """The plugin's requirements.txt (bounded, inside the checkout), or None if it has none."""
    if not os.path.lexists(Path(plugin_dir) / REQUIREMENTS_FILE):
        return None
    try:
        return read_bounded(plugin_dir, REQUIREMENTS_FILE, MAX_REQUIREMENTS_BYTES)
    except (UntrustedFileError, OSError) as exc:
        raise RequirementsError(f"cannot read {REQUIREMENTS_FILE}: {exc}", [Problem(None, str(exc))]) from None


def _failure(name: str, problems: list[Problem], summary: str) -> RequirementsError:
    return RequirementsError(f"plugin {name!r}: {summary}", problems)


# -- what the daemon runs -----------------------------------------------------------------------
def installed_version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def daemon_runtime() -> dict[str, str]:
    """Installed versions of what a worker imports: the protected distributions, and what
    softioc, cothread, pydantic and pyyaml require (not the daemon-only web stack)."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    pinned: dict[str, str] = {}
    pending = [(dist, dist in WORKER_ROOTS) for dist in sorted(set(PROTECTED.values()) | WORKER_ROOTS)]
    while pending:
        dist, follow = pending.pop()
        key = canonicalize_name(dist)
        if key in pinned:
            continue
        try:
            found = metadata.distribution(dist)
        except metadata.PackageNotFoundError:
            continue
        pinned[key] = found.version
        for text in (found.requires or []) if follow else []:
            try:
                requirement = Requirement(text)
            except InvalidRequirement:
                continue
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append((requirement.name, True))
    return pinned


def daemon_site_dirs() -> list[str]:
    """The site directories this interpreter imports the daemon's packages from."""
    dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    seen: list[str] = []
    for folder in dirs:
        if os.path.isdir(folder) and folder not in seen:
            seen.append(folder)
    return seen


# -- checking requirements.txt before pip sees it ----------------------------------------------
def logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, content) with comments stripped and `\\` continuations joined."""
    lines: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        if not pending:
            start = number
        if raw.endswith("\\"):
            pending += raw[:-1] + " "
            continue
        line = strip_comment(pending + raw).strip()
        pending = ""
        if line:
            lines.append((start, line))
    if pending.strip():
        lines.append((start, strip_comment(pending).strip()))
    return lines


def check_requirements(text: str, runtime: dict[str, str]) -> list[Problem]:
    """Lines that would replace the daemon's runtime, or that pip cannot honour here."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    problems: list[Problem] = []
    for number, line in logical_lines(text):
        if line.startswith("-"):
            option = line.split("=", 1)[0].split()[0]
            if option in ("-e", "--editable"):
                problems.append(Problem(number, f"{line!r}: editable installs are not supported (the plugin's "
                                        "environment must not depend on files of the checkout); drop -e"))
            continue
        per_requirement = _PER_REQUIREMENT_OPTION.search(line)
        spec = line[:per_requirement.start()].rstrip() if per_requirement else line
        try:
            requirement = Requirement(spec)
        except InvalidRequirement:
            continue  # a path, URL or archive: pip resolves it under the constraints
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue  # not for this interpreter: pip skips it too
        written = canonicalize_name(requirement.name)
        dist = PROTECTED.get(written)
        if dist is None:
            continue
        version = runtime.get(canonicalize_name(dist))
        provided = f"{dist} {version}" if version else dist
        if written != canonicalize_name(dist):
            problems.append(Problem(number, f"{line!r}: {requirement.name} is the old name of {dist}; the daemon "
                                            f"provides {provided}; drop the line"))
        elif requirement.url:
            problems.append(Problem(number, f"{line!r}: {dist} must come from the daemon ({provided}), not from a "
                                            "URL; drop the line"))
        elif version is not None and not requirement.specifier.contains(version, prereleases=True):
            problems.append(Problem(number, f"{line!r} asks for a {dist} version other than the daemon's "
                                            f"({provided}); a plugin cannot replace it: drop the version or the line"))
    return problems


def requirements_digest(plugin_dir: Path) -> str | None:
    content = read_requirements(plugin_dir)
    return hashlib.sha256(content).hexdigest() if content is not None else None


def _tail(text: str) -> str:
    """The lines around pip's first ERROR (index lines dropped; URL passwords redacted)."""
    lines = [line.rstrip() for line in redact_url(text).splitlines()
             if line.strip() and not line.startswith("Looking in ")]
    errors = [i for i, line in enumerate(lines) if line.lstrip().upper().startswith("ERROR")]
    start = max(0, (errors[0] if errors else len(lines)) - 4)
    kept = lines[start:][-ERROR_TAIL_LINES:]
    tail = "\n".join(kept)
    return tail[-ERROR_TAIL_CHARS:] or "(no output)"


class PluginEnvs:
    """Per-plugin virtual environments under `data_dir/envs`."""

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir).resolve() / "envs"
        self.root.mkdir(parents=True, exist_ok=True)

    def env_dir(self, name: str) -> Path:
        check_name(name)
        return self.root / name

    def python(self, name: str) -> Path | None:
        """The interpreter of a complete environment of `name`, or None."""
        env = self.env_dir(name)
        python = env / "bin" / "python"
        return python if (env / MARKER).is_file() and python.exists() else None

    def install(self, name: str, checkout_dir: Path, plugin_dir: Path, *, timeout: float) -> Path | None:
        """Build the environment of `plugin_dir/requirements.txt`; its python, or None if none.

        Raises RequirementsError naming the offending line, or with the tail of pip's
        output; the environment is gone then.
        """
        self._discard(name)
        return self._build(self.env_dir(name), name, checkout_dir, plugin_dir, timeout=timeout)

    def stage(self, name: str, op: str, checkout_dir: Path, plugin_dir: Path, *, timeout: float) -> Path | None:
        """The environment upgrade `op`'s new revision needs, built beside the running one.

        The running plugin keeps its environment until ``swap_in``. Unchanged
        requirements reuse it (nothing is staged); a revision without requirements stages
        "no environment". Returns the python the new revision validates with."""
        digest = requirements_digest(plugin_dir)
        current = self.python(name)
        marker = self.env_dir(name) / MARKER
        if digest is not None and current is not None and marker.read_text().strip() == digest:
            return current
        if digest is None and not os.path.lexists(self.env_dir(name)):
            return None
        staged = self._aside(name, _STAGED, op)
        staged.mkdir()
        return self._build(staged / "env", name, checkout_dir, plugin_dir, timeout=timeout)

    def swap_in(self, name: str, op: str) -> None:
        """Put the staged environment (if one was staged) in place; keep the previous one."""
        staged = self._aside(name, _STAGED, op)
        if not staged.is_dir():
            return
        previous, env = self._aside(name, _PREVIOUS, op), self.env_dir(name)
        previous.mkdir()
        if os.path.lexists(env):
            os.rename(env, previous / "env")
        if os.path.lexists(staged / "env"):
            os.rename(staged / "env", env)
        shutil.rmtree(staged, ignore_errors=True)

    def swap_back(self, name: str, op: str) -> None:
        """Undo ``swap_in``: the previous environment (or none) is in place again."""
        previous, env = self._aside(name, _PREVIOUS, op), self.env_dir(name)
        if previous.is_dir():
            self._discard(name)
            if os.path.lexists(previous / "env"):
                os.rename(previous / "env", env)
        self.drop_staged(name, op)

    def drop_staged(self, name: str, op: str) -> None:
        """Forget what upgrade `op` staged or kept aside; after a swap_in this commits it.
        Only that upgrade calls it: no other operation removes its environments."""
        for kind in (_STAGED, _PREVIOUS):
            shutil.rmtree(self._aside(name, kind, op), ignore_errors=True)

    def _aside(self, name: str, kind: str, op: str) -> Path:
        return self.root / f".{kind}-{upgrade_area(name, op)}"  # dot-names: a start's prune removes leftovers

    def _build(self, env: Path, name: str, checkout_dir: Path, plugin_dir: Path, *, timeout: float) -> Path | None:
        content = read_requirements(plugin_dir)
        if content is None:
            return None
        text = content.decode(errors="replace")
        runtime = daemon_runtime()
        problems = check_requirements(text, runtime)
        if problems:
            raise _failure(name, problems, f"{REQUIREMENTS_FILE} asks for what the daemon provides: "
                                           + "; ".join(p.message for p in problems))
        deadline = time.monotonic() + timeout
        scratch = Path(tempfile.mkdtemp(prefix=f".build-{name}-", dir=self.root))
        try:
            python = self._create(env, deadline, scratch)
            relative = Path(os.path.relpath(plugin_dir.resolve(), checkout_dir.resolve()))
            shutil.copytree(checkout_dir, scratch / "src", symlinks=True,
                            ignore=shutil.ignore_patterns(".git", "__pycache__"))
            constraints = scratch / "constraints.txt"
            constraints.write_text("".join(f"{dist}=={version}\n" for dist, version in sorted(runtime.items())))
            output = scratch / "pip.log"
            code = self._run(
                [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
                 "--no-warn-script-location", "--progress-bar", "off", "-r", REQUIREMENTS_FILE,
                 "-c", str(constraints)],
                cwd=scratch / "src" / relative, deadline=deadline, output=output, env_dir=env,
            )
            if code is None:
                raise _failure(name, [Problem(None, f"installing {REQUIREMENTS_FILE} did not finish within "
                                                    f"{timeout:g} s (requirements_timeout)")],
                               f"installing {REQUIREMENTS_FILE} timed out after {timeout:g} s")
            if code != 0:
                tail = _tail(read_tail(output))
                if "(constraint)" in tail:
                    tail += ("\n(the constraints are the daemon's worker runtime: softioc, pydantic, numpy and "
                             "what they need, at the daemon's versions; a plugin cannot replace them)")
                raise _failure(name, [Problem(None, f"pip install -r {REQUIREMENTS_FILE} failed "
                                                    f"(exit code {code}):\n{tail}")],
                               f"installing {REQUIREMENTS_FILE} failed: {tail}")
            (env / MARKER).write_text(hashlib.sha256(content).hexdigest() + "\n")
        except (OSError, subprocess.SubprocessError) as exc:
            shutil.rmtree(env, ignore_errors=True)
            detail = f"{type(exc).__name__}: {exc}"
            raise _failure(name, [Problem(None, f"preparing the environment failed: {detail}")],
                           f"preparing the environment for {REQUIREMENTS_FILE} failed: {detail}") from None
        except BaseException:
            shutil.rmtree(env, ignore_errors=True)
            raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        log.info("%s: installed %s into %s", name, REQUIREMENTS_FILE, env)
        return python

    def ensure(self, name: str, checkout_dir: Path, plugin_dir: Path, *, timeout: float) -> Path | None:
        """The environment for a restored plugin: kept if it matches requirements.txt, else rebuilt."""
        digest = requirements_digest(plugin_dir)
        marker = self.env_dir(name) / MARKER
        if digest is None:
            self.remove(name)
            return None
        if marker.is_file() and marker.read_text().strip() == digest and self.python(name) is not None:
            return self.python(name)
        log.warning("%s: environment missing or out of date; reinstalling %s", name, REQUIREMENTS_FILE)
        return self.install(name, checkout_dir, plugin_dir, timeout=timeout)

    def remove(self, name: str) -> None:
        """Delete the environment of `name`; idempotent. What an upgrade put aside is that
        upgrade's to remove (``drop_staged``)."""
        self._discard(name)

    def _discard(self, name: str) -> None:
        env = self.env_dir(name)
        if os.path.lexists(env):
            trash = Path(tempfile.mkdtemp(prefix=f".removed-{name}-", dir=self.root))
            os.rename(env, trash / "env")
            shutil.rmtree(trash, ignore_errors=True)

    def prune(self, keep: set[str]) -> list[str]:
        """Remove environments of unregistered plugins and leftovers of interrupted builds."""
        removed = []
        for entry in self.root.iterdir():
            if entry.name.startswith("."):
                shutil.rmtree(entry, ignore_errors=True)
            elif entry.name not in keep:
                self.remove(entry.name)
                removed.append(entry.name)
                log.warning("removed environment %s: it has no registry entry", entry.name)
        return removed

    # -- steps ---------------------------------------------------------------------------------
    def _create(self, env: Path, deadline: float, scratch: Path) -> Path:
        output = scratch / "venv.log"
        code = self._run([sys.executable, "-m", "venv", "--without-pip", str(env)],
                         cwd=scratch, deadline=deadline, output=output)
        if code != 0:
            detail = _tail(read_tail(output)) if code is not None else "timed out"
            raise _failure(env.name, [Problem(None, f"creating the virtual environment failed: {detail}")],
                           f"creating the plugin's virtual environment failed: {detail}")
        python = env / "bin" / "python"
        purelib = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True, text=True, check=True, timeout=max(1.0, deadline - time.monotonic()),
        ).stdout.strip()
        lines = "".join(f"import site; site.addsitedir({folder!r})\n" for folder in daemon_site_dirs())
        (Path(purelib) / PTH_NAME).write_text(lines)
        return python

    @staticmethod
    def _run(argv: list[str], *, cwd: Path, deadline: float, output: Path, env_dir: Path | None = None) -> int | None:
        """Run in its own process group, output to a file; the exit code, or None on timeout."""
        env = {k: v for k, v in plugin_environ().items() if k not in ("PIP_USER", "PIP_TARGET", "PIP_PREFIX")}
        env.update(PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONDONTWRITEBYTECODE="1",
                   LC_ALL="C")
        if env_dir is not None:
            env["VIRTUAL_ENV"] = str(env_dir)
            env["PATH"] = os.pathsep.join([str(env_dir / "bin"), env.get("PATH", os.defpath)])
        with open(output, "wb") as out:
            proc = popen_session(argv, errand=True, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT)
        try:
            return wait_exit(proc, max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return None
        finally:
            kill_group(proc)  # a timed-out pip and any build backend it started
