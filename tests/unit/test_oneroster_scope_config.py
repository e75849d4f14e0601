"""ONEROSTER_SCOPE: unset for the version's default, `none` for no scope, else the scopes as given."""

import pytest
from rostersync.adapters.oneroster import DEFAULT_SCOPES, OneRosterClient
from rostersync.config import load_settings


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        (None, None),
        ("", None),
        ("none", ""),
        ("NONE", ""),
        (
            "  https://purl.imsglobal.org/spec/or/v1p2/scope/roster-core.readonly\n x ",
            "https://purl.imsglobal.org/spec/or/v1p2/scope/roster-core.readonly x",
        ),
    ],
)
def test_the_scope_setting(monkeypatch, env, setting):
    monkeypatch.setenv("PUSH_AUTH", "oidc")
    if env is None:
        monkeypatch.delenv("ONEROSTER_SCOPE", raising=False)
    else:
        monkeypatch.setenv("ONEROSTER_SCOPE", env)
    assert load_settings().oneroster_scope == setting


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_each_version_asks_for_its_own_rostering_scope_by_default(version):
    client = OneRosterClient("https://p.example", version, "id", "secret", "https://p.example/token")
    assert client._scope == DEFAULT_SCOPES[version]
    assert f"/v1p{version[-1]}/scope/roster.readonly" in DEFAULT_SCOPES[version]
