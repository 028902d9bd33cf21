"""``iochost serve``'s flags: one per Settings field, so flags, environment and defaults
cannot drift apart. The command line builds its parser from here, and ``iochost
healthcheck`` reads a running daemon's command line with the same flags."""

from __future__ import annotations

import argparse
from typing import Any

from iochost.environ import ENV_PREFIX
from iochost.settings import ENV_ALIASES, ENV_ONLY, Settings


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per Settings field (None when not given: the environment or default then counts)."""
    for name, field in Settings.model_fields.items():
        if name in ENV_ONLY:
            continue
        flag = "--" + name.replace("_", "-")
        default = field.get_default(call_default_factory=True)
        env = ENV_PREFIX + name.upper() + (f" or {ENV_ALIASES[name]}" if name in ENV_ALIASES else "")
        help_text = f"{field.description or ''} [env {env}; default {default}]".strip()
        if field.annotation is bool and default is True:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None,
                                help=help_text)
        elif field.annotation is bool:
            parser.add_argument(flag, dest=name, action="store_true", default=None, help=help_text)
        elif field.annotation == list[str]:  # repeatable: --allow-source, --cors-origin, --pv-gateway-allow
            parser.add_argument(flag, dest=name, action="append", metavar=name.upper(), help=help_text)
        else:
            parser.add_argument(flag, dest=name, default=None, metavar=name.upper(), help=help_text)


def serve_flags(arguments: list[str]) -> dict[str, Any]:
    """The settings ``iochost serve ARGUMENTS`` was given by flag (None: not given)."""
    parser = argparse.ArgumentParser(prog="iochost serve", add_help=False)
    add_settings_flags(parser)
    flags, _ = parser.parse_known_args(arguments)
    return vars(flags)
