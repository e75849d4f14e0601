"""The `rostersync` command's help: status first, reads before writes, a description and an example for
every subcommand, --json where a table is printed, and the exit codes in the epilog."""

import argparse
import json

from rostersync import wiring
from rostersync.admin import cli

READS = ["status", "sections", "section", "problems", "overrides", "why", "guardians", "held", "plan"]
WRITES = ["resync", "approve", "discard", "reoffer", "adopt", "link", "replay-dead-letters", "pause", "resume"]


def subcommands() -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_status_comes_first_and_every_read_before_every_write():
    names = list(subcommands())
    assert names[0] == "status"
    assert max(names.index(n) for n in READS) < min(names.index(n) for n in WRITES)
    assert set(READS + WRITES) <= set(names)


def test_every_subcommand_has_a_description_and_an_example():
    for name, sub in subcommands().items():
        assert (sub.description or "").strip(), name
        assert sub.epilog and sub.epilog.startswith(f"example: rostersync {name}"), name
        assert sub.format_help().count("example: ") == 1


def test_the_table_printing_reads_take_json_and_its_help_names_what_it_replaces():
    subs = subcommands()
    for name in ("status", "sections", "section", "problems", "overrides", "guardians", "held", "plan"):
        (flag,) = [a for a in subs[name]._actions if "--json" in a.option_strings]
        assert flag.help == "JSON for scripts instead of the table", name
    for name in ("why", "resync"):  # a paragraph, summary lines: no table to speak of
        (flag,) = [a for a in subs[name]._actions if "--json" in a.option_strings]
        assert "table" not in flag.help, name


def test_the_exit_codes_are_in_the_epilog():
    epilog = cli.build_parser().format_help()
    for code, meaning in (("0", "done"), ("1", "failed action"), ("2", "configuration"), ("3", "Firestore")):
        line = next(line for line in epilog.splitlines() if line.strip().startswith(code + " "))
        assert meaning in line
    assert (cli.EXIT_OK, cli.EXIT_FAILED, cli.EXIT_CONFIG, cli.EXIT_UNREACHABLE) == (0, 1, 2, 3)


class HeldStore:
    def __init__(self, batches):
        self.batches = batches
        self.asked = []

    def held_batches(self, status):
        self.asked.append(status)
        return self.batches


def test_held_json_prints_the_batches_for_scripts(monkeypatch, capsys):
    store = HeldStore(
        [
            {"id": "b2", "status": "held", "removals": 7, "archives": 0, "reasons": ["7 of 9 from s1"]},
            {"id": "b1", "status": "held", "removals": 0, "archives": 21, "reasons": ["21 archives"]},
        ]
    )
    monkeypatch.setattr(cli, "_settings", lambda: None)
    monkeypatch.setattr(wiring, "store", lambda: store)
    assert cli.main(["held", "--json"]) == cli.EXIT_OK
    printed = json.loads(capsys.readouterr().out)
    assert [b["id"] for b in printed] == ["b1", "b2"]
    assert printed[1]["removals"] == 7 and store.asked == ["held"]
