"""Plugin checkouts under `data_dir/plugins/<name>`, each pinned at a resolved commit.

A fetch builds the checkout in a fresh directory under `data_dir/tmp` and renames it into
place only once it is complete and checked, so `plugins/<name>` either holds a whole,
validated checkout or does not exist: a failure or a crash leaves at most garbage in
`tmp`, which the next `GitStore` removes. How git is run, and why both the CLI and
GitPython are used, is explained in `iochost.store.gitcmd`.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import shutil
import stat
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from iochost.durable import OUT_OF_SPACE, fsync_dir, no_room, storage_error
from iochost.errors import ErrorCode, IochostError
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
from iochost.store.models import COMMIT_PATTERN, MIN_COMMIT_DIGITS, FetchResult, PluginSource
from iochost.store.paths import (
    NAME_RE,
    check_name,
    check_relative_path,
    is_within,
    resolve_plugin_dir,
    tree_size,
    upgrade_area,
)
from iochost.store.policy import check_one_source

if TYPE_CHECKING:  # imported where used: GitPython costs ~0.15 s, not before the API answers
    import git

log = logging.getLogger("iochost.store")

COMMIT_RE = re.compile(COMMIT_PATTERN)
RESTORE_TIMEOUT = 60.0
# An upgrade's revisions live in tmp/upgrade-<name>.<op>/ (op: that upgrade's own id, so only
# it ever removes the area): the staged one, then the one it replaced.
_UPGRADE, _NEW, _OLD, _FAILED = "upgrade-", "new", "old", "failed"
_SKIPPED_NAMES = frozenset({"__pycache__"})


def _mb(n: int) -> str:
    value = n / 1024**2
    return f"{value:g}" if value >= 1 and value.is_integer() else f"{value:.2f}"


def _fail(message: str, **details: object) -> IochostError:
    return IochostError(ErrorCode.FETCH_FAILED, message, **details)


class GitStore:
    """Fetches plugin sources into checkouts and brings them back offline after a restart."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.plugins_dir = self.data_dir / "plugins"
        self.tmp_dir = self.data_dir / "tmp"
        self.plugins_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.tmp_dir, 0o700)
        self._lock = threading.Lock()  # the exists-check + rename into plugins/ is one step
        self._collect_garbage()

    # -- public ----------------------------------------------------------------------------
    def checkout_dir(self, name: str) -> Path:
        check_name(name)
        return self.plugins_dir / name

    def plugin_dir(self, name: str, path: str | None) -> Path:
        """The resolved plugin directory of an existing checkout (checks `path` again)."""
        return resolve_plugin_dir(self.checkout_dir(name), path)

    def names(self) -> list[str]:
        """Names that have a checkout."""
        return sorted(p.name for p in self.plugins_dir.iterdir() if p.is_dir() and not p.is_symlink())

    def fetch(
        self,
        name: str,
        source: PluginSource,
        *,
        pat: str | None = None,
        timeout: float = 120.0,
        max_bytes: int = 200 * 1024**2,
        sync: bool = True,
    ) -> FetchResult:
        """Clone `source.git_url` (or snapshot `source.local_path`) into `plugins/<name>`.

        ``sync=False`` leaves making the rename durable to the caller (``sync()``), who can
        overlap the ~10 ms of it with other work but must call it before anything that
        records the checkout (the registry) is written.

        Raises IochostError: INVALID_REQUEST for a malformed source or `path`,
        PLUGIN_EXISTS when the checkout exists, FETCH_FAILED saying what went wrong.
        Nothing is left under `plugins/<name>` or `tmp` on failure; `pat` appears in no
        message, command line or file.
        """
        result = self._fetch_to(self.checkout_dir(name), name, source, pat=pat, timeout=timeout,
                                max_bytes=max_bytes)
        if sync:
            self.sync()
        return result

    def stage(self, name: str, op: str, source: PluginSource, *, pat: str | None = None, timeout: float = 120.0,
              max_bytes: int = 200 * 1024**2) -> FetchResult:
        """Fetch a new revision of the registered `name` beside its checkout, for upgrade `op`
        (``paths.new_upgrade_op``), into a staging area only that upgrade uses.

        The running revision stays in ``plugins/<name>`` untouched until ``swap_in``; a
        staged revision that is never swapped in is dropped with ``drop_staged`` by the
        upgrade that staged it (or by the next start's garbage collection, since it lives
        under ``tmp``)."""
        staging = self._staging_dir(name, op)
        staging.mkdir(mode=0o700)  # an upgrade stages once: an existing area is a bug, not to be reused
        return self._fetch_to(staging / _NEW, name, source, pat=pat, timeout=timeout, max_bytes=max_bytes)

    def swap_in(self, name: str, op: str) -> None:
        """Put the staged revision in place; the previous one is kept for ``swap_back``."""
        staging, dest = self._staging_dir(name, op), self.checkout_dir(name)
        with self._lock:
            os.rename(dest, staging / _OLD)
            os.rename(staging / _NEW, dest)
            fsync_dir(self.plugins_dir)
            fsync_dir(staging)

    def swap_back(self, name: str, op: str) -> None:
        """Undo ``swap_in``: the previous revision is in place again, the new one dropped."""
        staging, dest = self._staging_dir(name, op), self.checkout_dir(name)
        with self._lock:
            if os.path.lexists(dest):
                os.rename(dest, staging / _FAILED)
            os.rename(staging / _OLD, dest)
            fsync_dir(self.plugins_dir)
        self.drop_staged(name, op)

    def drop_staged(self, name: str, op: str) -> None:
        """Forget what upgrade `op` staged or kept; idempotent. After a swap_in this commits it.
        Only that upgrade calls it: no other operation removes its area."""
        staging = self._staging_dir(name, op)
        if os.path.lexists(staging):
            trash = self.tmp_dir / f"{name}-dropped-{uuid.uuid4().hex[:8]}"
            os.rename(staging, trash)
            shutil.rmtree(trash, ignore_errors=True)

    def _staging_dir(self, name: str, op: str) -> Path:
        return self.tmp_dir / f"{_UPGRADE}{upgrade_area(name, op)}"

    def _fetch_to(self, dest: Path, name: str, source: PluginSource, *, pat: str | None, timeout: float,
                  max_bytes: int) -> FetchResult:
        self._check_source(source)
        if os.path.lexists(dest):
            raise IochostError(ErrorCode.PLUGIN_EXISTS, f"a checkout of {name!r} already exists")
        try:
            work = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.tmp_dir))
        except OSError as exc:
            if exc.errno in OUT_OF_SPACE:
                raise storage_error(self.tmp_dir, exc, f"fetching {name!r}") from None
            raise
        secrets = [pat] if pat else []
        try:
            checkout = work / "checkout"
            if source.git_url is not None:
                commit = self._clone(source, checkout, work, pat, timeout, max_bytes)
                origin = scrub(source.git_url, secrets)
            else:
                commit = self._copy_local(source, checkout, max_bytes)
                origin = str(source.local_path)
            if tree_size(checkout, stop_above=max_bytes) > max_bytes:
                raise _fail(f"checkout of {origin} larger than {_mb(max_bytes)} MB")
            resolve_plugin_dir(checkout, source.path)
            with self._lock:
                if os.path.lexists(dest):
                    raise IochostError(ErrorCode.PLUGIN_EXISTS, f"a checkout of {name!r} already exists")
                os.rename(checkout, dest)
        except IochostError:
            raise
        except OSError as exc:
            if exc.errno not in OUT_OF_SPACE:
                raise _fail(f"fetching {name!r} failed: {scrub(str(exc), secrets)}") from None
            raise storage_error(self.tmp_dir, exc, f"fetching {name!r}") from None
        except Exception as exc:  # noqa: BLE001 - any other failure is a fetch failure, scrubbed
            raise _fail(f"fetching {name!r} failed: {scrub(str(exc), secrets)}") from None
        finally:
            shutil.rmtree(work, ignore_errors=True)
        log.info("fetched %s from %s at %s", name, origin, commit or "(not a git work tree)")
        return FetchResult(dest, resolve_plugin_dir(dest, source.path), commit)

    def warm_up(self) -> None:
        """Import GitPython now, once the daemon is idle, not in the first add's fetch."""
        importlib.import_module("git")

    def sync(self) -> None:
        """Make the checkouts renamed into ``plugins/`` so far durable."""
        fsync_dir(self.plugins_dir)

    def restore(self, name: str, source: PluginSource, commit: str | None) -> FetchResult:
        """The existing checkout, back at `commit`: local only, never the network.

        Tracked files someone modified are put back with a forced checkout (logged);
        untracked files are left alone.
        """
        dest = self.checkout_dir(name)
        if not dest.is_dir():
            raise _fail(f"checkout of {name!r} missing at {dest}; delete and re-add the plugin")
        if commit is not None:
            self._ensure_at(name, dest, commit)
        return FetchResult(dest, resolve_plugin_dir(dest, source.path), commit)

    def remove(self, name: str) -> None:
        """Delete `plugins/<name>` entirely; idempotent. Moved to tmp first, so it goes at
        once. An upgrade's staging area is not touched: the upgrade removes its own."""
        dest = self.checkout_dir(name)
        if not os.path.lexists(dest):
            return
        trash = self.tmp_dir / f"{name}-removed-{uuid.uuid4().hex[:8]}"
        os.rename(dest, trash)
        fsync_dir(self.plugins_dir)
        shutil.rmtree(trash, ignore_errors=True)

    def prune(self, keep: set[str]) -> list[str]:
        """Remove checkouts of names not in `keep` (left by a crash between fetch and register)."""
        removed = [n for n in self.names() if n not in keep]
        for n in removed:
            self.remove(n)
            log.warning("removed checkout %s: it has no registry entry", n)
        return removed

    # -- fetching ---------------------------------------------------------------------------
    def _check_source(self, source: PluginSource) -> None:
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

    def _clone(self, source: PluginSource, checkout: Path, work: Path, pat: str | None,
               timeout: float, max_bytes: int) -> str:
        """Clone and check out; return the resolved 40-hex commit."""
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
                    raise storage_error(self.tmp_dir, full, f"cloning {url}")
                raise _fail(describe_clone_failure(scrub(run.stderr, secrets), url, source.branch))
            commit = self._resolve(checkout, source.commit, url)
            if source.commit:
                run = run_git(["-C", str(checkout), "checkout", "--quiet", "--detach", commit], env=env,
                              deadline=deadline, stderr_path=stderr_path, watch=checkout, max_bytes=max_bytes)
                if run.returncode != 0:
                    full = no_room(work, run.stderr) or local_write_failure(scrub(run.stderr, secrets))
                    if full is not None:
                        raise storage_error(self.tmp_dir, full, f"checking out commit {commit} of {url}")
                    detail = git_error_line(scrub(run.stderr, secrets))
                    raise _fail(f"checking out commit {commit} of {url} failed (git: {detail})")
            return commit
        except GitLimitExceeded as exc:
            if exc.kind == "timeout":
                raise _fail(f"clone of {url} timed out after {timeout:g} s") from None
            raise _fail(f"checkout of {url} larger than {_mb(max_bytes)} MB") from None
        finally:
            if askpass is not None:
                askpass.unlink(missing_ok=True)

    @staticmethod
    def _resolve(checkout: Path, commit: str | None, url: str) -> str:
        """HEAD of a fresh clone, or the full SHA of a (possibly abbreviated) pinned commit."""
        import git

        with git.Repo(checkout) as repo:
            if commit is None:
                try:  # read from the refs: no `git cat-file` process for an object we just cloned
                    return str(git.SymbolicReference.dereference_recursive(repo, "HEAD"))
                except ValueError:
                    raise _fail(f"repository {url} is empty: its default branch has no commit") from None
            try:
                return _rev_parse_commit(repo, commit)
            except git.exc.GitCommandError as exc:
                if "ambiguous" in str(exc.stderr):
                    raise _fail(f"commit {commit!r} is ambiguous in {url}; give more digits") from None
                raise _fail(f"no such commit {commit!r} in {url}") from None

    def _copy_local(self, source: PluginSource, checkout: Path, max_bytes: int) -> str | None:
        """Snapshot a directory on this host; its commit is HEAD if it is a git work tree."""
        assert source.local_path is not None
        given = Path(source.local_path).expanduser()
        if not given.is_absolute():
            raise IochostError(ErrorCode.INVALID_REQUEST, f"local_path {source.local_path!r} must be absolute",
                               field="local_path")
        src = given.resolve()
        if not src.is_dir():
            raise _fail(f"local path {src} does not exist or is not a directory")
        if is_within(self.data_dir.resolve(), src):
            raise _fail(f"local path {src} contains iochost's data directory")
        if tree_size(src, stop_above=max_bytes) > max_bytes:
            raise _fail(f"checkout of {src} larger than {_mb(max_bytes)} MB")
        shutil.copytree(src, checkout, symlinks=True, ignore=_ignore_for_copy)
        return self._local_head(checkout)

    @staticmethod
    def _local_head(checkout: Path) -> str | None:
        if not (checkout / ".git").is_dir():
            return None
        import git

        try:
            with git.Repo(checkout) as repo:
                return repo.head.commit.hexsha
        except (git.exc.GitError, ValueError):
            return None

    # -- restoring ------------------------------------------------------------------------------
    def _ensure_at(self, name: str, dest: Path, commit: str) -> None:
        import git

        try:
            with git.Repo(dest) as repo:
                try:
                    head: str | None = repo.head.commit.hexsha
                except ValueError:
                    head = None
                dirty = repo.is_dirty(index=True, working_tree=True, untracked_files=False)
                if head == commit and not dirty:
                    return
                try:
                    _rev_parse_commit(repo, commit)
                except git.exc.GitCommandError:
                    raise _fail(f"checkout of {name!r} does not contain commit {commit}; "
                                "delete and re-add the plugin") from None
        except IochostError:
            raise
        except git.exc.GitError as exc:
            raise _fail(f"checkout of {name!r} at {dest} is not a usable git repository: "
                        f"{type(exc).__name__}") from None
        log.warning("%s: checkout %s; forcing it back to %s", name,
                    "has modified files" if head == commit else f"is at {head}", commit)
        stderr_path = self.tmp_dir / f"{name}-restore-{uuid.uuid4().hex[:8]}.log"
        try:
            run = run_git(["-C", str(dest), "checkout", "--force", "--quiet", "--detach", commit],
                          env=git_env(None, None), deadline=time.monotonic() + RESTORE_TIMEOUT,
                          stderr_path=stderr_path)
        except GitLimitExceeded:
            raise _fail(f"restoring {name!r} to {commit} timed out") from None
        finally:
            stderr_path.unlink(missing_ok=True)
        if run.returncode != 0:
            raise _fail(f"restoring {name!r} to {commit} failed (git: {git_error_line(run.stderr)})")

    # -- housekeeping -----------------------------------------------------------------------------
    def _collect_garbage(self) -> None:
        """Remove what a crashed fetch, remove or upgrade left in tmp.

        An upgrade the daemon died in the middle of is rolled back first: the registry
        still names the previous revision until the upgrade is committed, and the previous
        checkout is kept until then, so it goes back into place (the latest one, should two
        upgrades of a name have kept one). Every staging area goes: its upgrade is dead."""
        areas = sorted(self.tmp_dir.glob(f"{_UPGRADE}*"), key=lambda path: path.lstat().st_mtime)
        for staging in areas:  # upgrade-NAME.OP (upgrade-NAME before upgrades had ids)
            name, old = staging.name.removeprefix(_UPGRADE).split(".", 1)[0], staging / _OLD
            if old.is_dir() and NAME_RE.fullmatch(name):
                dest = self.plugins_dir / name
                if os.path.lexists(dest):
                    shutil.rmtree(dest, ignore_errors=True)
                os.rename(old, dest)
                log.warning("%s: an upgrade was interrupted; the previous revision is back in place", name)
        for leftover in self.tmp_dir.iterdir():
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
            log.info("removed leftover %s", leftover)


def _rev_parse_commit(repo: git.Repo, commit: str) -> str:
    """Full SHA of `commit` if that commit object exists locally; GitCommandError otherwise."""
    return str(repo.git.rev_parse("--verify", "--quiet", "--end-of-options", f"{commit.lower()}^{{commit}}"))


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
