"""The docs say what the code does: every environment variable the code reads is in
docs/configuration.md's table and every one there is read; every `rostersync` subcommand is in
docs/administration.md's table."""

import argparse
import re
from pathlib import Path

from rostersync.admin import cli

from tests.unit.test_infra import env_vars_read

ROOT = Path(__file__).resolve().parents[2]


def test_configuration_md_lists_exactly_the_variables_the_code_reads():
    read = env_vars_read(ROOT / "functions")
    assert len(read) > 40  # the scanner found the settings
    table = [line for line in (ROOT / "docs" / "configuration.md").read_text().splitlines() if line.startswith("| `")]
    documented = {name for line in table for name in re.findall(r"`([A-Z][A-Z0-9_]{2,})`", line.split(" | ")[0])}
    # K_SERVICE (Cloud Run's own) is explained in PUSH_AUTH's row rather than a row of its own.
    assert sorted(set(read) - documented - {"K_SERVICE"}) == []
    assert sorted(documented - set(read)) == []


def test_administration_md_has_a_row_for_every_subcommand():
    (action,) = [a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    doc = (ROOT / "docs" / "administration.md").read_text()
    rows = [line.split(" | ")[0] for line in doc.splitlines() if line.startswith("| `")]
    listed = {name for row in rows for name in re.findall(r"`([a-z][a-z-]*)", row)}
    assert sorted(set(action.choices) - listed) == []
