"""Every kind of bad zip is rejected whole as a `bad_oneroster_bundle` problem with its reason, and
the import returns (acknowledged): encrypted, corrupt, truncated, Deflate64, zip bombs (by ratio,
by size, and with a lying header), too many rows, missing files, duplicate entries."""

import io
import re
import struct
import zipfile

import pytest
from rostersync.app.oneroster_poller import import_bundle
from rostersync.domain.sources import oneroster_csv
from rostersync.domain.sources.oneroster_csv import InvalidBundle, read_bundle

from tests.unit.fakes import FakePublisher
from tests.unit.test_oneroster_csv import BULK, bundle, cls, enr, user
from tests.unit.test_oneroster_poller import MemoryState


def patch_entry(data: bytes, name: str, flag: int | None = None, method: int | None = None, size: int | None = None):
    """`data` with one entry's general-purpose flags, compression method or uncompressed size
    rewritten, in its local header and in the central directory alike."""
    out = bytearray(data)
    raw = name.encode()
    i = 0
    while (i := out.find(b"PK\x03\x04", i)) >= 0:
        n = struct.unpack_from("<H", out, i + 26)[0]
        if out[i + 30 : i + 30 + n] == raw:
            if flag is not None:
                struct.pack_into("<H", out, i + 6, struct.unpack_from("<H", out, i + 6)[0] | flag)
            if method is not None:
                struct.pack_into("<H", out, i + 8, method)
            if size is not None:
                struct.pack_into("<I", out, i + 22, size)
        i += 4
    i = 0
    while (i := out.find(b"PK\x01\x02", i)) >= 0:
        n = struct.unpack_from("<H", out, i + 28)[0]
        if out[i + 46 : i + 46 + n] == raw:
            if flag is not None:
                struct.pack_into("<H", out, i + 8, struct.unpack_from("<H", out, i + 8)[0] | flag)
            if method is not None:
                struct.pack_into("<H", out, i + 10, method)
            if size is not None:
                struct.pack_into("<I", out, i + 24, size)
        i += 4
    return bytes(out)


def corrupt(data: bytes, name: str) -> bytes:
    """Flips bytes in the middle of one entry's compressed data."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        info = z.getinfo(name)
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    out = bytearray(data)
    for k in range(start + 2, start + min(info.compress_size, 40)):
        out[k] ^= 0x5A
    return bytes(out)


def bomb(size: int) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("manifest.csv", "propertyName,value\nfile.classes,bulk\nfile.enrollments,bulk\nfile.users,bulk\n")
        z.writestr("classes.csv", "sourcedId,title\n" + "c1,A\n")
        with z.open("enrollments.csv", "w") as f:
            chunk = b"\0" * 1_000_000
            for _ in range(size // len(chunk)):
                f.write(chunk)
        z.writestr("users.csv", "sourcedId,email\n")
    return out.getvalue()


DEFLATED = bundle(  # stored entries, in fact (zipfile.writestr's default); COMPRESSED below is deflated
    classes=[cls(f"c{i}", f"Class {i}") for i in range(30)],
    users=[user(f"s{i}", "student") for i in range(30)],
    enrollments=[enr(f"e{i}", f"c{i}", f"s{i}", "student") for i in range(30)],
)
COMPRESSED = io.BytesIO()
with zipfile.ZipFile(io.BytesIO(DEFLATED)) as src, zipfile.ZipFile(COMPRESSED, "w", zipfile.ZIP_DEFLATED) as dst:
    for info in src.infolist():
        dst.writestr(info.filename, src.read(info.filename))
COMPRESSED = COMPRESSED.getvalue()

BAD = {
    "encrypted": (patch_entry(BULK, "classes.csv", flag=0x1), "classes.csv is encrypted"),
    "deflate64": (patch_entry(COMPRESSED, "enrollments.csv", method=9), "Deflate64"),
    "unknown_method": (patch_entry(COMPRESSED, "users.csv", method=99), "method 99"),
    "corrupt_deflate_data": (corrupt(COMPRESSED, "enrollments.csv"), "damaged"),
    "truncated": (COMPRESSED[: len(COMPRESSED) // 2], "not a zip file"),
    "bomb_by_ratio": (bomb(50_000_000), "zip bomb"),
    "bomb_with_a_lying_header": (patch_entry(bomb(5_000_000), "enrollments.csv", size=100), "damaged"),
    "missing_manifest": (
        bundle(classes=[cls("c1", "A")], extra={}).replace(b"manifest.csv", b"manifest.txt"),
        "manifest.csv is missing",
    ),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_a_bad_zip_is_rejected_whole_recorded_and_acknowledged(kind):
    data, reason = BAD[kind]
    with pytest.raises(InvalidBundle, match=re.escape(reason)):
        read_bundle(data)
    state, publisher = MemoryState(), FakePublisher()
    result = import_bundle("exports/roster.zip", "2026-09-01T00:00:00Z", data, state, publisher, None)
    assert result.outcome == "rejected" and reason in result.reason
    assert publisher.messages == [] and state.states == {}
    (problem,) = state.problems
    assert problem.kind == "bad_oneroster_bundle" and "exports/roster.zip" in problem.message


def test_caps_on_uncompressed_size_and_rows(monkeypatch):
    monkeypatch.setattr(oneroster_csv, "MAX_UNCOMPRESSED_BYTES", 2_000)
    with pytest.raises(InvalidBundle, match="bytes uncompressed, more than 2000"):
        read_bundle(DEFLATED)
    monkeypatch.setattr(oneroster_csv, "MAX_UNCOMPRESSED_BYTES", 10**9)
    monkeypatch.setattr(oneroster_csv, "MAX_ROWS", 50)
    with pytest.raises(InvalidBundle, match="more than 50 rows"):
        read_bundle(DEFLATED)
    monkeypatch.setattr(oneroster_csv, "MAX_ROWS", 200)
    assert len(read_bundle(DEFLATED).enrollments) == 30


def test_only_the_columns_the_sync_uses_are_kept():
    read = read_bundle(COMPRESSED)
    assert set(read.users["s1"]) == {"sourcedId", "email", "status"}
    assert set(read.enrollments["e1"]) == {"sourcedId", "classSourcedId", "userSourcedId", "role", "primary", "status"}


def test_a_non_utf8_csv_is_rejected():
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("manifest.csv", "propertyName,value\nfile.classes,bulk\nfile.enrollments,bulk\n")
        z.writestr("classes.csv", b"sourcedId,title\nc1,Caf\xe9\n")
        z.writestr("enrollments.csv", "sourcedId,classSourcedId,userSourcedId,role\n")
    with pytest.raises(InvalidBundle, match=r"classes\.csv is not UTF-8"):
        read_bundle(out.getvalue())


def test_a_zip_of_countless_entries_is_refused_before_its_directory_is_read(monkeypatch):
    monkeypatch.setattr(oneroster_csv, "MAX_DIRECTORY_BYTES", 5_000)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("manifest.csv", "propertyName,value\nfile.classes,bulk\nfile.enrollments,bulk\n")
        for i in range(200):
            z.writestr(f"junk/{i}.txt", "")
    with pytest.raises(InvalidBundle, match="the zip's directory is"):
        read_bundle(out.getvalue())
