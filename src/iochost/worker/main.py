"""The worker process: one plugin, one soft IOC.

Order matters: import and construct the plugin, build its records, iocInit, report READY,
then run the plugin on its thread until SIGTERM/SIGINT, a Stop command, or the end of the
supervisor's pipe. Stopping calls ``cleanup()`` and exits within the grace period.
"""

from __future__ import annotations

import ctypes
import faulthandler
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from iochost.config import PluginConfig, PVGroup
from iochost.contract import messages
from iochost.contract.exits import WorkerExit
from iochost.contract.worker_spec import WorkerSpec
from iochost.epics_server_vars import serving_address
from iochost.kinds import Kind
from iochost.memlock import forbid_memory_locking
from iochost.proctree import kill_descendants, set_child_subreaper
from iochost.worker import access_security, autosave
from iochost.worker.autosave import Autosaver
from iochost.worker.channel import Channel, ChannelLogHandler
from iochost.worker.rlimits import exit_on_memory_error, exit_out_of_memory, set_rlimits

if TYPE_CHECKING:  # the plugin SDK is imported once the plugin's environment is set
    from iochost.sdk import JobBase, TaskBase

log = logging.getLogger("iochost.worker")

# After the supervisor disappears we do not wait the full grace period: a daemon killed
# with -9 must not leave IOCs serving PVs for long.
ORPHAN_GRACE = 2.0


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM us when the supervisor dies (belt and braces with pipe EOF)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def _join_cgroup(path: str | None) -> None:
    """Move this process into its cgroup before anything can fork: every descendant is
    then in it, and the supervisor's ``cgroup.kill`` ends them all."""
    if path is None:
        return
    try:
        with open(os.path.join(path, "cgroup.procs"), "w") as procs:
            procs.write(str(os.getpid()))
    except OSError as exc:
        log.warning("cannot join cgroup %s (%s); contained by subreaper only", path, exc)


def _setup_logging(channel: Channel, spec: WorkerSpec) -> None:
    root = logging.getLogger()
    root.setLevel(spec.log_level)
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s [{spec.name}] %(name)s: %(message)s"))
    root.addHandler(stderr)
    if channel.supervised:
        root.addHandler(ChannelLogHandler(channel, rate=spec.forward_log_rate))


def _ca_port_free(wait: float = 5.0) -> bool:
    """Whether rsrv will get the port the supervisor assigned (waiting a little for a
    previous worker of this plugin to let go). If not, rsrv would fall back to a random
    port while the daemon's CA endpoint keeps sending clients to the assigned one."""
    port = os.environ.get("EPICS_CAS_SERVER_PORT")
    if not port:
        return True
    host = serving_address(os.environ)
    deadline = time.monotonic() + wait
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as rsrv does
            try:
                sock.bind((host, int(port)))
                return True
            except OSError:
                if time.monotonic() >= deadline:
                    return False
        time.sleep(0.1)


