"""Minimal changes that turn what a switch holds into what it should hold."""

from __future__ import annotations

from collections.abc import Mapping

from ryu_dsr.flows.pipeline import Kind, kind_of
from ryu_dsr.flows.rules import Command, FlowAdd, FlowDelete, Rule


def diff(desired: Mapping[tuple, Rule], installed: Mapping[tuple, int]) -> list[Command]:
    """Commands from ``installed`` (key -> cookie) to ``desired`` (key -> rule).

    A rule whose key and cookie (owner and content digest) are both on the
    switch is left alone. Learned pins are never touched here. Deletes come
    first, so that a removed VIP stops attracting traffic before anything new
    is added; then adds and replacements, slot rules before the rules that
    lead traffic to them.
    """
    deletes: list[Command] = []
    for key, cookie in installed.items():
        if kind_of(cookie) == Kind.PIN:
            continue
        if key not in desired:
            table, priority, match = key
            deletes.append(FlowDelete(table, priority, match))
    adds = [FlowAdd(rule) for key, rule in desired.items() if installed.get(key) != rule.cookie]
    adds.sort(key=lambda command: -command.rule.table)
    return deletes + adds
