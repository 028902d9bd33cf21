"""`iochost serve` run the way the container image runs it (issue 12).

An unprivileged user, uid and gid 10001 with no entry in /etc/passwd and no supplementary
group; HOME on a scratch directory; the data dir a "volume" that user owns; the API tokens
from files (so auth is on); the console script of a non-editable install in a venv of the
system's Python (``nonroot_env``: root's interpreter and ``.venv`` are unreadable to other
users). REST stays on loopback. The test adds a plugin from a real git repository by
``file://`` URL, reads and writes its PVs over CA and PVA, checks who every process runs
as, what it may do (no capabilities, no locked memory, no cgroup it could not make), where
files were written, and that SIGTERM ends everything with exit 0.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest

import nonroot_env
from conftest import CA_PORT, PVA_BROADCAST_PORT, REPO, free_port, free_port_block, wait_for
from daemon_harness import bearer, wait_until
from gitrepos import plugin_repo

UID = GID = 10001
PREFIX = "IOCHNR"
READ_TOKEN = "rd-" + secrets.token_hex(16)
ADMIN_TOKEN = "ad-" + secrets.token_hex(16)

_reason = nonroot_env.unavailable()
pytestmark = pytest.mark.skipif(_reason is not None, reason=_reason or "")

WHOAMI = """
    import os
    from iochost import TaskBase

    class Whoami(TaskBase):
        def initialize(self):
            self.n = 0
            self.set_pv("UID", os.getuid())

        def execute(self):
            self.n += 1
            self.set_pv("VALUE", self.n)

        def on_input(self, name, value):
            if name == "GAIN":
                self.set_pv("ECHO", 2 * value)

        def cleanup(self):
            pass
"""
WHOAMI_CONFIG = """
    parameters: {interval: 0.2}
    pvs:
      inputs:
        GAIN: {type: float, value: 2.5, unit: V, prec: 2}
      outputs:
        VALUE: {type: int, value: 0}
        ECHO: {type: float, prec: 2}
        UID: {type: int}
