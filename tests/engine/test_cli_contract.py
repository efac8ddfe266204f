"""The command-line contract: every command from the registry, every option documented, numbers
bounded before anything runs, one-line errors, and an engine free of import cycles."""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from pathlib import Path

import pytest

import main
from engine.commands import REGISTRY

ROOT = Path(__file__).resolve().parents[2]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_the_parser_has_exactly_the_registered_commands():
    assert set(_subparsers(main.build_parser())) == set(REGISTRY)
    assert {"analyze", "eval", "patch", "caa", "sae", "steer", "ablate", "convergence"} <= set(REGISTRY)


def test_every_option_of_every_command_has_help_and_every_command_an_example():
    for name, sub in _subparsers(main.build_parser()).items():
        assert REGISTRY[name].example.startswith("python main.py " + name), name
        assert REGISTRY[name].outputs, name
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help and len(action.help) > 8, f"{name} {action.option_strings} has no help"


def _numeric_options() -> list[tuple[str, str, str]]:
    """(command, flag, kind) for every int / float option of every command."""
    found = []
    for name, sub in _subparsers(main.build_parser()).items():
        for action in sub._actions:
            kind = getattr(action.type, "__name__", "")
            if kind in ("finite_float", "bounded_int") and action.option_strings:
                found.append((name, action.option_strings[-1], kind))
    return found


NUMERIC = _numeric_options()


def test_numeric_options_are_all_bounded():
    flags = {(c, f) for c, f, _ in NUMERIC}
    assert ("analyze", "--seed") in flags and ("eval", "--tau") in flags and ("sae", "--k") in flags
    assert len(NUMERIC) >= 40  # every int/float option was given a bounded parser


def _required(command: str) -> list[str]:
    values = {"--prompt": "bass", "--out": "/nonexistent/never-written", "--dataset": "/nonexistent",
              "--concept": "drums", "--layer": "0", "--vectors": "/nonexistent.npz", "--tracks": "1"}
    sub = _subparsers(main.build_parser())[command]
    args = [command]
    for action in sub._actions:
        if action.required and action.option_strings:
            args += [action.option_strings[-1], values[action.option_strings[-1]]]
    return args


@pytest.mark.parametrize(("command", "flag", "kind"), NUMERIC, ids=[f"{c}{f}" for c, f, _ in NUMERIC])
def test_non_finite_and_oversized_numbers_end_in_one_line_exit_2(command, flag, kind, capsys):
    bad = ["nan", "inf", "-1e400"] if kind == "finite_float" else [str(2**64), "1.5", ""]
    for value in bad:
        with pytest.raises(SystemExit) as exc:
            main.main([*_required(command), flag, value])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and flag in err[0], err


