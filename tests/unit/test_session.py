"""The barrier protocol that says when a REST change is held by a switch
(``session.Confirmations``), without a switch or a thread."""

from __future__ import annotations

from ryu_dsr.session import Confirmations


def test_a_change_is_held_once_a_barrier_stamped_with_its_work_is_answered():
    confirm = Confirmations()
    confirm.queued()  # a change's work for the switch
    ticket = confirm.ticket()
    assert not confirm.holds(ticket)
    count = confirm.due()  # the writer has written it all: a barrier carries the count
    assert count == ticket
    confirm.stamped(7, count)
    assert confirm.due() is None  # the same count is not stamped twice
    assert not confirm.holds(ticket)
    confirm.answered(7)
    assert confirm.holds(ticket) and confirm.due() is None


def test_a_change_waits_for_its_own_work_not_for_the_switch_to_fall_idle():
    confirm = Confirmations()
    confirm.queued()
    first = confirm.ticket()
    confirm.stamped(1, confirm.due())
    confirm.queued()  # another writer's change, queued after the first barrier went out
    second = confirm.ticket()
    confirm.answered(1)
    assert confirm.holds(first) and not confirm.holds(second)
    confirm.stamped(2, confirm.due())
    confirm.answered(2)
    assert confirm.holds(second)


def test_a_switch_being_read_holds_a_change_only_after_its_first_write():
    confirm = Confirmations()
    ticket = confirm.ticket(reading=True)  # made while the switch's flows were read
    assert confirm.due() is None and not confirm.holds(ticket)  # nothing queued: no barrier confirms it
    confirm.queued()  # the write after the read, which sends all that differs
    confirm.stamped(3, confirm.due())
    confirm.answered(3)
    assert confirm.holds(ticket)


def test_answers_out_of_order_or_unknown_never_lower_what_is_confirmed():
    confirm = Confirmations()
    for xid in (10, 11):
        confirm.queued()
        confirm.stamped(xid, confirm.due())
    confirm.answered(11)
    assert confirm.confirmed == 2
    confirm.answered(10)  # an older barrier answered late
    confirm.answered(99)  # not ours
    assert confirm.confirmed == 2 and confirm.stamps == {}
