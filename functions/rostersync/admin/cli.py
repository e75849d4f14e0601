"""Administrator commands, run from a workstation with Application Default Credentials
(`gcloud auth application-default login`) and the same environment variables as the functions:

    pip install -e .    # once, from the repository: puts the `rostersync` command on PATH
    rostersync --project <project> replay-dead-letters --dry-run

The project: --project, else GOOGLE_CLOUD_PROJECT, else the one Application Default Credentials
name (gcloud's configured project, or a service-account key's).

One module-level function per subcommand, `cmd_<name>(args) -> exit status`; `main()` parses and
dispatches, and turns missing configuration into one line on stderr instead of a traceback.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
from collections.abc import Sequence

from rostersync.admin.views import STATES
from rostersync.config import ConfigError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_UNREACHABLE = 3


def _settings():
    from rostersync import wiring

    if not os.environ.get("GOOGLE_CLOUD_PROJECT", "").strip():
        # The settings (config.py) read the project from the environment, as in the functions.
        os.environ["GOOGLE_CLOUD_PROJECT"] = _default_project()
    return wiring.settings()


def _default_project() -> str:
    """The project Application Default Credentials name (gcloud's configuration, or a key file's)."""
    hint = "pass --project, set GOOGLE_CLOUD_PROJECT, or run 'gcloud config set project PROJECT'"
    try:
        import logging

        import google.auth
        from google.auth.exceptions import DefaultCredentialsError

        # Its warning about each place it looked in would repeat our one-line error.
        quiet = logging.getLogger("google.auth._default")
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            _, project = google.auth.default()
        except DefaultCredentialsError as exc:
            raise ConfigError(f"no project: {hint} (no Application Default Credentials: {exc})") from None
        finally:
            quiet.setLevel(level)
    except ImportError:  # pragma: no cover - google-auth is a requirement
        project = None
    if not project:
        raise ConfigError(f"no project: {hint}")
    return project


def cmd_replay_dead_letters(args: argparse.Namespace) -> int:
    """Republishes dead letters to the roster-events topic and marks them replayed."""
    from rostersync import wiring
    from rostersync.app.deadletters import describe_all, replay_dead_letters, summary

    s = _settings()
    publisher = None if args.dry_run else wiring.publisher()
    progress: list[_Progress] = []

    def on_item(n: int, total: int) -> None:
        if not progress:
            progress.append(_Progress(total, "replay"))
        progress[0].step()

    report = replay_dead_letters(
        wiring.dead_letter_store(),
        publisher,
        ids=args.id or (),
        dry_run=args.dry_run,
        limit=args.limit,
        on_item=on_item,
    )
    if progress:
        progress[0].close()
    for line in describe_all(report.items):
        print(line)
    print(f"{summary(report, args.dry_run)} (topic {s.roster_events_topic}, project {s.project})")
    return EXIT_OK if report.ok else EXIT_FAILED


def cmd_held(args: argparse.Namespace) -> int:
    """Lists the batches of removals and archives the mass-change brake is holding."""
    from rostersync import wiring

    _settings()
    batches = wiring.store().held_batches(None if args.all else "held")
    if args.json:
        _print_json(sorted(batches, key=lambda b: b["id"]))
        return EXIT_OK
    if not batches:
        print("no held batches" if not args.all else "no batches")
    for b in sorted(batches, key=lambda b: b["id"]):
        print(
            f"{b['id']}  {b.get('status', '?'):<9} {b.get('removals', 0)} removals, {b.get('archives', 0)} archives "
            f"in {_held_sections(b)} sections"
        )
        for reason in b.get("reasons", []):
            print(f"    why: {reason}")
        for line in b.get("sample", [])[:5]:
            print(f"    e.g. {line}")
    return EXIT_OK


def _held_sections(batch: dict) -> str:
    """A held batch lists at most 500 section ids (store.HELD_SECTIONS_LISTED); past that, "500+"."""
    listed = len(batch.get("sections", []))
    return f"{listed}+" if "section_count" in batch and batch["section_count"] is None else str(listed)


def _decide(batch_id: str, approve: bool) -> int:
    from rostersync import wiring

    _settings()
    store = wiring.store()
    found = store.held_batch(batch_id)
    if found is None:
        print(f"error: no held batch {batch_id!r} (see: rostersync held)", file=sys.stderr)
        return EXIT_FAILED
    meta, changes = found
    # The decision is taken on the condition that nobody took one meanwhile (store.decide_held): of
    # two administrators approving and discarding at once, one wins. An approval is claimed before
    # publishing ("approving") and may be run again if it was cut off: publishing twice is safe,
    # the applier skips what it has applied.
    allowed = ("held", "approving") if approve else ("held",)
    standing = store.decide_held(batch_id, "approving" if approve else "discarded", allowed)
    if standing is not None:
        print(f"error: batch {batch_id} is already {standing}", file=sys.stderr)
        return EXIT_FAILED
    if approve:
        # Older than what followed them? The applier skips such changes by their event ids.
        messages = wiring.publisher().publish(changes)
        print(f"published {len(changes)} held changes in {messages} messages")
        store.set_held_status(batch_id, "approved")
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
    from rostersync.app.reconcile import NotReofferable

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


def _course_action(what: str, action):
    """Runs adopt or link; a refusal or a failure is one line on stderr and None."""
    from rostersync.app.reconcile import NotAdoptable

    try:
        return action()
    except NotAdoptable as exc:
        print(f"error: {exc}", file=sys.stderr)
    except ConfigError:
        raise
    except Exception as exc:  # Classroom or Clever unreachable, refused...
        print(f"error: {what} failed: {type(exc).__name__}: {_cell(exc, 300)}", file=sys.stderr)
    return None


def cmd_link(args: argparse.Namespace) -> int:
    """Cross-listed sections share one course: its members are their union; its name and owner stay."""
    from rostersync import wiring

    admin = _admin()
    result = _course_action(
        "link", lambda: wiring.reconciler().link_sections(args.sections, args.course, admin.sections_with_course)
    )
    if result is None:
        return EXIT_FAILED
    for line in result.details:
        print(line)
    print(f"{result.changes_applied} Classroom changes to bring the course to the sections' members")
    return EXIT_OK


def cmd_adopt(args: argparse.Namespace) -> int:
    """Links a course a teacher already made to a section: the teacher keeps the class and its
    work; the sync manages its members from now on, never its name."""
    from rostersync import wiring

    _settings()
    others = _admin().sections_with_course(args.course)
    if others:
        print(f"error: course {args.course} is already linked to section {others[0]}", file=sys.stderr)
        return EXIT_FAILED
    result = _course_action("adopt", lambda: wiring.reconciler().adopt(args.section, args.course))
    if result is None:
        return EXIT_FAILED
    for line in result.details:
        print(line)
    print(
        f"section {args.section} now manages the members of course {args.course} "
        f"({result.changes_applied} Classroom changes); the teacher's name and members stay"
    )
    return EXIT_OK


# -- read commands: status, sections, section, problems, overrides, why ---------------------------


def _admin():
    from rostersync import wiring

    _settings()
    return wiring.admin_store()


def _print_json(value) -> None:
    from rostersync.admin.views import plain

    print(json.dumps(plain(value), indent=2, sort_keys=True, default=str))


# C0 and C1 control characters (ESC starts terminal escape sequences) and DEL: never printed.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# A spreadsheet reads a cell starting with one of these as a formula (Classroom's reasons start
# with @; SIS strings can start with = + -), or drops the leading tab/CR.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _plain(value) -> str:
    """Text with its whitespace runs as one space and no control characters."""
    text = "" if value is None else str(value)
    return _CONTROL.sub("", " ".join(text.split()))


def csv_cell(value) -> str:
    """A CSV cell a spreadsheet shows as text: control characters removed (tab and newlines as
    spaces) and a formula-looking start quoted with an apostrophe (OWASP's CSV injection advice)."""
    text = "" if value is None else str(value)
    if text.startswith(_FORMULA_START):
        return "'" + _plain(text)
    text = _plain(text)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _cell(value, width: int = 60) -> str:
    text = _plain(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _table(rows: list[dict], columns: Sequence[str], empty: str) -> None:
    if not rows:
        print(empty)
        return
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _no_section(section_id: str) -> int:
    print(
        f"error: no section {section_id!r} in Firestore (see: rostersync sections)",
        file=sys.stderr,
    )
    return EXIT_FAILED


def cmd_status(args: argparse.Namespace) -> int:
    """The cursor, the last poll, sections by state, open problems, dead letters, overrides, held batches."""
    from rostersync.admin import views as admin

    s = _settings()
    st = admin.status(_admin())
    st["project"] = s.project
    if args.json:
        _print_json(st)
        return EXIT_OK
    cursor, poll = st["cursor"], st["last_poll"] or {}
    print(f"project          {s.project}")
    print(f"sync             {'PAUSED since ' + str(st['paused_at']) if st['paused'] else 'running'}")
    print(f"cursor           {cursor['last_event_id'] or '(none yet: the next poll bootstraps)'}")
    print(f"bootstrapped at  {cursor['bootstrapped_at'] or '-'}")
    if st.get("last_rebootstrap"):
        again = st["last_rebootstrap"]
        print(f"re-bootstrapped  {again.get('at', '?')}: {_cell(str(again.get('reason', '')), 200)}")
    if poll:
        counts = ", ".join(
            f"{k} {poll[k]}" for k in ("events_read", "changes", "published", "held", "bad_events") if poll.get(k)
        )
        print(f"last poll        {poll.get('at', '?')}: {poll.get('outcome', '?')} ({counts or 'nothing new'})")
        for problem in poll.get("problems") or []:
            print(f"    poll problem: {_cell(problem, 200)}")
    else:
        print("last poll        (never)")
    by_state = ", ".join(f"{k} {v}" for k, v in st["sections"]["by_state"].items() if v)
    print(f"sections         {st['sections']['total']}" + (f" ({by_state})" if by_state else ""))
    print(f"open problems    {st['open_problems']}")
    print(f"overrides        {st['overrides']}")
    push = st["push_notifications"]
    if push["last_error"]:
        print(f"push notif.      RENEWAL FAILED: {_cell(push['last_error'], 160)} (rostersync consent-notifications)")
    elif push["registration_id"]:
        print(f"push notif.      registered until {push['expiry_time']} (renewed {push['renewed_at']})")
    else:
        print("push notif.      not registered (teachers' changes wait for the nightly reconcile; see docs/deploy.md)")
    print(f"dead letters     {st['dead_letters_unreplayed']} not replayed")
    print(f"held batches     {st['held_batches']}")
    for line in oneroster_status_lines(st.get("oneroster")):
        print(line)
    if st.get("guardians"):
        print("guardians        " + ", ".join(f"{k} {v}" for k, v in sorted(st["guardians"].items())))
    return EXIT_OK


def oneroster_status_lines(oneroster: dict | None) -> list[str]:
    """The OneRoster source's part of `rostersync status` (nothing for a Clever district)."""
    if not oneroster:
        return []
    last_full = oneroster.get("last_full_read") or "never"
    lines = [f"oneroster since  {oneroster.get('since') or '-'} (last complete full read {last_full})"]
    poll = oneroster.get("last_poll") or {}
    if poll:
        kind = "full read" if poll.get("full_read") else "delta"
        counts = ", ".join(
            f"{k} {poll[k]}"
            for k in ("classes_read", "users_read", "enrollments_read", "users_fetched", "changes", "published")
            if poll.get(k)
        )
        lines.append(
            f"oneroster poll   {poll.get('at', '?')}: {poll.get('outcome', '?')}, {kind} ({counts or 'nothing new'})"
        )
        if oneroster.get("complete") is False:
            lines.append("    NOT COMPLETE: no removal was inferred from this read, and the full read is tried again")
            lines += [f"    why: {_cell(reason, 200)}" for reason in oneroster.get("incomplete_reasons") or []]
        for problem in poll.get("problems") or []:
            lines.append(f"    poll problem: {_cell(problem, 200)}")
    bundle = oneroster.get("last_bundle") or {}
    if bundle:
        lines.append(f"oneroster bundle {bundle.get('name')}: {bundle.get('outcome')} ({bundle.get('at', '?')})")
    return lines


def cmd_sections(args: argparse.Namespace) -> int:
    """The linked sections (all, or in one state)."""
    rows = _admin().sections(args.state)
    if args.json:
        _print_json(rows)
        return EXIT_OK
    for r in rows:
        r["name"] = r.get("name_override") or r.get("name_set") or r.get("section_name")
    _table(rows, ["section_id", "state", "course_id", "owner_email", "name"], "no sections")
    return EXIT_OK


def cmd_section(args: argparse.Namespace) -> int:
    """One section's course, state, owner, members we manage, overrides and problems, with the link."""
    from rostersync.admin import views as admin

    store = _admin()
    link = store.section(args.section)
    if link is None:
        return _no_section(args.section)
    detail = admin.section_detail(link, store.overrides(args.section), store.problems(args.section))
    if args.json:
        _print_json(detail)
        return EXIT_OK
    for key in ("section_id", "section_name", "state", "course_id", "alias", "classroom_link", "owner_email"):
        print(f"{key:<16} {detail.get(key) or '-'}")
    if detail.get("failed_owner_email"):
        print(f"{'failed owner':<16} {detail['failed_owner_email']}")
    print(f"{'name set':<16} {detail.get('name_set') or '-'}")
    if detail.get("shared_with"):
        print(f"{'cross-listed':<16} shares the course with {', '.join(detail['shared_with'])} (rostersync link)")
    if detail.get("name_override"):
        print(f"{'name override':<16} {detail['name_override']} (a teacher's rename: Clever's are not applied)")
    if detail.get("teacher_added"):
        print(f"{'teacher added':<16} {', '.join(detail['teacher_added'])}")
    members = detail["members"]
    print(f"members          {', '.join(f'{k} {len(v)}' for k, v in members.items()) or 'none'}")
    for status_name, people in members.items():
        for m in people:
            extra = f" ({m['reason']})" if m.get("reason") else ""
            who = f"{m.get('role') or '?':<8} {m.get('email') or '-'}"
            print(f"    {status_name:<19} {who}  clever {m['clever_id']}{extra}")
    print(f"overrides        {len(detail['overrides'])}")
    for o in detail["overrides"]:
        print(f"    {o.get('kind')}: {_cell(o.get('detail'), 100)}")
    print(f"open problems    {len(detail['problems'])}")
    for p in detail["problems"]:
        print(f"    {p.get('kind')} {p.get('email') or p.get('clever_id') or ''}: {_cell(p.get('message'), 100)}")
    return EXIT_OK


PROBLEM_COLUMNS = ["kind", "section_id", "clever_id", "email", "reason", "message", "hint"]


def cmd_problems(args: argparse.Namespace) -> int:
    """The open problems: why Classroom and Clever differ, and what to do about it, grouped by kind
    (each person once, with their sections); --csv and --json give one row a problem."""
    from rostersync.admin.views import plain

    rows = plain(_admin().problems(args.section))
    if args.json:
        _print_json(rows)
    elif args.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=[*PROBLEM_COLUMNS, "last_seen"], extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: csv_cell(r.get(k)) for k in [*PROBLEM_COLUMNS, "last_seen"]})
    elif args.flat:
        for r in rows:
            r["user"] = r.get("email") or r.get("clever_id") or ""
        _table(rows, ["kind", "section_id", "user", "reason", "hint"], "no open problems")
    else:
        _print_problem_groups(rows)
    return EXIT_OK


