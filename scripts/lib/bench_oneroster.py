"""The OneRoster CSV bundle import at district size (issue 12, item 11): a bulk bundle of 50,000
students and 300,000 enrollments (`--full`; smaller with --students/--enrollments) imported twice
in a child process, as the import_oneroster_bundle function does it: first into an empty state,
then a second export with 1 % of the enrollments gone and as many new, diffed against the first.
Reports the child's peak memory (ru_maxrss), its time and what was published. The state lives in
memory (as the function holds it after loading it from Firestore); changes are serialized as they
would be published, and counted, not kept.

    python scripts/lib/bench_oneroster.py [--students N] [--enrollments N] [--json]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

FUNCTION_MEMORY_MIB = 1024  # infra/functions.tf: import_oneroster_bundle


def write_bundle(
    path: Path, students: int, enrollments: int, seed: int, churn: float = 0.0, guardians: bool = False
) -> dict:
    """A bulk bundle as a SIS exports it (every column of the 1.1 CSV binding), written streaming.
    `guardians`: two parents per student (users with role parent and guardian, linked from both
    ends by agentSourcedIds); with `churn`, as many students in a hundred change one of them."""
    rng = random.Random(seed)
    changed_parent = set(random.Random(seed + 1).sample(range(students), int(students * churn))) if guardians else set()
    teachers = max(1, students // 20)
    per_class = 30
    classes = max(1, enrollments // per_class)
    rows = [
        (f"enr-{i:07d}", f"cls-{rng.randrange(classes):05d}", f"stu-{i % students:06d}") for i in range(enrollments)
    ]
    if churn:
        drop = set(rng.sample(range(enrollments), int(enrollments * churn)))
        rows = [r for i, r in enumerate(rows) if i not in drop]
        rows += [
            (f"enr-new-{i:07d}", f"cls-{rng.randrange(classes):05d}", f"stu-{rng.randrange(students):06d}")
            for i in range(len(drop))
        ]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(
            "manifest.csv",
            "propertyName,value\nmanifest.version,1.0\noneroster.version,1.1\nfile.classes,bulk\n"
            "file.users,bulk\nfile.enrollments,bulk\nfile.orgs,absent\n",
        )

        def table(name: str, header: list[str], records) -> None:
            with z.open(name, "w") as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as text:
                w = csv.writer(text)
                w.writerow(header)
                w.writerows(records)

        table(
            "classes.csv",
            ["sourcedId", "status", "dateLastModified", "title", "grades", "courseSourcedId", "classCode",
             "classType", "location", "schoolSourcedId", "termSourcedIds", "subjects", "subjectCodes", "periods"],
            (
                [f"cls-{c:05d}", "", "2026-09-01T00:00:00Z", f"Class {c} - Period {c % 8}", "09", f"crs-{c % 300}",
                 f"C{c}", "scheduled", f"Room {c % 90}", f"sch-{c % 25}", "term-1", "Science", "", str(c % 8)]
                for c in range(classes)
            ),
        )  # fmt: skip
        users = [
            [f"tch-{t:05d}", "", "2026-09-01T00:00:00Z", "true", f"sch-{t % 25}", "teacher", f"tch{t}",
             "", f"Teacher{t}", "Smith", "", f"T{t}", f"tch{t}@district.example.org", "", "", "", "", ""]
            for t in range(teachers)
        ] + [
            [f"stu-{s:06d}", "", "2026-09-01T00:00:00Z", "true", f"sch-{s % 25}", "student", f"stu{s}",
             "", f"Student{s}", "Jones", "", f"S{s}", f"stu{s}@district.example.org", "", "", "", "10", ""]
            for s in range(students)
        ]  # fmt: skip
        if guardians:

            def second(s: int) -> str:
                return f"par-{s:06d}-{'c' if s in changed_parent else 'b'}"

            for s in range(students):
                users[teachers + s][15] = f"par-{s:06d}-a,{second(s)}"
                for pid, role in ((f"par-{s:06d}-a", "parent"), (second(s), "guardian")):
                    users.append(
                        [pid, "", "2026-09-01T00:00:00Z", "true", f"sch-{s % 25}", role, pid, "", f"P{s}", "Jones",
                         "", "", f"{pid}@family.example.org", "", "", f"stu-{s:06d}", "", ""]
                    )  # fmt: skip
        table(
            "users.csv",
            ["sourcedId", "status", "dateLastModified", "enabledUser", "orgSourcedIds", "role", "username", "userIds",
             "givenName", "familyName", "middleName", "identifier", "email", "sms", "phone", "agentSourcedIds",
             "grades", "password"],
            users,
        )  # fmt: skip
        del users
        enr_header = ["sourcedId", "status", "dateLastModified", "classSourcedId", "schoolSourcedId",
                      "userSourcedId", "role", "primary", "beginDate", "endDate"]  # fmt: skip
        teacher_rows = (
            [f"enr-t-{c:05d}", "", "2026-09-01T00:00:00Z", f"cls-{c:05d}", f"sch-{c % 25}", f"tch-{c % teachers:05d}",
             "teacher", "true", "2026-08-20", "2027-06-15"]
            for c in range(classes)
        )  # fmt: skip
        student_rows = (
            [e, "", "2026-09-01T00:00:00Z", c, "sch-0", u, "student", "false", "2026-08-20", "2027-06-15"]
            for e, c, u in rows
        )
        table("enrollments.csv", enr_header, (r for part in (teacher_rows, student_rows) for r in part))
    return {
        "students": students,
        "teachers": teachers,
        "classes": classes,
        "enrollments": len(rows) + classes,
        "parents": 2 * students if guardians else 0,
        "bundle_bytes": path.stat().st_size,
    }


def child(paths: list[str], guardians: bool = False) -> None:
    """In the child: import each bundle in turn; print the figures as JSON."""
    import datetime as dt
    import resource

    from rostersync.app.oneroster_poller import import_bundle

    class State:
        def __init__(self) -> None:
            self.states: dict = {}
            self.problems: list = []

        def load_class_states(self):
            return dict(self.states)

        def save_class_states(self, states) -> None:
            self.states.update(states)

        def record_problems(self, problems) -> None:
            self.problems += problems

        def load_guardian_links(self, student_ids=None):
            return getattr(self, "links", None)

        def save_guardian_links(self, links) -> None:
            self.links = getattr(self, "links", None) or {}
            for sid, link in links.items():
                if link is None:
                    self.links.pop(sid, None)
                else:
                    self.links[sid] = link

    class CountingPublisher:
        def __init__(self) -> None:
            self.messages = 0
            self.bytes = 0

        def publish(self, changes) -> int:
            n = 0
            for change in changes:
                self.bytes += len(change.to_json())  # the bytes a message would carry
                n += 1
            self.messages += n
            return n

    state = State()
    out = []
    last = None
    for i, path in enumerate(paths):
        publisher = CountingPublisher()
        started = time.monotonic()
        data = Path(path).read_bytes()
        when = f"2026-09-0{i + 1}T00:00:00Z"
        result = import_bundle(
            Path(path).name,
            when,
            data,
            state,
            publisher,
            last,
            clock=lambda: dt.datetime.now(dt.UTC),
            guardian_types=("Parent/Guardian",) if guardians else (),
        )
        del data
        last = when
        out.append(
            {
                "outcome": result.outcome,
                "reason": result.reason,
                "changes": result.changes,
                "guardian_changes": result.guardian_changes,
                "published_bytes": publisher.bytes,
                "seconds": round(time.monotonic() - started, 2),
                "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            }
        )
    print(json.dumps(out))


def measure(students: int, enrollments: int, seed: int = 7, guardians: bool = False) -> dict:
    root = Path(__file__).resolve().parents[2]
    with tempfile.TemporaryDirectory() as tmp:
        first, second = Path(tmp) / "bulk-1.zip", Path(tmp) / "bulk-2.zip"
        shape = write_bundle(first, students, enrollments, seed, guardians=guardians)
        write_bundle(second, students, enrollments, seed, churn=0.01, guardians=guardians)
        env = {**os.environ, "PYTHONPATH": f"{root / 'functions'}:{root}", "LOG_LEVEL": "warning"}
        proc = subprocess.run(
            [sys.executable, __file__, *(["--guardians"] if guardians else []), "--child", str(first), str(second)],
            env=env,
            capture_output=True,
            text=True,
            timeout=3600,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"the bundle import failed: {proc.stderr[-2000:]}")
        imports = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "shape": shape,
        "imports": imports,
        "peak_rss_mib": max(i["peak_rss_mib"] for i in imports),
        "function_memory_mib": FUNCTION_MEMORY_MIB,
    }


def print_report(r: dict) -> None:
    s = r["shape"]
    print(
        f"\nOneRoster bundle import: {s['students']} students, {s['teachers']} teachers, {s['classes']} classes, "
        f"{s['enrollments']} enrollments, {s.get('parents', 0)} parents, a {s['bundle_bytes'] / 1e6:.1f} MB zip"
    )
    for label, i in zip(("first bulk (empty state)", "second bulk (1% churn)"), r["imports"], strict=False):
        print(
            f"  {label:26} {i['outcome']:8} {i['changes']:7} changes ({i.get('guardian_changes', 0)} guardians), "
            f"{i['published_bytes'] / 1e6:7.1f} MB "
            f"published, {i['seconds']:6.1f} s, peak RSS {i['peak_rss_mib']} MiB"
        )
    met = "met" if r["peak_rss_mib"] < r["function_memory_mib"] else "NOT MET"
    print(f"  peak memory {r['peak_rss_mib']} MiB, target under the function's {r['function_memory_mib']} MiB: {met}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--students", type=int, default=50_000)
    parser.add_argument("--enrollments", type=int, default=300_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--guardians", action="store_true", help="two parents per student, GUARDIANS=invite")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.guardians)
        return 0
    report = measure(args.students, args.enrollments, args.seed, args.guardians)
    print_report(report)
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