def run_worker(spec: WorkerSpec, plugin_class: type | None = None,
               on_ready: Callable[[list[str]], None] | None = None) -> int:
    """Run one plugin as a soft IOC until told to stop; returns the exit code.

    ``plugin_class``: the class, already imported by the caller (``run_ioc``: a class may live
    in a script's ``__main__``, which importing by file would run a second time);
    ``on_ready``: called with the full PV names once iocInit is done (``--pvout``)."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy (via softioc) loads
    if not spec.realtime:
        forbid_memory_locking()  # before softioc loads (a fork server's warm member has done it)
    _join_cgroup(spec.cgroup)
    set_child_subreaper()  # a plugin's orphaned grandchildren come to us, not to init
    set_rlimits(spec.memory_limit_mb, spec.max_open_files)  # before the plugin or softioc loads
    exit_on_memory_error()
    channel = Channel(spec.event_fd, spec.command_fd)
    _setup_logging(channel, spec)
    if channel.supervised:
        _die_with_parent()
    try:
        plugin, config = _load_plugin(spec, plugin_class)
    except Exception as exc:  # noqa: BLE001 - any failure to load is reported, not raised
        message = f"cannot load plugin: {type(exc).__name__}: {exc}"
        log.error("%s\n%s", message, traceback.format_exc())
        channel.send(messages.Fatal(message=message, traceback=traceback.format_exc()))
        return WorkerExit.FATAL

    import cothread
    from softioc import builder, softioc

    from iochost.config import plugin_mode
    from iochost.sdk import TaskBase, hosting
    from iochost.worker.host import PluginHost
    from iochost.worker.records import build_records

    kind: Kind = "task" if isinstance(plugin, TaskBase) else "job"
    mode = plugin_mode(kind, config.parameters)
    host: PluginHost | None = None
    pvs, saver = _autosave(spec, plugin, config.pvs)  # saved values become the records' initial ones

    def on_write(name: str, value: object) -> None:
        accepted, value = table.operator_write(name, value)  # in the PV's type, or refused
        if not accepted:
            return
        if saver is not None:
            saver.mark(name)
        if host is not None:
            host.on_pv_write(name, value)

    table = build_records(worker_pv_prefix(spec, config.prefix), kind, mode, pvs, spec.version, on_write)
    plugin.pv_prefix = table.pv_prefix  # what the plugin reads is what its records are named
    if saver is not None:
        table.on_input_set = saver.mark
    if channel.supervised and not _ca_port_free():
        log.error("CA server port %s is held by another process; exiting so the supervisor "
                  "retries instead of rsrv silently serving on another port",
                  os.environ.get("EPICS_CAS_SERVER_PORT"))
        return WorkerExit.CA_PORT_BUSY
    access_security.prepare(spec, table)  # the ACF and the records' groups, before iocInit
    builder.LoadDatabase()
    softioc.iocInit()
    unprotected = access_security.problem(spec)
    if unprotected is not None:
        log.error("%s", unprotected)
        channel.send(messages.Fatal(message=unprotected))
        return WorkerExit.FATAL
    host = PluginHost(plugin, table, config.parameters, channel, spec.heartbeat_interval, autosaver=saver,
                      plugin_dir=Path(spec.plugin_dir))
    if kind == "task" and (config.wired or config.rules or config.transforms):
        from iochost.worker.wiring import Wiring

        host.wiring = Wiring(config, table, post=host.events.put)
    hosting.attach_runtime(plugin, host.wiring or table)  # a wiring forwards wired outputs to their links
    hosting.attach_channel(plugin, channel)  # the daemon's own IOC sends control requests
    if saver is not None:
        saver.start(table.held_value)  # strings as the bytes their records hold

    last_status: list[tuple[str, str]] = []

    def on_status(status: str, message: str) -> None:
        if not last_status or last_status[0] != (status, message):
            last_status[:] = [(status, message)]
            channel.send(messages.StatusChanged(status=status, message=message))

    table.on_status = on_status
    # Before READY: whoever sees READY may stop us at once, and that stop must reach cleanup().
    # A handler runs on the main thread between two bytecodes, perhaps inside a record
    # callback holding a lock request_stop() takes too (the plugin queue's): a thread asks.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: threading.Thread(target=host.request_stop, name="iochost-signal",
                                                          daemon=True).start())
    channel.send(messages.Ready(pid=os.getpid(), pvs=table.full_names()))
    if on_ready is not None:
        on_ready(table.full_names())
    log.info("serving %d PVs under %s", len(table.records), table.pv_prefix)

    orphaned = []

    def on_eof() -> None:
        orphaned.append(True)
        host.request_stop()

    channel.start_reader(host.on_command, on_eof)
    host.start()

    # The main thread is cothread's: it serves record callbacks while it waits. It sleeps
    # until woken (no polling: a hundred idle workers must cost next to no CPU); the
    # timeout is only a safety net.
    stopping = cothread.Event(auto_reset=False)
    host.on_stop = lambda: cothread.Callback(stopping.Signal)
    while not host.stop_requested.is_set():
        try:
            stopping.Wait(timeout=5.0)
        except cothread.Timedout:
            pass
    grace = host.stop_grace or spec.grace_period  # the supervisor's Stop may carry its own
    deadline = time.monotonic() + (min(grace, ORPHAN_GRACE) if orphaned else grace)
    while not host.finished.is_set() and time.monotonic() < deadline:
        cothread.Sleep(0.05)
    if saver is not None:
        saver.close()  # the last values and the snapshot, written before the process ends
    if host.internal_error is not None:
        code = WorkerExit.INTERNAL
    elif host.init_failed:
        log.error("initialize() raised; the plugin never ran, the worker exits")
        code = WorkerExit.INIT_FAILED
    elif host.finished.is_set():
        log.info("stopped cleanly")
        code = WorkerExit.OK
    else:
        log.error("plugin did not finish within %.1f s grace period; exiting anyway", grace)
        code = WorkerExit.GRACE_EXCEEDED
    return code


def _autosave(spec: WorkerSpec, plugin: TaskBase | JobBase, pvs: PVGroup) -> tuple[PVGroup, Autosaver | None]:
    """The PVs with their saved values restored, and the writer that keeps them; before the
    records are built, so iocInit publishes the saved values, not config.yaml's."""
    if spec.autosave_file is None:
        return pvs, None
    from iochost.sdk.base import PluginBase

    path = Path(spec.autosave_file)
    saved = autosave.load(path)
    pvs, kept = autosave.apply(saved.values, pvs)
    # A state is only kept for a plugin that makes one: a class without snapshot() has none.
    makes_state = type(plugin).snapshot is not PluginBase.snapshot
    saver = Autosaver(path, autosave.autosaved_inputs(pvs), kept, saved.state if makes_state else None)
    return pvs, saver


