"""A plugin source brought into a work folder: a git clone at its resolved commit, or a
snapshot of a directory on this host.

`GitStore` renames the result into `plugins/` once it is whole and checked; this module only
checks the source, runs the clone (or the copy) and says which commit it holds. How git is
run, and why both the CLI and GitPython are used, is explained in `iochost.store.gitcmd`.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING

from iochost.durable import no_room, storage_error
from iochost.errors import ErrorCode, IochostError
from iochost.store.entries import COMMIT_PATTERN, MIN_COMMIT_DIGITS, PluginSource
from iochost.store.gitcmd import (
    GitLimitExceeded,
    describe_clone_failure,
    git_env,
    git_error_line,
    local_write_failure,
    run_git,
    scrub,
    write_askpass,
)
from iochost.store.paths import check_relative_path, is_within, tree_size
from iochost.store.policy import check_one_source

if TYPE_CHECKING:  # imported where used: GitPython costs ~0.15 s, not before the API answers
    import git

COMMIT_RE = re.compile(COMMIT_PATTERN)
_SKIPPED_NAMES = frozenset({"__pycache__"})


def megabytes(n: int) -> str:
    """`n` bytes in MB as a message says it: whole numbers bare, others to two places."""
    value = n / 1024**2
    return f"{value:g}" if value >= 1 and value.is_integer() else f"{value:.2f}"


def fetch_failed(message: str, **details: object) -> IochostError:
    """The one error a fetch or restore that went wrong raises (FETCH_FAILED)."""
    return IochostError(ErrorCode.FETCH_FAILED, message, **details)


def check_source(source: PluginSource) -> None:
    """INVALID_REQUEST for a malformed source: checked before any network or copy."""
    check_one_source(source.git_url, source.local_path)
    if source.local_path is not None and (source.branch or source.commit):
        raise IochostError(ErrorCode.INVALID_REQUEST, "branch and commit apply to git_url only")
    if source.git_url is not None and (not source.git_url.strip() or source.git_url.startswith("-")):
        raise IochostError(ErrorCode.INVALID_REQUEST, "git_url is not a URL", field="git_url")
    if source.commit is not None and not COMMIT_RE.fullmatch(source.commit):
        raise IochostError(ErrorCode.INVALID_REQUEST,
                           f"commit {source.commit!r} is not a hex SHA ({MIN_COMMIT_DIGITS} to 40 digits)",
                           field="commit")
    branch = source.branch
    if branch is not None and (not branch or branch.startswith("-")
                               or any(c.isspace() or ord(c) < 0x20 for c in branch)):
        raise IochostError(ErrorCode.INVALID_REQUEST, f"branch {branch!r} is not a branch or tag name",
                           field="branch")
    check_relative_path(source.path)


def clone(source: PluginSource, checkout: Path, work: Path, *, pat: str | None, timeout: float, max_bytes: int,
          scratch: Path) -> str:
    """Clone and check out into `checkout` (git's scratch files in `work`); return the resolved
    40-hex commit. `scratch` is the folder a full disk is reported against."""
    assert source.git_url is not None
    secrets = [pat] if pat else []
    url = scrub(source.git_url, secrets)
    askpass = write_askpass(work) if pat else None
    env = git_env(askpass, pat)
    deadline = time.monotonic() + timeout
    stderr_path = work / "git-stderr.log"
    args = ["clone", "--no-local"]
    if source.commit:
        args.append("--no-checkout")
    if source.branch:
        args.append(f"--branch={source.branch}")
    args += ["--", source.git_url, str(checkout)]
    try:
        run = run_git(args, env=env, deadline=deadline, stderr_path=stderr_path,
                      watch=checkout, max_bytes=max_bytes)
        if run.returncode != 0:
            full = no_room(work, run.stderr) or local_write_failure(scrub(run.stderr, secrets))
            if full is not None:
                raise storage_error(scratch, full, f"cloning {url}")
            raise fetch_failed(describe_clone_failure(scrub(run.stderr, secrets), url, source.branch))
        commit = _resolve(checkout, source.commit, url)
        if source.commit:
            run = run_git(["-C", str(checkout), "checkout", "--quiet", "--detach", commit], env=env,
                          deadline=deadline, stderr_path=stderr_path, watch=checkout, max_bytes=max_bytes)
            if run.returncode != 0:
                full = no_room(work, run.stderr) or local_write_failure(scrub(run.stderr, secrets))
                if full is not None:
                    raise storage_error(scratch, full, f"checking out commit {commit} of {url}")
                detail = git_error_line(scrub(run.stderr, secrets))
                raise fetch_failed(f"checking out commit {commit} of {url} failed (git: {detail})")
        return commit
    except GitLimitExceeded as exc:
        if exc.kind == "timeout":
            raise fetch_failed(f"clone of {url} timed out after {timeout:g} s") from None
        raise fetch_failed(f"checkout of {url} larger than {megabytes(max_bytes)} MB") from None
    finally:
        if askpass is not None:
            askpass.unlink(missing_ok=True)


def _resolve(checkout: Path, commit: str | None, url: str) -> str:
    """HEAD of a fresh clone, or the full SHA of a (possibly abbreviated) pinned commit."""
    import git

    with git.Repo(checkout) as repo:
        if commit is None:
            try:  # read from the refs: no `git cat-file` process for an object we just cloned
                return str(git.SymbolicReference.dereference_recursive(repo, "HEAD"))
            except ValueError:
                raise fetch_failed(f"repository {url} is empty: its default branch has no commit") from None
        try:
            return rev_parse_commit(repo, commit)
        except git.exc.GitCommandError as exc:
            if "ambiguous" in str(exc.stderr):
                raise fetch_failed(f"commit {commit!r} is ambiguous in {url}; give more digits") from None
            raise fetch_failed(f"no such commit {commit!r} in {url}") from None


def rev_parse_commit(repo: git.Repo, commit: str) -> str:
    """Full SHA of `commit` if that commit object exists locally; GitCommandError otherwise."""
    return str(repo.git.rev_parse("--verify", "--quiet", "--end-of-options", f"{commit.lower()}^{{commit}}"))


def copy_local(source: PluginSource, checkout: Path, max_bytes: int, data_dir: Path) -> str | None:
    """Snapshot a directory on this host (never one holding `data_dir`); its commit is HEAD if
    it is a git work tree."""
    assert source.local_path is not None
    given = Path(source.local_path).expanduser()
    if not given.is_absolute():
        raise IochostError(ErrorCode.INVALID_REQUEST, f"local_path {source.local_path!r} must be absolute",
                           field="local_path")
    src = given.resolve()
    if not src.is_dir():
        raise fetch_failed(f"local path {src} does not exist or is not a directory")
    if is_within(data_dir.resolve(), src):
        raise fetch_failed(f"local path {src} contains iochost's data directory")
    if tree_size(src, stop_above=max_bytes) > max_bytes:
        raise fetch_failed(f"checkout of {src} larger than {megabytes(max_bytes)} MB")
    shutil.copytree(src, checkout, symlinks=True, ignore=_ignore_for_copy)
    return _local_head(checkout)


def _local_head(checkout: Path) -> str | None:
    if not (checkout / ".git").is_dir():
        return None
    import git

    try:
        with git.Repo(checkout) as repo:
            return repo.head.commit.hexsha
    except (git.exc.GitError, ValueError):
        return None


def _ignore_for_copy(directory: str, names: list[str]) -> set[str]:
    """Skip byte-code caches, sockets/FIFOs/devices (copying a FIFO blocks) and `.git` files.

    A `.git` *file* points at a git dir elsewhere (worktree, submodule): the snapshot
    would share that repository's HEAD, so it is dropped and the copy counts as non-git.
    """
    skipped = set()
    for entry in names:
        if entry in _SKIPPED_NAMES:
            skipped.add(entry)
            continue
        try:
            mode = os.lstat(os.path.join(directory, entry)).st_mode
        except FileNotFoundError:
            skipped.add(entry)
            continue
        if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
            skipped.add(entry)
        elif entry == ".git" and stat.S_ISREG(mode):
            skipped.add(entry)
    return skipped
