"""The status page end to end: the `status_page` entry point under functions-framework, over the
emulators' data. First a small district the real functions synced (a problem, an override), read
with requests; then a district of a few hundred sections with hundreds of problems of a few kinds
(written with the sync's own document shapes: tests/sims/status_district.py) whose poll fails
for real (Clever refuses a rotated token), each view rendered by headless Chromium (Debian's
`chromium`; skipped when it is not installed) at desktop and phone widths."""

from __future__ import annotations

import html
import re
import shutil
import struct
import subprocess
import tempfile
import urllib.parse
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.e2e import test_cli
from tests.e2e.conftest import World
from tests.e2e.test_cli import ok
from tests.sims.stack import FunctionServer
from tests.sims.status_district import seed_status_district

pytestmark = pytest.mark.e2e

district = test_cli.district  # the same small district: two sections, a problem

DESKTOP, PHONE = (1280, 1800), (390, 2400)


@pytest.fixture
def page(world: World):
    server = FunctionServer("status_page", "http", env=world.stack.env).start()

    def get(path: str = "", **params) -> requests.Response:
        return requests.get(server.url + path.lstrip("/"), params=params, timeout=60)

    yield get
    server.stop()


def text(response: requests.Response) -> str:
    """What a reader sees: the HTML's text, tags dropped, spaces folded."""
    assert response.headers["Content-Type"].startswith("text/html")
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", response.text)).split())


def mask(email: str) -> str:
    local, domain = email.split("@")
    return f"{local[0]}***{local[-1] if len(local) > 3 else ''}@{domain}"


def test_the_page_shows_health_problems_sections_and_a_section_of_a_synced_district(world: World, district, page):
    biology, chemistry, ghost = district["biology"], district["chemistry"], district["ghost"]
    course = world.classroom.course(f"d:clever-{biology}")
    world.classroom.teacher_rename(course["id"], "AP Bio <with> Ms. Smith")  # escaped, not markup
    ok(world, "resync", biology)

    front = page()
    assert front.status_code == 200
    body = text(front)
    assert "<with>" not in front.text and "AP Bio <with> Ms. Smith" in body
    # Push notifications are not registered in this district, and a student has no Google account.
    assert "Sync health: Needs attention" in body and "Fix: rostersync problems" in body
    assert "Fix: rostersync consent-notifications" in body
    assert "1 People without a Google account 1 person in 1 section" in body
    assert world.email(ghost) not in front.text and mask(world.email(ghost)) in body and ghost in body
    assert "Sections 1 to 2 of 2" in body and biology in body and chemistry in body
    assert front.text.count('href="https://classroom.google.com/c/') == 2
    assert front.text.index("Chemistry - Jones") > front.text.index("AP Bio")  # by school, then name

    found = text(page(q="chemistry"))
    assert "Sections 1 to 1 of 1" in found and "Chemistry - Jones" in found and "AP Bio" not in found
    assert "No sections match the filters" in text(page(state="declined"))
    assert "Sections 1 to 1 of 1" in text(page(kind="user_not_in_google"))

    detail = page(f"/section/{biology}")
    assert detail.status_code == 200
    body = text(detail)
    assert "<title>AP Bio &lt;with&gt; Ms. Smith · rostersync</title>" in detail.text
    assert course["alternateLink"] in detail.text and "Open the course in Classroom" in body
    assert f"is in Classroom as course {course['id']}" in body and "@CannotDirectAddUser" in body
    assert "Teachers, active (1)" in body and "Students, active (2)" in body and "Students, problem (1)" in body
    assert "name: the teacher renamed the course" in body or "renamed" in body
    history = body[body.index("History") :]
    assert "add student" in history and "by Clever event" in history
    assert world.email(ghost) not in detail.text

    missing = page("/section/no-such-section")
    assert missing.status_code == 404 and "No section no-such-section" in text(missing)
    assert page("/assets/status.css").headers["Content-Type"].startswith("text/css")
    status = page("/status.json").json()
    assert status["sections"]["total"] == 2 and status["open_problems"] == 1 and status["overrides"] == 1


