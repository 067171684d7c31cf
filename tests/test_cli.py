"""The `quadranet` command line: every subcommand registered the same way, each with a working --help."""
import pytest

from quadranet.cli import COMMAND_MODULES, build_parser, main


def subcommands() -> list:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sorted(sub.choices)


def test_every_documented_subcommand_is_registered():
    assert {"train", "eval", "shift-sweep", "detect", "collect", "tables", "figures", "claims", "reproduce", "bench",
            "convert-report", "report"} <= set(subcommands())


def test_every_command_module_is_the_cli_module_of_its_package():
    assert [m.__name__ for m in COMMAND_MODULES if not m.__name__.endswith(".cli")] == []


@pytest.mark.parametrize("command", subcommands())
def test_help_of_each_subcommand(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0 and f"quadranet {command}" in capsys.readouterr().out


def test_top_level_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "convert-report" in capsys.readouterr().out
