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
