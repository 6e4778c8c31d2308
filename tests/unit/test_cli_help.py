"""Every command and flag of ``python -m streams`` says what it does, with its default."""

from __future__ import annotations

import argparse

import pytest

from streams.ops.cli import _parser


def subcommands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_command_has_a_description() -> None:
    for name, parser in subcommands().items():
        assert parser.description, f"{name} has no description"


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_every_flag_has_help_and_its_default_is_shown(name: str) -> None:
    parser = subcommands()[name]
    assert parser.formatter_class is argparse.ArgumentDefaultsHelpFormatter
    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"{name} {action.option_strings or action.dest} has no help"
        if action.option_strings:
            shown = formatter._get_help_string(action) % {"default": action.default}  # type: ignore[attr-defined]
            assert "(default:" in shown, f"{name} {action.option_strings} does not show its default"
