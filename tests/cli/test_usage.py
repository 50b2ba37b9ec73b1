# Every (sub)command reports an option it does not know under its own usage line, not millpond's (issue 13: kcat
# users got the top-level usage for a typo in `millpond consume`). In process: argparse exits before any command
# runs.
from __future__ import annotations

import argparse

import pytest

from millpond.broker.cli import build_parser, main


def leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], list[str]]]:
    """Each runnable command path with the words its required arguments need."""
    sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    if sub is not None:
        return [leaf for name, p in sub.choices.items() for leaf in leaves(p, (*path, name))]
    words: list[str] = []
    for a in parser._actions:
        value = str(a.choices[0]) if a.choices else "1"
        if not a.option_strings:
            words.append(value)
        elif a.required:
            words += [a.option_strings[0], value]
    for group in parser._mutually_exclusive_groups:  # one of them is required: the first will do
        if group.required:
            a = group._group_actions[0]
            words += [a.option_strings[0]] + ([] if a.nargs == 0 else ["1"])
    return [(path, words)]


COMMANDS = leaves(build_parser())


def test_every_command_is_walked():
    paths = {" ".join(p) for p, _ in COMMANDS}
    assert {"produce", "consume", "topics create", "topics add-partitions", "limits set", "serve", "bench"} <= paths


@pytest.mark.parametrize(("path", "words"), COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_an_unknown_option_under_the_commands_own_usage(path, words, capsys):
    with pytest.raises(SystemExit) as info:
        main([*path, *words, "--no-such-option"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: millpond {' '.join(path)} ")
    assert f"millpond {' '.join(path)}: error: unrecognized arguments: --no-such-option" in err


def test_an_unknown_option_before_the_command_is_millponds(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--no-such-option", "topics", "list"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: millpond [-h]") and "millpond: error: unrecognized arguments: --no-such-option" in err
