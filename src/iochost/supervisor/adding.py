"""What an add asks for, and the blocking work that turns it into a valid, fetched plugin.

``prepare`` runs on a worker thread (git, pip and the validation probe are subprocesses
and file trees); it knows nothing of the lifecycle, it only reports "fetched" through a
callback and returns what the registry will keep, or raises the IochostError the add's
caller gets. Leaving nothing behind is not its job: the lifecycle's one Teardown does it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from iochost.errors import ErrorCode, IochostError
from iochost.kinds import Kind
from iochost.launch.launcher import Launcher
from iochost.settings import Settings
from iochost.store import DESIRED_RUNNING, DESIRED_STOPPED, GitStore, PluginSource, RegistryEntry
from iochost.store.envs import PluginEnvs, RequirementsError
from iochost.supervisor.lifecycle_types import Prepared
from iochost.validate.pipeline import validate_plugin
from iochost.validate.requirements import requirements_failure


@dataclass(frozen=True)
class AddRequest:
    """A plugin to add, however it was asked for (REST body, iocmng alias, bundled example)."""

    name: str
    source: PluginSource
    class_name: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    pat: str | None = None  # token for a private repository: used for the fetch, never stored
    auto_start: bool = True
    auto_start_on_boot: bool | None = None  # iocmng: False leaves it stopped after a daemon restart
    autostart_order: int | None = None  # iocmng: start-up order at daemon start (``boot_order``)
    grace_period: float | None = None
    kind: Kind | None = None  # the iocmng /tasks and /jobs paths require one
    trusted: bool = False  # skip the source policy: only the examples the operator named at start

    def placeholder(self) -> RegistryEntry:
        """The entry clients see while the add runs; completed by ``prepare``."""
        now = datetime.now(timezone.utc)
        return RegistryEntry(
            name=self.name, kind=self.kind or "task", class_name=self.class_name or "", source=self.source,
            commit=None, parameters=self.parameters,
            desired_state=DESIRED_RUNNING if self.auto_start else DESIRED_STOPPED,
            created_at=now, updated_at=now, auto_start_on_boot=self.auto_start_on_boot,
            autostart_order=self.autostart_order,
            options={"grace_period": self.grace_period} if self.grace_period else {},
        )


def boot_order(order: int | None, name: str) -> tuple[int, int, str]:
    """Where a plugin starts when the daemon starts: iocmng's order (ascending
    ``autostart_order``, the plugins without one after all that have one, then by name)."""
    return (1, 0, name) if order is None else (0, order, name)


@dataclass(frozen=True)
class Declared:
    """What the plugins file declares, as the supervisor applies it (``plugins_file`` reads
    and checks the file and makes this)."""

    requests: list[AddRequest] = field(default_factory=list)
    names: frozenset[str] | None = frozenset()  # every entry's name; None: one had no readable name


@dataclass(frozen=True)
class UpgradeChange:
    """What an upgrade over REST changes: the branch or commit pin (same repository and
    path), the parameters (None: kept), and the token for fetching."""

    branch: str | None = None
    commit: str | None = None
    parameters: dict[str, Any] | None = None
    pat: str | None = None

    def source_for(self, current: PluginSource) -> PluginSource:
        """The registered source with the new pin: a branch alone follows its tip; neither
        keeps the pin (a branch's new tip, or a no-op for a pinned commit)."""
        if self.commit is not None:
            return current.model_copy(update={"commit": self.commit, "branch": self.branch or current.branch})
        if self.branch is not None:
            return current.model_copy(update={"branch": self.branch, "commit": None})
        return current


def declared_change(entry: RegistryEntry, request: AddRequest) -> str | None:
    """What a declaration (the plugins file) changes of a registered plugin, or None.

    Only what it names counts: the source (URL or path, sub-directory), the revision
    (branch, commit pin), the parameters, the class and the grace period. The state an
    operator set since (a stop) is kept, and a branch's new tip is not a change: pin
    ``commit`` to upgrade. Any change is applied as an upgrade in place (``Boot._apply_declared``)."""
    old, new = entry.source, request.source
    changes = [what for what, differs in (
        ("source", (old.git_url, old.local_path, old.path) != (new.git_url, new.local_path, new.path)),
        ("revision", (old.branch, old.commit) != (new.branch, new.commit)),
        ("parameters", entry.parameters != request.parameters),
        ("class_name", request.class_name is not None and request.class_name != entry.class_name),
        ("grace_period", entry.options.get("grace_period") != request.grace_period),
    ) if differs]
    return ", ".join(changes) or None


def prepare(request: AddRequest, entry: RegistryEntry, store: GitStore, envs: PluginEnvs,
            launcher: Launcher | None, settings: Settings, on_fetched: Callable[[str | None], None],
            cancelled: Callable[[], bool], *, upgrade_op: str | None = None,
            unchanged: Callable[[str | None], bool] | None = None) -> Prepared | None:
    """Fetch, install requirements.txt into the plugin's own environment, validate.

    With ``upgrade_op`` this prepares that upgrade: the revision and its environment are
    staged beside the running ones, in areas named by the upgrade (``GitStore.stage``,
    ``PluginEnvs.stage``), and None is the answer when ``unchanged(commit)`` says the
    fetched commit changes nothing."""
    name = request.name
    try:  # a step a delete ended (EndErrands) fails as it may: the add was cancelled
        if upgrade_op is not None:
            result = store.stage(name, upgrade_op, request.source, pat=request.pat, timeout=settings.git_timeout,
                                 max_bytes=settings.max_checkout_bytes)
            if unchanged is not None and unchanged(result.commit):
                return None
        else:
            result = store.fetch(name, request.source, pat=request.pat, timeout=settings.git_timeout,
                                 max_bytes=settings.max_checkout_bytes, sync=False)
        on_fetched(result.commit)
        with ThreadPoolExecutor(1, thread_name_prefix=f"iochost-sync-{name}") as background:
            durable = background.submit(store.sync)  # on disk while requirements and the probe run
            _stop_if(cancelled, name)
            try:
                if upgrade_op is not None:
                    python = envs.stage(name, upgrade_op, result.checkout_dir, result.plugin_dir,
                                        timeout=settings.requirements_timeout)
                else:
                    python = envs.install(name, result.checkout_dir, result.plugin_dir,
                                          timeout=settings.requirements_timeout)
            except RequirementsError as exc:
                raise requirements_failure(exc) from None
            _stop_if(cancelled, name)
            report = validate_plugin(
                result.plugin_dir, name=name, prefix=settings.prefix, class_name=request.class_name,
                parameters=request.parameters, import_timeout=settings.import_timeout,
                python=str(python) if python else None, memory_limit_mb=settings.worker_memory_mb or None,
                launcher=launcher,
            )
            durable.result()  # before the registry records the checkout
    except Exception:
        _stop_if(cancelled, name)
        raise
    _stop_if(cancelled, name)
    if not report.ok:
        raise IochostError(ErrorCode.VALIDATION_FAILED,
                           f"plugin {name!r} failed validation with {len(report.issues)} error(s)",
                           errors=[issue.model_dump(mode="json") for issue in report.issues])
    info = report.plugin
    assert info is not None
    if request.kind is not None and info.kind != request.kind:
        raise IochostError(ErrorCode.WRONG_KIND, f"{name!r} is a {info.kind}, not a {request.kind}")
    entry = entry.model_copy(update={"kind": info.kind, "class_name": info.class_name, "commit": result.commit,
                                     "module_file": info.module_file, "warnings": report.warnings})
    return Prepared(entry=entry, plugin_dir=result.plugin_dir, pvs=info.pvs, pv_prefix=info.pv_prefix)


def _stop_if(cancelled: Callable[[], bool], name: str) -> None:
    if cancelled():
        raise IochostError(ErrorCode.ADD_CANCELLED, f"plugin {name!r} was deleted while it was being added")
