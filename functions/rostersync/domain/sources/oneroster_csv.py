"""OneRoster CSV bundles (a zip of manifest.csv and one CSV per collection) → a RosterRead. Pure.

The manifest says, per file, `bulk` (every record: what is missing is gone), `delta` (only changed
records, each with `status` active/tobedeleted) or `absent`. A bundle is read whole or not at all:
anything malformed raises InvalidBundle with the reason, and nothing of it is used.

Bundles are streamed, never decompressed whole: each CSV is read row by row from the zip, and only
the columns the sync uses are kept. Before anything is decompressed the zip's directory is checked
against caps (uncompressed size, compression ratio, encryption, compression method), and while
reading, the rows are counted against MAX_ROWS, so neither a zip bomb (a few KB that inflate to
gigabytes) nor a district too large for the function's memory can take the import down. Every
failure of the zip itself (corrupt data, a CRC mismatch, an encrypted entry, Deflate64) becomes an
InvalidBundle with its reason: rejected whole and recorded, never an exception that would be
redelivered until it is dead-lettered.
"""

from __future__ import annotations

import csv
import io
import struct
import sys
import zipfile
import zlib
from collections.abc import Iterator
from typing import IO

from rostersync.domain.sources.oneroster_diff import RosterRead

MAX_BUNDLE_BYTES = 200_000_000  # compressed, as stored in the bucket
# A district of 50,000 students and 300,000 enrollments is about 40 MB of CSV; these leave room
# for far larger ones while keeping what is kept in memory (MAX_ROWS, about 300 bytes a row)
# well inside the importer's 1 GiB.
MAX_UNCOMPRESSED_BYTES = 1_000_000_000
MAX_RATIO = 200  # CSV compresses 5-20x; hundreds or thousands times is a bomb
MAX_ROWS = 2_000_000  # classes + users + enrollments
# A bundle has a manifest and at most 13 CSVs; zipfile holds its whole directory in memory, so a
# zip of millions of tiny entries is refused from its end record, before the directory is read.
MAX_DIRECTORY_BYTES = 1_000_000
SUPPORTED_COMPRESSION = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
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
    "roles",
    "users",
)
REQUIRED_COLUMNS = {
    "classes": ("sourcedId", "title"),
    "users": ("sourcedId", "email"),
    "enrollments": ("sourcedId", "classSourcedId", "userSourcedId", "role"),
}
# The columns the diff reads; the others (names, grades, phone numbers...) are never kept.
KEPT_COLUMNS = {
    "classes": ("sourcedId", "title", "status"),
    "users": ("sourcedId", "email", "status"),
    "enrollments": ("sourcedId", "classSourcedId", "userSourcedId", "role", "primary", "status"),
}
# With GUARDIANS=invite the users' roles and agents are kept too (1.1: users.csv `role`; 1.2:
# roles.csv, one row per user and role), so parents and guardians can be linked to students.
GUARDIAN_USER_COLUMNS = ("sourcedId", "email", "status", "role", "agentSourcedIds")
ROLE_COLUMNS = ("userSourcedId", "role", "status")
# Values repeated across many rows, shared instead of copied (class and user ids in enrollments).
INTERNED = {"classSourcedId", "userSourcedId", "role", "primary", "status"}
# What a broken zip raises while it is read: a CRC mismatch or bad header (BadZipFile), corrupt
# deflate data (zlib.error), a truncated member (EOFError), an encrypted one (RuntimeError),
# an unsupported method (NotImplementedError).
ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    EOFError,
    RuntimeError,
    NotImplementedError,
    OSError,
)


class InvalidBundle(ValueError):
    """A bundle we reject whole; the text says why."""


class _Budget:
    def __init__(self) -> None:
        self.rows = 0

    def row(self) -> None:
        self.rows += 1
        if self.rows > MAX_ROWS:
            raise InvalidBundle(f"more than {MAX_ROWS} rows: larger than one import can hold")


def _check_end_record(tail: bytes) -> None:
    """The zip's end-of-central-directory record (the last 22 bytes plus a comment of up to 64 KiB):
    its directory size, before zipfile reads the directory into memory."""
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        return  # not a zip: zipfile says so
    entries, directory_bytes = struct.unpack_from("<HI", tail, at + 10)
    # 0xFFFFFFFF means a ZIP64 directory, which no bundle needs either.
    if directory_bytes > MAX_DIRECTORY_BYTES:
        raise InvalidBundle(
            f"the zip's directory is {directory_bytes} bytes ({entries} entries): a bundle has at most a few files"
        )


def _check_directory(archive: zipfile.ZipFile) -> None:
    """The zip's own directory, before anything is decompressed: every entry we might read."""
    names = [i.filename for i in archive.infolist()]
    if len(names) != len(set(names)):
        raise InvalidBundle("the zip holds two entries of the same name")
    total = 0
    for info in archive.infolist():
        if info.filename.removesuffix(".csv") not in KNOWN_FILES and info.filename != "manifest.csv":
            continue  # not read
        if info.flag_bits & 0x1:
            raise InvalidBundle(f"{info.filename} is encrypted")
        if info.compress_type not in SUPPORTED_COMPRESSION:
            method = "Deflate64" if info.compress_type == 9 else f"method {info.compress_type}"
            raise InvalidBundle(f"{info.filename} is compressed with {method}; export with deflate (or stored)")
        if info.file_size > MAX_RATIO * max(info.compress_size, 1) and info.file_size > 1_000_000:
            ratio = info.file_size // max(info.compress_size, 1)
            raise InvalidBundle(f"{info.filename} inflates {ratio} times (more than {MAX_RATIO}): a zip bomb?")
        total += info.file_size
    if total > MAX_UNCOMPRESSED_BYTES:
        raise InvalidBundle(f"{total} bytes uncompressed, more than {MAX_UNCOMPRESSED_BYTES}")


