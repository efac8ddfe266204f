"""AIBA Studio entry point.

``python main.py`` opens the workstation GUI; ``python main.py <command>`` runs headless.
Every capability of the GUI is reachable here so it can be scripted, tested and batched.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``PROG: error: ... (see PROG --help)``, exit code 2."""

    def error(self, message: str):  # type: ignore[override]
        if len(message) > 400:  # a huge argument value is not echoed in full
            message = message[:400] + "..."
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Help(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after every option's help (not for switches and unset options);
    descriptions (with examples) kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, [], argparse.SUPPRESS) or action.nargs == 0:
            return action.help
        return super()._get_help_string(action)


def program_name() -> str:
    """``aiba-studio`` when installed or frozen, ``main.py`` when run from a checkout."""
    name = os.path.basename(sys.argv[0] or "")
    return name if name and name not in ("__main__.py", "-c") else "aiba-studio"


def version() -> str:
    """The installed package's version (its metadata), else the checkout's pyproject version."""
    from importlib import metadata

    try:
        return metadata.version("aiba-studio")
    except metadata.PackageNotFoundError:
        import tomllib
        from pathlib import Path

        data = tomllib.loads((Path(__file__).with_name("pyproject.toml")).read_text())
        return str(data["project"]["version"])


def build_parser() -> argparse.ArgumentParser:
    from engine.commands import add_subcommands

    parser = _Parser(
        prog=program_name(),
        description="AIBA Studio: look inside text-to-audio diffusion models while they generate.\n"
                    "Without a command it opens the workstation; with one it runs headless.",
        epilog="example:\n  %(prog)s analyze --prompt 'bass and drums' --out runs/bass",
        formatter_class=_Help,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    level = parser.add_mutually_exclusive_group()
    level.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    level.add_argument("-q", "--quiet", action="store_true", help="errors only, no progress bars")
    parser.add_argument("--self-test", action="store_true", help="open the GUI, run a short generation, exit 0 on success")
    parser.add_argument("--screenshot", default=None, help="with --self-test: save a screenshot here")
    parser.add_argument("--model", dest="gui_model", default="embedded", help="model the GUI starts with")
    desktop = parser.add_mutually_exclusive_group()
    desktop.add_argument("--install-desktop", action="store_true",
                         help="add AIBA Studio to your desktop's application menu (entry and icon, this user only)")
    desktop.add_argument("--uninstall-desktop", action="store_true", help="remove that menu entry and icon")
    add_subcommands(parser, _Help)
    for sub in parser._subparsers._group_actions[0].choices.values():  # one-line errors in sub-commands too
        sub.__class__ = _Parser
    return parser


def _desktop_entry(install: bool) -> int:
    from engine.desktop_install import install_desktop_entry, uninstall_desktop_entry
    from engine.errors import EngineError

    try:
        done = install_desktop_entry() if install else uninstall_desktop_entry()
    except (EngineError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{'installed' if install else 'removed'}: {', '.join(str(p) for p in done) or 'nothing'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from engine.commands.terminal import configure_logging

    configure_logging(-1 if args.quiet else args.verbose)
    if args.command:
        from engine.commands import dispatch

        return dispatch(args)
    if args.install_desktop or args.uninstall_desktop:
        return _desktop_entry(install=args.install_desktop)
    from gui import app

    if args.self_test:
        return app.self_test(args.screenshot, model=args.gui_model)
    return app.run([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        sys.exit(main())
    except BrokenPipeError:  # output piped into `head` and the like
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
