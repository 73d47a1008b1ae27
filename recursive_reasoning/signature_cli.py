"""Command-line options generated from typed signatures (jsonargparse), for `rr solve` and `rr import`.

Each option comes from a parameter of a function or a field of a dataclass: its type checks the value, its docstring
entry is the help, so the command line cannot drift from the code it calls. Two argparse habits are kept that
jsonargparse does not have by itself: a boolean option alone means true (`--force`), and a list option takes its
values one after another (`--ckpt_path a.ckpt b.ckpt`, what a shell glob expands to). Older flag names stay accepted
as aliases, listed beside the option in --help.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, get_args, get_origin, get_type_hints

from jsonargparse import ArgumentParser

__all__ = ["add_signature", "signature_parser"]


def signature_parser(prog: str, description: str) -> ArgumentParser:
    """An empty parser for one `rr` command; errors print its usage and exit with status 2, as argparse does."""
    return ArgumentParser(prog=prog, description=description)


def add_signature(
    parser: ArgumentParser,
    component: Callable[..., Any] | type,
    skip: Iterable[str] = (),
    aliases: Mapping[str, str] | None = None,
) -> list[str]:
    """Add one --option per parameter of `component` (a function, or a class such as a dataclass) except `skip`.

    Args:
        parser: The command's parser.
        component: Whose parameters become options; their docstring (Google style) gives the help.
        skip: Parameters the command fills itself.
        aliases: Other accepted flag names, e.g. {"cycles": "H_cycles"} makes `--cycles` set `--H_cycles`.

    Returns:
        The names of the options added, in order (the keys of the parsed namespace).
    """
    skipped = set(skip)
    if isinstance(component, type):
        keys = parser.add_class_arguments(component, nested_key=None, skip=skipped)
    else:
        keys = parser.add_function_arguments(component, nested_key=None, skip=skipped)
    hints = get_type_hints(component)
    actions = {action.dest: action for action in parser._actions}
    for key in keys:
        action, hint = actions[key], hints[key]
        if hint is bool:
            action.nargs, action.const = "?", True
        elif get_origin(hint) is list:
            action.nargs, action.metavar = "+", key.upper()  # jsonargparse then checks each value by the element type
            action._typehint = get_args(hint)[0]  # type: ignore[attr-defined]
    for alias, key in (aliases or {}).items():
        if key not in keys:
            raise ValueError(f"alias --{alias} names {key!r}, which is not an option of {component.__qualname__}")
        actions[key].option_strings.append(f"--{alias}")
        parser._option_string_actions[f"--{alias}"] = actions[key]
    return keys
