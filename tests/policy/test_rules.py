"""Audience rules: ``compile_rules``, ``compile_conditions`` and ``email_domain``.

Pure functions, so no server: an operator x value table over person and company
attributes, nested groups and the rule each decision names, every compile-time
error with its path, the email traps, and hypothesis properties (a deny-only
policy never grants; ``all`` and ``any`` groups are monotonic; an invalid email
matches no email rule).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, get_args

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gateway.config import Condition, Operator, RuleGroup, RuleValue
from gateway.errors import ConfigError
from gateway.policy.rules import Decision, Facts, Policy, compile_conditions, compile_rules, email_domain

OPERATORS: tuple[str, ...] = get_args(Operator)
Rule = Condition | RuleGroup
ACCESS = "portal.access"
CONDITIONS = "portal.visibility.conditions"


def cond(attribute: str, op: str, value: RuleValue = None) -> Condition:
    """A condition validated the way the config loader validates it."""
    return Condition.model_validate({"attribute": attribute, "op": op, "value": value})


def group(match: str, *rules: Rule) -> RuleGroup:
    """A group validated the way the config loader validates it."""
    return RuleGroup.model_validate({"match": match, "rules": list(rules)})


def facts(person: Mapping[str, Any] | None = None, companies: Sequence[Mapping[str, Any]] = ()) -> Facts:
    """Facts for a person and their companies."""
    return Facts(person=dict(person or {}), companies=list(companies))


def matches(rule: Rule, subject: Facts) -> bool:
    """Whether a single rule, compiled as the whole access policy, lets ``subject`` in."""
    return compile_rules(group("all", rule), ACCESS)(subject).allowed


# --- person attributes: operator x value ------------------------------------------------------

ALICE = {
    "user_id": "u-1",
    "email": "Alice@Example.com",
    "name": "Alice Smith",
    "role": "Admin",  # custom attributes from here on
    "seats": 12,
    "score": 4.5,
    "beta": True,
    "one": 1,
    "phone": "+44 20 7946 0000",
    "seats_text": "100",
    "street": "STRASSE",
    "empty": "",
    "none": None,
    "tags": ["a", "b"],
    "nan": math.nan,
    "huge": 10**400,
}

PERSON_TABLE: list[tuple[str, str, RuleValue, bool]] = [
    # equals: text case-insensitively, numbers numerically, booleans only with booleans
    ("person.name", "equals", "alice smith", True),
    ("person.name", "equals", "ALICE SMITH", True),
    ("person.name", "equals", "alice", False),
    ("person.user_id", "equals", "U-1", True),
    ("person.role", "equals", "admin", True),
    ("person.street", "equals", "stra\u00dfe", True),  # casefold, not lower: "ß" folds to "ss"
    ("person.seats", "equals", 12, True),
    ("person.seats", "equals", 12.0, True),
    ("person.seats", "equals", "12", False),  # text is not a number
    ("person.score", "equals", 4.5, True),
    ("person.beta", "equals", True, True),
    ("person.beta", "equals", 1, False),  # bool is not a number
    ("person.one", "equals", True, False),
    ("person.tags", "equals", "a", False),  # a list is not comparable
    ("person.nan", "equals", 1, False),
    ("person.unset", "equals", "x", False),
    # not_equals: only a comparable, present value can be "different"
    ("person.name", "not_equals", "bob", True),
    ("person.name", "not_equals", "ALICE smith", False),
    ("person.seats", "not_equals", 13, True),
    ("person.seats", "not_equals", 12, False),
    ("person.seats", "not_equals", "12", False),  # incomparable denies
    ("person.name", "not_equals", 5, False),
    ("person.beta", "not_equals", False, True),
    ("person.nan", "not_equals", 1, False),
    ("person.tags", "not_equals", "c", False),
    ("person.unset", "not_equals", "x", False),  # missing denies
    ("person.empty", "not_equals", "x", False),
    ("person.none", "not_equals", "x", False),
    # contains / not_contains / starts_with / ends_with: text attributes only
    ("person.name", "contains", "SMITH", True),
    ("person.name", "contains", "bob", False),
    ("person.phone", "contains", 44, True),  # a number operand is matched as its text
    ("person.seats", "contains", 1, False),
    ("person.unset", "contains", "a", False),
    ("person.name", "not_contains", "bob", True),
    ("person.name", "not_contains", "smith", False),
    ("person.seats", "not_contains", "x", False),
    ("person.unset", "not_contains", "x", False),
    ("person.empty", "not_contains", "x", False),
    ("person.name", "starts_with", "ALI", True),
    ("person.name", "starts_with", "smith", False),
    ("person.unset", "starts_with", "a", False),
    ("person.name", "ends_with", "SMITH", True),
    ("person.name", "ends_with", "alice", False),
    ("person.unset", "ends_with", "a", False),
    # exists / not_exists: absent, None and "" are "no value"
    ("person.name", "exists", None, True),
    ("person.tags", "exists", None, True),
    ("person.unset", "exists", None, False),
    ("person.empty", "exists", None, False),
    ("person.none", "exists", None, False),
    ("person.name", "not_exists", None, False),
    ("person.unset", "not_exists", None, True),
    ("person.empty", "not_exists", None, True),
    ("person.none", "not_exists", None, True),
    # greater_than / less_than: finite numbers only, strict
    ("person.seats", "greater_than", 10, True),
    ("person.seats", "greater_than", 12, False),
    ("person.seats", "less_than", 12.5, True),
    ("person.seats", "less_than", 12, False),
    ("person.score", "greater_than", 4, True),
    ("person.score", "less_than", -1, False),
    ("person.seats_text", "greater_than", 10, False),  # text, even numeric-looking, never compares
    ("person.beta", "greater_than", 0, False),
    ("person.nan", "greater_than", 0, False),
    ("person.nan", "less_than", 0, False),
    ("person.huge", "greater_than", 1e300, True),  # exact at any size, no overflow
    ("person.unset", "less_than", 10, False),
    # in
    ("person.role", "in", ["owner", "ADMIN"], True),
    ("person.role", "in", ["owner"], False),
    ("person.seats", "in", [1, 12], True),
    ("person.seats", "in", ["12"], False),
    ("person.user_id", "in", ["u-2", "u-1"], True),
    ("person.unset", "in", ["x"], False),
    # the built-in fields
    ("person.email", "equals", "alice@example.com", True),
    ("person.email", "ends_with", "@EXAMPLE.COM", True),
    ("person.email", "not_equals", "bob@example.com", True),
    ("person.email", "exists", None, True),
    ("person.email", "not_exists", None, False),
    ("person.email_domain", "equals", "example.com", True),
    ("person.email_domain", "equals", "EXAMPLE.com", True),
    ("person.email_domain", "not_equals", "other.com", True),
    ("person.email_domain", "not_equals", "example.com", False),
    ("person.email_domain", "in", ["other.com", "Example.COM"], True),
    ("person.email_domain", "ends_with", "example.com", True),
    ("person.email_domain", "exists", None, True),
    ("person.email_domain", "not_exists", None, False),
]


@pytest.mark.parametrize(("attribute", "op", "value", "expected"), PERSON_TABLE)
def test_person_operators(attribute: str, op: str, value: RuleValue, expected: bool) -> None:
    assert matches(cond(attribute, op, value), facts(ALICE)) is expected


def test_the_table_covers_every_operator() -> None:
    assert {op for _, op, _, _ in PERSON_TABLE} == set(OPERATORS)


def test_email_domain_is_derived_from_email_never_read_from_an_attribute() -> None:
    forged = facts({"email": "a@evil.com", "email_domain": "example.com"})
    assert not matches(cond("person.email_domain", "equals", "example.com"), forged)
    assert matches(cond("person.email_domain", "equals", "evil.com"), forged)
    no_email = facts({"email_domain": "example.com"})
    assert not matches(cond("person.email_domain", "equals", "example.com"), no_email)
    assert matches(cond("person.email_domain", "not_exists"), no_email)
    assert matches(cond("person.email", "not_exists"), no_email)


# --- company attributes: any company for positive operators, all for negative ones ------------

ACME = {"company_id": "c1", "name": "Acme", "plan": "Pro", "size": 120, "monthly_spend": 999.5, "region": "EU"}
FREEBIES = {"company_id": "c2", "name": "Freebies", "plan": "free", "size": 3, "monthly_spend": 0}
UNKNOWN = {"company_id": "c3", "name": "Unknown", "plan": None, "size": None, "monthly_spend": None}

COMPANY_TABLE: list[tuple[str, str, RuleValue, list[dict[str, Any]], bool]] = [
    ("company.plan", "equals", "pro", [ACME], True),
    ("company.plan", "equals", "pro", [FREEBIES], False),
    ("company.plan", "equals", "pro", [FREEBIES, ACME], True),  # any company
    ("company.plan", "equals", "pro", [UNKNOWN], False),
    # negative operators need every company to agree, and at least one company
    ("company.plan", "not_equals", "free", [ACME], True),
    ("company.plan", "not_equals", "free", [FREEBIES], False),
    ("company.plan", "not_equals", "free", [ACME, FREEBIES], False),
    ("company.plan", "not_equals", "free", [UNKNOWN], False),  # missing denies
    ("company.plan", "not_equals", "free", [ACME, UNKNOWN], False),
    ("company.name", "not_contains", "FREE", [ACME], True),
    ("company.name", "not_contains", "free", [ACME, FREEBIES], False),
    ("company.plan", "not_exists", None, [UNKNOWN], True),
    ("company.plan", "not_exists", None, [UNKNOWN, ACME], False),
    ("company.plan", "exists", None, [UNKNOWN, ACME], True),
    ("company.plan", "exists", None, [UNKNOWN], False),
    ("company.size", "greater_than", 100, [FREEBIES, ACME], True),
    ("company.size", "greater_than", 100, [FREEBIES, UNKNOWN], False),
    ("company.monthly_spend", "less_than", 1, [FREEBIES], True),
    ("company.monthly_spend", "less_than", 1, [ACME, UNKNOWN], False),
    ("company.monthly_spend", "equals", 999.5, [ACME], True),
    ("company.name", "contains", "ACM", [FREEBIES, ACME], True),
    ("company.name", "starts_with", "free", [ACME, FREEBIES], True),
    ("company.name", "ends_with", "bies", [ACME], False),
    ("company.company_id", "in", ["c2", "c9"], [ACME, FREEBIES], True),
    ("company.company_id", "in", ["c2", "c9"], [ACME], False),
    ("company.region", "equals", "eu", [FREEBIES, ACME], True),  # a custom attribute
    ("company.region", "equals", "eu", [FREEBIES], False),
    ("company.region", "not_equals", "us", [ACME, FREEBIES], False),  # Freebies has no region
]


@pytest.mark.parametrize(("attribute", "op", "value", "companies", "expected"), COMPANY_TABLE)
def test_company_operators(
    attribute: str, op: str, value: RuleValue, companies: list[dict[str, Any]], expected: bool
) -> None:
    assert matches(cond(attribute, op, value), facts(ALICE, companies)) is expected


SAMPLE_VALUES: dict[str, RuleValue] = {
    "equals": "free",
    "not_equals": "free",
    "contains": "x",
    "not_contains": "x",
    "starts_with": "x",
    "ends_with": "x",
    "exists": None,
    "not_exists": None,
    "greater_than": -1,
    "less_than": 10**9,
    "in": ["free", "pro"],
}


A_MATCHING_COMPANY: dict[str, dict[str, Any]] = {
    "equals": {"plan": "FREE"},
    "not_equals": {"plan": "pro"},
    "contains": {"plan": "axa"},
    "not_contains": {"plan": "pro"},
    "starts_with": {"plan": "xa"},
    "ends_with": {"plan": "ax"},
    "exists": {"plan": "pro"},
    "not_exists": {"name": "Acme"},
    "greater_than": {"plan": 5},
    "less_than": {"plan": 5},
    "in": {"plan": "Pro"},
}


@pytest.mark.parametrize("op", OPERATORS)
def test_a_person_without_companies_matches_no_company_rule(op: str) -> None:
    rule = cond("company.plan", op, SAMPLE_VALUES[op])
    assert not matches(rule, facts(ALICE, []))
    assert matches(rule, facts(ALICE, [A_MATCHING_COMPANY[op]]))  # the same rule with one company does


# --- nested groups and the rule each decision names ------------------------------------------

NESTED_ALL = group(
    "all",
    cond("person.email_domain", "equals", "example.com"),
    group("any", cond("company.plan", "equals", "pro"), cond("person.role", "equals", "admin")),
)
NESTED_ANY = group(
    "any",
    group("all", cond("person.role", "equals", "admin"), cond("company.size", "greater_than", 100)),
    cond("person.user_id", "in", ["vip"]),
    group("any", group("all", cond("person.name", "starts_with", "z"))),
    group("any", group("any", cond("person.name", "ends_with", "q"))),
)


@pytest.mark.parametrize(
    ("policy", "person", "companies", "expected"),
    [
        (NESTED_ALL, {"email": "a@example.com"}, [ACME], Decision(True, "portal.access")),
        (NESTED_ALL, {"email": "a@example.com", "role": "admin"}, [FREEBIES], Decision(True, "portal.access")),
        (NESTED_ALL, {"email": "a@other.com", "role": "admin"}, [ACME], Decision(False, "portal.access.rules[0]")),
        (NESTED_ALL, {"email": "a@example.com"}, [FREEBIES], Decision(False, "portal.access.rules[1]")),
        (NESTED_ANY, {"role": "admin"}, [ACME], Decision(True, "portal.access.rules[0]")),
        (NESTED_ANY, {"role": "admin", "user_id": "vip"}, [FREEBIES], Decision(True, "portal.access.rules[1]")),
        (NESTED_ANY, {"name": "Zed"}, [], Decision(True, "portal.access.rules[2].rules[0]")),
        (NESTED_ANY, {"name": "Iraq"}, [], Decision(True, "portal.access.rules[3].rules[0].rules[0]")),
        (NESTED_ANY, {"role": "admin", "name": "Amy"}, [FREEBIES], Decision(False, "portal.access")),
        (group("all", NESTED_ANY), {"role": "x"}, [], Decision(False, "portal.access.rules[0]")),
        (
            group("all", group("all", cond("person.role", "exists"), cond("company.size", "less_than", 10))),
            {"role": "admin"},
            [ACME],
            Decision(False, "portal.access.rules[0].rules[1]"),
        ),
    ],
)
def test_decisions_name_the_deciding_rule(
    policy: RuleGroup, person: dict[str, Any], companies: list[dict[str, Any]], expected: Decision
) -> None:
    assert compile_rules(policy, ACCESS)(facts(person, companies)) == expected


def test_an_empty_group_denies_and_says_so() -> None:
    assert compile_rules(RuleGroup(), ACCESS)(facts(ALICE, [ACME])) == Decision(False, "portal.access (no rules)")
    assert compile_rules(group("any"), ACCESS)(facts(ALICE)) == Decision(False, "portal.access (no rules)")
    nested = group("all", cond("person.name", "exists"), group("any"))
    assert compile_rules(nested, ACCESS)(facts(ALICE)) == Decision(False, "portal.access.rules[1] (no rules)")
    beside = group("any", group("all"), cond("person.name", "exists"))
    assert compile_rules(beside, ACCESS)(facts(ALICE)) == Decision(True, "portal.access.rules[1]")


@pytest.mark.parametrize("match", ["all", "any"])
def test_groups_nest_to_any_depth(match: str) -> None:
    rule: Rule = cond("person.role", "equals", "admin")
    for _ in range(60):
        rule = group(match, rule)
    policy = compile_rules(group(match, rule), ACCESS)
    innermost = ACCESS + ".rules[0]" * 61
    admin, guest = policy(facts(ALICE)), policy(facts({"role": "guest"}))
    if match == "all":  # all: the group decides an allow, the failing condition a deny
        assert (admin, guest) == (Decision(True, ACCESS), Decision(False, innermost))
    else:  # any: the matching condition decides an allow, the group a deny
        assert (admin, guest) == (Decision(True, innermost), Decision(False, ACCESS))


def test_rules_compile_from_yaml_shaped_data() -> None:
    access = RuleGroup.model_validate(
        {
            "match": "any",
            "rules": [
                {"attribute": "person.email_domain", "op": "equals", "value": "example.com"},
                {"match": "all", "rules": [{"attribute": "company.plan", "op": "in", "value": ["pro", "enterprise"]}]},
            ],
        }
    )
    policy = compile_rules(access, ACCESS)
    assert policy(facts({"email": "x@example.com"})) == Decision(True, "portal.access.rules[0]")
    assert policy(facts({"email": "x@other.com"}, [ACME])) == Decision(True, "portal.access.rules[1]")
    assert policy(facts({"email": "x@other.com"}, [FREEBIES])) == Decision(False, "portal.access")


def test_visibility_conditions_match_when_all_of_them_match() -> None:
    conditions: list[Rule] = [
        cond("person.role", "equals", "admin"),
        group("any", cond("company.plan", "equals", "enterprise"), cond("company.size", "less_than", 10)),
    ]
    policy = compile_conditions(conditions, CONDITIONS)
    assert policy(facts(ALICE, [FREEBIES])) == Decision(True, CONDITIONS)
    assert policy(facts(ALICE, [ACME])) == Decision(False, "portal.visibility.conditions[1]")
    assert policy(facts({"role": "guest"}, [FREEBIES])) == Decision(False, "portal.visibility.conditions[0]")
    assert compile_conditions([], CONDITIONS)(facts(ALICE)) == Decision(False, f"{CONDITIONS} (no rules)")


def test_policies_do_not_depend_on_earlier_calls() -> None:
    policy = compile_rules(NESTED_ALL, ACCESS)
    outsider = facts({"email": "a@other.com"}, [ACME])
    insider = facts({"email": "a@example.com"}, [ACME])
    assert [policy(subject).allowed for subject in (outsider, insider, outsider, insider)] == [False, True] * 2


# --- compile-time errors name the bad rule ---------------------------------------------------

UNTYPED: dict[str, Any] = {"op": "matches", "match": "most"}  # what a hand-built object might hold
FINE: tuple[Rule, ...] = (cond("person.name", "exists"), cond("company.plan", "equals", "pro"))

BAD_RULES: list[tuple[Rule, str, str]] = [
    (cond("company.size", "greater_than", "10"), ".value", "greater_than needs a number"),
    (cond("company.size", "greater_than", None), ".value", "greater_than needs a number"),
    (cond("company.size", "greater_than", True), ".value", "greater_than needs a number"),
    (cond("company.size", "less_than", [1]), ".value", "less_than needs a number"),
    (cond("company.size", "less_than", math.nan), ".value", "less_than needs a number"),
    (cond("company.size", "greater_than", -math.inf), ".value", "greater_than needs a number"),
    (cond("company.plan", "in", "pro"), ".value", "in needs a non-empty list"),
    (cond("company.plan", "in", []), ".value", "in needs a non-empty list"),
    (cond("company.plan", "in", None), ".value", "in needs a non-empty list"),
    (cond("company.plan", "in", ["pro", " "]), ".value[1]", "in needs a non-empty value"),
    (cond("company.plan", "in", ["pro", math.inf]), ".value[1]", "in needs a finite number"),
    (cond("person.name", "exists", "x"), ".value", "exists takes no value"),
    (cond("person.name", "not_exists", 0), ".value", "not_exists takes no value"),
    (cond("person.name", "not_exists", False), ".value", "not_exists takes no value"),
    (cond("person.name", "equals", None), ".value", "equals needs a value"),
    (cond("person.name", "not_contains", None), ".value", "not_contains needs a value"),
    (cond("person.name", "contains", ["a"]), ".value", "contains needs a single value (use in)"),
    (cond("person.name", "starts_with", ""), ".value", "starts_with needs a non-empty value"),
    (cond("person.name", "ends_with", "  "), ".value", "ends_with needs a non-empty value"),
    (cond("person.name", "contains", True), ".value", "contains needs a string or a number"),
    (cond("person.name", "equals", math.inf), ".value", "equals needs a finite number"),
    (cond("person.email_domain", "equals", "@example.com"), ".value", "compared with a domain"),
    (cond("person.email_domain", "equals", "x@example.com"), ".value", "compared with a domain"),
    (cond("person.email_domain", "equals", "example.com."), ".value", "compared with a domain"),
    (cond("person.email_domain", "equals", "exa mple.com"), ".value", "compared with a domain"),
    (cond("person.email_domain", "not_equals", 5), ".value", "compared with a domain"),
    (cond("person.email_domain", "ends_with", "..example.com"), ".value", "compared with a domain"),
    (cond("person.email_domain", "in", ["example.com", "bad domain"]), ".value[1]", "compared with a domain"),
    (cond("person.email_domain", "contains", "example"), ".op", "person.email_domain supports only equals"),
    (cond("person.email_domain", "starts_with", "example"), ".op", "supports only"),
    (cond("person.email_domain", "not_contains", "evil"), ".op", "supports only"),
    (cond("person.email_domain", "greater_than", 1), ".op", "supports only"),
    # objects built without the config loader's validation are checked again here
    (Condition.model_construct(attribute="user.email", op="equals", value="x"), ".attribute", "person.<field>"),
    (Condition.model_construct(attribute="person.", op="exists", value=None), ".attribute", "person.<field>"),
    (Condition.model_construct(attribute="person.name", op=UNTYPED["op"], value="x"), ".op", "unknown operator"),
    (RuleGroup.model_construct(match=UNTYPED["match"], rules=[]), ".match", "must be all or any"),
]


@pytest.mark.parametrize(("rule", "where", "reason"), BAD_RULES)
def test_bad_rules_fail_at_compile_time_with_their_path(rule: Rule, where: str, reason: str) -> None:
    with pytest.raises(ConfigError) as raised:
        compile_rules(group("all", *FINE, rule), ACCESS)
    [(path, message)] = raised.value.problems
    assert path == f"portal.access.rules[2]{where}"
    assert reason in message
    with pytest.raises(ConfigError) as raised:
        compile_conditions([group("any", *FINE, rule)], CONDITIONS)
    assert [path for path, _ in raised.value.problems] == [f"portal.visibility.conditions[0].rules[2]{where}"]


def test_the_error_reads_as_path_and_reason() -> None:
    with pytest.raises(ConfigError, match=r"^portal\.access\.rules\[2\]\.value: greater_than needs a number$"):
        compile_rules(group("all", *FINE, cond("company.size", "greater_than", "big")), ACCESS)


def test_every_bad_rule_is_reported_with_its_nested_path() -> None:
    access = group(
        "any",
        cond("person.name", "exists", "yes"),
        group("all", cond("person.name", "exists"), cond("company.plan", "in", [])),
    )
    with pytest.raises(ConfigError) as raised:
        compile_rules(access, ACCESS)
    assert [path for path, _ in raised.value.problems] == [
        "portal.access.rules[0].value",
        "portal.access.rules[1].rules[1].value",
    ]


@pytest.mark.parametrize(
    "rule",
    [
        cond("person.favourite_colour", "equals", "blue"),  # unknown names are custom attributes
        cond("company.tier.level", "greater_than", 2),
        cond("person.beta", "equals", True),
        cond("person.beta", "not_equals", False),
        cond("person.email_domain", "ends_with", ".example.com"),
        cond("person.email_domain", "in", ["example.com", "xn--bcher-kva.de", "localhost"]),
        cond("person.email", "ends_with", "@example.com"),
        cond("person.name", "contains", 7),
    ],
)
def test_valid_rules_compile(rule: Rule) -> None:
    compile_rules(group("all", rule), ACCESS)


# --- email traps -----------------------------------------------------------------------------

VALID_EMAILS = [
    ("x@example.com", "example.com"),
    ("X@Example.COM", "example.com"),
    ("first.last+tag@sub.example.co.uk", "sub.example.co.uk"),
    ("o'brien@example.com", "example.com"),
    ("x@xn--bcher-kva.de", "xn--bcher-kva.de"),
    ("x@localhost", "localhost"),
]
INVALID_EMAILS = [
    "a@evil.com@example.com",
    "x@@example.com",
    "@example.com",
    "x@",
    "x",
    "",
    "x @example.com",
    " x@example.com",
    "x@example.com ",
    "x@example.com\n",
    "x@example.com\r\n",
    "x@exa\tmple.com",
    "x\x00@example.com",
    "x@example.com\x00",
    "x\x7f@example.com",
    "x\u0085@example.com",  # NEL, a non-ASCII control character
    "x@example.com\u2028",
    "x\u200b@example.com",
    "x@example.com.",
    "x@.example.com",
    "x@example..com",
    ".x@example.com",
    "x.@example.com",
    "x..y@example.com",
    "x@-example.com",
    "x@example-.com",
    "x@exam_ple.com",
    '"a@b"@example.com',
    "x@[127.0.0.1]",
    "x@exa\u212ample.com",  # Kelvin sign: lower() would fold it to "k"
    "jos\u00e9@example.com",
    "x@b\u00fccher.de",
    "x" * 65 + "@example.com",
    "x@" + "a" * 64 + ".com",
    "x@" + ".".join(["a" * 60] * 5) + ".com",
]


@pytest.mark.parametrize(("email", "domain"), VALID_EMAILS)
def test_email_domain_of_valid_addresses(email: str, domain: str) -> None:
    assert email_domain(email) == domain


@pytest.mark.parametrize("email", INVALID_EMAILS)
def test_email_domain_of_invalid_addresses_is_none(email: str) -> None:
    assert email_domain(email) is None


EMAIL_RULES: list[Condition] = [
    cond("person.email", "equals", "a@evil.com@example.com"),
    cond("person.email", "not_equals", "bob@example.com"),
    cond("person.email", "contains", "example.com"),
    cond("person.email", "not_contains", "nothing-like-this"),
    cond("person.email", "starts_with", "a"),
    cond("person.email", "ends_with", "@example.com"),
    cond("person.email", "ends_with", "example.com"),
    cond("person.email", "exists"),
    cond("person.email", "not_exists"),
    cond("person.email", "in", ["a@evil.com@example.com"]),
    cond("person.email", "greater_than", 0),
    cond("person.email_domain", "equals", "example.com"),
    cond("person.email_domain", "not_equals", "evil.com"),
    cond("person.email_domain", "ends_with", "example.com"),
    cond("person.email_domain", "ends_with", "com"),
    cond("person.email_domain", "in", ["example.com", "evil.com"]),
    cond("person.email_domain", "exists"),
    cond("person.email_domain", "not_exists"),
]


@pytest.mark.parametrize("email", [*INVALID_EMAILS, None, 42, ["a@example.com"]])
@pytest.mark.parametrize("rule", EMAIL_RULES)
def test_an_invalid_email_matches_no_email_rule(email: object, rule: Condition) -> None:
    person = {"email": email, "name": "Mallory"}
    if email in ("", None):
        person.pop("email")  # no email at all is "missing", which only not_exists matches
        assert matches(rule, facts(person)) is (rule.op == "not_exists")
    else:
        assert not matches(rule, facts(person))


@pytest.mark.parametrize(
    ("email", "rule", "expected"),
    [
        ("a@evil.com@example.com", cond("person.email", "ends_with", "@example.com"), False),
        ("x@example.com.evil.com", cond("person.email_domain", "equals", "example.com"), False),
        ("x@example.com.evil.com", cond("person.email_domain", "ends_with", "example.com"), False),
        ("x@example.com.evil.com", cond("person.email_domain", "in", ["example.com"]), False),
        ("x@example.com.evil.com", cond("person.email", "contains", "example.com"), True),  # why email_domain exists
        ("x@notexample.com", cond("person.email", "ends_with", "example.com"), True),  # the trap email_domain avoids
        ("x@notexample.com", cond("person.email_domain", "equals", "example.com"), False),
        ("x@notexample.com", cond("person.email_domain", "ends_with", "example.com"), False),
        ("x@notexample.com", cond("person.email_domain", "ends_with", ".example.com"), False),
        ("x@sub.example.com", cond("person.email_domain", "equals", "example.com"), False),  # equals is exact
        ("x@sub.example.com", cond("person.email_domain", "ends_with", "example.com"), True),
        ("x@sub.example.com", cond("person.email_domain", "ends_with", ".example.com"), True),
        ("X@Example.COM", cond("person.email_domain", "equals", "example.com"), True),
        ("X@Example.COM", cond("person.email", "equals", "x@example.com"), True),
        ("x@example.com ", cond("person.email_domain", "equals", "example.com"), False),
        ("x@example.com.", cond("person.email_domain", "equals", "example.com"), False),
        ("x@example.com\n", cond("person.email", "ends_with", "@example.com"), False),
        ("x@exa\u212ample.com", cond("person.email_domain", "equals", "exakmple.com"), False),
        ("a@evil.com@example.com", cond("person.email_domain", "not_equals", "evil.com"), False),
        ("a@evil.com@example.com", cond("person.email", "not_contains", "zzz"), False),
    ],
)
def test_email_traps(email: str, rule: Condition, expected: bool) -> None:
    assert matches(rule, facts({"email": email})) is expected


# --- properties ------------------------------------------------------------------------------

TEXTS = st.sampled_from(["pro", "Free", "admin", "ADMIN", "Alice", "example.com", "x@example.com", "EU", "ß"])
NUMBERS = st.integers(-5, 200) | st.floats(-5, 200, allow_nan=False)
SCALARS: st.SearchStrategy[str | int | float] = TEXTS | NUMBERS
DOMAINS = st.sampled_from(["example.com", "Example.COM", "sub.example.com", "evil.com", "com", "notexample.com"])
GOOD_EMAILS = st.sampled_from(
    ["alice@example.com", "BOB@Example.com", "c@sub.example.com", "d@notexample.com", "e@example.com.evil.com"]
)
PERSON_FIELDS = ["user_id", "name", "role", "seats", "score", "beta"]
COMPANY_FIELDS = ["plan", "size", "name", "region", "monthly_spend"]
OPS_WITH_SCALAR = ["equals", "not_equals", "contains", "not_contains", "starts_with", "ends_with"]
NEVER_SET = "never_set"  # no generated person or company has this attribute


@st.composite
def conditions(draw: st.DrawFn, attributes: st.SearchStrategy[str] | None = None) -> Condition:
    """Any valid condition on generated attributes (including the email fields)."""
    fields = st.sampled_from([f"person.{f}" for f in [*PERSON_FIELDS, "email", "email_domain"]])
    attribute = draw(
        attributes if attributes is not None else (fields | st.sampled_from([f"company.{f}" for f in COMPANY_FIELDS]))
    )
    domain = attribute == "person.email_domain"
    if domain:
        op = draw(st.sampled_from(["equals", "not_equals", "ends_with", "in", "exists", "not_exists"]))
    else:
        op = draw(st.sampled_from(OPERATORS))
    operand = DOMAINS if domain else SCALARS
    value: RuleValue = None
    if op in ("greater_than", "less_than"):
        value = draw(NUMBERS)
    elif op == "in":
        value = draw(st.lists(operand, min_size=1, max_size=3))
    elif op in ("equals", "not_equals") and not domain:
        value = draw(operand | st.booleans())
    elif op not in ("exists", "not_exists"):
        value = draw(operand)
    return cond(attribute, op, value)


def rule_trees(leaves: st.SearchStrategy[Rule]) -> st.SearchStrategy[Rule]:
    """Conditions and all/any groups of them, nested."""
    return st.recursive(
        leaves,
        lambda children: st.builds(
            lambda match, rules: group(match, *rules), st.sampled_from(["all", "any"]), st.lists(children, max_size=4)
        ),
        max_leaves=12,
    )


ATTRIBUTE_VALUES = st.none() | st.just("") | SCALARS | st.booleans()
PEOPLE = st.fixed_dictionaries(
    {},
    optional={
        "email": GOOD_EMAILS | st.sampled_from(INVALID_EMAILS),
        **{field: ATTRIBUTE_VALUES for field in PERSON_FIELDS},
    },
)
COMPANIES = st.lists(
    st.fixed_dictionaries({}, optional={field: ATTRIBUTE_VALUES for field in COMPANY_FIELDS}), max_size=3
)
FACTS = st.builds(facts, PEOPLE, COMPANIES)

NEVER_MATCHING: st.SearchStrategy[Rule] = st.sampled_from(
    [
        group("any"),
        group("all"),
        cond(f"person.{NEVER_SET}", "equals", "x"),
        cond(f"person.{NEVER_SET}", "not_equals", "x"),
        cond(f"person.{NEVER_SET}", "exists"),
        cond(f"company.{NEVER_SET}", "not_contains", "x"),
        cond(f"company.{NEVER_SET}", "in", ["x", 1]),
    ]
)


def allowed(policy: Policy, subject: Facts) -> bool:
    """The decision, checked to name a rule of the policy."""
    decision = policy(subject)
    assert decision.rule.startswith((ACCESS, CONDITIONS))
    return decision.allowed


@settings(max_examples=300)
@given(rules=st.lists(rule_trees(conditions()), max_size=5), never=NEVER_MATCHING, at=st.integers(0, 5), who=FACTS)
def test_a_never_matching_condition_in_an_all_group_never_grants(
    rules: list[Rule], never: Rule, at: int, who: Facts
) -> None:
    rules.insert(at, never)
    assert not allowed(compile_rules(group("all", *rules), ACCESS), who)
    assert not allowed(compile_conditions(rules, CONDITIONS), who)


@settings(max_examples=300)
@given(tree=rule_trees(NEVER_MATCHING), who=FACTS)
def test_a_policy_built_only_from_denials_never_grants(tree: Rule, who: Facts) -> None:
    assert not allowed(compile_rules(group("any", tree), ACCESS), who)


@settings(max_examples=300)
@given(
    rules=st.lists(rule_trees(conditions()), min_size=1, max_size=4),
    extra=rule_trees(conditions()),
    at=st.integers(0, 4),
    who=FACTS,
)
def test_adding_a_condition_to_an_all_group_never_turns_deny_into_allow(
    rules: list[Rule], extra: Rule, at: int, who: Facts
) -> None:
    before = allowed(compile_rules(group("all", *rules), ACCESS), who)
    after = allowed(compile_rules(group("all", *rules[:at], extra, *rules[at:]), ACCESS), who)
    assert after <= before
    assert allowed(compile_conditions([*rules, extra], CONDITIONS), who) <= before


@settings(max_examples=300)
@given(
    rules=st.lists(rule_trees(conditions()), max_size=4),
    extra=rule_trees(conditions()),
    at=st.integers(0, 4),
    who=FACTS,
)
def test_adding_a_condition_to_an_any_group_never_turns_allow_into_deny(
    rules: list[Rule], extra: Rule, at: int, who: Facts
) -> None:
    before = allowed(compile_rules(group("any", *rules), ACCESS), who)
    after = allowed(compile_rules(group("any", *rules[:at], extra, *rules[at:]), ACCESS), who)
    assert after >= before


SEPARATORS = st.sampled_from(
    [" ", "\t", "\r", "\n", "\x00", "\x0b", "\x1f", "\x7f", "\x85", "\u00a0", "\u2028", "\u200b"]
)
LOCALS = st.from_regex(r"[a-z0-9][a-z0-9.+_-]{0,10}[a-z0-9]", fullmatch=True) | st.sampled_from(["a", "x.y"])


@st.composite
def invalid_emails(draw: st.DrawFn) -> str:
    """A plausible address corrupted with a second @, whitespace or a control character."""
    address = f"{draw(LOCALS)}@{draw(DOMAINS)}"
    kind = draw(st.sampled_from(["two_at", "separator", "both"]))
    if kind in ("two_at", "both"):
        other = f"{draw(LOCALS)}@{draw(DOMAINS)}"
        address = draw(st.sampled_from([f"{address}@{draw(DOMAINS)}", f"{other}@{address}", f"@{address}"]))
    if kind in ("separator", "both"):
        at = draw(st.integers(0, len(address)))
        address = address[:at] + draw(SEPARATORS) + address[at:]
    return address


@settings(max_examples=500)
@given(
    email=invalid_emails(),
    rule=conditions(st.sampled_from(["person.email", "person.email_domain"])),
    person=PEOPLE,
    companies=COMPANIES,
)
def test_an_invalid_email_never_matches_an_email_condition(
    email: str, rule: Condition, person: dict[str, Any], companies: list[dict[str, Any]]
) -> None:
    assert email_domain(email) is None
    subject = facts({**person, "email": email}, companies)
    assert not allowed(compile_rules(group("any", rule), ACCESS), subject)
    assert not allowed(compile_conditions([rule], CONDITIONS), subject)


@settings(max_examples=500)
@given(email=st.text(max_size=30) | st.emails() | invalid_emails(), domain=DOMAINS)
def test_email_domain_equals_only_matches_that_exact_domain(email: str, domain: str) -> None:
    rule = cond("person.email_domain", "equals", domain)
    if matches(rule, facts({"email": email})):
        assert email.count("@") == 1
        assert email.lower().endswith("@" + domain.lower())
        assert email.isascii()
        assert email.isprintable()
        assert " " not in email


@settings(max_examples=300)
@given(companies=COMPANIES, value=SCALARS, field=st.sampled_from(COMPANY_FIELDS))
def test_a_negative_company_rule_never_matches_where_its_positive_one_does(
    companies: list[dict[str, Any]], value: str | int | float, field: str
) -> None:
    assume(not (isinstance(value, str) and not value.strip()))
    subject = facts({}, companies)
    if matches(cond(f"company.{field}", "not_equals", value), subject):
        assert not matches(cond(f"company.{field}", "equals", value), subject)
        assert companies
        assert all(company.get(field) not in (None, "") for company in companies)
    if matches(cond(f"company.{field}", "not_exists"), subject):
        assert not matches(cond(f"company.{field}", "exists"), subject)
