"""The mass-change brake end to end: a SIS export gone wrong empties a class; the removals wait for an
administrator while additions flow, and `python -m rostersync approve` applies them."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import World
from tests.e2e.test_dead_letters import admin_command

pytestmark = pytest.mark.e2e


def test_mass_removal_is_held_until_an_administrator_approves_it(world: World):
    teacher = world.person("teacher", "Ann", "Smith")
    students = [world.person("student", f"Kid{i}", "Held") for i in range(10)]
    section = world.clever.add_section("Chemistry - Smith - Period 1", teacher, students=students)
    world.stack.poll_and_wait()
    alias = f"d:clever-{section}"
    newcomer = world.person("student", "New", "Kid")
    world.clever.add_student(section, newcomer)
    for s in students[:8]:  # a broken export drops most of the class
        world.clever.remove_student(section, s)
    result = world.stack.poll_and_wait()
    assert result["held"] == 8 and result["held_batch"]
    roster = world.classroom.roster(alias)
    assert world.emails(*students) <= roster["students"]  # nobody removed
    assert world.email(newcomer) in roster["students"]  # additions still flow
    listing = admin_command(world.stack, "held")
    assert listing.returncode == 0 and result["held_batch"] in listing.stdout and "8 removals" in listing.stdout
    approved = admin_command(world.stack, "approve", result["held_batch"])
    assert approved.returncode == 0, approved.stderr
    world.stack.published_total += 1
    world.stack.relay.wait_for(world.stack.published_total, timeout=60)
    roster = world.classroom.roster(alias)
    assert roster["students"] == world.emails(*students[8:], newcomer)
    again = admin_command(world.stack, "approve", result["held_batch"])
    assert again.returncode == 1 and "already approved" in again.stderr


def test_an_administrator_can_discard_a_held_batch(world: World):
    teacher = world.person("teacher", "Ann", "Smith")
    students = [world.person("student", f"Kid{i}", "Kept") for i in range(6)]
    section = world.clever.add_section("Physics - Smith - Period 2", teacher, students=students)
    world.stack.poll_and_wait()
    world.clever.update_section(section, students=[])
    result = world.stack.poll_and_wait()
    assert result["held"] == 6
    assert admin_command(world.stack, "discard", result["held_batch"]).returncode == 0
    assert world.classroom.roster(f"d:clever-{section}")["students"] == world.emails(*students)
    assert "no held batches" in admin_command(world.stack, "held").stdout