def _rows(archive: zipfile.ZipFile, name: str, budget: _Budget, keep: tuple[str, ...] | None) -> Iterator[dict]:
    """The rows of one CSV, streamed: each a dict of the `keep` columns (all when None)."""
    try:
        raw = archive.open(name)
    except KeyError as exc:
        raise InvalidBundle(f"{name} is missing") from exc
    reader = csv.reader(io.TextIOWrapper(raw, encoding="utf-8-sig", newline=""))
    line = 1
    try:
        header = [h.strip() for h in next(reader, [])]
        for column in REQUIRED_COLUMNS.get(name.removesuffix(".csv"), ()):
            if column not in header:
                raise InvalidBundle(f"{name} has no {column} column")
        wanted = [(i, h) for i, h in enumerate(header) if keep is None or h in keep]
        for fields in reader:
            line = reader.line_num
            if not fields:
                continue
            if len(fields) > len(header):
                raise InvalidBundle(f"{name} line {line} has more fields than the header")
            budget.row()
            row = {}
            for i, column in wanted:
                value = fields[i].strip() if i < len(fields) else ""
                row[column] = sys.intern(value) if column in INTERNED else value
            yield row
    except UnicodeDecodeError as exc:
        raise InvalidBundle(f"{name} is not UTF-8") from exc
    except csv.Error as exc:
        raise InvalidBundle(f"{name} line {reader.line_num}: {exc}") from exc
    finally:
        raw.close()


def read_bundle(data: bytes | IO[bytes], with_guardians: bool = False) -> RosterRead:
    """A bundle's bytes (or a seekable binary file holding them) as one read. `with_guardians`:
    the users keep their roles and `agents` (a list of ids), read from users.csv and roles.csv."""
    size = len(data) if isinstance(data, bytes | bytearray) else None
    if size is not None and size > MAX_BUNDLE_BYTES:
        raise InvalidBundle(f"bundle of {size} bytes is larger than {MAX_BUNDLE_BYTES}")
    if size is not None:
        _check_end_record(bytes(data[-65_557:]))
    try:
        archive = zipfile.ZipFile(io.BytesIO(data) if size is not None else data)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, struct.error) as exc:
        raise InvalidBundle("not a zip file") from exc
    try:
        with archive:
            return _read(archive, with_guardians)
    except InvalidBundle:
        raise
    except ZIP_ERRORS as exc:
        raise InvalidBundle(f"the zip is damaged: {type(exc).__name__}: {str(exc)[:160]}") from exc


def _read(archive: zipfile.ZipFile, with_guardians: bool = False) -> RosterRead:
    _check_directory(archive)
    budget = _Budget()
    manifest = {}
    for row in _rows(archive, "manifest.csv", budget, None):
        manifest[row.get("propertyName", "")] = row.get("value", "").lower()
    if not any(k.startswith("file.") for k in manifest):
        raise InvalidBundle("manifest.csv has no file.* entries (columns propertyName,value)")
    modes = {}
    names = set(archive.namelist())
    for name in KNOWN_FILES:
        mode = manifest.get(f"file.{name}", "absent")
        if mode not in ("bulk", "delta", "absent"):
            raise InvalidBundle(f"manifest.csv: file.{name} is {mode!r}, not bulk, delta or absent")
        modes[name] = mode
        if mode != "absent" and f"{name}.csv" not in names:
            raise InvalidBundle(f"manifest.csv lists {name}.csv as {mode} but the bundle has no {name}.csv")
    if modes["classes"] == "absent" and modes["enrollments"] == "absent":
        raise InvalidBundle("the bundle has neither classes nor enrollments")
    if {modes["classes"], modes["enrollments"]} == {"bulk", "delta"}:
        raise InvalidBundle("classes and enrollments must both be bulk or both delta")
    full = "bulk" in (modes["classes"], modes["enrollments"])
    if full and "absent" in (modes["classes"], modes["enrollments"]):
        raise InvalidBundle("a bulk bundle needs both classes.csv and enrollments.csv")

    out = RosterRead(full=full)
    out.users_full = modes["users"] == "bulk"
    for name, target in (("classes", out.classes), ("users", out.users), ("enrollments", out.enrollments)):
        if modes[name] == "absent":
            continue
        keep = GUARDIAN_USER_COLUMNS if with_guardians and name == "users" else KEPT_COLUMNS[name]
        for i, row in enumerate(_rows(archive, f"{name}.csv", budget, keep), start=2):
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
            row["status"] = status or "active"
            if "agentSourcedIds" in row:
                # A comma-separated list of ids in one field; kept only when it names someone.
                agents = [sys.intern(a.strip()) for a in row.pop("agentSourcedIds").split(",") if a.strip()]
                if agents:
                    row["agents"] = agents
            target[sourced_id] = row
    if with_guardians and modes["roles"] != "absent":
        _read_roles(archive, budget, out.users)
    return out


def _read_roles(archive: zipfile.ZipFile, budget: _Budget, users: dict) -> None:
    """OneRoster 1.2's roles.csv: each user's roles, as 1.2 REST's `roles` (for users we carry)."""
    for row in _rows(archive, "roles.csv", budget, ROLE_COLUMNS):
        user = users.get(row.get("userSourcedId", ""))
        if user is None or row.get("status", "").lower() == "tobedeleted" or not row.get("role"):
            continue
        user.setdefault("roles", []).append({"role": row["role"]})
