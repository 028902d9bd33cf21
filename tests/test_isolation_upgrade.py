"""Per-plugin isolation across an upgrade, end to end: new requirements are installed beside the running revision's
environment, a revision whose requirements fail leaves both alone, one without requirements needs no environment.

Real daemon (its own: this is the longest isolation test, so it runs beside the others), real pip, real soft IOCs;
the test package is a local directory referenced by path from requirements.txt.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from daemon_harness import Daemon, wait_until
from sample_plugins import TICKER
from test_isolation import MYPKG_PYPROJECT, api, cmdline, daemon, package_repo  # noqa: F401 - api, daemon: fixtures


@pytest.mark.slow
def test_an_upgrade_builds_the_new_environment_beside_the_running_one(daemon: Daemon, api: httpx.Client,
                                                                    tmp_path: Path) -> None:
    """New requirements are installed while the old revision runs on its environment; a
    revision whose requirements fail leaves both alone; one without any needs none."""
    repo = package_repo(tmp_path, "./vendor/mypkg\n")
    first = api.post("/plugins", json={"name": "upgrades", "git_url": repo.url})
    assert first.status_code == 201, first.text
    env = daemon.data_dir / "envs" / "upgrades"
    answer = lambda n: wait_until(  # noqa: E731
        lambda: (api.get("/plugins/upgrades").json()["message"] or "").startswith(f"answer {n}"), what=f"answer {n}")
    answer(42)
    repo.write({"vendor/mypkg/src/mypkg/__init__.py": "ANSWER = 43\n",
                "vendor/mypkg/pyproject.toml": MYPKG_PYPROJECT.replace("1.2.3", "1.2.4"),
                "requirements.txt": "./vendor/mypkg  # 1.2.4\n"})
    repo.commit("mypkg 1.2.4")
    upgraded = api.post("/plugins/upgrades/upgrade", json={})
    assert upgraded.status_code == 200, upgraded.text
    answer(43)
    assert cmdline(upgraded.json()["pid"])[0] == str(env.resolve() / "bin" / "python")
    assert [p.name for p in (env / "lib").glob("python*/site-packages/mypkg-*.dist-info")] == ["mypkg-1.2.4.dist-info"]

    repo.write({"requirements.txt": "./vendor/nothing-here\n"})
    repo.commit("a broken requirement")
    refused = api.post("/plugins/upgrades/upgrade", json={})
    assert refused.status_code == 422 and refused.json()["errors"][0]["stage"] == "requirements", refused.text
    assert api.get("/plugins/upgrades").json()["pid"] == upgraded.json()["pid"]
    assert api.post("/plugins/upgrades/restart").status_code == 200
    answer(43)  # its environment was not touched

    (repo.path / "requirements.txt").unlink()
    repo.write({"uses_package.py": TICKER.replace("class Ticker", "class UsesPackage")})  # same class
    repo.commit("no requirements any more")
    plain = api.post("/plugins/upgrades/upgrade", json={})
    assert plain.status_code == 200, plain.text
    assert cmdline(plain.json()["pid"])[0].endswith("run/upgrades.json (forked)")
    assert not env.exists() and [p.name for p in (daemon.data_dir / "envs").iterdir()] == []
    assert api.delete("/plugins/upgrades").status_code == 200

