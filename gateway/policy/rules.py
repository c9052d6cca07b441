"""The audience-rule language, compiled once into predicates that deny by default.

A rule is ``attribute op value``; groups combine rules with ``match: all | any``
and nest to any depth. ``compile_rules`` checks every rule when the config is
loaded (a bad one raises ``ConfigError`` naming its path) and returns a pure,
synchronous ``Policy``: ``Facts -> Decision``, where ``Decision.rule`` names the
rule that decided, for the audit log.

Semantics, chosen so that no rule can grant more than it says:

- ``person.<field>`` reads ``Facts.person``; ``person.email_domain`` is always
  derived from ``person.email`` (the lower-cased domain of a valid address),
  never read from an attribute of that name.
- A *missing* attribute (absent, ``None`` or ``""``) matches only ``not_exists``:
  ``not_equals`` and ``not_contains`` need something to compare, so they deny.
- Values compare by kind: text with text (case-insensitively, ``casefold``),
  numbers with numbers, booleans with booleans. An attribute of another kind
  is incomparable and matches nothing but ``exists`` (so ``company_id equals 42``
  does not match the text ``"42"``: quote values that are text).
  ``greater_than`` and ``less_than`` match finite numbers only; ``bool`` is not a number.
- An email that is not a valid address matches no rule on ``person.email`` or
  ``person.email_domain`` at all, not even ``not_equals`` or ``not_exists``.
- ``company.<field>``: a positive operator matches when ANY of the person's
  companies does; a negative one (``not_equals``, ``not_contains``, ``not_exists``)
  only when the person has companies and ALL of them do. So
  ``company.plan not_equals free`` means "no company of theirs is on free", and a
  person with no company matches no company rule.
- An empty group, or an empty list of conditions, matches no one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, get_args

from gateway.config import Condition, Operator, RuleGroup
from gateway.errors import ConfigError


@dataclass(frozen=True)
class Facts:
    """What rules may look at: the person's attributes and each of their companies' attributes."""

    person: Mapping[str, Any]
    companies: Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class Decision:
    """Whether the rules matched, and the dotted path of the rule that decided."""

    allowed: bool
    rule: str


Policy = Callable[[Facts], Decision]
_Test = Callable[[Any], bool]
_Getter = Callable[[Facts], Any]

_OPERATORS: Final = frozenset(get_args(Operator))
# SECURITY: for company rules these need every company to agree (see the module docstring),
# so a membership in one more company can never make a negative rule start matching.
_NEGATIVE: Final = frozenset({"not_equals", "not_contains", "not_exists"})
_DOMAIN_OPS: Final = ("equals", "not_equals", "ends_with", "in", "exists", "not_exists")

# RFC 5322 dot-atom, ASCII only, and a host name of LDH labels without a trailing dot.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LOCAL_PART = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
# Markers no attribute value can be: "no value" and "an email that is not a valid address".
_MISSING: Final = object()
_INVALID: Final = object()


def email_domain(email: str) -> str | None:
    """The lower-cased domain of a syntactically valid address, else None."""
    # SECURITY: refuses anything a mail system or a naive ends_with could read two ways:
    # a second "@" (a@evil.com@example.com), spaces, control or non-ASCII characters (including
    # look-alikes that lower() folds into ASCII, like the Kelvin sign), an empty local part or
    # domain, and a trailing dot. fullmatch, not "$", so a trailing newline is refused too.
    if not isinstance(email, str) or not email.isascii() or len(email) > 254 or email.count("@") != 1:
        return None
    local, domain = email.split("@")
    domain = domain.lower()
    if len(local) > 64 or not _LOCAL_PART.fullmatch(local) or not _DOMAIN.fullmatch(domain):
        return None
    return domain


def _is_domain(value: str) -> bool:
    """Whether ``value`` is a host name like ``example.com`` (case-insensitively)."""
    return value.isascii() and len(value) <= 253 and _DOMAIN.fullmatch(value.lower()) is not None


def _missing(value: Any) -> bool:
    """Absent, None and the empty string all count as "no value"."""
    return value is None or value is _MISSING or (isinstance(value, str) and not value)


def _number(value: Any) -> float | int | None:
    """The value if it is a finite int or float (bool is not a number), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    # ints are exact at any size (math.isfinite would overflow converting a huge one to float)
    return value if isinstance(value, int) or math.isfinite(value) else None


