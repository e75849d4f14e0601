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