"""


@pytest.fixture(scope="session")
def runtime() -> Iterator[nonroot_env.Environment]:
    """The venv the unprivileged daemon runs from, built once per session."""
    root = Path(tempfile.mkdtemp(prefix="iochost-nonroot-", dir=nonroot_env.scratch_parent()))
    try:
        env = nonroot_env.build(root)
        print("\nnon-root environment built in", ", ".join(f"{k} {v:.1f} s" for k, v in env.timings.items()))
        yield env
    finally:
        kill_processes(processes_of(UID))  # whatever a failed test left running as that user
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def work() -> Iterator[Path]:
    """The run's directories (HOME, the data volume, token files, git repositories), on
    disk as a volume is; readable by the daemon's user where it must be."""
    path = Path(tempfile.mkdtemp(prefix="iochost-nonroot-run-", dir="/tmp"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        kill_processes(processes_of(UID))
        shutil.rmtree(path, ignore_errors=True)


# -- processes -------------------------------------------------------------------------------

def proc_status(pid: int) -> dict[str, str]:
    """/proc/PID/status as a dict ({} once the process is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return {key: value.strip() for key, _, value in (line.partition(":") for line in text.splitlines())}


def processes_of(uid: int) -> list[int]:
    """Live (not zombie) processes with ``uid`` as real, effective, saved or fs uid."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            status = proc_status(int(entry.name))
            if status and str(uid) in status["Uid"].split() and not status["State"].startswith("Z"):
                pids.append(int(entry.name))
    return pids


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            status = proc_status(int(entry.name))
            if status:
                children.setdefault(int(status["PPid"]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_processes(pids: list[int]) -> None:
    for pid in pids:
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    wait_until(lambda: not [p for p in pids if proc_status(p) and not proc_status(p)["State"].startswith("Z")],
               timeout=10, what="killed processes to go")


# -- files -----------------------------------------------------------------------------------

def find_argv(tops: list[str], *test: str) -> list[str]:
    """``find`` over ``tops``, each on its own filesystem, printing what matches ``test``,
    skipping directories the daemon's user cannot even enter (it wrote nothing below them)."""
    unreachable = ["(", "-type", "d", "!", "-perm", "-o=x", "!", "-uid", str(UID), "!", "-gid", str(GID), "-prune", ")"]
    return ["find", *tops, "-xdev", *unreachable, "-o", *test, "-print"]


@pytest.fixture(scope="session")
def writable_dirs() -> Iterator[Callable[[], list[str]]]:
    """The directories where the daemon's user may create files (world-writable, or its
    own or its group's) on the root filesystem and /dev/shm: where to look for what it
    wrote. Looking at every file takes ~1 s, so this runs once, while the environment
    builds; the test then only walks these."""
    out = tempfile.TemporaryFile("w+")
    scan = subprocess.Popen(
        find_argv(["/", "/dev/shm"], "-type", "d",
                  "(", "-perm", "-o=w", "-o", "-uid", str(UID), "-o", "-gid", str(GID), ")"),
        stdout=out, stderr=subprocess.DEVNULL)

    def result() -> list[str]:
        scan.wait()
        out.seek(0)
        dirs = sorted(set(out.read().splitlines()))
        return [d for i, d in enumerate(dirs) if not any(d.startswith(p.rstrip("/") + "/") for p in dirs[:i])]

    try:
        yield result
    finally:
        if scan.poll() is None:
            scan.kill()
        scan.wait()
        out.close()


def written_by_user(since: Path, dirs: list[str]) -> list[str]:
    """Everything below ``dirs`` owned by the daemon's user or group whose inode changed
    after ``since`` was last written."""
    found = subprocess.run(find_argv(dirs, "(", "-uid", str(UID), "-o", "-gid", str(GID), ")", "-cnewer", str(since)),
                           capture_output=True, text=True)
    return found.stdout.splitlines()


def tree_snapshot(top: Path) -> dict[str, tuple[int, int, int]]:
    """path -> (mode, size, mtime_ns) of everything under ``top``."""
    snapshot = {}
    for path in [top, *top.rglob("*")]:
        st = path.lstat()
        snapshot[str(path.relative_to(top))] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return snapshot


def chown_tree(top: Path, uid: int, gid: int) -> None:
    for path in [top, *top.rglob("*")]:
        os.lchown(path, uid, gid)


def cgroup_dir(pid: int) -> Path | None:
    """The cgroup v2 directory of ``pid``, or None without a cgroup v2 mount."""
    try:
        own = next(line[3:] for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines() if line.startswith("0::"))
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    except (OSError, StopIteration):
        return None
    for line in mounts:
        fields, _, tail = line.partition(" - ")
        if tail.startswith("cgroup2 "):
            root, mount_point = fields.split()[3:5]
            if own == root or own.startswith(root.rstrip("/") + "/"):
                return Path(mount_point) / own[len(root):].lstrip("/")
    return None


def user_may_write(path: Path) -> bool:
    """Whether uid/gid 10001, with no other group, may create entries in ``path``."""
    st = path.stat()
    if st.st_uid == UID:
        return bool(st.st_mode & 0o200)
    if st.st_gid == GID:
        return bool(st.st_mode & 0o020)
    return bool(st.st_mode & 0o002)


# -- the test --------------------------------------------------------------------------------

@pytest.mark.slow
def test_serve_as_unprivileged_user_like_the_image(writable_dirs: Callable[[], list[str]],
                                                   runtime: nonroot_env.Environment, work: Path,
                                                   ca: Any, pva: Any) -> None:
    assert processes_of(UID) == [], f"processes of uid {UID} before the test: {processes_of(UID)}"
    home, data, secrets_dir = work / "home", work / "data", work / "secrets"
    for directory in (home, data):  # HOME and the volume: the user's own, private
        directory.mkdir(mode=0o700)
        os.chown(directory, UID, GID)
    # Token files as a Kubernetes Secret mounts them with fsGroup: root's, group-readable.
    secrets_dir.mkdir(mode=0o750)
    os.chown(secrets_dir, 0, GID)
    for name, token in (("admin-token", ADMIN_TOKEN), ("read-token", READ_TOKEN)):
        (secrets_dir / name).write_text(token + "\n")
        os.chmod(secrets_dir / name, 0o440)
        os.chown(secrets_dir / name, 0, GID)
    repos = work / "repos"
    repos.mkdir()
    repo = plugin_repo(repos, "whoami", WHOAMI, WHOAMI_CONFIG)
    chown_tree(repo.path, UID, GID)  # git refuses to serve a repository of another user ("dubious ownership")
    repo_before = tree_snapshot(repo.path)
    foreign = plugin_repo(repos, "foreign", WHOAMI, WHOAMI_CONFIG, module="whoami")  # stays root's

    port = free_port()
    ca_low, ca_high = free_port_block(40)
    environ = {
        "PATH": f"{runtime.venv}/bin:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        # The image's ENV (REST and EPICS on loopback here), then the test's ports.
        "IOCHOST_HOST": "127.0.0.1",
        "IOCHOST_PORT": str(port),
        "IOCHOST_EPICS_HOST": "127.0.0.1",
        "IOCHOST_DATA_DIR": str(data),
        "IOCHOST_WORKER_PVA_PORTS": f"{ca_low + 20}-{ca_high}",  # ignored by a daemon without the setting
        "OPENBLAS_NUM_THREADS": "1",
        # Any CA/PVA client in the daemon's tree talks only to loopback, as in the harness.
        "EPICS_CA_ADDR_LIST": "127.0.0.1",
        "EPICS_CA_AUTO_ADDR_LIST": "NO",
        "EPICS_PVA_ADDR_LIST": "127.0.0.1",
        "EPICS_PVA_AUTO_ADDR_LIST": "NO",
    }
    argv = [
        str(runtime.iochost), "serve",
        "--admin-token-file", str(secrets_dir / "admin-token"), "--read-token-file", str(secrets_dir / "read-token"),
        "--allow-local-sources", "--prefix", PREFIX, "--grace-period", "5",
        "--ca-port", str(CA_PORT), "--pva-port", str(PVA_BROADCAST_PORT),
        "--ca-beacon-port", os.environ["EPICS_CA_REPEATER_PORT"], "--worker-ports", f"{ca_low}-{ca_low + 19}",
    ]
    log_path = work / "daemon.log"
    marker = work / "started"
    marker.touch()
    time.sleep(0.01)  # -cnewer compares with the marker's mtime: anything from here on is newer
    url = f"http://127.0.0.1:{port}/api/v1"
    proc: subprocess.Popen[bytes] | None = None
    try:
        with open(log_path, "wb") as log:
            # As `USER 10001:10001` does: no supplementary groups, no capabilities left
            # (a setuid from root clears them), cwd the root-owned install dir.
            proc = subprocess.Popen(argv, user=UID, group=GID, extra_groups=[], start_new_session=True,
                                    cwd=runtime.root / "build", env=environ, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT)

        def daemon_log() -> str:
            return log_path.read_text(errors="replace")[-4000:]

        deadline = time.monotonic() + 60
        while True:  # /health needs no token
            assert proc.poll() is None, f"iochost serve exited with {proc.returncode}:\n{daemon_log()}"
            assert time.monotonic() < deadline, f"iochost serve did not answer within 60 s:\n{daemon_log()}"
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        with httpx.Client(base_url=url, timeout=60) as api:
            # -- tokens from the files: auth is on ----------------------------------------
            anonymous = api.get("/plugins")
            assert anonymous.status_code == 401 and anonymous.json()["code"] == "UNAUTHORIZED", anonymous.text
            assert api.get("/plugins", headers=bearer("wrong-" + READ_TOKEN)).status_code == 401
            assert api.get("/plugins", headers=bearer(READ_TOKEN)).status_code == 200
            refused = api.post("/plugins", headers=bearer(READ_TOKEN), json={"name": "whoami", "git_url": repo.url})
            assert refused.status_code == 403 and refused.json()["code"] == "FORBIDDEN", refused.text
            admin = bearer(ADMIN_TOKEN)

            # -- a repository of another user: git (>= 2.39.4, 2.45.1) refuses to serve it --
            dubious = api.post("/plugins", headers=admin, json={"name": "foreign", "git_url": foreign.url})
            if dubious.status_code == 201:  # an older git
                assert api.delete("/plugins/foreign", headers=admin).status_code == 200
            else:  # a fetch failure naming the cause, nothing kept
                assert dubious.status_code == 502 and dubious.json()["code"] == "FETCH_FAILED", dubious.text
                assert "dubious ownership" in dubious.json()["message"], dubious.text

            # -- the plugin, from git by file:// URL ---------------------------------------
            added = api.post("/plugins", headers=admin, json={"name": "whoami", "git_url": repo.url})
            assert added.status_code == 201, added.text
            record = added.json()
            assert record["state"] == "running", record
            worker = record["pid"]
            pv = record["pv_prefix"] + ":"
            assert pv == f"{PREFIX}:WHOAMI:"
            logs = api.get("/plugins/whoami/logs", headers=bearer(READ_TOKEN))
            assert logs.status_code == 200, logs.text

            # -- who runs, with what ------------------------------------------------------
            tree = [proc.pid, *descendants(proc.pid)]
            assert worker in tree
            for pid in tree:
                status = proc_status(pid)
                if not status or status["State"].startswith("Z"):
                    continue  # a short-lived helper that ended meanwhile
                what = f"pid {pid} ({status['Name']})"
                assert status["Uid"].split() == [str(UID)] * 4, f"{what}: Uid {status['Uid']}"
                assert status["Gid"].split() == [str(GID)] * 4, f"{what}: Gid {status['Gid']}"
                assert status["Groups"] == "", f"{what}: Groups {status['Groups']}"
                for caps in ("CapEff", "CapPrm", "CapAmb"):
                    assert int(status[caps], 16) == 0, f"{what}: {caps} {status[caps]}"
                assert status["VmLck"] == "0 kB", f"{what}: VmLck {status['VmLck']}"  # EPICS locked nothing
            own_cgroup = cgroup_dir(proc.pid)
            if own_cgroup is None or not user_may_write(own_cgroup):  # so no cgroup of its own per worker
                assert cgroup_dir(worker) == own_cgroup, f"worker in {cgroup_dir(worker)}, daemon in {own_cgroup}"

            # -- its PVs over CA and PVA, an input written and read back ------------------
            wait_for(lambda: ca.caget(pv + "VALUE", timeout=3) >= 1, timeout=20, what="VALUE over CA")
            assert ca.caget(pv + "UID", timeout=3) == UID  # the plugin's own code runs as that user
            assert ca.caget(pv + "GAIN", timeout=3) == 2.5
            assert pva.get(pv + "VALUE", timeout=5).value >= 1
            ca.caput(pv + "GAIN", 3.25, wait=True, timeout=5)
            assert ca.caget(pv + "GAIN", timeout=3) == 3.25
            wait_for(lambda: ca.caget(pv + "ECHO", timeout=3) == 6.5, timeout=10, what="on_input() of the CA write")
            assert pva.get(pv + "GAIN", timeout=5).value == 3.25
            pva.put(pv + "GAIN", 4.0, timeout=5)
            assert pva.get(pv + "GAIN", timeout=5).value == 4.0
            assert ca.caget(pv + "GAIN", timeout=3) == 4.0
            wait_for(lambda: ca.caget(pv + "ECHO", timeout=3) == 8.0, timeout=10, what="on_input() of the PVA write")
            wait_for(lambda: ca.caget(f"{PREFIX}:IOCHOST:RUNNING", timeout=3) == 1, timeout=10,
                     what="the daemon's own soft IOC counting the plugin")

        # -- SIGTERM: exit 0, nothing left running ---------------------------------------
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, daemon_log()
        wait_until(lambda: not processes_of(UID), timeout=10, what=f"every process of uid {UID} to end")
    finally:
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)
        kill_processes(processes_of(UID))

    # -- files: the data dir is the user's, nothing written where it should not be ---------
    entries = [data, *data.rglob("*")]
    assert (data / "registry.json").is_file()
    assert sorted(p.name for p in (data / "plugins").iterdir()) == ["whoami"]  # nothing of the refused add
    assert not (data / "tmp").exists() or not any((data / "tmp").iterdir()), list((data / "tmp").iterdir())
    foreign_owned = [f"{p} {p.lstat().st_uid}:{p.lstat().st_gid}" for p in entries
                     if (p.lstat().st_uid, p.lstat().st_gid) != (UID, GID)]
    assert foreign_owned == [], f"in the data dir, not owned by {UID}:{GID}: {foreign_owned}"
    world_writable = [str(p) for p in entries if not p.is_symlink() and p.lstat().st_mode & 0o002]
    assert world_writable == [], world_writable
    written = written_by_user(marker, [*writable_dirs(), str(REPO)])
    allowed = (str(data) + "/", str(home) + "/", "/tmp/")
    outside = [p for p in written if p not in (str(data), str(home)) and not p.startswith(allowed)]
    assert outside == [], f"written by uid {UID} outside the data dir, HOME and /tmp: {outside}"  # the checkout too
    leftovers = [p for p in written if p.startswith("/tmp/") and p != str(work) and not p.startswith(str(work) + "/")]
    assert leftovers == [], f"left in /tmp by uid {UID} after it stopped: {leftovers}"
    assert tree_snapshot(repo.path) == repo_before, "the plugin's source repository was written to"
    text = log_path.read_text(errors="replace")
    problems = [line for line in text.splitlines() if "Traceback" in line or " ERROR " in line or " CRITICAL " in line]
    assert problems == [], "\n".join(problems)