@pytest.mark.parametrize("command", ["analyze", "convergence", "steer", "ablate"])
@pytest.mark.parametrize(("flag", "value", "says"), [
    ("--seed", str(2**32), "seed must be between 0 and 4294967295"),
    ("--seed", "-1", "seed must be between"),
    ("--steps", "0", "steps must be between 1 and 1000"),
    ("--steps", "1001", "steps must be between 1 and 1000"),
    ("--duration", "0", "duration must be"),
    ("--duration", "601", "duration must be"),
    ("--guidance", "-0.5", "guidance must be"),
    ("--prompt", "x" * 2001, "the limit is 2000"),
    ("--prompt", "  ", "empty prompt"),
    ("--device", "gpu", "device must be"),
])
def test_recipe_limits_are_the_same_for_every_command(command, flag, value, says, capsys, tmp_path):
    """One set of limits (engine.recipe.LIMITS), checked before any model loads or file is written."""
    out = tmp_path / "out"
    args = [a if a != "/nonexistent/never-written" else str(out) for a in _required(command)]
    assert main.main([*args, flag, value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_version_and_program_name():
    done = subprocess.run([sys.executable, str(ROOT / "main.py"), "--version"], capture_output=True, text=True,
                          check=True)
    assert done.stdout.startswith("main.py ") and done.stdout.split()[1][0].isdigit()
    usage = subprocess.run([sys.executable, str(ROOT / "main.py"), "analyze"], capture_output=True, text=True)
    assert usage.returncode == 2 and usage.stderr.count("\n") == 1 and "--prompt" in usage.stderr


def _engine_import_graph() -> dict[str, set[str]]:
    """Module → engine modules it imports anywhere in its body (function-local imports included)."""
    mods = {}
    for f in (ROOT / "engine").rglob("*.py"):
        parts = f.relative_to(ROOT).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f

    def owner(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        for node in ast.walk(ast.parse(f.read_text())):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("engine"):
                names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods else node.module
                         for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("engine")]
            graph[m] |= {o for o in map(owner, names) if o and o != m}
    return graph


def test_the_engine_has_no_import_cycles_not_even_behind_function_local_imports():
    graph = _engine_import_graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            assert cycle is None, " -> ".join(cycle)
    assert "engine.analyze" in graph["engine.commands.analysis"]  # the graph sees local imports


def test_quiet_and_verbose_route_progress_and_library_warnings(tmp_path):
    """-q: nothing on stderr; default: the progress bar but no library warnings (torch's weight_norm
    deprecation fires on every AudioLDM2 load); -v: those warnings appear, through the log."""
    def run(*level: str, model: str = "tiny:audioldm2") -> str:
        out = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        done = subprocess.run([sys.executable, str(ROOT / "main.py"), *level, "analyze", "--model", model,
                               "--prompt", "bass", "--steps", "1", "--duration", "0.2", "--no-figures",
                               "--out", str(out)], capture_output=True, text=True, env={**__import__("os").environ,
                                                                                       "OMP_NUM_THREADS": "1"})
        assert done.returncode == 0, done.stderr
        return done.stderr

    assert run("-q") == ""
    default = run()
    assert "analyze" in default and "Warning" not in default
    verbose = run("-v", model="tiny:stable_audio")  # its vocoder-free VAE load warns (weight_norm)
    assert "WARNING py.warnings" in verbose and "weight_norm" in verbose


def test_a_missing_hub_model_is_reported_by_the_cli_before_any_heavy_import(tmp_path):
    code = ("import sys, main\n"
            "code = main.main(['sites', '--model', 'nobody/no-such-model'])\n"
            "print(code, 'torch' in sys.modules, 'diffusers' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**__import__("os").environ, "HF_HOME": str(tmp_path)})
    assert done.stdout.split() == ["2", "False", "False"], done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and "hf download nobody/no-such-model" in done.stderr


def test_desktop_entry_install_and_uninstall_from_the_command_line(tmp_path):
    env = {**__import__("os").environ, "XDG_DATA_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, str(ROOT / "main.py"), "--install-desktop"], capture_output=True,
                          text=True, env=env)
    assert done.returncode == 0, done.stderr
    entry = tmp_path / "applications" / "aiba-studio.desktop"
    assert entry.is_file() and "Exec=" in entry.read_text()
    assert (tmp_path / "icons" / "hicolor" / "scalable" / "apps" / "aiba-studio.svg").is_file()
    done = subprocess.run([sys.executable, str(ROOT / "main.py"), "--uninstall-desktop"], capture_output=True,
                          text=True, env=env)
    assert done.returncode == 0 and not any(p.is_file() for p in tmp_path.rglob("*"))


@pytest.mark.parametrize(("args", "says"), [
    (["steer", "--vectors", "/nonexistent.npz", "--prompt", "bass", "--alpha", "500"], "--alpha must be"),
    (["steer", "--vectors", "/nonexistent.npz", "--prompt", "bass", "--eval-alphas", "1,nan"], "--eval-alphas"),
    (["steer", "--vectors", "/nonexistent.npz", "--prompt", "bass", "--eval-seeds", "0,4294967296"], "--eval-seeds"),
    (["patch", "--concept", "drums", "--seeds", "1,x"], "bad --seeds"),
    (["patch", "--concept", "drums", "--max-pairs", "0"], "--max-pairs must be between 1"),
    (["caa", "--concept", "drums", "--seeds", "-3"], "each of --seeds must be between 0"),
    (["sae", "--concept", "drums", "--layer", "0", "--k", "0"], "--k must be between 1"),
    (["sae", "--concept", "drums", "--layer", "0", "--expansion", "1000"], "--expansion must be between 1 and 64"),
])
def test_list_and_count_options_are_checked_before_the_model_loads(args, says, tmp_path, capsys):
    code = main.main([*args, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and says in err[0], err
    assert list(tmp_path.iterdir()) == []
