"""The OneRoster settings: ROSTER_SOURCE, the provider's keys, and their checks."""

import pytest
from rostersync.config import ConfigError, load_settings


def test_defaults_are_clever_and_oneroster_needs_its_keys(monkeypatch):
    for name in ("ROSTER_SOURCE", "ONEROSTER_API_BASE", "ONEROSTER_CLIENT_ID", "ONEROSTER_CLIENT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PUSH_AUTH", "oidc")
    s = load_settings()
    assert s.roster_source == "clever" and s.oneroster_version == "1.2" and s.oneroster_full_read_hours == 24
    with pytest.raises(ConfigError, match="ONEROSTER_API_BASE, ONEROSTER_CLIENT_ID"):
        s.require_oneroster()


def test_oneroster_settings_are_read(monkeypatch):
    monkeypatch.setenv("ROSTER_SOURCE", "OneRoster")
    monkeypatch.setenv("ONEROSTER_API_BASE", "https://d-app.oneroster.com/")
    monkeypatch.setenv("ONEROSTER_VERSION", "1.1")
    monkeypatch.setenv("ONEROSTER_CLIENT_ID", "id")
    monkeypatch.setenv("ONEROSTER_CLIENT_SECRET", "secret")
    monkeypatch.setenv("ONEROSTER_TOKEN_URL", "https://d-app.oneroster.com/token")
    monkeypatch.setenv("ONEROSTER_FULL_READ_HOURS", "12")
    s = load_settings()
    s.require_oneroster()
    assert (s.roster_source, s.oneroster_api_base, s.oneroster_version) == (
        "oneroster",
        "https://d-app.oneroster.com",
        "1.1",
    )
    assert s.oneroster_full_read_hours == 12


@pytest.mark.parametrize("name,value", [("ROSTER_SOURCE", "classlink"), ("ONEROSTER_VERSION", "1.0")])
def test_bad_values_name_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        load_settings()
