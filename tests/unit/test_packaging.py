"""The installable package and the locks: `pip install -e .` gives the `rostersync` command, a wheel
holds the package and nothing else, the locks pin every package with hashes (the functions' lock is
the developers' lock for the same packages), every package the code imports is listed, and the CLI
finds its project in --project, GOOGLE_CLOUD_PROJECT or Application Default Credentials."""

from __future__ import annotations

import ast
import importlib.metadata as md
import json
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from rostersync import __version__
from rostersync.admin import cli

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = ROOT / "functions"
# Imported only by the administrator command (`pip install .` brings them, Cloud Functions does not).
CLI_ONLY_MODULES = {"cli.py", "consent.py"}
CLI_ONLY_PACKAGES = {"google-auth-oauthlib", "oauthlib"}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins(path: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of a pip-compile --generate-hashes lock."""
    pins: dict[str, tuple[str, list[str]]] = {}
    text = path.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)((?:\s+--hash=sha256:[0-9a-f]{64})+)", line)
        assert match, f"{path.name}: not a pinned requirement with hashes: {line!r}"
        pins[normalize(match[1])] = (match[2], re.findall(r"sha256:([0-9a-f]{64})", match[3]))
    return pins


def in_names(path: Path) -> dict[str, str]:
    """name -> specifier of a requirements .in file (its own lines; -r/-c lines skipped)."""
    names = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            match = re.match(r"([A-Za-z0-9_.\-]+)(\[[^\]]*\])?(.*)", line)
            names[normalize(match[1])] = match[3].strip()
    return names


def test_the_rostersync_command_is_installed_and_tells_its_version():
    (entry,) = [e for e in md.entry_points(group="console_scripts") if e.name == "rostersync"]
    assert entry.value == "rostersync.admin.cli:main"
    command = Path(sys.executable).parent / "rostersync"
    done = subprocess.run([str(command), "--version"], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == f"rostersync {__version__}"
    assert md.version("rostersync") == __version__  # pyproject.toml reads the version from the package


def test_a_wheel_holds_the_package_and_the_command_only(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(tmp_path)]
        + [str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("rostersync-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    packaged = {n for n in names if not n.startswith("rostersync-")}
    expected = {str(p.relative_to(FUNCTIONS)) for p in (FUNCTIONS / "rostersync").rglob("*.py")}
    assert packaged == expected  # no main.py, no tests, no simulators
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "rostersync = rostersync.admin.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_the_locks_pin_every_package_with_hashes_and_agree():
    functions_lock = lock_pins(FUNCTIONS / "requirements.txt")
    dev_lock = lock_pins(ROOT / "requirements.txt")
    for name, (version, hashes) in functions_lock.items():
        assert hashes
        # What the tests run with is what Cloud Functions installs.
        assert dev_lock.get(name, (None,))[0] == version, f"{name}: {version} in functions, {dev_lock.get(name)}"
    for name in in_names(FUNCTIONS / "requirements.in"):
        assert name in functions_lock, f"{name} is in functions/requirements.in but not locked: run scripts/lock"
    for name in in_names(ROOT / "requirements.in"):
        assert name in dev_lock, f"{name} is in requirements.in but not locked: run scripts/lock"
    assert not set(functions_lock) & CLI_ONLY_PACKAGES  # the consent flow's client is not deployed


def test_pyproject_depends_on_what_the_functions_and_the_command_need():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {}
    for requirement in project["dependencies"]:
        match = re.match(r"([A-Za-z0-9_.\-]+)(\[[^\]]*\])?(.*)", requirement)
        declared[normalize(match[1])] = match[3].strip()
    wanted = {k: v for k, v in in_names(FUNCTIONS / "requirements.in").items() if k != "certifi"}
    wanted |= {k: v for k, v in in_names(ROOT / "requirements.in").items() if k in CLI_ONLY_PACKAGES}
    assert declared == wanted


def _imports(path: Path) -> set[str]:
    """Dotted names imported; `from a.b import c` gives a.b.c (which may be a module) and a.b."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules |= {f"{node.module}.{alias.name}" for alias in node.names}
    return modules


def _module_owners() -> dict[str, str]:
    """Dotted module name -> the distribution installing it, from the installed files (no imports)."""
    owners: dict[str, str] = {}
    for dist in md.distributions():
        name = normalize(dist.metadata["Name"])
        for file in dist.files or ():
            parts = list(file.parts)
            if parts[0] == ".." or not parts[-1].endswith((".py", ".so", ".pyd")):
                continue
            stem = parts[-1].split(".")[0]
            parts = parts[:-1] if stem == "__init__" else [*parts[:-1], stem]
            owners.setdefault(".".join(parts), name)
    return owners


def test_every_package_the_code_imports_is_listed_in_its_requirements():
    owners = _module_owners()
    listed = set(in_names(FUNCTIONS / "requirements.in"))
    missing = []
    for path in [FUNCTIONS / "main.py", *(FUNCTIONS / "rostersync").rglob("*.py")]:
        allowed = listed | (CLI_ONLY_PACKAGES if path.name in CLI_ONLY_MODULES else set())
        for module in sorted(_imports(path)):
            top = module.split(".")[0]
            if top in sys.stdlib_module_names or top in ("rostersync", "__future__") or module == "main":
                continue
            # The longest prefix that is a module of some distribution (google.cloud is a namespace
            # many distributions share, google.cloud.firestore is one distribution's package).
            parts = module.split(".")
            owner = next((owners[p] for n in range(len(parts), 0, -1) if (p := ".".join(parts[:n])) in owners), None)
            assert owner, f"{path.name}: cannot tell which distribution provides {module}"
            if owner not in allowed:
                missing.append(f"{path.relative_to(ROOT)} imports {module} from {owner}")
    assert not missing, "not listed in functions/requirements.in:\n" + "\n".join(missing)


# -- the project the CLI works on -------------------------------------------------------------------


def test_project_flag_wins_over_the_environment(monkeypatch):
    seen = {}
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "from-env")
    monkeypatch.setattr(cli, "cmd_held", lambda args: seen.setdefault("project", os.environ["GOOGLE_CLOUD_PROJECT"]))
    cli.main(["--project", "from-flag", "held"])
    assert seen["project"] == "from-flag"


def test_without_flag_or_environment_the_project_of_the_default_credentials(monkeypatch, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    key_file = tmp_path / "key.json"
    key_file.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "adc-project",
                "private_key_id": "1",
                "private_key": pem.decode(),
                "client_email": "cli@adc-project.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": "http://127.0.0.1:9/token",
            }
        )
    )
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    assert cli._default_project() == "adc-project"


def test_without_any_project_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))
    monkeypatch.setattr("google.auth.compute_engine._metadata._NO_GCE_CHECK", True)
    with pytest.raises(cli.ConfigError, match="no project: pass --project, set GOOGLE_CLOUD_PROJECT"):
        cli._default_project()


def test_every_message_names_the_command_as_rostersync():
    """Messages tell the administrator to run `rostersync X`, the installed command (not `python -m`)."""
    offenders = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in [*(FUNCTIONS / "rostersync").rglob("*.py"), FUNCTIONS / "main.py", *(ROOT / "infra").glob("*.tf")]
        if path.name != "__main__.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if "python -m rostersync" in line
    ]
    assert not offenders
    assert cli.build_parser().prog == "rostersync"
