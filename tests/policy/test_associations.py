"""The ticket-company association rules: ``company_for_new_ticket`` and ``company_for_ticket``.

Pure functions, so no server: the rule table of issue 5 (one company → that
company; several or none → none until one is chosen; a company the creator
is not in → refused, naming the field ``company``), then hypothesis
properties: the answer is always None or one of the creator's companies, and
a requested company outside the memberships always raises ``Invalid``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import ChangeRefused, Invalid
from gateway.policy.associations import company_for_new_ticket, company_for_ticket

Rule = Callable[[Collection[str], str | None], str | None]
RULES: dict[str, Rule] = {"new": company_for_new_ticket, "existing": company_for_ticket}


# --- the rule table ------------------------------------------------------------------------------

NEW_TICKET: list[tuple[list[str], str | None, str | None]] = [
    # member of, requested, associated with
    (["acme"], None, "acme"),  # exactly one company: associated with it
    (["acme", "globex"], None, None),  # several: none until one is chosen
    (["globex", "acme", "initech"], None, None),
    ([], None, None),  # no company at all
    (["acme"], "acme", "acme"),
    (["acme", "globex"], "globex", "globex"),  # several, one chosen
    (["acme", "globex"], "acme", "acme"),
]

EXISTING_TICKET: list[tuple[list[str], str | None, str | None]] = [
    (["acme"], None, None),  # None takes the ticket out of its company, even with one membership
    (["acme", "globex"], None, None),
    ([], None, None),
    (["acme"], "acme", "acme"),
    (["acme", "globex"], "globex", "globex"),
]

REFUSED: list[tuple[list[str], str]] = [
    ([], "acme"),  # no company at all
    (["acme"], "globex"),  # another company
    (["acme", "globex"], "initech"),
    (["acme"], "ACME"),  # ids are compared exactly, not case-folded
    (["acme"], "acme "),
    (["acme"], ""),
]


@pytest.mark.parametrize(("member_of", "requested", "expected"), NEW_TICKET)
def test_new_ticket_rule_table(member_of: list[str], requested: str | None, expected: str | None) -> None:
    assert company_for_new_ticket(member_of, requested) == expected


@pytest.mark.parametrize(("member_of", "requested", "expected"), EXISTING_TICKET)
def test_existing_ticket_rule_table(member_of: list[str], requested: str | None, expected: str | None) -> None:
    assert company_for_ticket(member_of, requested) == expected


@pytest.mark.parametrize("rule", sorted(RULES))
@pytest.mark.parametrize(("member_of", "requested"), REFUSED)
def test_a_company_the_creator_is_not_in_is_refused_naming_the_field(
    rule: str, member_of: list[str], requested: str
) -> None:
    with pytest.raises(Invalid) as refused:
        RULES[rule](member_of, requested)
    assert refused.value.status == 422
    assert [path for path, _ in refused.value.fields] == ["company"]
    assert repr(requested) in refused.value.fields[0][1]


@pytest.mark.parametrize("memberships", [frozenset({"acme"}), ("acme",), {"acme": 1}.keys()])
def test_any_collection_of_memberships_works(memberships: Collection[str]) -> None:
    assert company_for_new_ticket(memberships, None) == "acme"
    assert company_for_ticket(memberships, "acme") == "acme"


# --- properties -----------------------------------------------------------------------------------

company_ids = st.text(alphabet="abcdefgh-", min_size=0, max_size=4)
memberships = st.lists(company_ids, max_size=5, unique=True)


def outcome(rule: Rule, member_of: list[str], requested: str | None) -> str | ChangeRefused | None:
    try:
        return rule(member_of, requested)
    except ChangeRefused as refused:
        return refused


@given(rule=st.sampled_from(sorted(RULES)), member_of=memberships, requested=st.none() | company_ids)
def test_the_answer_is_none_or_a_company_the_creator_is_in(
    rule: str, member_of: list[str], requested: str | None
) -> None:
    result = outcome(RULES[rule], member_of, requested)
    if isinstance(result, ChangeRefused):
        assert requested is not None
        assert requested not in member_of
    else:
        assert result is None or result in member_of
        # A company asked for and allowed is the one given, never another.
        assert requested is None or result == requested


@given(rule=st.sampled_from(sorted(RULES)), member_of=memberships, requested=company_ids)
def test_a_requested_company_outside_the_memberships_always_raises_invalid(
    rule: str, member_of: list[str], requested: str
) -> None:
    outside = [company for company in member_of if company != requested]
    with pytest.raises(Invalid) as refused:
        RULES[rule](outside, requested)
    assert [path for path, _ in refused.value.fields] == ["company"]


@given(member_of=memberships)
def test_with_nothing_requested_a_new_ticket_gets_the_only_company_or_none(member_of: list[str]) -> None:
    expected = member_of[0] if len(member_of) == 1 else None
    assert company_for_new_ticket(member_of, None) == expected
    assert company_for_ticket(member_of, None) is None
