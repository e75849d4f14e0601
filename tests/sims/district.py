"""A seeded sample district for the Clever simulator: schools, teachers, students and sections.

The same seed on a fresh simulator gives the same district, ids included. Names come from small
built-in lists; emails are ``first.last@domain`` (lowercased, a number added from the second person
with the same name on); sections are named in Clever's style, "Algebra I - Smith - Period 3".

With ``broken_users`` the district holds the users that rostersync must report rather than sync:
two students with an email but no Google account, one student with no email in Clever, and one
teacher with no Google account who is the primary teacher of exactly one section (and teaches no
other). Each broken student is enrolled in at least one section. They are kept out of the first five
sections, which the demo changes.

It scales to 50,000 students, 2,500 teachers, 2,000 sections and 150,000 enrollments in a few
seconds: the records are added with ``emit=False`` (a district as it is before a bootstrap) unless
``emit=True``.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from tests.sims.clever_sim import CleverSimulator

FIRST_NAMES = [
    "Aaliyah", "Aiden", "Amara", "Andre", "Ava", "Benjamin", "Camila", "Carlos", "Chloe", "Daniel",
    "Diego", "Elena", "Elijah", "Emma", "Ethan", "Fatima", "Gabriel", "Grace", "Hannah", "Hiro",
    "Isabella", "Jack", "Jamal", "Jasmine", "Javier", "Kai", "Layla", "Leo", "Liam", "Lucas",
    "Maya", "Mia", "Mohammed", "Naomi", "Noah", "Olivia", "Omar", "Priya", "Rafael", "Riley",
    "Rosa", "Samuel", "Sofia", "Tariq", "Theo", "Valentina", "Wei", "Xavier", "Yara", "Zoe",
]  # fmt: skip
LAST_NAMES = [
    "Adams", "Ahmed", "Baker", "Brown", "Chen", "Clark", "Davis", "Diaz", "Evans", "Garcia",
    "Gonzalez", "Green", "Hall", "Harris", "Hernandez", "Hill", "Jackson", "Johnson", "Kim", "King",
    "Lee", "Lewis", "Lopez", "Martin", "Martinez", "Miller", "Moore", "Nguyen", "O'Brien", "Patel",
    "Perez", "Ramirez", "Robinson", "Rodriguez", "Sanchez", "Scott", "Singh", "Smith", "Taylor", "Thomas",
    "Thompson", "Torres", "Walker", "White", "Williams", "Wilson", "Wright", "Yamamoto", "Young", "Zhang",
]  # fmt: skip
SCHOOL_NAMES = [
    "Lincoln High School", "Roosevelt High School", "Jefferson Middle School", "Washington High School",
    "Kennedy Middle School", "Franklin High School", "Madison Middle School", "Hamilton High School",
]  # fmt: skip
# Clever's subject values, each with course names as an SIS would send them.
COURSES = {
    "math": ["Algebra I", "Geometry", "Algebra II", "Pre-Calculus", "AP Calculus AB", "Statistics"],
    "science": ["Biology", "Chemistry", "Physics", "Earth Science", "AP Biology"],
    "english/language arts": ["English 9", "English 10", "English 11", "AP Literature", "Creative Writing"],
    "social studies": ["World History", "US History", "Government", "Economics"],
    "language": ["Spanish I", "Spanish II", "French I", "Mandarin I"],
    "arts and music": ["Art", "Band", "Choir", "Ceramics"],
    "PE and health": ["Physical Education", "Health"],
    "technology and engineering": ["Computer Science", "Robotics", "Web Design"],
}
SUBJECTS = list(COURSES)
CO_TEACHER_SHARE = 0.10
DEMO_SECTIONS = 5  # the demo changes the first five sections: the broken users stay out of them


@dataclass
class SampleDistrict:
    schools: list[str]
    teachers: list[str]
    students: list[str]
    sections: list[str]
    # (email, first, last) of every user who has a Google account: register them in the Classroom simulator.
    google_accounts: list[tuple[str, str, str]]
    students_without_google: list[str] = field(default_factory=list)
    teachers_without_google: list[str] = field(default_factory=list)
    users_without_email: list[str] = field(default_factory=list)


class _Emails:
    def __init__(self, domain: str):
        self.domain = domain.lower()
        self.used: dict[str, int] = {}

    def __call__(self, first: str, last: str) -> str:
        base = re.sub(r"[^a-z0-9]", "", first.lower()) + "." + re.sub(r"[^a-z0-9]", "", last.lower())
        n = self.used.get(base, 0) + 1
        self.used[base] = n
        return f"{base}{n if n > 1 else ''}@{self.domain}"


def make_district(
    sim: CleverSimulator,
    seed: int = 7,
    schools: int = 3,
    sections: int = 40,
    students: int = 600,
    teachers: int | None = None,
    students_per_section: tuple[int, int] = (18, 32),
    emit: bool = False,
    domain: str = "district.example.org",
    broken_users: bool = True,
) -> SampleDistrict:
    if schools < 1 or sections < 1 or students < 1:
        raise ValueError("a district needs at least one school, one section and one student")
    rng = random.Random(seed)
    n_teachers = teachers if teachers is not None else max(2, -(-sections // 5))  # about five sections each
    if broken_users and (n_teachers < 2 or students < 4):
        raise ValueError("broken_users needs at least 2 teachers and 4 students")
    emails = _Emails(domain)
    google: list[tuple[str, str, str]] = []

    school_ids = [
        sim.add_school(
            SCHOOL_NAMES[i % len(SCHOOL_NAMES)] + (f" {i // len(SCHOOL_NAMES) + 1}" if i >= len(SCHOOL_NAMES) else ""),
            emit=emit,
        )
        for i in range(schools)
    ]

    # Teachers: the last one is the broken teacher (no Google account) when broken_users.
    teacher_ids: list[str] = []
    teacher_school: dict[str, str] = {}
    teacher_last: dict[str, str] = {}
    for i in range(n_teachers):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        email = emails(first, last)
        school = school_ids[i % schools]
        uid = sim.add_user("teacher", email, first, last, school=school, sis_id=f"T{i + 1:05d}", emit=emit)
        teacher_ids.append(uid)
        teacher_school[uid] = school
        teacher_last[uid] = last
        if not (broken_users and i == n_teachers - 1):
            google.append((email, first, last))
    regular = teacher_ids[:-1] if broken_users else list(teacher_ids)
    broken_teacher = teacher_ids[-1] if broken_users else None

    # Students, each in one school. With broken_users: indices of the three broken students.
    broken_idx = rng.sample(range(students), 3) if broken_users else []
    no_email_idx = broken_idx[2] if broken_users else -1
    student_ids: list[str] = []
    pool: dict[str, list[str]] = {s: [] for s in school_ids}
    students_without_google: list[str] = []
    users_without_email: list[str] = []
    for i in range(students):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        school = school_ids[i % schools]
        email = None if i == no_email_idx else emails(first, last)
        uid = sim.add_user("student", email, first, last, school=school, sis_id=f"S{i + 1:06d}", emit=emit)
        student_ids.append(uid)
        pool[school].append(uid)
        if i == no_email_idx:
            users_without_email.append(uid)
        elif i in broken_idx:
            students_without_google.append(uid)
        else:
            google.append((email, first, last))  # type: ignore[arg-type]

    # Sections: the primary teacher round-robin (so the school is the teacher's), ~10% co-taught.
    regular_by_school: dict[str, list[str]] = {s: [] for s in school_ids}
    for t in regular:
        regular_by_school[teacher_school[t]].append(t)
    broken_set = set(students_without_google + users_without_email)
    broken_section = -1
    if broken_users:
        broken_section = sections - 1 if sections <= DEMO_SECTIONS + 1 else rng.randrange(DEMO_SECTIONS, sections)
    plans: list[dict] = []
    lo, hi = students_per_section
    for i in range(sections):
        primary = broken_teacher if i == broken_section else regular[i % len(regular)]
        school = teacher_school[primary]  # type: ignore[index]
        teacher_list = [primary]
        colleagues = [t for t in regular_by_school[school] if t != primary]
        if colleagues and rng.random() < CO_TEACHER_SHARE:
            teacher_list.append(rng.choice(colleagues))
        candidates = pool[school] or student_ids
        if i < DEMO_SECTIONS < sections and broken_set:
            candidates = [c for c in candidates if c not in broken_set]
        size = min(rng.randint(lo, hi), len(candidates))
        enrolled = rng.sample(candidates, size)
        subject = rng.choice(SUBJECTS)
        period = rng.randint(1, 7)
        course = rng.choice(COURSES[subject])
        plans.append(
            {
                "name": f"{course} - {teacher_last[primary]} - Period {period}",  # type: ignore[index]
                "teachers": teacher_list,
                "students": enrolled,
                "period": str(period),
                "subject": subject,
                "school": school,
            }
        )

    # Every broken student sits in at least one section (outside the demo's first five when possible).
    later = list(range(DEMO_SECTIONS, sections)) or list(range(sections))
    for uid in students_without_google + users_without_email:
        if not any(uid in p["students"] for p in plans):
            school = next(s for s, members in pool.items() if uid in members)
            same_school = [i for i in later if plans[i]["school"] == school] or later
            plans[rng.choice(same_school)]["students"].append(uid)

    section_ids = []
    for i, p in enumerate(plans):
        section_ids.append(
            sim.add_section(
                p["name"],
                p["teachers"][0],
                students=sorted(p["students"]),
                teachers=p["teachers"],
                period=p["period"],
                subject=p["subject"],
                school=p["school"],
                sis_id=f"SEC{i + 1:05d}",
                emit=emit,
            )
        )

    return SampleDistrict(
        schools=school_ids,
        teachers=teacher_ids,
        students=student_ids,
        sections=section_ids,
        google_accounts=google,
        students_without_google=students_without_google,
        teachers_without_google=[broken_teacher] if broken_teacher else [],
        users_without_email=users_without_email,
    )


# -- a district with real shapes (issue 12) ------------------------------------------------------


@dataclass
class RealDistrict:
    """What make_real_district made, for the tests to act on and compare with."""

    sections: list[str]
    sizes: dict[str, int]  # students per section
    teachers: list[str]
    students: list[str]
    google_accounts: list[tuple[str, str, str]]
    without_google: set[str]  # Clever user ids whose email has no Google account
    cross_listed: list[tuple[str, str]]  # pairs: same teacher, period and students' school
    empty: list[str]

    @property
    def largest(self) -> str:
        return max(self.sizes, key=self.sizes.__getitem__)


def real_section_sizes(rng: random.Random, sections: int, big: int, huge: list[int]) -> list[int]:
    """Most sections 15-35; `big` of 100-400 (PE, band, lunch-period study halls); the `huge` sizes
    as given (online-school sections of 1,000-5,000); about 2 % empty (a section made before its
    students are scheduled)."""
    sizes = [rng.randint(15, 35) for _ in range(sections)]
    spots = rng.sample(range(sections), min(sections, big + len(huge) + max(1, sections // 50)))
    for n, i in enumerate(spots):
        if n < len(huge):
            sizes[i] = huge[n]
        elif n < len(huge) + big:
            sizes[i] = rng.randint(100, 400)
        else:
            sizes[i] = 0
    return sizes


def make_real_district(
    sim: CleverSimulator,
    seed: int = 12,
    sections: int = 60,
    big: int = 3,
    huge: tuple[int, ...] = (),
    students: int | None = None,
    without_google_share: float = 0.05,
    cross_listed: int = 2,
    domain: str = "district.example.org",
) -> RealDistrict:
    """A district shaped like a real one: section sizes from real_section_sizes, a teacher for about
    five sections, `without_google_share` of students and of (non-primary) teachers without a Google
    account, and `cross_listed` pairs of sections (same teacher and period, as an SIS lists one class
    under two course codes). Added with emit=False: as the district is before a bootstrap."""
    rng = random.Random(seed)
    sizes = real_section_sizes(rng, sections, big, list(huge))
    n_students = students or max(max(sizes, default=1), sum(sizes) // 4, 4)
    emails = _Emails(domain)
    school = sim.add_school("Lincoln Unified Online and High School", emit=False)
    google: list[tuple[str, str, str]] = []
    without: set[str] = set()

    def user(role: str, i: int, may_lack_google: bool) -> str:
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        email = emails(first, last)
        uid = sim.add_user(role, email, first, last, school=school, sis_id=f"{role[0].upper()}{i:06d}", emit=False)
        if may_lack_google and rng.random() < without_google_share:
            without.add(uid)
        else:
            google.append((email, first, last))
        return uid

    teacher_ids = [user("teacher", i, False) for i in range(max(2, -(-sections // 5)))]
    student_ids = [user("student", i, True) for i in range(n_students)]
    section_ids, section_sizes, empty = [], {}, []
    for i, size in enumerate(sizes):
        teacher = teacher_ids[i % len(teacher_ids)]
        subject = rng.choice(SUBJECTS)
        name = f"{rng.choice(COURSES[subject])} - {sim.user(teacher)['name']['last']} - Period {i % 7 + 1}"
        enrolled = sorted(rng.sample(student_ids, min(size, len(student_ids))))
        sid = sim.add_section(
            name, teacher, students=enrolled, teachers=[teacher], period=str(i % 7 + 1), subject=subject,
            school=school, sis_id=f"SEC{i + 1:05d}", emit=False,
        )  # fmt: skip
        section_ids.append(sid)
        section_sizes[sid] = len(enrolled)
        if not enrolled:
            empty.append(sid)
    pairs = []
    small = [s for s in section_ids if 15 <= section_sizes[s] <= 35]
    for a in small[: 2 * cross_listed : 2]:
        # The same class under a second course code: same teacher and period, its own students.
        source = sim.section(a)
        enrolled = sorted(rng.sample(student_ids, rng.randint(5, 12)))
        b = sim.add_section(
            source["name"] + " (cross-listed)", source["teacher"], students=enrolled, teachers=[source["teacher"]],
            period=source.get("period"), subject=source.get("subject"), school=school, emit=False,
        )  # fmt: skip
        section_ids.append(b)
        section_sizes[b] = len(enrolled)
        pairs.append((a, b))
    return RealDistrict(section_ids, section_sizes, teacher_ids, student_ids, google, without, pairs, empty)
