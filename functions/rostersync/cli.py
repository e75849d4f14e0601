"""Administrator commands, run from a workstation with Application Default Credentials
(`gcloud auth application-default login`) and the same environment variables as the functions:

    cd functions && GOOGLE_CLOUD_PROJECT=<project> python -m rostersync replay-dead-letters --dry-run

One module-level function per subcommand, `cmd_<name>(args) -> exit status`; `main()` parses and
dispatches, and turns missing configuration into one line on stderr instead of a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from rostersync.config import ConfigError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2


def _settings():
    from rostersync import wiring

    if not os.environ.get("GOOGLE_CLOUD_PROJECT", "").strip():
        raise ConfigError("GOOGLE_CLOUD_PROJECT is not set: the project rostersync runs in")
    return wiring.settings()


def cmd_replay_dead_letters(args: argparse.Namespace) -> int:
    """Republishes dead letters to the roster-events topic and marks them replayed."""
    from rostersync import wiring
    from rostersync.deadletters import describe_all, replay_dead_letters, summary

    s = _settings()
    publisher = None if args.dry_run else wiring.publisher()
    report = replay_dead_letters(
        wiring.dead_letter_store(), publisher, ids=args.id or (), dry_run=args.dry_run, limit=args.limit
    )
    for line in describe_all(report.items):
        print(line)
    print(f"{summary(report, args.dry_run)} (topic {s.roster_events_topic}, project {s.project})")
    return EXIT_OK if report.ok else EXIT_FAILED


def cmd_held(args: argparse.Namespace) -> int:
    """Lists the batches of removals and archives the mass-change brake is holding."""
    from rostersync import wiring

    _settings()
    batches = wiring.store().held_batches(None if args.all else "held")
    if not batches:
        print("no held batches" if not args.all else "no batches")
    for b in sorted(batches, key=lambda b: b["id"]):
        print(
            f"{b['id']}  {b.get('status', '?'):<9} {b.get('removals', 0)} removals, {b.get('archives', 0)} archives "
            f"in {len(b.get('sections', []))} sections"
        )
        for reason in b.get("reasons", []):
            print(f"    why: {reason}")
        for line in b.get("sample", [])[:5]:
            print(f"    e.g. {line}")
    return EXIT_OK


def _decide(batch_id: str, approve: bool) -> int:
    from rostersync import wiring

    _settings()
    store = wiring.store()
    found = store.held_batch(batch_id)
    if found is None:
        print(f"error: no held batch {batch_id!r} (see: python -m rostersync held)", file=sys.stderr)
        return EXIT_FAILED
    meta, changes = found
    if meta.get("status") != "held":
        print(f"error: batch {batch_id} is already {meta.get('status')}", file=sys.stderr)
        return EXIT_FAILED
    if approve:
        # Older than what followed them? The applier skips such changes by their event ids.
        messages = wiring.publisher().publish(changes)
        print(f"published {len(changes)} held changes in {messages} messages")
    store.set_held_status(batch_id, "approved" if approve else "discarded")
    print(f"batch {batch_id} {'approved' if approve else 'discarded'}")
    return EXIT_OK


def cmd_approve(args: argparse.Namespace) -> int:
    """Applies a held batch: its changes are published like any other."""
    return _decide(args.batch, approve=True)


def cmd_discard(args: argparse.Namespace) -> int:
    """Drops a held batch: its changes are never applied (a later bootstrap or reconcile may still
    bring Classroom in line with Clever, if Clever keeps saying so)."""
    return _decide(args.batch, approve=False)


def cmd_reoffer(args: argparse.Namespace) -> int:
    """Offers a declined course to its teacher again and catches it up with Clever."""
    from rostersync import wiring
    from rostersync.reconcile import NotReofferable

    _settings()
    try:
        result = wiring.reconciler().reoffer(args.section)
    except NotReofferable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    for line in result.details:
        print(line)
    print(f"section {args.section} re-offered: the course is PROVISIONED for its teacher again")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rostersync", description="rostersync administrator commands")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    replay = commands.add_parser(
        "replay-dead-letters",
        help="republish dead-lettered roster changes (all unreplayed ones, or --id)",
        description=(
            "Publishes dead letters from Firestore (dead_letters) again to ROSTER_EVENTS_TOPIC, with the "
            "section id as ordering key and their original attributes, and marks them replayed. Fix the "
            "cause first (the applier's log says why they failed)."
        ),
    )
    replay.add_argument(
        "--id", action="append", metavar="ID", help="a dead letter's id (repeatable); default: all unreplayed"
    )
    replay.add_argument("--dry-run", action="store_true", help="list what would be replayed, publish nothing")
    replay.add_argument("--limit", type=int, default=1000, help="at most this many unreplayed ones (default 1000)")
    replay.set_defaults(func=cmd_replay_dead_letters)

    reoffer = commands.add_parser("reoffer", help="offer a declined course to its teacher again")
    reoffer.add_argument("section", help="the Clever section id")
    reoffer.set_defaults(func=cmd_reoffer)

    held = commands.add_parser("held", help="list the removals and archives the mass-change brake is holding")
    held.add_argument("--all", action="store_true", help="also approved and discarded batches")
    held.set_defaults(func=cmd_held)
    for name, func, what in (("approve", cmd_approve, "apply"), ("discard", cmd_discard, "drop")):
        sub = commands.add_parser(name, help=f"{what} a held batch of removals and archives")
        sub.add_argument("batch", help="the batch id, as `held` lists it")
        sub.set_defaults(func=func)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"error: configuration: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except Exception as exc:
        if type(exc).__name__ == "DefaultCredentialsError":
            print(
                f"error: no Google credentials ({exc}); run 'gcloud auth application-default login'",
                file=sys.stderr,
            )
            return EXIT_CONFIG
        raise


if __name__ == "__main__":
    sys.exit(main())
