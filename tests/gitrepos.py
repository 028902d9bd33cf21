"""Real git repositories in a temp dir, added to iochost by ``file://`` URL."""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from pathlib import Path

GIT_ENV = {
    "GIT_AUTHOR_NAME": "iochost tests", "GIT_AUTHOR_EMAIL": "tests@iochost.invalid",
    "GIT_COMMITTER_NAME": "iochost tests", "GIT_COMMITTER_EMAIL": "tests@iochost.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(repo: Path, *args: str) -> str:
    import os

    result = subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                            env={**os.environ, **GIT_ENV})
    return result.stdout.strip()


class Repo:
    """A work tree with commits; ``url`` is what a user would POST."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True)
        git(path, "init", "-q", "-b", "main")

    @property
    def url(self) -> str:
        return self.path.as_uri()

    def write(self, files: dict[str, str]) -> "Repo":
        for rel, text in files.items():
            target = self.path / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(textwrap.dedent(text))
        return self

    def copy_dir(self, source: Path, into: str = "") -> "Repo":
        shutil.copytree(source, self.path / into if into else self.path, dirs_exist_ok=True)
        return self

    def commit(self, message: str = "update") -> str:
        git(self.path, "add", "-A")
        git(self.path, "commit", "-q", "-m", message)
        return git(self.path, "rev-parse", "HEAD")

    def tag(self, name: str) -> None:
        git(self.path, "tag", name)

    def branch(self, name: str) -> None:
        git(self.path, "checkout", "-q", "-b", name)


def plugin_repo(root: Path, name: str, code: str, config: str, module: str | None = None) -> Repo:
    """A one-plugin repository: ``<module>.py`` + ``config.yaml`` at the root, committed."""
    repo = Repo(root / f"repo-{name}")
    repo.write({f"{module or name.replace('-', '_')}.py": code, "config.yaml": config})
    repo.commit("plugin")
    return repo