def _print_problem_groups(rows: list[dict]) -> None:
    """One block a kind of problem, as the status page groups them: the count, what to do (once),
    then each person once with their sections (or the sections, for problems with no person)."""
    from rostersync.admin.views import group_problems

    groups = group_problems(rows, masked=False)  # the administrator's own terminal: emails in full
    if not groups:
        print("no open problems")
        return
    people = sum(len(g["people"]) for g in groups)
    print(f"{len(rows)} open problems in {len(groups)} kinds ({people} people)")
    for g in groups:
        who = f"{len(g['people'])} people in " if g["people"] else ""
        print(f"\n{g['label']} ({g['kind']}): {g['count']} problems, {who}{len(g['sections'])} sections")
        if g["hint"]:
            print(f"  what to do: {_cell(g['hint'], 200)}")
        if g["reasons"]:
            print(f"  reasons:    {', '.join(g['reasons'])}")
        if g["people"]:
            width = max(len(p["email"] or "-") for p in g["people"])
            for p in g["people"]:
                more = f" (+{len(p['sections']) - 5})" if len(p["sections"]) > 5 else ""
                sections = ", ".join(p["sections"][:5]) + more
                print(f"    {(p['email'] or '-'):<{width}}  {p['clever_id']:<24} {p['role'] or '':<8} {sections}")
        else:
            print("  sections:   " + ", ".join(sec["section_id"] for sec in g["sections"]))
        print(f"  e.g.        {_cell(g['example'], 160)}")


