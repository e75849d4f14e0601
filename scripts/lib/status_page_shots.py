"""The status page on a large sample district: screenshots (scripts/screenshots) and its weight and
server time (scripts/bench-status-page).

The district is written into the Firestore emulator with the sync's own document shapes
(tests/sims/status_district.py): sections with members, open problems of a few kinds, three weeks of
audit trail and a history of polls. With --failing (the default for screenshots) the last poll is
recorded as failed, as poll_clever records a Clever that refuses its token. The page itself runs as
in the cloud: the `status_page` entry point under functions-framework.

Timings are reported, never asserted: this is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import requests

from tests.sims.emulators import ToolMissing, check_tools, start_emulators
from tests.sims.stack import FunctionServer
from tests.sims.status_district import seed_status_district

PROJECT = "rostersync-status-page"
ROOT = Path(__file__).resolve().parents[2]


def record_failed_poll(client) -> None:
    """What poll_clever records when Clever answers 401 (FirestoreStore.save_poll_status, the real writer)."""
    from rostersync.adapters.store import FirestoreStore

    FirestoreStore(client).save_poll_status(
        {
            "outcome": "failed",
            "seconds": 0.41,
            "events_read": 0,
            "changes": 0,
            "held": 0,
            "problems": ['CleverError: Clever /v3.0/events answered 401: {"error": "Unauthorized"}'],
        }
    )


def capture(url: str, path: Path, width: int, height: int) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        raise SystemExit("error: headless Chromium is needed (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                f"--screenshot={path}",
                url,
            ],
            check=True,
            capture_output=True,
            timeout=180,
        )


def measure(url: str, runs: int) -> dict:
    """Server time (first request and the median of the next ones) and the HTML's weight."""
    times, size, gz = [], 0, 0
    for _ in range(runs + 1):
        t0 = time.perf_counter()
        response = requests.get(url, timeout=300, headers={"Accept-Encoding": "identity"})
        times.append(time.perf_counter() - t0)
        if response.status_code != 200:
            text = " ".join(response.text.split())
            raise RuntimeError(f"{url} answered {response.status_code}: {text[text.find('<main') :][:400]}")
        size = len(response.content)
    import gzip

    gz = len(gzip.compress(response.content))
    return {
        "first_s": round(times[0], 3),
        "median_s": round(statistics.median(times[1:]), 3),
        "max_s": round(max(times[1:]), 3),
        "html_bytes": size,
        "html_gzip_bytes": gz,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["screenshots", "bench"])
    parser.add_argument("--sections", type=int, default=None, help="default: 300 (screenshots), 5000 (bench)")
    parser.add_argument("--without-google", type=int, default=300, help="students without a Google account")
    parser.add_argument("--out", default=str(ROOT / "screenshots"), help="the folder for the PNGs")
    parser.add_argument("--healthy", action="store_true", help="no failed poll: the banner as most days")
    parser.add_argument("--runs", type=int, default=5, help="requests a view for the bench (after a first one)")
    parser.add_argument("--timezone", default="America/Chicago", help="STATUS_PAGE_TIMEZONE")
    args = parser.parse_args(argv)
    sections = args.sections or (300 if args.command == "screenshots" else 5000)
    try:
        check_tools()
    except ToolMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("Starting the emulators ...", file=sys.stderr)
    pubsub, firestore_emulator = start_emulators(PROJECT)
    try:
        os.environ["FIRESTORE_EMULATOR_HOST"] = firestore_emulator.host
        from google.cloud import firestore

        client = firestore.Client(project=PROJECT)
        t0 = time.perf_counter()
        seeded = seed_status_district(client, sections=sections, without_google=args.without_google)
        print(
            f"Sample district: {len(seeded.sections)} sections in {len(seeded.schools)} schools, open problems "
            f"{seeded.problems} ({seeded.people_without_google} students without Google accounts), written in "
            f"{time.perf_counter() - t0:.1f} s",
            file=sys.stderr,
        )
        if not args.healthy:
            record_failed_poll(client)
        env = {
            "GOOGLE_CLOUD_PROJECT": PROJECT,
            "FIRESTORE_EMULATOR_HOST": firestore_emulator.host,
            "STATUS_PAGE_TIMEZONE": args.timezone,
        }
        server = FunctionServer("status_page", "http", env=env).start()
        try:
            base = server.url
            section = seeded.sections[len(seeded.sections) // 2]
            views = {
                "front": base,
                "front-page-2-filtered": base + "?" + urllib.parse.urlencode({"state": "active"}),
                "problems-of-a-kind": base + "problems?kind=user_not_in_google",
                "section": base + f"section/{section}",
            }
            if args.command == "bench":
                print(f"\nThe status page over {len(seeded.sections):,} sections ({args.runs} runs a view):")
                print(f"{'view':<24} {'first s':>8} {'median s':>9} {'max s':>7} {'HTML KiB':>9} {'gzip KiB':>9}")
                for name, url in views.items():
                    try:
                        m = measure(url, args.runs)
                    except RuntimeError as exc:
                        print(f"{name:<24} failed: {exc}")
                        continue
                    print(
                        f"{name:<24} {m['first_s']:>8.2f} {m['median_s']:>9.2f} {m['max_s']:>7.2f} "
                        f"{m['html_bytes'] / 1024:>9.1f} {m['html_gzip_bytes'] / 1024:>9.1f}"
                    )
                css = requests.get(base + "assets/status.css", timeout=60).content
                print(f"{'stylesheet':<24} {'':>8} {'':>9} {'':>7} {len(css) / 1024:>9.1f}  (no script, no images)")
                return 0
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            shots = [
                ("front-desktop.png", views["front"], 1280, 2600),
                ("front-phone.png", views["front"], 390, 2600),
                ("section-desktop.png", views["section"], 1280, 2200),
                ("section-phone.png", views["section"], 390, 2600),
                ("problems-desktop.png", views["problems-of-a-kind"], 1280, 1600),
            ]
            for name, url, width, height in shots:
                capture(url, out / name, width, height)
                print(f"  {out / name}  ({width}x{height}: {url.replace(base, '/')})")
        finally:
            server.stop()
    finally:
        pubsub.stop()
        firestore_emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
