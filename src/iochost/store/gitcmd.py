"""Running the `git` CLI under control: clean environment, secrets via askpass, hard limits.

Network operations (clone) and tree-writing ones (checkout) go through `run_git`, a plain
subprocess, because they need what GitPython does not give in one place: a chosen
environment (no terminal prompts, no user credential helpers, the PAT only in an
environment variable read by an askpass script), a process group of its own that is
SIGKILLed as a whole when the time or size limit is hit (git spawns `git-remote-http`,
`index-pack`, `ssh`, ...), and stderr captured to a file so a chatty git cannot block on
a full pipe. Quick local reads (resolving a commit, reading HEAD) use GitPython.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from iochost.proctree import kill_group, popen_session, wait_exit
from iochost.store.paths import tree_size
from iochost.store.policy import redact_url
from iochost.untrusted import read_tail

POLL_INTERVAL = 0.2
PAT_USERNAME = "x-access-token"  # GitHub app tokens need it; GitHub/GitLab PATs accept any name
PASSWORD_VAR = "IOCHOST_GIT_PASSWORD"
USERNAME_VAR = "IOCHOST_GIT_USERNAME"

# Options on every git command line. None carries a secret.
BASE_OPTIONS = (
    "-c", "credential.helper=",  # no user helper may supply, or store, credentials
    "-c", "protocol.ext.allow=never",  # `ext::` runs arbitrary commands
    "-c", "core.fsmonitor=false",
    "-c", "advice.detachedHead=false",
)

ASKPASS_SCRIPT = """#!/bin/sh
# iochost askpass helper: answers git's prompts from the environment, never from argv.
case "$1" in
  [Uu]sername*) printf '%s\\n' "$IOCHOST_GIT_USERNAME" ;;
  *) printf '%s\\n' "$IOCHOST_GIT_PASSWORD" ;;
