"""``iochost serve | run | validate | display | new | schema | healthcheck``: the command line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from iochost.settings import Settings


def _parse_param(text: str) -> tuple[str, Any]:
    """``k=v`` with v read as a YAML scalar, so ``threshold=80`` is a number, ``x=true`` a bool."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, yaml.safe_load(value) if value else ""


def _port(text: str) -> int:
    """A TCP/UDP port number, 1-65535."""
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: a port is a number from 1 to 65535")
    return int(text)


def _grace_period(text: str) -> float:
    """``iochost run --grace``: refused out of the bound every other path holds (config/bounds.py)."""
    from pydantic import TypeAdapter, ValidationError

    from iochost.config.bounds import GracePeriod

    try:
        return float(TypeAdapter(GracePeriod).validate_python(text))
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc.errors()[0]['msg']}") from None


def cmd_validate(args: argparse.Namespace) -> int:
    from iochost.report import render_text
    from iochost.validate.pipeline import validate_plugin

    report = validate_plugin(
        Path(args.dir),
        name=args.name,
        prefix=args.prefix,
        class_name=args.class_name,
        import_timeout=args.timeout,
    )
    if args.json:
        print(report.model_dump_json(indent=2))
    else:
        print(render_text(report))
    return 0 if report.ok else 1


def cmd_new(args: argparse.Namespace) -> int:
    """Write a new plugin directory that validates, runs and has a test that proves it."""
    from iochost.scaffold import ScaffoldError, scaffold_plugin

    directory = Path(args.dir if args.dir is not None else args.name)
    try:
        written = scaffold_plugin(args.name, args.kind, directory)
    except ScaffoldError as exc:
        print(f"iochost new: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    print(f"next: iochost validate {directory} --name {args.name} && python -m pytest {directory / 'tests'} -q",
          file=sys.stderr)
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    """Print a JSON Schema for editors (the YAML language server), generated from the models."""
    import json

    from iochost.editor_schemas import json_schema

    print(json.dumps(json_schema(args.which), indent=2))
    return 0


def cmd_healthcheck(args: argparse.Namespace) -> int:
    """Exit 0 when the daemon answers /api/v1/health/live at the address it really uses."""
    from iochost.healthcheck import main as healthcheck

    return healthcheck(args)


def cmd_display(args: argparse.Namespace) -> int:
    """Validate like ``iochost validate``, then write the plugin's Phoebus display."""
    from iochost.display.plugin import plugin_display_from_dir
    from iochost.display.writer import DisplayFiles
    from iochost.report import render_text
    from iochost.validate.pipeline import validate_plugin

    plugin_dir = Path(args.dir).resolve()
    name = args.name or plugin_dir.name
    report = validate_plugin(plugin_dir, name=name, prefix=args.prefix, class_name=args.class_name,
                             import_timeout=args.timeout)
    if not report.ok or report.plugin is None:
        print(render_text(report), file=sys.stderr)
        return 1
    data = plugin_display_from_dir(plugin_dir, name, args.prefix, report.plugin.kind)
    if args.output in (None, "-"):
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        out = Path(args.output)
        DisplayFiles(out.parent).write(out.name, data)
        print(f"wrote {out} ({report.plugin.kind} {name})", file=sys.stderr)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """``iochost run DIR``, or iocmng-run's form ``iochost run --module MODULE [--config FILE]``:
    the same worker, in this process, until SIGINT/SIGTERM."""
    from iochost.standalone_epics import describe, standalone_env

    # before softioc's import, which reads them
    os.environ.update(standalone_env(os.environ, args.epics_host, args.ca_port, args.pva_port))
    print(f"iochost run: {describe(os.environ)}", file=sys.stderr)
    from iochost.config import load_config
    from iochost.config.limits import resolve_limits
    from iochost.config.pvnames import DEFAULT_PREFIX
    from iochost.contract.worker_spec import WorkerSpec
    from iochost.report import render_text
    from iochost.runner import RunError, import_plugin_module, plugin_class_in, run_plugin_class, run_spec
    from iochost.settings import limits_outside_daemon
    from iochost.validate.pipeline import validate_plugin

    parameters = dict(args.param or [])
    beamline: dict[str, Any] = {}
    if args.beamline_config:
        from iochost.beamline import BeamlineConfigError, load_beamline_config

        try:
            beamline = load_beamline_config(Path(args.beamline_config))
        except BeamlineConfigError as exc:
            print(f"iochost run: beamline_config {exc}", file=sys.stderr)
            return 2
    if args.module is not None:  # iocmng-run's form: a module importable from here
        try:
            cls = plugin_class_in(import_plugin_module(args.module, Path.cwd()), args.class_name)
            # --pva, else a -p pva=... (not silently replaced by iocmng-run's default), else PVA
            pva = parameters.get("pva", True) if args.pva is None else args.pva == "true"
            return run_plugin_class(
                cls, config=args.config, parameters=parameters, prefix=args.prefix, pva=pva,
                name=args.name, pvout=args.pvout, log_level=args.log_level, version=args.version,
                grace=args.grace, autosave=args.autosave, beamline_config=beamline,
            )
        except RunError as exc:
            print(f"iochost run: {exc}", file=sys.stderr)
            return exc.code
    if args.pva is not None:
        parameters["pva"] = args.pva == "true"
    plugin_dir = Path(args.dir).resolve()
    name = args.name or plugin_dir.name
    prefix = args.prefix or DEFAULT_PREFIX
    report = validate_plugin(
        plugin_dir, name=name, prefix=prefix, class_name=args.class_name,
        parameters=parameters, run_import=False,
    )
    if not report.ok:
        print(render_text(report), file=sys.stderr)
        return 1
    assert report.plugin is not None
    config = load_config(plugin_dir).with_parameters(parameters)
    limits = resolve_limits(config.parameters, limits_outside_daemon(), args.grace)  # as the daemon does
    spec = WorkerSpec(
        name=name, plugin_dir=str(plugin_dir), module_file=report.plugin.module_file,
        class_name=report.plugin.class_name, prefix=prefix, parameters=parameters,
        version=args.version, grace_period=limits.grace_period, memory_limit_mb=limits.memory_limit_mb,
        max_open_files=limits.max_open_files,
        autosave_file=str(Path(args.autosave).resolve()) if args.autosave else None,
        beamline_config=beamline, log_level=args.log_level,
    )
    try:
        return run_spec(spec, pvout=args.pvout)
    except RunError as exc:
        print(f"iochost run: {exc}", file=sys.stderr)
        return exc.code


