"""An existing checkout brought back to its registered commit after a restart: local only,
never the network.

Tracked files someone modified are put back with a forced checkout (logged); untracked
files are left alone.
"""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path

from iochost.errors import IochostError
from iochost.store.clone import fetch_failed, rev_parse_commit
from iochost.store.gitcmd import GitLimitExceeded, git_env, git_error_line, run_git

log = logging.getLogger("iochost.store")

RESTORE_TIMEOUT = 60.0


def ensure_at(name: str, dest: Path, commit: str, scratch: Path) -> None:
    """Leave the checkout `dest` of `name` clean at `commit` (git's stderr goes to a file in
    `scratch`); FETCH_FAILED when it lacks the commit or is not a git repository."""
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
                rev_parse_commit(repo, commit)
            except git.exc.GitCommandError:
                raise fetch_failed(f"checkout of {name!r} does not contain commit {commit}; "
                                   "delete and re-add the plugin") from None
    except IochostError:
        raise
    except git.exc.GitError as exc:
        raise fetch_failed(f"checkout of {name!r} at {dest} is not a usable git repository: "
                           f"{type(exc).__name__}") from None
    log.warning("%s: checkout %s; forcing it back to %s", name,
                "has modified files" if head == commit else f"is at {head}", commit)
    stderr_path = scratch / f"{name}-restore-{uuid.uuid4().hex[:8]}.log"
    try:
        run = run_git(["-C", str(dest), "checkout", "--force", "--quiet", "--detach", commit],
                      env=git_env(None, None), deadline=time.monotonic() + RESTORE_TIMEOUT,
                      stderr_path=stderr_path)
    except GitLimitExceeded:
        raise fetch_failed(f"restoring {name!r} to {commit} timed out") from None
    finally:
        stderr_path.unlink(missing_ok=True)
    if run.returncode != 0:
        raise fetch_failed(f"restoring {name!r} to {commit} failed (git: {git_error_line(run.stderr)})")