def worker_pv_prefix(spec: WorkerSpec, segment: str | None) -> str:
    """What the plugin's records are named with: the spec's whole prefix (``iochost run
    --module --prefix``), else ``PREFIX:SEGMENT`` (``segment``: config.yaml's ``prefix:``)."""
    from iochost.config.pvnames import plugin_pv_prefix

    return spec.pv_prefix or plugin_pv_prefix(spec.prefix, spec.name, segment)


def _load_plugin(spec: WorkerSpec, plugin_class: type | None = None) -> tuple[TaskBase | JobBase, PluginConfig]:
    import cothread  # noqa: F401 - on this thread, which serves it: pv_client's CA calls are handed to it

    from iochost.config import load_config
    from iochost.config.calls import registration_warnings
    from iochost.loader import load_plugin_class
    from iochost.rule_language.functions import get_registry
    from iochost.sdk import JobBase, TaskBase, hosting, pv_client
    from iochost.sdk.base import hosted_pv_prefix
    from iochost.sdk.devices import Devices

    plugin_dir = Path(spec.plugin_dir)
    # first: importing it may register functions
    cls = plugin_class or load_plugin_class(plugin_dir, spec.module_file, spec.class_name)
    config_file = Path(spec.config_file) if spec.config_file else None
    task = isinstance(cls, type) and issubclass(cls, TaskBase)  # its functions are checked after initialize() too
    config = load_config(plugin_dir, check_functions=not task, file=config_file).with_parameters(spec.parameters)
    warnings = config.warnings + (registration_warnings(config, get_registry()) if task else [])
    for warning in warnings:  # accepted as iocmng accepts it; the same lines `iochost validate` prints
        log.warning("%s", warning)
    pv_client.init(pva=config.parameters.pva)  # the plugin's `pva` parameter chooses pv_client's provider
    if not (isinstance(cls, type) and issubclass(cls, (TaskBase, JobBase))):
        raise TypeError(f"{spec.class_name} does not derive from TaskBase or JobBase")
    with hosted_pv_prefix(worker_pv_prefix(spec, config.prefix)):  # right in the plugin's own __init__ too
        plugin = cls(
            name=spec.name,
            parameters=config.parameters.model_dump(),
            pv_definitions=config.pvs.model_dump(),
            beamline_config=spec.beamline_config,
            prefix=spec.prefix,
        )
    hosting.attach_devices(plugin, Devices(spec.beamline_config))  # an index only: devices come on first use
    return plugin, config


def main(argv: list[str] | None = None) -> None:
    """``python -m iochost.worker SPEC.json``: the supervisor's way to start a worker."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.exit("usage: python -m iochost.worker SPEC.json")
    spec = WorkerSpec.model_validate_json(Path(args[0]).read_text())
    # The supervisor sends SIGUSR1 before it kills a hung worker: every thread's stack to the log
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        code = run_worker(spec)
    except MemoryError:
        exit_out_of_memory("the main thread")
    sys.stdout.flush()
    sys.stderr.flush()
    kill_descendants()  # nothing the plugin started outlives its worker
    os._exit(code)  # skip atexit: EPICS teardown adds nothing once cleanup() has run
