"""docs/reference/settings.md, from ``iochost.settings.Settings``: what ``iochost serve`` reads,
from which flag and which environment variables, and the EPICS server variables it honours.
The helpers ``flag``, ``environment`` and ``default`` also write cli.md's ``serve`` section."""

from __future__ import annotations

from pydantic.fields import FieldInfo

from iochost.environ import ENV_PREFIX
from iochost.epics_server_vars import VARIABLES
from iochost.reference.markdown import cell, heading, table
from iochost.settings import ENV_ALIASES, ENV_ONLY, Settings

# Defaults computed when the daemon starts, as the page says them.
FACTORY_DEFAULTS = {"data_dir": "`$XDG_DATA_HOME/iochost`, else `~/.local/share/iochost`"}


def flag(name: str, field: FieldInfo) -> str:
    """How the setting is given on ``iochost serve``'s command line (settings_flags.add_settings_flags)."""
    if name in ENV_ONLY:
        return "none: a command line is readable by every user"
    option = "--" + name.replace("_", "-")
    if field.annotation is bool and field.default is True:
        return f"`{option}` / `--no-{option[2:]}`"
    if field.annotation == list[str]:
        return f"`{option}` (repeatable)"
    return f"`{option}`"


def environment(name: str, field: FieldInfo) -> str:
    """The variables the setting is read from, in the order they count."""
    names = [f"`{ENV_PREFIX}{name.upper()}`"]
    if name in ENV_ALIASES:
        names.append(f"`{ENV_ALIASES[name]}`")
    described = ", else ".join(names)
    if field.annotation == list[str]:
        described += " (comma-separated)"
    epics = [v for v in VARIABLES if v.setting == name]
    if epics:
        server = [f"`{v.name}`" for v in epics if not v.fallback]
        client = [f"`{v.name}`" for v in epics if v.fallback]
        described += "; EPICS: " + ", ".join(server) + (f", else {', '.join(client)}" if client else "")
    return described


def default(name: str, field: FieldInfo) -> str:
    """The default as a reader wants it: sizes in MiB, booleans as on/off, a computed one in words."""
    if field.default_factory is not None:
        value = field.get_default(call_default_factory=True)
        if value == []:
            return "none"
        return FACTORY_DEFAULTS[name]  # a KeyError here: say how the page shows the new default
    value = field.default
    if value is None or value == "":
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"`{value:g}`"
    if isinstance(value, int) and name.endswith("_bytes") and value % 1024 == 0:
        size = f"{value // 1024**2} MiB" if value % 1024**2 == 0 else f"{value // 1024} KiB"
        return f"`{value}` ({size})"
    return f"`{value}`"


def page() -> str:
    """Every Settings field with its flag, variables, default and meaning, then the EPICS variables."""
    lines = [
        *heading("Settings of `iochost serve`", "iochost.settings.Settings"),
        "Each setting is a flag and an environment variable; the flag wins. A second variable named",
        "after the `IOCHOST_*` one (iocmng's, or an older name) is read when that one is unset. A standard",
        "EPICS server variable named after them is used when neither is given, and stops the daemon when",
        "it disagrees with them ([One EPICS endpoint](../explanation/one-epics-endpoint.md)). The whole",
        "command line of `iochost serve` and the other commands: [Command line](cli.md).",
        "",
        *table(["flag", "environment", "default", "meaning"],
               ([flag(name, field), environment(name, field), default(name, field), cell(field.description or "")]
                for name, field in Settings.model_fields.items())),
        "",
        *_epics_variables(),
    ]
    return "\n".join(lines) + "\n"


def _epics_variables() -> list[str]:
    """The section on every EPICS server variable iochost knows (``epics_server_vars.VARIABLES``)."""
    rows = []
    for variable in VARIABLES:
        if variable.fallback:
            continue
        name = f"`{variable.name}`"
        fallbacks = [f"`{v.name}`" for v in VARIABLES if v.fallback and v.setting == variable.setting
                     and variable.setting is not None]
        if fallbacks:
            name += f", else {', '.join(fallbacks)}"
        if variable.handling == "setting":
            assert variable.setting is not None
            becomes = flag(variable.setting, Settings.model_fields[variable.setting])
        elif variable.handling == "passed":
            becomes = "passed to every worker unchanged"
        else:
            becomes = f"refused: {variable.why}"
        rows.append([name, cell(becomes)])
    return [
        "## EPICS server variables",
        "",
        "Each is a setting, passed to every worker unchanged, or refused; any other `EPICS_CAS_*` or",
        "`EPICS_PVAS_*` variable is refused by name. A client variable (after \"else\") counts only",
        "when the server variable is unset, and an explicit setting wins over it with a warning.",
        "",
        *table(["variable", "becomes"], rows),
    ]