def cmd_overrides(args: argparse.Namespace) -> int:
    """What teachers changed by hand and the sync respects (and what administrators decided)."""
    rows = _admin().overrides(args.section)
    if args.json:
        _print_json(rows)
    else:
        _table(rows, ["kind", "section_id", "course_id", "email", "detail"], "no overrides")
    return EXIT_OK


def cmd_why(args: argparse.Namespace) -> int:
    """One paragraph: why a course, or one member (Clever id or email), is or is not in Classroom."""
    from rostersync.admin import views as admin

    store = _admin()
    if args.section.startswith("guardians-"):
        # A student's guardians (GUARDIANS=invite): `why guardians-STUDENT [contact or email]`.
        student = args.section.removeprefix("guardians-")
        text = admin.why_guardians(
            student, store.guardian_records(student), store.problems(args.section), store.audit(args.section), args.user
        )
        if args.json:
            _print_json({"section_id": args.section, "user": args.user, "why": text})
        else:
            print(text)
        return EXIT_OK
    link = store.section(args.section)
    if link is None:
        return _no_section(args.section)
    trail = store.audit(args.section, args.user)
    text = admin.why(link, store.overrides(args.section), store.problems(args.section), args.user, trail)
    if args.json:
        _print_json({"section_id": args.section, "user": args.user, "why": text, "audit": admin.plain(trail)})
    else:
        print(text)
    return EXIT_OK