def _key(value: Any) -> tuple[str, Any] | None:
    """The value's kind and comparable form, or None when it cannot be compared."""
    if isinstance(value, str):
        return ("text", value.casefold())
    if isinstance(value, bool):
        return ("bool", value)
    number = _number(value)
    return None if number is None else ("number", number)


def _text(value: Any) -> str | None:
    """The casefolded text of a text attribute, else None."""
    return value.casefold() if isinstance(value, str) else None


def _string_test(op: str, needle: str) -> _Test:
    """contains / not_contains / starts_with / ends_with against text attributes."""
    if op == "contains":
        return lambda a: (t := _text(a)) is not None and needle in t
    if op == "not_contains":
        return lambda a: (t := _text(a)) is not None and needle not in t
    if op == "starts_with":
        return lambda a: (t := _text(a)) is not None and t.startswith(needle)
    return lambda a: (t := _text(a)) is not None and t.endswith(needle)


def _operand_problem(op: str, value: Any, domain: bool) -> str | None:
    """Why ``value`` cannot be an operand of ``op`` (one item, for ``in``), or None when it can."""
    if value is None:
        return f"{op} needs a value"
    if isinstance(value, list):
        return f"{op} needs a list of single values" if op == "in" else f"{op} needs a single value (use in)"
    if domain and not (isinstance(value, str) and _is_domain(value.removeprefix(".") if op == "ends_with" else value)):
        return "person.email_domain must be compared with a domain like example.com"
    if isinstance(value, bool):
        # Booleans only make sense as equality with a boolean custom attribute.
        return None if op in ("equals", "not_equals") else f"{op} needs a string or a number"
    if isinstance(value, str):
        return None if value.strip() else f"{op} needs a non-empty value"
    if isinstance(value, int | float):
        return None if _number(value) is not None else f"{op} needs a finite number"
    return f"{op} needs a string or a number"


def _compile_test(cond: Condition, path: str, problems: list[tuple[str, str]]) -> _Test | None:
    """The test an existing, valid attribute value must pass; records problems and returns None if bad."""
    op, value, domain = cond.op, cond.value, cond.attribute == "person.email_domain"
    where = f"{path}.value"
    if op not in _OPERATORS:
        problems.append((f"{path}.op", f"unknown operator {op!r}"))
        return None
    if domain and op not in _DOMAIN_OPS:
        problems.append((f"{path}.op", f"person.email_domain supports only {', '.join(_DOMAIN_OPS)}"))
        return None
    if op in ("exists", "not_exists"):
        if value is not None:
            problems.append((where, f"{op} takes no value"))
            return None
        return lambda a: True
    if op in ("greater_than", "less_than"):
        bound = _number(value)
        if bound is None:
            problems.append((where, f"{op} needs a number"))
            return None
        if op == "greater_than":
            return lambda a: (n := _number(a)) is not None and n > bound
        return lambda a: (n := _number(a)) is not None and n < bound
    operands: list[tuple[str, Any]]
    if op == "in":
        if not isinstance(value, list) or not value:
            problems.append((where, "in needs a non-empty list"))
            return None
        operands = [(f"{where}[{i}]", item) for i, item in enumerate(value)]
    else:
        operands = [(where, value)]
    for at, operand in operands:
        reason = _operand_problem(op, operand, domain)
        if reason is not None:
            problems.append((at, reason))
            return None
    if op == "in":
        keys = frozenset(_key(operand) for _, operand in operands)
        return lambda a: _key(a) in keys
    if op in ("equals", "not_equals"):
        key = _key(value)
        if op == "equals":
            return lambda a: _key(a) == key
        # SECURITY: an incomparable attribute (another kind) is not "different": it denies.
        return lambda a: (k := _key(a)) is not None and key is not None and k[0] == key[0] and k != key
    needle = str(value).casefold()
    if domain:  # SECURITY: label-aware, so example.com (or .example.com) matches a.example.com, not notexample.com
        suffix = "." + needle.removeprefix(".")
        return lambda a: (t := _text(a)) is not None and ("." + t).endswith(suffix)
    return _string_test(op, needle)


