"""Every command's help names values as TEXT, INTEGER, PATH or a choice list, never as Python types."""

from __future__ import annotations

import re
from collections.abc import Iterator

import typer
from typer.testing import CliRunner

from cargohold.cli.main import app

PYTHON_TYPES = re.compile(r"<(?:str|int|float|bool|Path|path|int range|list\[[^\]]*\]|[A-Za-z_]+)>")


def _commands(group: typer.Typer) -> Iterator[list[str]]:
    command = typer.main.get_command(group)

    def walk(cmd: object, path: list[str]) -> Iterator[list[str]]:
        yield path
        for name, sub in (getattr(cmd, "commands", None) or {}).items():
            yield from walk(sub, [*path, name])

    yield from walk(command, [])


def test_help_shows_value_words_not_python_types() -> None:
    runner = CliRunner()
    seen = 0
    for path in _commands(app):
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, (path, result.output)
        assert not PYTHON_TYPES.search(result.output), (path, PYTHON_TYPES.search(result.output))
        seen += 1
    assert seen > 40


def test_typical_options_read_as_on_the_command_line() -> None:
    out = CliRunner().invoke(app, ["audit", "--help"], env={"COLUMNS": "200"}).output
    assert re.search(r"--limit\s+-n\s+INTEGER", out)
    assert re.search(r"--actor\s+TEXT", out)
    assert re.search(r"--output\s+-o\s+\[table\|json\]", out)
    out = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"}).output
    assert re.search(r"--data-dir\s+PATH", out)
    assert re.search(r"--no-auth\s+no credentials", out)  # a flag takes no value: nothing is named


def test_registry_means_the_same_everywhere() -> None:
    """Every command that takes --registry takes the cargohold URL: same help, same environment variable, same default."""
    from cargohold.cli.client import DEFAULT_REGISTRY

    found: dict[str, tuple[object, object, object]] = {}

    def walk(cmd: object, path: list[str]) -> None:
        for param in getattr(cmd, "params", []):
            if "--registry" in getattr(param, "opts", []):
                found[" ".join(path)] = (param.envvar, param.default, param.help)
        for name, sub in (getattr(cmd, "commands", None) or {}).items():
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    assert {"rewrite", "client-config", "import", "export", "tag delete", "repository delete", "audit"} <= set(found)
    assert set(found.values()) == {("CARGOHOLD_REGISTRY", DEFAULT_REGISTRY, "registry URL (also CARGOHOLD_REGISTRY)")}, found