def access_security_problem(settings: Settings) -> str | None:
    """Why EPICS would reject the access security file, before any worker tries it: an ACF
    that asInit refuses would fail every worker, the daemon's own IOC included."""
    if settings.epics_access_security is None:
        return None
    from iochost.access_security_check import check_file

    return check_file(settings.epics_access_security)


def ca_port_problem(settings: Settings) -> str | None:
    """Why the daemon must not take its CA search port: another server already receives
    searches there, and a unicast search reaches only one of them, so starting would
    silently cut the other's unicast clients off (or ours). Runs before anything of the
    daemon binds the port; --allow-shared-ca-port lets it start anyway where it can."""
    from iochost.discovery.holders import describe_holders, port_shareable, search_port_holders

    host, port = settings.epics_host or "0.0.0.0", settings.ca_port
    try:
        holders = search_port_holders(host, port)
    except OSError as exc:  # an --epics-host that does not resolve or is no local address
        return f"epics_host {host}: cannot bind UDP {host}:{port}: {exc.strerror or exc}"
    if holders is None:
        return None
    where = f"UDP {host}:{port}"
    others = describe_holders(holders)
    if not port_shareable(host, port):
        return (f"ca_port {port}: {where} is held without address reuse by {others}: the CA search "
                "endpoint cannot bind it; stop that process or choose another --ca-port")
    if settings.allow_shared_ca_port:
        return None
    return (f"ca_port {port}: another CA server already receives name searches on {where}: {others}. "
            "A unicast search (EPICS_CA_ADDR_LIST, a gateway) reaches only one server on a port, so one "
            "of the two would lose those clients without a word; stop it, choose another --ca-port, or "
            "pass --allow-shared-ca-port (IOCHOST_ALLOW_SHARED_CA_PORT) if sharing is intended")


def data_dir_problem(settings: Settings) -> str | None:
    """Why the daemon could not keep its registry in the data dir, before anything starts:
    a volume mounted root-owned without fsGroup, a registry another user left behind."""
    import os

    from iochost.store.registry import Registry, RegistryError

    uid = os.getuid()
    try:
        for folder in (settings.data_dir, settings.logs_dir, settings.run_dir):
            folder.mkdir(parents=True, exist_ok=True)
            if not os.access(folder, os.W_OK | os.X_OK):
                raise PermissionError(13, "not writable", str(folder))
    except OSError as exc:
        return (f"data_dir {settings.data_dir}: cannot create or write {exc.filename or settings.data_dir} "
                f"as uid {uid} ({exc.strerror}); give that user the directory (a Kubernetes fsGroup, "
                "chown) or choose another with --data-dir")
    try:
        Registry(settings.registry_path).load()
    except RegistryError as exc:
        return f"data_dir {settings.data_dir}: {exc.message} (uid {uid})"
    return None


