"""Per-request cost of identity and access, beside references measured in the same run.

    .venv/bin/python bench/bench_identity.py

Prints microseconds per call and ratios, for:
- first sight of a token (full HS256 verification) vs PyJWT's own ``jwt.decode`` (reference);
- a cached token (the common case) vs a plain ``dict`` lookup of a SHA-256 key (reference);
- 10,000 distinct tokens in flight (every one cached, the cache at its bound);
- the access rules and the visibility decision for one visitor.
Machines are noisy: read the ratios, not the absolute figures.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from collections.abc import Callable

import jwt

from gateway.config import Condition, RuleGroup, VisibilityConfig
from gateway.policy.identity import Identity, JWTVerifier, sign_token
from gateway.policy.rules import compile_rules
from gateway.policy.visibility import VisibilityPolicy, Visitor
from gateway.store.models import Company, Contact

SECRET = "bench-secret-0123456789abcdef0123456789"
NOW = 1_800_000_000.0
DISTINCT = 10_000


def per_call_us(function: Callable[[], object], calls: int, repeats: int = 5) -> float:
    """Median over ``repeats`` of the mean microseconds per call."""
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(calls):
            function()
        samples.append((time.perf_counter() - started) / calls * 1e6)
    return statistics.median(samples)


def tokens(count: int) -> list[str]:
    """``count`` distinct valid tokens."""
    return [sign_token(SECRET, user_id=f"user-{i}", email=f"u{i}@example.com", now=NOW, ttl=3600) for i in range(count)]


def main() -> None:
    """Run every measurement and print the table."""
    pool = tokens(DISTINCT)
    one = pool[0]
    rows: list[tuple[str, float, str, float]] = []

    fresh = iter(pool * 10)
    uncached = JWTVerifier([SECRET], leeway=30, require_exp=True, cache_size=0)

    def first_sight() -> object:
        return uncached.verify(next(fresh), NOW)

    def pyjwt_decode() -> object:
        return jwt.decode(one, SECRET, algorithms=["HS256"], options={"verify_exp": False, "verify_iat": False})

    rows.append(("first sight (verify)", per_call_us(first_sight, 2000), "jwt.decode", per_call_us(pyjwt_decode, 2000)))

    cached = JWTVerifier([SECRET], leeway=30, require_exp=True)
    cached.verify(one, NOW)
    table = {hashlib.sha256(one.encode()).digest(): 1}

    def cached_verify() -> object:
        return cached.verify(one, NOW)

    def dict_lookup() -> object:
        return table[hashlib.sha256(one.encode()).digest()]

    rows.append(("cached token", per_call_us(cached_verify, 50_000), "sha256+dict", per_call_us(dict_lookup, 50_000)))

    many = JWTVerifier([SECRET], leeway=30, require_exp=True, cache_size=DISTINCT)
    for token in pool:
        many.verify(token, NOW)
    cycle = iter(pool * 20)

    def many_cached() -> object:
        return many.verify(next(cycle), NOW)

    rows.append((f"{DISTINCT:,} tokens in flight", per_call_us(many_cached, DISTINCT), "cached token", rows[-1][1]))

    companies = tuple(Company(i, f"c{i}", f"Company {i}", plan="pro", size=50) for i in range(3))
    contact = Contact(1, "user-0", "u0@example.com", "User", {"role": "admin"}, companies)
    visitor = Visitor(Identity("user-0", "jwt", "u0@example.com", claims={"user_id": "user-0"}), contact)
    access = compile_rules(
        RuleGroup(
            match="all",
            rules=[
                Condition(attribute="person.email_domain", op="equals", value="example.com"),
                Condition(attribute="company.plan", op="in", value=["pro", "enterprise"]),
            ],
        ),
        "portal.access",
    )
    visibility = VisibilityPolicy(
        VisibilityConfig(enabled=True, conditions=[Condition(attribute="person.role", op="equals", value="guest")])
    )

    def decide() -> object:
        facts = visitor.facts()
        return access(facts), visibility.decide(visitor)

    rows.append(("access + visibility", per_call_us(decide, 20_000), "cached token", rows[1][1]))

    print(f"{'measurement':<26}{'µs/call':>10}   {'reference':<14}{'µs/call':>10}{'ratio':>9}")
    for name, value, reference, reference_value in rows:
        print(f"{name:<26}{value:>10.2f}   {reference:<14}{reference_value:>10.2f}{value / reference_value:>9.2f}")
    print(f"cache after {DISTINCT:,} tokens: {len(many.cache)} entries, {many.hits} hits, {many.misses} misses")


if __name__ == "__main__":
    main()
