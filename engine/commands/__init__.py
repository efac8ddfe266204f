"""The registry of headless commands behind ``python main.py <command>``.

Each :class:`Command` names its options (an argparse builder), how the parsed flags become the
engine's typed options (:meth:`Command.build`, which validates through the recipe), what it runs
(:attr:`Command.execute`) and what it writes. ``main.py`` builds its parser from :data:`REGISTRY` and
dispatches through :func:`dispatch`; other front ends (the GUI's jobs, batch scripts) call
``REGISTRY[name].execute(options, progress)`` with the same options objects.

Command modules import the heavy libraries (torch, diffusers) inside ``execute`` only, so that
``--help`` and argument errors answer at once.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.commands import analysis, convergence, data, evaluation, figures, scorer, steering  # noqa: F401  (they register)
from engine.commands.registry import REGISTRY, Command, Progress, register

__all__ = ["REGISTRY", "Command", "Progress", "register", "add_subcommands", "dispatch", "parser_for"]


def add_subcommands(parser: argparse.ArgumentParser, formatter: type[argparse.HelpFormatter]) -> None:
    """One sub-parser per registered command, with help, defaults and an example."""
    from engine.commands.flags import harden_numbers

    sub = parser.add_subparsers(dest="command", metavar="command")
    for cmd in REGISTRY.values():
        p = sub.add_parser(cmd.name, help=cmd.summary, description=cmd.describe(), formatter_class=formatter)
        cmd.add_arguments(p)
        harden_numbers(p)


class _RaisingParser(argparse.ArgumentParser):
    """A command's parser for callers that are not a terminal (the GUI): errors raise EngineError."""

    def error(self, message: str):  # type: ignore[override]
        from engine.errors import EngineError

        raise EngineError(message[:400])


def parser_for(name: str) -> argparse.ArgumentParser:
    """A standalone parser of one command (the same options as ``main.py NAME``), whose errors
    raise :class:`~engine.errors.EngineError` instead of exiting."""
    from engine.commands.flags import harden_numbers

    cmd = REGISTRY[name]
    parser = _RaisingParser(prog=f"main.py {name}", description=cmd.describe(), add_help=False)
    cmd.add_arguments(parser)
    harden_numbers(parser)
    return parser


def dispatch(args: argparse.Namespace) -> int:
    """Run the parsed command; user errors become one line on stderr and exit code 2."""
    import sys

    from engine.commands.terminal import TerminalProgress, quiet_libraries
    from engine.errors import EngineError, RunCancelled

    cmd = REGISTRY[args.command]
    try:
        options = cmd.build(args)
        quiet_libraries()
        with TerminalProgress(cmd.name, unit=cmd.unit) as bar:
            result = cmd.execute(options, bar)
    except RunCancelled:
        print("error: cancelled", file=sys.stderr)
        return 130
    except EngineError as exc:
        text = str(exc)
        print(f"error: {text if len(text) <= 1000 else text[:1000] + '...'}", file=sys.stderr)  # huge values cut
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    if isinstance(result, (str, Path)):
        print(f"wrote {result}")
    elif result:
        print("\n".join(result))
    return 0
