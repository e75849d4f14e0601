"""OneRoster CSV bundles (a zip of manifest.csv and one CSV per collection) → a RosterRead. Pure.

The manifest says, per file, `bulk` (every record: what is missing is gone), `delta` (only changed
records, each with `status` active/tobedeleted) or `absent`. A bundle is read whole or not at all:
anything malformed raises InvalidBundle with the reason, and nothing of it is used.
"""

from __future__ import annotations

import csv
import io
import zipfile

from rostersync.sources.oneroster_diff import RosterRead

MAX_BUNDLE_BYTES = 200_000_000
REQUIRED_FILES = ("classes", "users", "enrollments")
KNOWN_FILES = (
    "academicSessions",
    "categories",
    "classes",
    "classResources",
    "courses",
    "courseResources",
    "demographics",
    "enrollments",
    "lineItems",
    "orgs",
    "resources",
    "results",
    "users",
)
REQUIRED_COLUMNS = {
    "classes": ("sourcedId", "title"),
    "users": ("sourcedId", "email"),
    "enrollments": ("sourcedId", "classSourcedId", "userSourcedId", "role"),
}


class InvalidBundle(ValueError):
    """A bundle we reject whole; the text says why."""


def _rows(archive: zipfile.ZipFile, name: str) -> list[dict[str, str]]:
    try:
        raw = archive.read(name)
    except KeyError as exc:
        raise InvalidBundle(f"{name} is missing") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidBundle(f"{name} is not UTF-8") from exc
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = []
    try:
        for row in reader:
            if None in row:
                raise InvalidBundle(f"{name} line {reader.line_num} has more fields than the header")
            rows.append({k: (v or "").strip() for k, v in row.items()})
    except csv.Error as exc:
        raise InvalidBundle(f"{name} line {reader.line_num}: {exc}") from exc
    header = reader.fieldnames or []
    for column in REQUIRED_COLUMNS.get(name.removesuffix(".csv"), ()):
        if column not in header:
            raise InvalidBundle(f"{name} has no {column} column")
    return rows


def read_bundle(data: bytes) -> RosterRead:
    if len(data) > MAX_BUNDLE_BYTES:
        raise InvalidBundle(f"bundle of {len(data)} bytes is larger than {MAX_BUNDLE_BYTES}")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise InvalidBundle("not a zip file") from exc
    with archive:
        manifest = {}
        for row in _rows(archive, "manifest.csv"):
            manifest[row.get("propertyName", "")] = row.get("value", "").lower()
        if not any(k.startswith("file.") for k in manifest):
            raise InvalidBundle("manifest.csv has no file.* entries (columns propertyName,value)")
        modes = {}
        for name in KNOWN_FILES:
            mode = manifest.get(f"file.{name}", "absent")
            if mode not in ("bulk", "delta", "absent"):
                raise InvalidBundle(f"manifest.csv: file.{name} is {mode!r}, not bulk, delta or absent")
            modes[name] = mode
            if mode != "absent" and f"{name}.csv" not in archive.namelist():
                raise InvalidBundle(f"manifest.csv lists {name}.csv as {mode} but the bundle has no {name}.csv")
        if modes["classes"] == "absent" and modes["enrollments"] == "absent":
            raise InvalidBundle("the bundle has neither classes nor enrollments")
        if {modes["classes"], modes["enrollments"]} == {"bulk", "delta"}:
            raise InvalidBundle("classes and enrollments must both be bulk or both delta")
        full = "bulk" in (modes["classes"], modes["enrollments"])
        if full and "absent" in (modes["classes"], modes["enrollments"]):
            raise InvalidBundle("a bulk bundle needs both classes.csv and enrollments.csv")

        out = RosterRead(full=full)
        for name, target in (("classes", out.classes), ("users", out.users), ("enrollments", out.enrollments)):
            if modes[name] == "absent":
                continue
            for i, row in enumerate(_rows(archive, f"{name}.csv"), start=2):
                sourced_id = row.get("sourcedId", "")
                if not sourced_id:
                    raise InvalidBundle(f"{name}.csv line {i} has no sourcedId")
                status = row.get("status", "").lower()
                if modes[name] == "delta" and status not in ("active", "tobedeleted"):
                    raise InvalidBundle(f"{name}.csv line {i}: a delta record needs status active or tobedeleted")
                if modes[name] == "bulk" and status not in ("", "active"):
                    raise InvalidBundle(f"{name}.csv line {i}: a bulk record has status {status!r}")
                if sourced_id in target:
                    raise InvalidBundle(f"{name}.csv has sourcedId {sourced_id!r} twice")
                target[sourced_id] = row | {"status": status or "active"}
        return out
