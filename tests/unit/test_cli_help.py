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