def cmd_resync(args: argparse.Namespace) -> int:
    """Reconciles one section (or, with --all, every linked section, paced as the nightly pass) now,
    in this process: teachers' changes become overrides, then the section is applied as Clever has it."""
    from rostersync import wiring
    from rostersync.retry import Deadline

    if bool(args.section) == bool(args.all):
        print("error: give a section id or --all", file=sys.stderr)
        return EXIT_FAILED
    if args.section and _admin().section(args.section) is None:
        return _no_section(args.section)
    reconciler = wiring.reconciler()
    what = args.section or "every linked section"
    try:
        if args.all:
            progress = _Progress(len(_admin().sections()), "resync")
            try:
                result = reconciler.reconcile_all(
                    Deadline(wiring.settings().reconcile_time_budget_seconds), on_section=lambda _: progress.step()
                )
            finally:
                progress.close()
        else:
            result = reconciler.reconcile_section(args.section)
    except Exception as exc:  # Classroom or Clever unreachable, refused...
        if isinstance(exc, ConfigError):
            raise
        print(f"error: resync of {what} failed: {type(exc).__name__}: {_cell(exc, 300)}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        _print_json(result.to_json())
        return EXIT_OK
    for line in result.details:
        print(line)
    label = f"section {args.section}" if args.section else f"{result.sections} sections"
    unfinished = "" if result.finished else " (time budget spent: run it again to go on)"
    print(
        f"{label} reconciled: {result.overrides} overrides found, {result.changes_applied} changes applied{unfinished}"
    )
    return EXIT_OK


class _Progress:
    """A progress bar on stderr for long work, only when stderr is a terminal (scripts see none)."""

    def __init__(self, total: int, label: str):
        self._total, self._label, self._done = max(total, 1), label, 0
        self._on = sys.stderr.isatty()

    def step(self, n: int = 1) -> None:
        self._done += n
        if self._on:
            width = 30
            filled = width * min(self._done, self._total) // self._total
            bar = "#" * filled + "-" * (width - filled)
            print(f"\r{self._label} [{bar}] {self._done}/{self._total}", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._on:
            print(file=sys.stderr, flush=True)


def cmd_plan(args: argparse.Namespace) -> int:
    """A dry run: reads Clever, Classroom and Firestore and prints what the sync would change (create
    courses, add and remove members, rename, change owners, archive), overrides respected. Nothing
    is written to Classroom or Firestore: the real rules and reconcile pass run against ports that
    only record the writes."""
    from rostersync import wiring
    from rostersync.admin.dryrun import PlanLog

    _settings()
    log = PlanLog()
    admin_store = _admin()
    if args.section:
        linked = admin_store.section(args.section) is not None
        targets = [(args.section, linked)]
    else:
        linked_ids = {s["section_id"] for s in admin_store.sections()}
        clever_ids = wiring.clever_section_ids()
        targets = [(sid, True) for sid in sorted(linked_ids)]
        targets += [(sid, False) for sid in sorted(set(clever_ids) - linked_ids)]
    reconciler = wiring.reconciler(dry_run=log)
    progress = _Progress(len(targets), "plan")
    details: list[str] = []
    try:
        for section_id, is_linked in targets:
            log.section_id = section_id
            result = reconciler.reconcile_section(section_id) if is_linked else reconciler.sync_new_section(section_id)
            details += result.details
            progress.step()
    except ConfigError:
        raise
    except Exception as exc:  # Classroom or Clever unreachable, refused...
        progress.close()
        print(
            f"error: plan failed at section {log.section_id}: {type(exc).__name__}: {_cell(exc, 300)}", file=sys.stderr
        )
        return EXIT_FAILED
    progress.close()
    if not args.section and wiring.settings().guardians_on:
        # Every student's guardians too (GUARDIANS=invite), with the same dry-run ports.
        log.section_id = "guardians"
        wiring.guardian_reconciler(dry_run=log).reconcile_all()
    if args.section and not targets[0][1] and any("not in Clever" in d for d in details):
        print(f"error: no section {args.section!r} in Firestore or in Clever", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        _print_json(
            {
                "changes": [c.to_json() for c in log.changes],
                "overrides": log.overrides,
                "problems": log.problems,
                "notes": details,
                "sections": len(targets),
            }
        )
        return EXIT_OK
    rows = [c.to_json() for c in log.changes]
    _table(rows, ["section_id", "action", "detail"], "nothing to change")
    for o in log.overrides:
        print(f"override respected: {o['section_id']} {o['kind']}: {o['detail']}")
    for line in details:
        print(line)
    print(f"{len(log.changes)} changes planned over {len(targets)} sections; nothing was written")
    return EXIT_OK


def cmd_guardians(args: argparse.Namespace) -> int:
    """A student's guardians and invitations as the sync recorded them (state, the event that
    decided it), their open problems and the audit trail; with --classroom, also what Classroom has."""
    from rostersync.domain.guardians import guardian_key

    store = _admin()
    records = store.guardian_records(args.student)
    key = guardian_key(args.student)
    problems = store.problems(key)
    trail = store.audit(key)
    live = None
    if args.classroom:
        from rostersync import wiring

        student = next((r.get("student_email") for r in records if r.get("student_email")), None) or args.student
        classroom = wiring._classroom()
        live = {
            "invitations": classroom.guardian_invitations(student, states=("PENDING", "COMPLETE")),
            "guardians": classroom.guardians(student),
        }
    if args.json:
        _print_json(
            {"student_id": args.student, "records": records, "problems": problems, "audit": trail, "classroom": live}
        )
        return EXIT_OK
    _table(records, ["email", "contact_id", "state", "origin", "event_id", "reason"], "no guardian records")
    for p in problems:
        print(f"problem {p.get('kind')}: {p.get('message')} (hint: {p.get('hint')})")
    for r in trail[-20:]:
        print(f"{r.get('at') or ''} {r.get('outcome')}: {r.get('what')} (event {r.get('event_id') or '-'})")
    if live is not None:
        for inv in live["invitations"]:
            print(
                f"classroom invitation {inv.get('invitationId')}: {inv.get('invitedEmailAddress')} {inv.get('state')}"
            )
        for g in live["guardians"]:
            print(f"classroom guardian {g.get('guardianId')}: {g.get('invitedEmailAddress')}")
    return EXIT_OK


def cmd_pause(args: argparse.Namespace) -> int:
    """Sets sync_state/clever.paused: no polls, no reconcile, and the appliers hold what reaches them."""
    from rostersync.adapters.control import set_paused

    s = _settings()
    set_paused(_admin().client, True, args.reason or "")
    print(
        "sync paused: poll_clever and reconcile_courses do nothing, and within "
        f"{s.pause_check_seconds} s the appliers hold each change in dead_letters instead of applying it, "
        "until 'rostersync resume'"
    )
    return EXIT_OK


def cmd_resume(args: argparse.Namespace) -> int:
    """Clears sync_state/clever.paused and publishes again the changes the appliers held meanwhile."""
    import time

    from rostersync import wiring
    from rostersync.adapters.control import set_paused
    from rostersync.app.deadletters import replay_dead_letters, summary

    s = _settings()
    set_paused(_admin().client, False)
    print("sync resumed: the next scheduled poll goes on from the cursor")
    held = [i for i, doc in wiring.dead_letter_store().unreplayed_dead_letters(10_000) if doc.get("held_while_paused")]
    if not held:
        return EXIT_OK
    # An applier trusts its last look at the flag for PAUSE_CHECK_SECONDS: one that still thinks
    # the sync is paused would hold a republished change again.
    print(f"waiting {s.pause_check_seconds} s for the appliers to see it, then publishing {len(held)} held changes")
    time.sleep(s.pause_check_seconds + 1)
    report = replay_dead_letters(wiring.dead_letter_store(), wiring.publisher(), ids=held)
    print(summary(report, False).replace("replayed", "published again"))
    return EXIT_OK if report.ok else EXIT_FAILED


def cmd_forget(args: argparse.Namespace) -> int:
    """Removes a person's data from every collection (a deletion request): their member entries,
    problems, overrides, audit entries, held and dead-lettered changes, OneRoster enrollments.
    Without --yes it only says what it would remove. Leaves one audit entry, by id only."""
    from rostersync.adapters.forget_store import FirestoreForgetStore
    from rostersync.domain.forget import audit_entry, plan, resolve
    from rostersync.privacy import redact

    s = _settings()
    store = FirestoreForgetStore.connect(s.project, s.firestore_database, s.audit_retention_days)
    done: list = []
    who = None
    for _ in range(5):  # a pass that lost a race with the sync's own writes is planned again
        documents = list(store.documents())
        who = resolve(args.user, documents) if who is None else who
        actions = plan(documents, who)
        if not actions:
            break
        counts: dict[str, dict[str, int]] = {}
        for a in actions:
            counts.setdefault(a.collection, {"delete": 0, "update": 0})[a.kind] += 1
        if not args.yes:
            print(f"would forget {len(who.ids)} id(s) and {len(who.emails)} email(s) in {len(actions)} documents:")
            for collection, n in sorted(counts.items()):
                print(f"  {collection}: {n['delete']} deleted, {n['update']} rewritten")
            for a in actions[:50]:
                print(f"    {a.kind} {redact(a.path)}")
            print("dry run: nothing was changed; run again with --yes to remove them")
            return EXIT_OK
        conflicts = store.apply(actions)
        done += actions
        if not conflicts:
            break
    else:
        print("error: the documents kept changing; run forget again", file=sys.stderr)
        return EXIT_FAILED
    if not done:
        print("nothing to forget: no document names that person")
        return EXIT_OK
    store.add_audit(audit_entry(who, done))
    print(f"forgot them in {len(done)} documents; the audit trail records it by id only")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    from rostersync import __version__

    parser = argparse.ArgumentParser(
        prog="rostersync",
        description=(
            "rostersync administrator commands: read what the sync knows (Firestore), then steer it.\n"
            "Reads come first (status, then the details), then the commands that change something."
        ),
        epilog=(
            "exit codes:\n"
            "  0  done\n"
            "  1  a bad id or a failed action (one line on stderr)\n"
            "  2  missing configuration or credentials\n"
            "  3  Firestore does not answer (within 10 seconds)\n"
            "\n"
            "example: rostersync status; rostersync problems; rostersync why SECTION [USER]\n"
            "`rostersync COMMAND --help` describes one command, with an example."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"rostersync {__version__}")
    parser.add_argument(
        "--project",
        help="the Google Cloud project (default: GOOGLE_CLOUD_PROJECT, else Application Default Credentials' project)",
    )
    parser.add_argument(
        "--log-format",
        choices=("human", "json"),
        default="human",
        help="how log lines on stderr look: text for a terminal (the default), or JSON in Cloud Logging's "
        "structured format for a job whose output Cloud Logging collects",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, func, help_text: str, example: str, json_help: str | None = None):
        """A subcommand with a one-line help, its function's docstring as description and an example;
        `json_help` adds --json (what it prints instead)."""
        sub = commands.add_parser(name, help=help_text, description=func.__doc__, epilog=f"example: {example}")
        if json_help:
            sub.add_argument("--json", action="store_true", help=json_help)
        sub.set_defaults(func=func)
        return sub

    table = "JSON for scripts instead of the table"

    # -- reads: what the sync knows -------------------------------------------------------------
    command(
        "status",
        cmd_status,
        "the cursor, the last poll, sections by state, problems, dead letters",
        "rostersync status",
        table,
    )
    sections = command(
        "sections", cmd_sections, "list the linked sections", "rostersync sections --state active", table
    )
    sections.add_argument("--state", choices=STATES, help="only sections in this state")
    section = command(
        "section",
        cmd_section,
        "one section: course, owner, members, overrides, problems",
        "rostersync section SECTION",
        table,
    )
    section.add_argument("section", help="the Clever section id")
    problems = command(
        "problems",
        cmd_problems,
        "the open problems by kind, with what to do",
        "rostersync problems --csv > problems.csv",
        table,
    )
    problems.add_argument("--csv", action="store_true", help="CSV for a spreadsheet (one row a problem)")
    problems.add_argument("--flat", action="store_true", help="one table row a problem instead of groups by kind")
    problems.add_argument("--section", help="only this section's")
    overrides = command(
        "overrides",
        cmd_overrides,
        "what teachers changed by hand and the sync respects",
        "rostersync overrides --section SECTION",
        table,
    )
    overrides.add_argument("--section", help="only this section's")
    why = command(
        "why",
        cmd_why,
        "why a course or a member is (or is not) in Classroom",
        "rostersync why SECTION student@district.example.org",
        "JSON for scripts: the paragraph and the audit trail it was drawn from",
    )
    why.add_argument("section", help="the Clever section id (or guardians-STUDENT for a student's guardians)")
    why.add_argument("user", nargs="?", help="a member's Clever id or email (default: the course itself)")
    guardians = command(
        "guardians",
        cmd_guardians,
        "a student's guardians and invitations (GUARDIANS=invite)",
        "rostersync guardians STUDENT --classroom",
        table,
    )
    guardians.add_argument("student", help="the student's Clever id")
    guardians.add_argument("--classroom", action="store_true", help="also read Classroom's invitations and guardians")
    held = command(
        "held",
        cmd_held,
        "list the removals and archives the mass-change brake is holding",
        "rostersync held --all",
        table,
    )
    held.add_argument("--all", action="store_true", help="also approved and discarded batches")
    plan = command(
        "plan",
        cmd_plan,
        "a dry run: what the sync would change, writing nothing",
        "rostersync plan --section SECTION",
        table,
    )
    plan.add_argument("--section", help="only this section (default: every linked section and every new one)")

    # -- writes: what changes Classroom or Firestore --------------------------------------------
    resync = command(
        "resync",
        cmd_resync,
        "reconcile one section (or --all) now (respects overrides)",
        "rostersync resync SECTION",
        "JSON for scripts: the reconcile result instead of its summary lines",
    )
    resync.add_argument("section", nargs="?", help="the Clever section id")
    resync.add_argument("--all", action="store_true", help="every linked section, paced like the nightly pass")
    for name, func, what in (("approve", cmd_approve, "apply"), ("discard", cmd_discard, "drop")):
        sub = command(name, func, f"{what} a held batch of removals and archives", f"rostersync {name} BATCH")
        sub.add_argument("batch", help="the batch id, as `held` lists it")
    reoffer = command(
        "reoffer", cmd_reoffer, "offer a declined course to its teacher again", "rostersync reoffer SECTION"
    )
    reoffer.add_argument("section", help="the Clever section id")
    adopt = command(
        "adopt", cmd_adopt, "link a course a teacher already made to a section", "rostersync adopt SECTION COURSE"
    )
    adopt.add_argument("section", help="the Clever section id (not linked yet)")
    adopt.add_argument("course", help="the Classroom course id")
    link = command(
        "link",
        cmd_link,
        "cross-listed sections share one course (members are their union)",
        "rostersync link SECTION_A SECTION_B d:clever-SECTION_A",
    )
    link.add_argument("sections", nargs="+", help="two or more Clever section ids")
    link.add_argument("course", help="the Classroom course id (or alias, e.g. d:clever-<section>)")
    replay = command(
        "replay-dead-letters",
        cmd_replay_dead_letters,
        "republish dead-lettered roster changes (all unreplayed ones, or --id)",
        "rostersync replay-dead-letters --dry-run",
    )
    replay.description = (
        "Publishes dead letters from Firestore (dead_letters) again to ROSTER_EVENTS_TOPIC, with the "
        "section id as ordering key and their original attributes, and marks them replayed. Fix the "
        "cause first (the applier's log says why they failed)."
    )
    replay.add_argument(
        "--id", action="append", metavar="ID", help="a dead letter's id (repeatable); default: all unreplayed"
    )
    replay.add_argument("--dry-run", action="store_true", help="list what would be replayed, publish nothing")
    replay.add_argument("--limit", type=int, default=1000, help="at most this many unreplayed ones (default 1000)")
    pause = command(
        "pause",
        cmd_pause,
        "stop polling, reconciling and applying (sync_state/clever.paused)",
        "rostersync pause --reason 'SIS export under repair'",
    )
    pause.add_argument("--reason", help="why, kept in sync_state/clever")
    command("resume", cmd_resume, "sync again, and publish the changes held meanwhile", "rostersync resume")
    forget = command(
        "forget",
        cmd_forget,
        "remove a person's data from every collection (dry run unless --yes)",
        "rostersync forget student@district.example.org --yes",
    )
    forget.add_argument("user", help="Clever id, OneRoster sourcedId or email")
    forget.add_argument("--yes", action="store_true", help="remove it (without: only say what would go)")
    consent = command(
        "consent-notifications",
        cmd_consent_notifications,
        "one-time: an administrator's OAuth grant for Classroom push notifications (Secret Manager)",
        "rostersync consent-notifications --client-secrets client_secret.json --secret projects/P/secrets/S",
    )
    consent.add_argument(
        "--client-secrets", required=True, help="the OAuth client JSON (Desktop app) from the Cloud console"
    )
    consent.add_argument("--secret", required=True, help="projects/P/secrets/S: the secret terraform made")
    consent.add_argument("--login-hint", help="the administrator's email")
    consent.add_argument(
        "--secret-manager-endpoint", default="https://secretmanager.googleapis.com/", help=argparse.SUPPRESS
    )
    consent.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the browser")
    return parser


def cmd_consent_notifications(args: argparse.Namespace) -> int:
    """One-time: an administrator's OAuth consent for Classroom push notifications, kept in Secret Manager."""
    from dataclasses import replace

    from rostersync.adapters.secret_store import SecretStore
    from rostersync.admin.consent import ConsentError, grant_json, read_client_secrets, run_consent

    try:
        with open(args.client_secrets, encoding="utf-8") as f:
            request = replace(read_client_secrets(f.read()), login_hint=args.login_hint or "")
    except (OSError, ConsentError) as exc:
        raise ConfigError(f"--client-secrets {args.client_secrets}: {exc}") from None

    # The URL must reach whoever reads our stdout (a person, or a test through a pipe) at once.
    sys.stdout.reconfigure(line_buffering=True)
    try:
        info = run_consent(request, timeout=args.timeout)
    except ConsentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    version = SecretStore(args.secret_manager_endpoint).add_version(args.secret, grant_json(info))
    print(f"stored the grant as {version}; renew_classroom_registration uses it from its next run")
    return EXIT_OK


def _setup_logging(fmt: str) -> None:
    """The CLI's own log records go to stderr (stdout carries its output: tables, CSV, JSON). Only
    warnings and errors unless LOG_LEVEL asks for more: the handlers it calls log every step at INFO."""
    import logging

    from rostersync import logs

    handler = logs.setup(fmt, stream=sys.stderr)
    level = os.environ.get("LOG_LEVEL", "").strip().upper()
    handler.setLevel(level if level in ("DEBUG", "INFO", "WARNING", "ERROR") else logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:

    from rostersync.adapters.admin_store import UnreachableError

    args = build_parser().parse_args(argv)
    # The libraries' warnings (and LOG_LEVEL's more) on stderr, redacted like the functions' logs.
    _setup_logging(args.log_format)
    if args.project:
        os.environ["GOOGLE_CLOUD_PROJECT"] = args.project
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"error: configuration: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except UnreachableError as exc:
        where = os.environ.get("FIRESTORE_EMULATOR_HOST") or "the project's Firestore"
        print(f"error: cannot read Firestore ({where}): {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
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