def _person_getter(field: str) -> _Getter:
    """Reads ``person.<field>``; the email fields come out as _INVALID for an invalid address."""
    if field not in ("email", "email_domain"):
        return lambda facts: facts.person.get(field, _MISSING)

    def email_field(facts: Facts) -> Any:
        raw = facts.person.get("email")
        if _missing(raw):
            return _MISSING
        # SECURITY: an address that is not valid matches no email rule, so a@evil.com@example.com
        # cannot pass "ends_with @example.com" and "not_equals" cannot let it through either.
        domain = email_domain(raw) if isinstance(raw, str) else None
        if domain is None:
            return _INVALID
        return raw if field == "email" else domain

    return email_field


def _holds(value: Any, op: str, test: _Test) -> bool:
    """Applies one condition to one attribute value; a missing value matches only not_exists."""
    if value is _INVALID:
        return False
    if _missing(value):
        return op == "not_exists"
    return op != "not_exists" and test(value)


def _compile_condition(cond: Condition, path: str, problems: list[tuple[str, str]]) -> Policy:
    """One condition as a policy whose decisions name ``path``."""
    scope, _, field = cond.attribute.partition(".")
    if scope not in ("person", "company") or not field:
        problems.append((f"{path}.attribute", f"must be person.<field> or company.<field>, got {cond.attribute!r}"))
        return _never(path)
    test = _compile_test(cond, path, problems)
    if test is None:
        return _never(path)
    yes, no, op = Decision(True, path), Decision(False, path), cond.op
    if scope == "person":
        get = _person_getter(field)
        return lambda facts: yes if _holds(get(facts), op, test) else no

    def company_rule(facts: Facts) -> Decision:
        values = [company.get(field, _MISSING) for company in facts.companies]
        if op in _NEGATIVE:
            matched = bool(values) and all(_holds(value, op, test) for value in values)
        else:
            matched = any(_holds(value, op, test) for value in values)
        return yes if matched else no

    return company_rule


def _never(path: str) -> Policy:
    """A policy that denies everyone, naming ``path``."""
    denied = Decision(False, path)
    return lambda facts: denied


def _combine(match: str, children: Sequence[Policy], path: str, problems: list[tuple[str, str]]) -> Policy:
    """all/any over compiled children; the decision names the innermost rule that decided."""
    if match not in ("all", "any"):
        problems.append((f"{path}.match", f"must be all or any, got {match!r}"))
        return _never(path)
    if not children:
        # SECURITY: an empty group grants nothing (unlike a vacuously true "all of nothing").
        return _never(f"{path} (no rules)")
    allowed, denied = Decision(True, path), Decision(False, path)

    def all_of(facts: Facts) -> Decision:
        for child in children:
            decision = child(facts)
            if not decision.allowed:
                return decision
        return allowed

    def any_of(facts: Facts) -> Decision:
        for child in children:
            decision = child(facts)
            if decision.allowed:
                return decision
        return denied

    return all_of if match == "all" else any_of


def _compile_node(rule: Condition | RuleGroup, path: str, problems: list[tuple[str, str]]) -> Policy:
    """A condition or a group (recursively) as a policy."""
    if isinstance(rule, RuleGroup):
        children = [_compile_node(child, f"{path}.rules[{i}]", problems) for i, child in enumerate(rule.rules)]
        return _combine(rule.match, children, path, problems)
    if isinstance(rule, Condition):
        return _compile_condition(rule, path, problems)
    problems.append((path, "must be a condition or a group of rules"))
    return _never(path)


def _checked(policy: Policy, problems: list[tuple[str, str]]) -> Policy:
    """The policy, or ConfigError with every problem found while compiling it."""
    if problems:
        raise ConfigError(*problems)
    return policy


def compile_rules(group: RuleGroup, path: str) -> Policy:
    """Compile an access-rule group once; raise ConfigError naming each bad rule's path."""
    problems: list[tuple[str, str]] = []
    return _checked(_compile_node(group, path, problems), problems)


def compile_conditions(conditions: Sequence[Condition | RuleGroup], path: str) -> Policy:
    """Compile a list of conditions that matches when ALL of them match (an empty list matches no one)."""
    problems: list[tuple[str, str]] = []
    children = [_compile_node(rule, f"{path}[{i}]", problems) for i, rule in enumerate(conditions)]
    return _checked(_combine("all", children, path, problems), problems)
