"""The status page end to end: the `status_page` entry point under functions-framework, over the
emulators' data of a district the real functions synced (with a problem and an override). Read
with requests, and once in headless Chromium (Debian's `chromium`; skipped when it is not
installed: `apt-get install chromium`)."""

from __future__ import annotations

import html
import shutil
import subprocess
import tempfile
import urllib.parse

import pytest
import requests

from tests.e2e import test_cli
from tests.e2e.conftest import World
from tests.e2e.test_cli import ok
from tests.sims.stack import FunctionServer

pytestmark = pytest.mark.e2e

district = test_cli.district  # the same small district: two sections, a problem


@pytest.fixture
def page(world: World):
    server = FunctionServer("status_page", "http", env=world.stack.env).start()

    def get(path: str = "", **params) -> requests.Response:
        return requests.get(server.url + path.lstrip("/"), params=params, timeout=60)

    yield get
    server.stop()


def text(response: requests.Response) -> str:
    assert response.headers["Content-Type"].startswith("text/html")
    return html.unescape(response.text)


def test_the_page_lists_status_sections_problems_and_overrides_and_searches(world: World, district, page):
    biology, chemistry, ghost = district["biology"], district["chemistry"], district["ghost"]
    course = world.classroom.course(f"d:clever-{biology}")
    world.classroom.teacher_rename(course["id"], "AP Bio <with> Ms. Smith")  # escaped, not markup
    ok(world, "resync", biology)

    front = page()
    assert front.status_code == 200
    body = text(front)
    assert "<with>" not in front.text and "AP Bio <with> Ms. Smith" in body
    assert biology in body and chemistry in body and "Sections (2)" in body
    assert "Open problems (1)" in body and "user_not_in_google" in body and world.email(ghost) in body
    assert "Overrides (1)" in body and "renamed the course" in body
    assert "<dt>open problems</dt><dd>1</dd>" in body and "active 2" in body

    found = text(page(q="chemistry"))
    assert "Sections (1)" in found and chemistry in found and f">{biology}<" not in found
    assert "Open problems (0)" in found and "no open problems" in found
    assert "Sections (0)" in text(page(state="declined"))
    ghost_search = text(page(q=world.email(ghost).upper()))
    assert "Open problems (1)" in ghost_search and "Sections (0)" in ghost_search

    detail = page(f"/section/{biology}")
    assert detail.status_code == 200
    body = text(detail)
    assert course["alternateLink"] in body and f"is in Classroom as course {course['id']}" in body
    assert world.email(ghost) in body and "@CannotDirectAddUser" in body and "name:" in body

    missing = page("/section/no-such-section")
    assert missing.status_code == 404 and "No section no-such-section" in text(missing)

    status = page("/status.json").json()
    assert status["sections"]["total"] == 2 and status["open_problems"] == 1 and status["overrides"] == 1


def test_the_page_shows_a_paused_sync(world: World, page):
    ok(world, "pause")
    body = text(page())
    assert "The sync is paused" in body.replace("<b>", "").replace("</b>", "") and "Sections (0)" in body


def chromium_dom(url: str) -> str:
    """The page's DOM as headless Chromium renders it."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        pytest.skip("headless Chromium is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",  # root in a container has no user namespaces for the sandbox
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                f"--user-data-dir={profile}",
                "--dump-dom",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=90,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    return html.unescape(result.stdout)


def test_the_page_in_headless_chromium_lists_the_sections_and_shows_a_problem(world: World, district, page):
    base = page().url
    dom = chromium_dom(base)
    assert "<title>rostersync status</title>" in dom
    assert district["biology"] in dom and district["chemistry"] in dom and "Sections (2)" in dom
    assert 'class="problem"' in dom and "user_not_in_google" in dom and world.email(district["ghost"]) in dom
    # The search box is a GET form: what the browser submits for "chemistry".
    found = chromium_dom(base + "?" + urllib.parse.urlencode({"q": "chemistry", "state": ""}))
    assert "Sections (1)" in found and district["chemistry"] in found and 'value="chemistry"' in found
    section = chromium_dom(urllib.parse.urljoin(base, f"section/{district['biology']}"))
    assert "Open problems" in section and "@CannotDirectAddUser" in section