def test_a_paused_sync_says_so_and_names_resume(world: World, page):
    ok(world, "pause")
    body = text(page())
    assert "Sync health: Needs attention" in body and "The sync is paused" in body
    assert "Fix: rostersync resume" in body and "No sections" in body


# -- a big district whose poll fails, in Chromium ---------------------------------------------------


def browser() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("headless Chromium is not installed (apt-get install chromium)")
    return found


def chromium(url: str, *args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [
                browser(),
                "--headless",
                "--no-sandbox",  # root in a container has no user namespaces for the sandbox
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                *args,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def chromium_dom(url: str) -> str:
    """The page's DOM as headless Chromium renders it."""
    return html.unescape(chromium(url, "--dump-dom").stdout)


def screenshot(url: str, size: tuple[int, int], path: Path) -> list[list[tuple[int, int, int]]]:
    """A PNG of the page in a window of this size (CSS pixels), drawn at half scale (a quarter of the
    pixels to decode), as rows of RGB pixels."""
    chromium(url, f"--window-size={size[0]},{size[1]}", "--force-device-scale-factor=0.5", f"--screenshot={path}")
    return decode_png(path.read_bytes())


def decode_png(data: bytes) -> list[list[tuple[int, int, int]]]:
    """Chromium's screenshots: 8-bit RGB or RGBA, not interlaced (enough of PNG for them)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunk = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
            assert depth == 8 and color in (2, 6) and not interlace
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw, stride, rows, prev = zlib.decompress(idat), width * channels, [], bytearray(width * channels)
    for y in range(height):
        line = raw[y * (stride + 1) : (y + 1) * (stride + 1)]
        ftype, cur = line[0], bytearray(line[1:])
        for i in range(stride):
            a = cur[i - channels] if i >= channels else 0
            b, c = prev[i], prev[i - channels] if i >= channels else 0
            if ftype == 1:
                cur[i] = (cur[i] + a) & 255
            elif ftype == 2:
                cur[i] = (cur[i] + b) & 255
            elif ftype == 3:
                cur[i] = (cur[i] + (a + b) // 2) & 255
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                cur[i] = (cur[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append([tuple(cur[x * channels : x * channels + 3]) for x in range(width)])
        prev = cur
    return rows


def fits_the_window(rows) -> bool:
    """Nothing drawn in the rightmost 4 pixels (8 CSS pixels, within the page's margin) but rules
    across the whole window: no line or table ran past the window's edge."""
    return all(all(px == (255, 255, 255) for px in row[-4:]) or len(set(row)) == 1 for row in rows)


def has_colour(rows, colour: tuple[int, int, int], top: int) -> bool:
    return any(px == colour for row in rows[:top] for px in row)


FAILING_BANNER = (0xFC, 0xE8, 0xE6)  # .banner.level-failing's background (static/status.css)


@pytest.fixture
def big_district(world: World):
    seeded = seed_status_district(
        world.db(), sections=60, schools=3, students_per_section=15, without_google=200, without_email=20
    )
    # The district's Clever token was rotated: the real poll_clever fails, and records it.
    world.clever.token = "rotated-token"
    answer = requests.post(world.stack.poller.url, json={}, timeout=120)
    assert answer.status_code >= 500
    return seeded


def test_a_district_with_hundreds_of_problems_and_a_failing_sync_in_chromium(
    world: World, big_district, page, tmp_path: Path
):
    seeded = big_district
    assert seeded.problems["user_not_in_google"] >= 300 and len(seeded.problems) == 3
    base = page().url

    dom = chromium_dom(base)
    # The banner comes first and names the failure and its fix.
    assert dom.index("Sync health: Failing") < dom.index("At a glance") < dom.index("Open problems")
    assert "The last poll failed" in dom and "401" in dom and "<code>rostersync status</code>" in dom
    # Three groups, biggest first: one group of hundreds, not hundreds of rows; the hint once.
    counts = [int(n.replace(",", "")) for n in re.findall(r'<span class="count">([\d,]+)</span>', dom)]
    assert counts == sorted(seeded.problems.values(), reverse=True)
    assert dom.count("Create the Google account (or fix the email in the SIS)") == 1
    assert f"{seeded.people_without_google} people in" in dom
    assert not re.search(r"[a-z]+\.[a-z]+\d*@district\.example\.org", dom)  # no full email on the page
    assert f"Sections 1 to 50 of {len(seeded.sections)}" in dom and 'class="poll-failed"' in dom
    assert "<script" not in dom and " style=" not in dom

    # The next page of sections, the filters, a group's page and a section's page.
    nxt = re.search(r'href="(/\?[^"]*after_id=[^"]*)"', dom).group(1)
    assert f"Sections 51 to {len(seeded.sections)} of {len(seeded.sections)}" in text(page(html.unescape(nxt)))
    school = seeded.schools[1]
    by_school = text(page(school=school, state="active"))
    assert f"School {school}" in by_school and f"School {seeded.schools[0]}" not in by_school
    owners = text(page(kind="owner_not_in_google"))
    assert "Sections 1 to 6 of 6" in owners and "owner problem" in owners and "no course" in owners
    group = text(page("/problems", kind="user_not_in_google"))
    assert group.count("***") >= seeded.people_without_google

    section = text(page(f"/section/{seeded.sections[len(seeded.sections) // 2]}"))
    assert re.search(r"[^·]+ - Period \d · rostersync", section) and "a teacher renamed the course" in section
    assert "Open the course in Classroom" in section and "History" in section

    # The front page in a desktop and a phone-sized window: the failing banner on top, nothing cut off.
    images = screenshots({"front": base}, tmp_path)
    for size in (DESKTOP, PHONE):
        assert has_colour(images[("front", size)], FAILING_BANNER, top=150), f"no failing banner at {size}"


def screenshots(urls: dict[str, str], folder: Path) -> dict:
    """Each view at desktop and phone widths (Chromium runs in parallel), checked to fit the window."""
    jobs = [(view, size) for view in urls for size in (DESKTOP, PHONE)]
    shot = {j: folder / f"{j[0]}-{j[1][0]}.png" for j in jobs}  # kept by pytest to look at
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        images = dict(zip(jobs, pool.map(lambda j: screenshot(urls[j[0]], j[1], shot[j]), jobs), strict=True))
    for (view, size), rows in images.items():
        assert len(rows[0]) == size[0] // 2, (view, size)
        assert fits_the_window(rows), f"{view} runs past a {size[0]}-pixel window: {shot[(view, size)]}"
        assert len({px for row in rows[::40] for px in row[::7]}) > 20, f"{view} at {size} looks blank"
    return images


@pytest.mark.full
def test_every_view_of_the_big_district_in_chromium_at_desktop_and_phone_widths(
    world: World, big_district, page, tmp_path: Path
):
    seeded, base = big_district, page().url
    urls = {
        "front": base,
        "problems": urllib.parse.urljoin(base, "problems?kind=user_not_in_google"),
        "section": urllib.parse.urljoin(base, f"section/{seeded.sections[len(seeded.sections) // 2]}"),
        "filtered": urllib.parse.urljoin(base, f"?school={seeded.schools[0]}&state=active"),
    }
    section_dom = chromium_dom(urls["section"])
    assert re.search(r"<title>[^<]+ - Period \d · rostersync</title>", section_dom)
    assert 'class="timeline"' in section_dom and "https://classroom.google.com/c/" in section_dom
    problems_dom = chromium_dom(urls["problems"])
    assert problems_dom.count("***") >= seeded.people_without_google
    images = screenshots(urls, tmp_path)
    for size in (DESKTOP, PHONE):
        assert has_colour(images[("front", size)], FAILING_BANNER, top=150), f"no failing banner at {size}"