def cmd_serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from iochost.epics_server_vars import EpicsVariableError
    from iochost.settings import Settings, SettingsFileError

    try:
        settings = Settings.from_sources(vars(args))
    except (EpicsVariableError, SettingsFileError) as exc:
        print(f"iochost serve: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"]) or "settings"
            print(f"iochost serve: {where}: {error['msg']}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"iochost serve: {exc}", file=sys.stderr)
        return 2
    problem = ca_port_problem(settings) or data_dir_problem(settings) or access_security_problem(settings)
    if problem is not None:
        print(f"iochost serve: {problem}", file=sys.stderr)
        return 2
    launcher = None
    if settings.fork_server:  # first: the template imports while the web stack below does
        from iochost.environ import python_child_environ
        from iochost.launch.launcher import start_fork_server

        launcher = start_fork_server(python_child_environ(), pool_size=settings.worker_pool,
                                     realtime=settings.worker_realtime)
    try:
        declared = None
        if settings.plugins_file is not None:  # after the fork server: it imports the API's models
            from iochost.plugins_file import PluginsFileError, load_plugins_file

            try:
                declared = load_plugins_file(settings.plugins_file)
            except PluginsFileError as exc:
                print(f"iochost serve: {exc}", file=sys.stderr)
                return 2
        from iochost.server import serve

        return serve(settings, launcher, declared)
    finally:
        if launcher is not None:
            launcher.close()  # already closed by the supervisor unless the server never started


def build_parser() -> argparse.ArgumentParser:
    from iochost import __version__
    from iochost.config.pvnames import DEFAULT_PREFIX
    from iochost.environ import ENV_PREFIX
    from iochost.epics_server_vars import CA_SERVER_PORT, PVA_BROADCAST_PORT
    from iochost.settings import ENV_ALIASES, Settings
    from iochost.settings_flags import add_settings_flags

    import_timeout = Settings.model_fields["import_timeout"].default  # the daemon's, for the same check
    beamline_env = (ENV_PREFIX + "BEAMLINE_CONFIG", ENV_ALIASES["beamline_config"])
    parser = argparse.ArgumentParser(prog="iochost", description="Host EPICS soft-IOC plugins: serve runs the "
                                     "daemon and healthcheck asks it; run, validate, display and new work on one "
                                     "plugin; schema prints config.yaml's JSON Schema for editors.")
    parser.add_argument("--version", action="version", version=f"iochost {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the daemon: REST API, supervisor, one soft IOC per plugin")
    add_settings_flags(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("validate", help="check a plugin directory; exit 1 listing every problem")
    p.add_argument("dir")
    p.add_argument("--class", dest="class_name", help="plugin class when the directory has several")
    p.add_argument("--name", help="plugin name used for PV names (default: directory name)")
    p.add_argument("--prefix", default=DEFAULT_PREFIX, help="PV prefix (default %(default)s)")
    p.add_argument("--timeout", type=float, default=import_timeout, help="import time limit in seconds")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("display", help="write the Phoebus display (.bob) of a plugin directory; "
                                       "exit 1 with the validation report if it is not valid")
    p.add_argument("dir")
    p.add_argument("-o", "--output", metavar="FILE", help="write FILE (atomically) instead of standard output")
    p.add_argument("--name", help="plugin name used for PV names (default: directory name)")
    p.add_argument("--prefix", default=DEFAULT_PREFIX, help="PV prefix (default %(default)s)")
    p.add_argument("--class", dest="class_name", help="plugin class when the directory has several")
    p.add_argument("--timeout", type=float, default=import_timeout, help="import time limit in seconds")
    p.set_defaults(func=cmd_display)

    p = sub.add_parser("run", help="run one plugin directory (or, as iocmng-run, --module) as a soft IOC in the "
                                   "foreground")
    p.add_argument("dir", nargs="?", help="the plugin directory (or give --module)")
    p.add_argument("-m", "--module", help="iocmng-run's form: a module importable from the current directory "
                   "(my_task, pkg.my_task) instead of DIR; PV names as iocmng-run gives them")
    p.add_argument("--config", metavar="FILE", help="with --module: the config.yaml to use (default: none, "
                   "as iocmng-run: no declared PVs)")
    p.add_argument("--name", help="plugin name (default: directory name; with --module the class name "
                   "in lower case)")
    p.add_argument("--prefix", default=None, help=f"PV prefix (default {DEFAULT_PREFIX}); with --module the "
                   "whole PV prefix, config.yaml's prefix: not appended (default: BEAMLINE:DEFAULT:SEGMENT)")
    p.add_argument("-c", "--class-name", "--class", dest="class_name",
                   help="plugin class when the directory or module has several")
    p.add_argument("-p", "--param", action="append", type=_parse_param, metavar="KEY=VALUE",
                   help="override a config.yaml parameter (repeatable)")
    p.add_argument("--pva", choices=("true", "false"), default=None, help="pv_client and links over PV Access "
                   "(true) or Channel Access (false): the pva parameter (default: config.yaml's; with --module "
                   "true, as iocmng-run)")
    p.add_argument("--pvout", metavar="FILE", help="write the PV names to FILE, sorted, one a line, once the "
                   "records exist")
    p.add_argument("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"), default="INFO",
                   help="logging level (default %(default)s)")
    p.add_argument("--grace", type=_grace_period, default=None, help="seconds cleanup() may take on stop "
                   "(at most 600, as config.yaml's grace_period)")
    p.add_argument("--version-label", dest="version", default="local", help="value of the VERSION PV")
    p.add_argument("--autosave", metavar="FILE", help="keep written input values (and the plugin's "
                   "snapshot()) in FILE and restore them at the next start")
    p.add_argument("--epics-host", metavar="ADDRESS", help="the interface the soft IOC's CA and PVA servers listen "
                   "on (default: EPICS_CAS_INTF_ADDR_LIST if set, else 127.0.0.1; 0.0.0.0: every interface)")
    p.add_argument("--ca-port", type=_port, metavar="PORT", help="CA server port (default: EPICS_CAS_SERVER_PORT "
                   f"if set, else {CA_SERVER_PORT}); another than a running daemon's lets both run")
    p.add_argument("--pva-port", type=_port, metavar="PORT", help="PVA search port (default: "
                   f"EPICS_PVAS_BROADCAST_PORT if set, else {PVA_BROADCAST_PORT})")
    p.add_argument("--beamline-config", metavar="FILE", help="beamline values.yaml: the plugin's "
                   f"beamline_config and the ophyd devices of get_device() (also {', '.join(beamline_env)})",
                   default=next((os.environ[name] for name in beamline_env if os.environ.get(name)), None))
    p.set_defaults(func=cmd_run)

    from iochost.scaffold.plugin_names import KINDS

    p = sub.add_parser("new", help="write a new plugin directory: module, config.yaml, README and a test")
    p.add_argument("name", help="plugin name (A-Z a-z 0-9 _ -, at most 40)")
    p.add_argument("--kind", required=True, choices=KINDS,
                   help="task (continuous), triggered (task run by RUN=1), job, or declarative (config only)")
    p.add_argument("dir", nargs="?", help="directory to create; absent or empty (default: ./NAME)")
    p.set_defaults(func=cmd_new)

    from iochost.editor_schemas import SCHEMA_NAMES, schema_url

    p = sub.add_parser("schema", help="print the JSON Schema of config.yaml or of the plugins file, for editors "
                                      f"(published as {schema_url('config')} and beside it)")
    p.add_argument("which", nargs="?", choices=SCHEMA_NAMES, default="config",
                   help="config (a plugin's config.yaml, the default) or plugins-file (--plugins-file, "
                        "iocmng's plugins.yaml)")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("healthcheck", help="exit 0 if the iochost serve of this container answers its liveness "
                                           "probe, at the address its own flags and environment give it")
    p.add_argument("--pid", type=int, help="the daemon's pid (default: the one iochost serve process here)")
    p.set_defaults(func=cmd_healthcheck)

    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse fills every positional at the first one, so `new NAME --kind K DIR` leaves DIR over
    if args.func is cmd_new and args.dir is None and len(extra) == 1 and not extra[0].startswith("-"):
        args.dir, extra = extra[0], []
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.func is cmd_run and (args.dir is None) == (args.module is None):
        parser.error("run: give a plugin directory or --module MODULE, not both" if args.dir
                     else "run: give a plugin directory or --module MODULE")
    if args.func is cmd_run and args.config is not None and args.module is None:
        parser.error("run: --config goes with --module; a plugin directory's config is DIR/config.yaml")
    sys.exit(args.func(args))