esac
"""

# Variables that would point git at another repository, or make it trace its traffic.
_DROPPED_ENV = (
    "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_COMMON_DIR",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_NAMESPACE", "GIT_PREFIX", "GIT_TRACE",
    "GIT_TRACE_CURL", "GIT_TRACE_PACKET", "GIT_TRACE_PACK_ACCESS", "GIT_CURL_VERBOSE",
    "GIT_TRACE2", "GIT_TRACE2_EVENT", "GIT_TRACE2_PERF", "SSH_ASKPASS", PASSWORD_VAR, USERNAME_VAR,
)


class GitLimitExceeded(Exception):
    """git was killed because the clone took too long or grew too large."""

    def __init__(self, kind: Literal["timeout", "size"]) -> None:
        super().__init__(kind)
        self.kind = kind


@dataclass(frozen=True)
class GitRun:
    returncode: int
    stderr: str


def write_askpass(folder: Path) -> Path:
    """The askpass helper, mode 0700; it holds no secret, it echoes an environment variable."""
    script = folder / "askpass.sh"
    fd = os.open(script, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o700)
    with os.fdopen(fd, "w") as f:
        f.write(ASKPASS_SCRIPT)
    return script


def git_env(askpass: Path | None, pat: str | None, username: str = PAT_USERNAME) -> dict[str, str]:
    """Environment for git: English messages, never a prompt, the PAT only in a variable."""
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}
    env.update(LC_ALL="C", LANGUAGE="C", GIT_TERMINAL_PROMPT="0")
    if "GIT_SSH_COMMAND" not in env and "GIT_SSH" not in env:
        env["GIT_SSH_COMMAND"] = "ssh -o BatchMode=yes"
    if askpass is not None and pat is not None:
        env.update({"GIT_ASKPASS": str(askpass), PASSWORD_VAR: pat, USERNAME_VAR: username})
    else:
        env["GIT_ASKPASS"] = ""  # empty: skip core.askPass and SSH_ASKPASS too, fail instead
    return env


def run_git(
    args: list[str],
    *,
    env: dict[str, str],
    deadline: float,
    stderr_path: Path,
    cwd: Path | None = None,
    watch: Path | None = None,
    max_bytes: int | None = None,
) -> GitRun:
    """Run git in its own session; kill the whole group at `deadline` or when `watch` > max_bytes."""
    with open(stderr_path, "wb") as err:
        proc = popen_session(
            ["git", *BASE_OPTIONS, *args], errand=True, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=err,
        )
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise GitLimitExceeded("timeout")
            try:
                returncode = wait_exit(proc, min(POLL_INTERVAL, remaining))
                break
            except subprocess.TimeoutExpired:
                pass
            if watch is not None and max_bytes is not None and tree_size(watch) > max_bytes:
                raise GitLimitExceeded("size")
    finally:
        kill_group(proc)
    return GitRun(returncode, read_tail(stderr_path))  # a hostile server may talk at length


def scrub(text: str, secrets: list[str]) -> str:
    """Remove every form of a secret git might echo, and any password embedded in a URL."""
    for secret in secrets:
        if secret:
            for form in {secret, quote(secret, safe="")}:
                text = text.replace(form, "***")
    return redact_url(text)


_AUTH = (
    "authentication failed", "could not read username", "could not read password",
    "terminal prompts disabled", "permission denied (publickey", "access denied",
    "returned error: 401", "returned error: 403", "invalid username or password",
    "host key verification failed",
)
_NOT_FOUND = (
    "does not appear to be a git repository", "repository not found", "not found",
    "returned error: 404", "could not resolve host", "failed to connect", "couldn't connect",
    "connection refused", "unable to access", "could not read from remote repository",
    "no such file or directory", "unable to connect", "name or service not known",
    "network is unreachable", "connection timed out", "does not exist", "unable to look up",
)
_HOST_KEY = "host key verification failed"
_MISSING_BRANCH = re.compile(r"remote branch .* not found in upstream", re.IGNORECASE)


def describe_clone_failure(stderr: str, url: str, branch: str | None) -> str:
    """Say which of the known failures git hit; `stderr` and `url` are already scrubbed."""
    low = stderr.lower()
    if _MISSING_BRANCH.search(stderr):
        reason = f"no such branch or tag {branch!r} in {url}"
    elif _HOST_KEY in low:  # ssh's own line says which: unknown, or changed (under a banner)
        said = next((line.strip() for line in stderr.splitlines() if "strict checking" in line), "")
        return (f"ssh could not verify the server of {url}: its host key is not in known_hosts, or is not the one "
                f"there (ssh: {said or 'Host key verification failed.'})")
    elif any(p in low for p in _AUTH):
        reason = f"authentication refused by {url}"
    elif any(p in low for p in _NOT_FOUND):
        reason = f"unreachable URL or repository not found: {url}"
    else:
        reason = f"git clone of {url} failed"
    detail = git_error_line(stderr)
    return f"{reason} (git: {detail})" if detail else reason


_NOISE = ("cloning into", "warning:", "hint:", "please make sure", "and the repository exists")


def git_error_line(stderr: str) -> str:
    """The most telling line of git's stderr: the first that is not progress or advice (ssh's
    ``@``-framed warning banner read without its frame)."""
    lines = [text for line in stderr.splitlines() if (text := line.strip().strip("@").strip())]
    for line in lines:
        if not line.lower().startswith(_NOISE):
            return line[:300]
    return lines[-1][:300] if lines else ""


# git's own words for a file it could not write (the OS's reason is often left out: "failed to
# write new configuration file .../config.lock"); "remote:" lines are the server's, not ours.
_LOCAL_WRITE_FAILURES = ("failed to write", "unable to write", "could not write", "write error", "short write")


def local_write_failure(stderr: str) -> OSError | None:
    """An OSError naming the file git says it could not write in its local clone: a clone or
    checkout into the daemon's own scratch folder fails this way when the data dir has no room
    (git removes what it wrote before it exits, so the folder may look roomy afterwards)."""
    for line in stderr.splitlines():
        low = line.strip().lower()
        if not low.startswith("remote:") and any(phrase in low for phrase in _LOCAL_WRITE_FAILURES):
            return OSError(f"git: {line.strip()[:300]}")
    return None
