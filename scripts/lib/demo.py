"""The demo: a sample district synced end to end on this machine, then a few changes in Clever.

Run by scripts/demo. Everything is real but Clever and Classroom, which are our HTTP simulators:
the Pub/Sub and Firestore emulators, and both Cloud Functions under functions-framework.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections import Counter

from google.cloud.firestore_v1.base_query import FieldFilter

from tests.sims.classroom_sim import ClassroomSimulator
from tests.sims.clever_sim import CleverSimulator
from tests.sims.district import make_district
from tests.sims.emulators import ToolMissing, check_tools, start_emulators
from tests.sims.stack import DEFAULT_SOURCE_DIR, FunctionServer, LocalStack

PROJECT = "rostersync-demo"
DOMAIN = "district.example.org"
ADMIN = f"admin@{DOMAIN}"


def writes(calls: Counter) -> Counter:
    return Counter({m: n for m, n in calls.items() if not m.endswith((".get", ".list")) and n})


def print_calls(title: str, calls: Counter) -> None:
    print(f"  {title}:")
    for method, n in sorted(calls.items()):
        print(f"    {method:<40} {n:>6}")


def print_problems(stack: LocalStack) -> None:
    query = stack.firestore_client().collection("problems").where(filter=FieldFilter("open", "==", True))
    problems = [d.to_dict() for d in query.stream()]
    print(f"\nOpen problems recorded in Firestore (collection 'problems'): {len(problems)}")
    for p in sorted(problems, key=lambda p: (p["kind"], p.get("section_id", ""))):
        who = p.get("email") or p.get("clever_id") or "-"
        print(f"  {p['kind']:<22} section {p.get('section_id', '-')}  user {who}")
        print(f"  {'':<22} {p.get('message', '')[:110]}")


def show_status(stack: LocalStack, serve_minutes: float | None) -> None:
    """`rostersync status` on the demo's data, then the status page (kept up with --status-page)."""
    print("\n4. What an administrator sees: rostersync status")
    result = subprocess.run(
        [sys.executable, "-m", "rostersync", "status"],
        cwd=DEFAULT_SOURCE_DIR,
        env={**os.environ, **stack.env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    print("\n".join("  " + line for line in (result.stdout or result.stderr).splitlines()))
    if not serve_minutes:
        print("\n  The status page shows the same, with every section and problem: scripts/demo --status-page")
        return
    page = FunctionServer("status_page", "http", env=stack.env).start()
    try:
        print(f"\n  The status page: {page.url} for {serve_minutes:g} minutes (Ctrl-C stops it sooner)", flush=True)
        time.sleep(serve_minutes * 60)
    finally:
        page.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sections", type=int, default=40)
    parser.add_argument("--students", type=int, default=600)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--status-page",
        nargs="?",
        const=10.0,
        type=float,
        metavar="MINUTES",
        help="at the end, serve the status page for this many minutes (default 10)",
    )
    args = parser.parse_args()
    try:
        check_tools()
    except ToolMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    print("Starting the Pub/Sub and Firestore emulators ...")
    pubsub, firestore = start_emulators(PROJECT)
    try:
        with (
            CleverSimulator() as clever,
            ClassroomSimulator(domain=DOMAIN, admin_email=ADMIN) as classroom,
        ):
            classroom.add_user(ADMIN, "District", "Admin")
            district = make_district(
                clever, seed=args.seed, sections=args.sections, students=args.students, domain=DOMAIN
            )
            for email, first, last in district.google_accounts:
                classroom.add_user(email, first, last)
            print(
                f"Sample district: {len(district.schools)} schools, {len(district.sections)} sections, "
                f"{len(district.teachers)} teachers, {len(district.students)} students; "
                f"{len(district.google_accounts)} of these users have Google accounts"
            )
            env = {
                "CLEVER_API_BASE": clever.base_url,
                "CLEVER_TOKEN": clever.token,
                "CLASSROOM_API_ENDPOINT": classroom.base_url,
                "ADMIN_SUBJECT": ADMIN,
                # One local process plays every applier instance: the cloud's per-instance limit is off.
                "CLASSROOM_CALLS_PER_MINUTE": "0",
            }
            with LocalStack(project=PROJECT, extra_env=env, emulators=(pubsub, firestore)) as stack:
                print("poll_clever and apply_roster_event are running under functions-framework.\n")

                print("1. First poll: no cursor yet, so rostersync bootstraps from Clever's section list")
                t0 = time.monotonic()
                result = stack.poll_and_wait(timeout=300)
                took = time.monotonic() - t0
                courses = classroom.courses()
                members = Counter()
                for course in courses:
                    roster = classroom.roster(course["id"])
                    members["teachers"] += len(roster["teachers"])
                    members["students"] += len(roster["students"])
                print(f"  sections read {result['sections_read']}, roster changes published {result['published']}")
                print(
                    f"  courses created {len(courses)} (all PROVISIONED: "
                    f"{all(c['courseState'] == 'PROVISIONED' for c in courses)})"
                )
                print(f"  teachers in courses {members['teachers']}, students in courses {members['students']}")
                print(f"  time from poll to the last change applied: {took:.1f} s")
                print_calls("Classroom API calls", writes(classroom.calls))
                print(f"    ({classroom.batch_requests} batch requests carried the member adds)")

                print("\n2. Changes in Clever: 3 students join, 1 leaves, a co-teacher joins, a primary teacher")
                print("   changes, a section is renamed, a new section appears and another is deleted")
                classroom.reset_counters()
                s = district.sections
                enrolled = set(clever.section(s[0])["students"])
                joiners = [
                    st
                    for st in district.students
                    if st not in enrolled
                    and st not in district.students_without_google
                    and st not in district.users_without_email
                ][:3]
                for st in joiners:
                    clever.add_student(s[0], st)
                clever.remove_student(s[0], clever.section(s[0])["students"][0])
                spare_teacher = next(
                    t
                    for t in district.teachers
                    if t not in district.teachers_without_google and t not in clever.section(s[1])["teachers"]
                )
                clever.add_teacher(s[1], spare_teacher)
                clever.set_primary_teacher(s[2], spare_teacher)
                clever.rename_section(s[3], clever.section(s[3])["name"] + " (Honors)")
                new_section = clever.add_section(
                    "Robotics - Lab - Period 8",
                    spare_teacher,
                    students=sorted(enrolled)[:5],
                    period="8",
                    subject="technology",
                )
                clever.delete_section(s[4])
                t0 = time.monotonic()
                result = stack.poll_and_wait(timeout=120)
                took = time.monotonic() - t0
                applied_writes = writes(classroom.calls)
                print(
                    f"  events read {result['events_read']}, roster changes {result['changes']} "
                    f"in {result['published']} Pub/Sub messages"
                )
                print(f"  time from poll to the last change applied: {took:.1f} s")
                print_calls("Classroom API calls", applied_writes)
                total = sum(applied_writes.values())
                # The new section's message stands for its course and its 5 students: 6 changes.
                applied = result["changes"] - 1 + 6
                print(
                    f"  Classroom writes: {total} for {result['changes']} roster changes standing for "
                    f"{applied} changes in Classroom: {total / applied:.2f} calls per applied change"
                )
                robotics = classroom.roster(f"d:clever-{new_section}")
                print(f"  new course {robotics['name']!r}: owner {robotics['owner']}")
                print(f"    with {len(robotics['students'])} students")
                archived = classroom.course(f"d:clever-{s[4]}")
                print(f"  deleted section's course is now {archived['courseState'] if archived else 'gone'}")

                print("\n3. A poll with nothing new")
                classroom.reset_counters()
                idle = stack.poll_and_wait()
                print(f"  published {idle['published']}, Classroom calls {sum(classroom.calls.values())}")

                print_problems(stack)
                show_status(stack, args.status_page)
    finally:
        pubsub.stop()
        firestore.stop()
    print("\nDone. Emulators and functions stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
