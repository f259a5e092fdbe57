"""The `overcast` command: --help everywhere, exit codes, short error messages."""

from __future__ import annotations

import json

import click
import dask.config
import pytest
from click.testing import CliRunner

from overcast.cli.main import cli


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        yield prefix + (name,)
        if isinstance(command, click.Group):
            yield from all_commands(command, prefix + (name,))


@pytest.fixture
def runner(tmp_path, monkeypatch):
    monkeypatch.setenv("OVERCAST_HOME", str(tmp_path / "home"))
    return CliRunner()


@pytest.fixture
def unconfigured():
    with dask.config.set({"overcast.server": None, "overcast.token": None}):
        yield


def test_every_command_has_help(runner):
    commands = list(all_commands(cli))
    expected = {("up",), ("down",), ("status",), ("server",), ("cluster",), ("cluster", "ls"),
                ("cluster", "stop"), ("cluster", "logs"), ("notifications",), ("demo",)}
    assert expected <= set(commands)
    for path in [()] + commands:
        result = runner.invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage:" in result.output


def test_version(runner):
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0 and "overcast" in result.output


def test_usage_error_is_2(runner):
    assert runner.invoke(cli, ["cluster", "stop"]).exit_code == 2
    assert runner.invoke(cli, ["no-such-command"]).exit_code == 2


@pytest.mark.parametrize("args", [["cluster", "ls"], ["cluster", "stop", "x"],
                                  ["cluster", "logs", "x"], ["notifications"],
                                  ["notifications", "--json"]])
def test_not_configured_exits_3_with_a_hint(runner, unconfigured, args):
    result = runner.invoke(cli, args)
    assert result.exit_code == 3, result.output
    assert "overcast up" in result.output
    assert "Traceback" not in result.output


def test_unreachable_server_exits_3(runner):
    # Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    with dask.config.set({"overcast.server": "http://127.0.0.1:9", "overcast.token": "secret-t",
                          "overcast.account": "me"}):
        result = runner.invoke(cli, ["cluster", "ls"])
    assert result.exit_code == 3, result.output
    assert "Cannot reach the overcast server" in result.output
    assert "secret-t" not in result.output


def test_status_when_nothing_runs(runner, unconfigured):
    result = runner.invoke(cli, ["status", "--json"])
    assert result.exit_code == 3
    info = json.loads(result.output)
    assert info["server"]["running"] is False and info["local_cloud"]["running"] is False
    assert info["client"]["token_configured"] is False


def test_down_when_nothing_runs(runner):
    result = runner.invoke(cli, ["down"])
    assert result.exit_code == 0 and "Nothing was running" in result.output
