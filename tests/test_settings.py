"""Settings: the validators check values and read no file; ``Settings.read_files`` (the last step
of ``Settings.from_sources``) reads the token files, the beamline config and the access security
file, each error naming the setting and the file. The CLI's answers to those errors are tested
where a user meets them (test_security, test_beamline, test_epics_control)."""

from __future__ import annotations

import builtins
import io
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from iochost.discovery import CAEndpoint
from iochost.discovery.beacons import BeaconSchedule
from iochost.settings import Settings, SettingsFileError


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Any]:
    """A setting -> file of each kind the settings name, all usable."""
    (tmp_path / "token").write_text("s3cret\n")
    (tmp_path / "beamline.yaml").write_text("beamline: bl1\n")
    (tmp_path / "iochost.acf").write_text("ASG(DEFAULT) { RULE(1, READ) }\n")
    return {"admin_token_file": tmp_path / "token", "beamline_config": tmp_path / "beamline.yaml",
            "epics_access_security": tmp_path / "iochost.acf"}


def test_validating_settings_opens_no_file(files: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[object] = []
    real_open = io.open

    def spy(file: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(file)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy)
    monkeypatch.setattr(io, "open", spy)
    settings = Settings(**files)
    assert opened == []
    assert settings.admin_token is None and settings.beamline_values == {}
    assert settings.auth_enabled  # a token file counts before it is read: refused, never open
    loaded = settings.read_files()
    assert {Path(str(f)) for f in opened} >= set(files.values())
    assert loaded.admin_token is not None and loaded.admin_token.get_secret_value() == "s3cret"
    assert loaded.beamline_values == {"beamline": "bl1"}
    assert settings.admin_token is None  # the copy holds what was read


def test_from_sources_reads_the_files(files: dict[str, Any]) -> None:
    settings = Settings.from_sources({name: str(path) for name, path in files.items()}, environ={})
    assert settings.admin_token is not None and settings.admin_token.get_secret_value() == "s3cret"
    assert settings.beamline_values == {"beamline": "bl1"}


@pytest.mark.parametrize(("setting", "spoil", "gist"), [
    ("admin_token_file", lambda p: p.write_text("\n"), "is empty"),
    ("admin_token_file", lambda p: p.unlink(), "cannot be read by uid"),
    ("beamline_config", lambda p: p.write_text("- a list\n"), ":1: the beamline file's top level must be"),
    ("beamline_config", lambda p: p.unlink(), "cannot be read"),
    ("epics_access_security", lambda p: p.unlink(), "cannot be read by uid"),
])
def test_a_file_that_cannot_be_used_is_named_with_its_setting(files: dict[str, Any], setting: str, spoil: Any,
                                                             gist: str) -> None:
    spoil(files[setting])
    settings = Settings(**files)  # the values are fine: only reading the file fails
    with pytest.raises(SettingsFileError) as error:
        settings.read_files()
    assert str(error.value).startswith(f"{setting} {files[setting]}") and gist in str(error.value)


def test_a_token_given_directly_wins_over_its_file(tmp_path: Path) -> None:
    settings = Settings(admin_token=SecretStr("direct"), admin_token_file=tmp_path / "missing").read_files()
    assert settings.admin_token is not None and settings.admin_token.get_secret_value() == "direct"


def test_the_epics_defaults_have_one_owner() -> None:
    """Settings, the CA endpoint and the beacon schedule default to the same EPICS values."""
    settings = Settings()
    endpoint = CAEndpoint(beacon_addrs=[])
    assert (endpoint.requested_port, endpoint.beacon_port, endpoint.beacon_period) == (
        settings.ca_port, settings.ca_beacon_port, settings.ca_beacon_period) == (5064, 5065, 15.0)
    assert BeaconSchedule(settings.ca_port).period == settings.ca_beacon_period
    assert settings.pva_port == 5076
