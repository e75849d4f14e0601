"""A district-size OneRoster bundle (50,000 students, 300,000 enrollments) imported within the
bundle function's memory. Real size, so not in CI: `pytest -m full` or `scripts/bench --full`
(which also prints the figures)."""

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.full


def bench_oneroster():
    path = Path(__file__).resolve().parents[2] / "scripts" / "lib" / "bench_oneroster.py"
    spec = importlib.util.spec_from_file_location("bench_oneroster", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_50000_student_300000_enrollment_bundle_imports_within_the_functions_memory():
    bench = bench_oneroster()
    report = bench.measure(50_000, 300_000)
    first, second = report["imports"]
    assert report["shape"]["enrollments"] >= 300_000
    assert first["outcome"] == second["outcome"] == "ok"
    assert first["changes"] == report["shape"]["classes"]  # one course wanted a class
    assert second["changes"] > 0  # the 1 % churn, diffed against the first import
    assert report["peak_rss_mib"] < report["function_memory_mib"]
