"""config.py: defaults, CARGOHOLD_* variables, the TOML file, and their precedence."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from cargohold.config import MiB, Settings, load_settings


@pytest.fixture(autouse=True)
def clean_env() -> Iterator[None]:
    """No CARGOHOLD_* from the outside world; and load_settings' CARGOHOLD_CONFIG does not leak out of a test."""
    saved = dict(os.environ)
    for key in list(os.environ):
        if key.startswith("CARGOHOLD_"):
            del os.environ[key]
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cargohold.toml"
    path.write_text(text)
    return path


def test_defaults() -> None:
    s = load_settings()
    assert s.listen == "127.0.0.1:5000"
    assert (s.host, s.port) == ("127.0.0.1", 5000)
    assert s.data_dir == Path("cargohold-data")
    assert s.database_url is None
    assert s.resolved_database_url == f"sqlite+aiosqlite:///{Path('cargohold-data').resolve() / 'metadata.db'}"
    assert s.workers == 2
    assert s.sqlite_synchronous == "FULL"
    assert s.manifest_max_bytes == 4 * MiB
    assert s.upload_max_age_seconds == 24 * 3600
    assert s.log_level == "INFO"
    assert s.access_log is False


def test_environment_variables(tmp_path: Path) -> None:
    os.environ.update(
        {
            "CARGOHOLD_LISTEN": "0.0.0.0:6000",
            "CARGOHOLD_DATA_DIR": str(tmp_path / "d"),
            "CARGOHOLD_WORKERS": "4",
            "CARGOHOLD_DATABASE_URL": "postgresql+asyncpg://u@db/x",
            "CARGOHOLD_DATABASE_SCHEMA": "reg",
            "CARGOHOLD_SQLITE_SYNCHRONOUS": "normal",
            "CARGOHOLD_MANIFEST_MAX_BYTES": "65536",
            "CARGOHOLD_ACCESS_LOG": "true",
            "CARGOHOLD_LOG_LEVEL": "DEBUG",
        }
    )
    s = load_settings()
    assert (s.host, s.port) == ("0.0.0.0", 6000)
    assert s.data_dir == tmp_path / "d"
    assert s.workers == 4
    assert s.resolved_database_url == "postgresql+asyncpg://u@db/x"
    assert s.database_schema == "reg"
    assert s.sqlite_synchronous == "NORMAL"
    assert s.manifest_max_bytes == 65536
    assert s.access_log is True
    assert s.log_level == "DEBUG"


def test_toml_file(tmp_path: Path) -> None:
    config = write_toml(
        tmp_path,
        f'listen = "127.0.0.1:7000"\ndata_dir = "{tmp_path / "toml-data"}"\nworkers = 3\n'
        "upload_max_age_seconds = 60\naccess_log = true\n",
    )
    s = load_settings(config_file=config)
    assert s.port == 7000
    assert s.data_dir == tmp_path / "toml-data"
    assert s.workers == 3
    assert s.upload_max_age_seconds == 60
    assert s.access_log is True
    assert s.log_level == "INFO"  # not in the file: the default
    # The path travels to worker processes through the environment.
    assert os.environ["CARGOHOLD_CONFIG"] == str(config.resolve())


def test_config_file_named_by_environment(tmp_path: Path) -> None:
    os.environ["CARGOHOLD_CONFIG"] = str(write_toml(tmp_path, "workers = 5\n"))
    assert load_settings().workers == 5
    # A worker process rebuilds the same settings from the environment alone.
    assert Settings().workers == 5


def test_precedence_overrides_then_env_then_toml_then_defaults(tmp_path: Path) -> None:
    config = write_toml(
        tmp_path,
        'listen = "127.0.0.1:7001"\nworkers = 3\nlog_level = "ERROR"\nmanifest_max_bytes = 2048\n',
    )
    os.environ["CARGOHOLD_LISTEN"] = "127.0.0.1:7002"
    os.environ["CARGOHOLD_WORKERS"] = "6"
    s = load_settings(config_file=config, listen="127.0.0.1:7003")
    assert s.listen == "127.0.0.1:7003"  # override beats env and toml
    assert s.workers == 6  # env beats toml
    assert s.log_level == "ERROR"  # toml beats default
    assert s.manifest_max_bytes == 2048
    assert s.upload_max_age_seconds == 24 * 3600  # default


def test_none_overrides_are_not_given(tmp_path: Path) -> None:
    os.environ["CARGOHOLD_WORKERS"] = "7"
    s = load_settings(listen=None, workers=None, data_dir=tmp_path)
    assert s.workers == 7
    assert s.listen == "127.0.0.1:5000"
    assert s.data_dir == tmp_path


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_settings(config_file=tmp_path / "nope.toml")
    assert "CARGOHOLD_CONFIG" not in os.environ


@pytest.mark.parametrize(
    "listen",
    ["", "5000", "localhost", ":5000", "localhost:", "localhost:http", "localhost:-1", "localhost:65536", "localhost:99999", "host:5 000"],
)
def test_invalid_listen_is_an_error(listen: str) -> None:
    with pytest.raises(ValidationError, match="listen"):
        load_settings(listen=listen)


@pytest.mark.parametrize(("listen", "host", "port"), [("[::1]:5000", "::1", 5000), ("0.0.0.0:0", "0.0.0.0", 0), ("reg.example:443", "reg.example", 443)])
def test_valid_listen(listen: str, host: str, port: int) -> None:
    s = load_settings(listen=listen)
    assert (s.host, s.port) == (host, port)


def test_invalid_listen_from_environment_and_toml(tmp_path: Path) -> None:
    os.environ["CARGOHOLD_LISTEN"] = "no-port"
    with pytest.raises(ValidationError):
        load_settings()
    del os.environ["CARGOHOLD_LISTEN"]
    with pytest.raises(ValidationError):
        load_settings(config_file=write_toml(tmp_path, 'listen = "nope"\n'))


@pytest.mark.parametrize(
    ("field", "value"),
    [("workers", 0), ("workers", 65), ("manifest_max_bytes", 10), ("upload_max_age_seconds", 0), ("sqlite_synchronous", "SOMETIMES")],
)
def test_out_of_range_values_are_errors(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        load_settings(**{field: value})


def test_non_numeric_environment_value_is_an_error() -> None:
    os.environ["CARGOHOLD_WORKERS"] = "many"
    with pytest.raises(ValidationError):
        load_settings()


def test_unknown_toml_key_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        load_settings(config_file=write_toml(tmp_path, "wrokers = 3\n"))


def test_errors_are_value_errors_for_the_cli() -> None:
    """The CLI turns FileNotFoundError and ValueError into a clean exit 2; validation errors must be ValueErrors."""
    with pytest.raises(ValueError):
        load_settings(listen="bad")
