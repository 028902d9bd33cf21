"""docs/reference/cli.md, from ``iochost.cli.build_parser()``: every command and every argument
it takes, read from the argparse parser the command line itself runs, so a flag added there
is on the page. ``serve``'s flags are Settings fields (``settings_flags``): their variables and
defaults come from the same helpers as settings.md."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from unittest import mock

from iochost.cli import build_parser
from iochost.reference.markdown import cell, code, heading, table
from iochost.reference.settings_page import default, environment
from iochost.settings import Settings


def parser() -> argparse.ArgumentParser:
    """The command line's parser, built with an empty environment: a default some flag reads
    from a variable (``run --beamline-config``) is then the one a fresh shell gets."""
    with mock.patch.dict(os.environ, clear=True):
        return build_parser()


def commands(root: argparse.ArgumentParser) -> Iterator[tuple[str, str, argparse.ArgumentParser]]:
    """Each subcommand's name, the help it is listed with, and its parser, in the order they were added."""
    for action in root._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield name, helps.get(name, ""), sub


def arguments(command: argparse.ArgumentParser) -> list[argparse.Action]:
    """The arguments a reader gives: -h/--help, which every command takes, is left out."""
    return [action for action in command._actions if not isinstance(action, argparse._HelpAction)]


def names(action: argparse.Action) -> str:
    """The argument as it is typed: its option strings, or a positional's name in capitals."""
    if action.option_strings:
        return ", ".join(code(option) for option in action.option_strings)
    return code(_metavar(action))


def _metavar(action: argparse.Action) -> str:
    if isinstance(action.metavar, str):
        return action.metavar
    return action.dest.upper()


def value(action: argparse.Action) -> str:
    """What follows the option: one of its choices, a named value, or nothing (a switch)."""
    if action.nargs == 0:
        return "switch"
    notes = []
    if action.choices is not None:
        taken = " \\| ".join(code(str(choice)) for choice in action.choices)
    elif action.option_strings:
        taken = code(_metavar(action))
    else:
        taken, notes = "positional", ["optional"] if action.nargs == "?" else []
    if isinstance(action, argparse._AppendAction):
        notes.append("repeatable")
    if action.required and action.option_strings:
        notes.append("required")
    return taken + (f" ({', '.join(notes)})" if notes else "")


def _default(action: argparse.Action) -> str:
    if isinstance(action, argparse._StoreTrueAction) or action.default is False:
        return "off"
    if action.default is None or action.default == argparse.SUPPRESS:
        return "none"
    if isinstance(action.default, float):
        return code(f"{action.default:g}")
    return code(str(action.default))


def _help(action: argparse.Action, prog: str) -> str:
    """The help text with argparse's ``%(default)s``-style fields filled in as ``--help`` does."""
    if isinstance(action, argparse._SubParsersAction) and not action.help:
        return "the command: each has its section below"
    if action.help is None or action.help == argparse.SUPPRESS:
        return ""
    if "%" not in action.help:
        return action.help
    fields = {**vars(action), "prog": prog}
    for key, given in fields.items():
        if isinstance(given, (list, tuple)):
            fields[key] = ", ".join(map(str, given))
    return action.help % fields


def synopsis(prog: str, command: argparse.ArgumentParser) -> str:
    """``iochost run [DIR] [options]``: the positionals in order, then the options if any."""
    words = [prog]
    for action in arguments(command):
        if not action.option_strings:
            word = _metavar(action)
            words.append(f"[{word}]" if action.nargs == "?" else word)
    if any(action.option_strings for action in arguments(command)):
        words.append("[options]")
    return " ".join(words)


def _sentence(summary: str) -> str:
    """A command's one-line help as a sentence: capital first, full stop last."""
    said = cell(summary).rstrip(".")
    return said[:1].upper() + said[1:] + "."


def _command_table(prog: str, command: argparse.ArgumentParser) -> list[str]:
    rows = [[names(action), value(action), _default(action), cell(_help(action, prog))]
            for action in arguments(command)]
    return table(["argument", "value", "default", "meaning"], rows)


def _serve_table(command: argparse.ArgumentParser) -> list[str]:
    """serve's flags, each a Settings field: its variables and default as settings.md gives them."""
    rows = []
    for action in arguments(command):
        field = Settings.model_fields[action.dest]
        rows.append([names(action), value(action), environment(action.dest, field), default(action.dest, field),
                     cell(field.description or "")])
    return table(["flag", "value", "environment", "default", "meaning"], rows)


def page() -> str:
    """Every command of ``iochost`` with its synopsis, its help and a table of its arguments."""
    root = parser()
    lines = [
        *heading("Command line", "iochost.cli.build_parser"),
        cell(root.description or ""),
        "",
        *_command_table(root.prog, root),
        "",
        "Every command also takes `-h`, `--help`: its usage and these arguments, then it exits.",
    ]
    for name, summary, command in commands(root):
        prog = f"{root.prog} {name}"
        lines += ["", f"## {name}", "", f"`{synopsis(prog, command)}`", "", _sentence(summary)]
        if name == "serve":
            lines += [
                "",
                "Each flag is also an environment variable, and a flag left out takes the variable's value,",
                "else the default. Settings read only from the environment (the tokens) and the EPICS server",
                "variables the daemon honours are on the [settings page](settings.md).",
                "",
                *_serve_table(command),
            ]
        else:
            lines += ["", *_command_table(prog, command)]
    return "\n".join(lines) + "\n"
