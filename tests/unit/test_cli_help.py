"""Every option of every `flowgauge` subcommand explains itself in --help."""

from __future__ import annotations

import argparse

import pytest

from flowgauge.cli import _parser


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(commands.choices)


def _undocumented(parser: argparse.ArgumentParser) -> list[str]:
    return [
        "/".join(action.option_strings) or action.dest
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction | argparse._SubParsersAction)
        and (not action.help or action.help == argparse.SUPPRESS)
    ]


def test_top_level_options_and_every_subcommand_have_help() -> None:
    parser = _parser()
    assert _undocumented(parser) == []
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    described = {choice.dest: choice.help for choice in commands._choices_actions}
    assert set(described) == set(_subcommands(parser))
    assert all(described.values()), described


@pytest.mark.parametrize("command", sorted(_subcommands(_parser())))
def test_every_option_of_the_subcommand_has_help(command: str) -> None:
    subparser = _subcommands(_parser())[command]
    assert _undocumented(subparser) == [], f"flowgauge {command}: options without help text"


def test_run_config_help_names_the_environment_variable_and_the_built_in_configs() -> None:
    import subprocess
    import sys

    for command in ("run", "record"):
        shown = subprocess.run(
            [sys.executable, "-m", "flowgauge", command, "--help"], capture_output=True, text=True, check=True
        ).stdout
        flat = " ".join(shown.split())  # argparse wraps the help text
        for needle in ("$FLOWGAUGE_CONFIG", "default", "offline-demo"):
            assert needle in flat, (command, needle, shown)


def test_the_readme_simulate_row_lists_every_simulate_option() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    [row] = [line for line in readme.splitlines() if line.startswith("| `flowgauge simulate ")]
    usage = row.split("` |")[0]
    options = [
        max(action.option_strings, key=len)
        for action in _subcommands(_parser())["simulate"]._actions
        if action.option_strings and not isinstance(action, argparse._HelpAction)
    ]
    assert [option for option in options if f"[{option}" not in usage] == []
