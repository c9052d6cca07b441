"""The demo store that ``serve`` seeds for the bundled config: four companies, twelve people, 200 tickets.

Customers ask and support answers: each ticket's creator writes its description
(in their own words, restating the title) and the customer's side of the
conversation; teammates write every other part, and the conversation goes as
far as the ticket's state says (a submitted ticket has no answer yet, one waiting
on the customer ends with support's question, a resolved one with the fix).
Every person's own tickets go through every state, with customer-visible types
among them, so each filter of the portal shows something for anyone.

A company's tickets have distinct titles: a topic it raises again is told
apart by who raised it (``Dark mode for the dashboard (sales team)``), and its
description starts by restating that title.

Deterministic for a given ``now``; written through the importer's own line
types, so the demo exercises the same path as ``portal-gateway import``.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from gateway.store.lines import CompanyLine, ContactLine, Line, PartLine, StateLine, TicketLine
from gateway.store.models import TicketCategory
from gateway.store.protocol import Store

DAY = 86_400
HOUR = 3_600
TICKETS = 200
TEAMMATES = ("Sam (support)", "Priya (support)")
SUPPORT = TEAMMATES[0]
# A word only in public replies and one only in internal notes, for trying search.
PUBLIC_WORD = "zephyr"
INTERNAL_WORD = "quokka"
# The custom attribute ``role`` of every person: "admin" for these, "member" for the others. The README's
# visibility condition (person.role equals member) restricts the members to the tickets they created.
ADMINS = frozenset({"u-ann", "u-ben", "u-cho", "u-eve", "u-gia"})

COMPANIES = [
    CompanyLine(kind="company", company_id="acme", name="Acme Corp", plan="pro", size=120, monthly_spend=2400),
    CompanyLine(kind="company", company_id="globex", name="Globex", plan="enterprise", size=800, monthly_spend=12000),
    CompanyLine(kind="company", company_id="initech", name="Initech", plan="starter", size=15, monthly_spend=99),
    CompanyLine(kind="company", company_id="umbrella", name="Umbrella Health", plan="pro", size=60, monthly_spend=1500),
]
PEOPLE = [
    ("u-ann", "Ann Archer", "ann@acme.example.com", ["acme"]),
    ("u-ben", "Ben Baxter", "ben@acme.example.com", ["acme", "globex"]),
    ("u-cho", "Cho Chen", "cho@globex.example.com", ["globex"]),
    ("u-dev", "Dev Desai", "dev@globex.example.com", ["globex", "initech"]),
    ("u-eve", "Eve Evans", "eve@initech.example.com", ["initech"]),
    ("u-fin", "Finn Fox", "finn@initech.example.com", ["initech"]),
    ("u-gia", "Gia Greco", "gia@umbrella.example.com", ["umbrella"]),
    ("u-hal", "Hal Hughes", "hal@umbrella.example.com", ["umbrella", "acme"]),
    ("u-ivy", "Ivy Ito", "ivy@acme.example.com", ["acme"]),
    ("u-jon", "Jon Jones", "jon@globex.example.com", ["globex"]),
    ("u-lee", "Lee Lopez", "lee@umbrella.example.com", ["umbrella"]),
    ("u-kim", "Kim Kowalski", "kim@freelance.example.net", []),
]
STATES = [
    StateLine(kind="ticket_state", category="submitted", internal_label="New", external_label="Submitted"),
    StateLine(
        kind="ticket_state", category="in_progress", internal_label="Investigating", external_label="In progress"
    ),
    StateLine(
        kind="ticket_state",
        category="in_progress",
        internal_label="Waiting on engineering",
        external_label="In progress",
    ),
    StateLine(
        kind="ticket_state",
        category="waiting_on_customer",
        internal_label="Needs customer",
        external_label="Waiting on you",
    ),
    StateLine(kind="ticket_state", category="resolved", internal_label="Fixed", external_label="Resolved"),
]
# Three customer types in every run of three, so each person has customer tickets in every state.
TYPES: list[tuple[str, TicketCategory]] = [
    ("Bug report", "Customer"),
    ("Feature request", "Customer"),
    ("Billing question", "Customer"),
    ("Account review", "Back-office"),
    ("Engineering tracker", "Tracker"),
]


@dataclass(frozen=True)
class Topic:
    """What one ticket is about: its title, the customer's description, and the conversation that follows."""

    title: str
    description: str
    """The creator's own words; restates the title."""
    question: str
    """Support's first answer, asking for what it needs."""
    answer: str
    """The customer's reply to that question."""
    resolution: str
    """Support's last word once it is fixed."""


TOPICS: dict[str, list[Topic]] = {
    "Bug report": [
        Topic(
            "CSV export fails with an error",
            "Since Monday the CSV export fails with an error for everyone on our team. We pick last month, press"
            ' Export and get "Something went wrong".',
            "Sorry about that. Which browser do you use, and does a shorter date range work?",
            "Chrome on a Mac. A single week exports fine, a whole month never does.",
            "The fix is live: a month or more exports in one go again.",
        ),
        Topic(
            "Single sign-on redirects to a blank page",
            "Since we rotated our certificate, single sign-on redirects to a blank page instead of the dashboard.",
            "Could you tell us the time of one failed sign-in, and whether a private window shows it too?",
            "It failed at 9:14 this morning, and yes, a private window shows the same blank page.",
            "Our side had cached your old certificate. We refreshed it and sign-in works again.",
        ),
        Topic(
            "Dashboard is slow to load",
            "Our dashboard is slow to load: it takes about thirty seconds every morning, and the charts come last.",
            "Thanks for the details. Roughly how many projects does your team have?",
            "About forty projects, most of them archived.",
            "Archived projects no longer slow it down: the dashboard loads in about two seconds now.",
        ),
        Topic(
            "Monthly report times out",
            "The monthly report times out after a minute. It was slow before, but since the last release it never"
            " finishes.",
            "Could you tell us which filters your report uses?",
            "All regions, grouped by week, compared with last year.",
            "We rewrote the comparison with last year, which took too long. The report finishes in seconds now.",
        ),
        Topic(
            "Webhooks stop arriving after an hour",
            "Our webhooks stop arriving after an hour: new events show up in the log, but our endpoint never gets"
            " them.",
            "Does your endpoint answer within ten seconds? We pause deliveries to endpoints that time out.",
            "It answers in under a second, and our logs show no request from you after 10:00.",
            "A stuck delivery worker held your queue. It is restarted and your webhooks have caught up.",
        ),
        Topic(
            "Mobile app crashes on login",
            "The mobile app crashes on login for two people on our team, both on Android 14.",
            "Which version of the app do they have? It is on the About screen.",
            "Version 5.2.0 on both phones.",
            "Version 5.2.1 fixes the crash and is in the Play Store now.",
        ),
    ],
    "Feature request": [
        Topic(
            "Schedule the CSV export every week",
            "We would like to schedule the CSV export every week, so the numbers are in our inbox on Monday mornings.",
            "Thanks for the idea. Would one email address be enough, or do you need several?",
            "Several would help: our finance team has three people.",
            "Scheduled exports are out: Reports, then Schedule, with up to five addresses.",
        ),
        Topic(
            "Dark mode for the dashboard",
            "Please add dark mode for the dashboard; half of our team works late and keeps asking for it.",
            "Noted! Should it follow the operating system, or be a switch in the app?",
            "Following the operating system would be perfect.",
            "Dark mode for the dashboard is live and follows your operating system.",
        ),
    ],
    "Billing question": [
        Topic(
            "Charged twice for November",
            "We were charged twice for November: two identical payments on our company card on the 1st.",
            "Sorry for the trouble. Could you send the last four digits of the card, so we can find both payments?",
            "It ends in 4242.",
            "We refunded the second payment; your bank should show it within five days.",
        ),
        Topic(
            "Invoice PDF shows the wrong VAT number",
            "Our invoice PDF shows the wrong VAT number: it still has the one from before we moved offices.",
            "Could you send us the VAT number that should be on it?",
            "It is GB 123 4567 89.",
            "Your VAT number is updated, and we sent the last three invoices again with it.",
        ),
        Topic(
            "Change the billing email",
            "Please change the billing email to our finance team's shared address; the current one belongs to"
            " someone who has left.",
            "Happy to. Could an owner of the account confirm the change here?",
            "Confirmed, I am an owner of the account.",
            "Done: invoices now go to your finance team's address.",
        ),
    ],
    "Account review": [
        Topic(
            "Quarterly account review",
            "Time for our quarterly account review: we would like to go over our usage and the seats we pay for.",
            "Would next Tuesday or Wednesday afternoon suit you for a call?",
            "Wednesday at 3 pm works for us.",
            "Thanks for the call. The summary is on its way by email.",
        ),
        Topic(
            "Seat count review before renewal",
            "We need a seat count review before renewal: we think we pay for more seats than we use.",
            "We see 48 seats and 31 active people. Shall we lower it to 35?",
            "Yes, 35 seats please.",
            "Your plan has 35 seats from the next renewal on.",
        ),
    ],
    "Engineering tracker": [
        Topic(
            "Webhook retries pile up in the queue",
            "Webhook retries pile up in the queue for our account: the retry count only ever grows.",
            "Does it happen for every endpoint, or one in particular?",
            "Only for the endpoint of our billing system.",
            "Retries to that endpoint are spread out again and the queue is empty.",
        ),
        Topic(
            "Search misses tickets from today",
            "Search misses tickets from today: they show up in the results a day later.",
            "Do they show up when you open them by their number?",
            "Yes, by number they open at once.",
            "The search index refreshes every minute again.",
        ),
    ],
}
# Who at the company raised a topic again, so that no two of a company's tickets share a title.
AGAIN = (
    "finance team",
    "sales team",
    "support team",
    "marketing team",
    "Berlin office",
    "Lisbon office",
    "night shift",
    "new starters",
    "trial workspace",
    "staging workspace",
    "second workspace",
    "partner accounts",
)
# Support's word while it works on a ticket, and once engineers have it; these hold the public search word.
UPDATES = [
    "Thanks, that is what we needed. We are working on it now.",
    f"We traced this to our {PUBLIC_WORD} sync service and are working on a fix.",
]
HANDED_TO_ENGINEERS = (
    f"Our engineers are on it: the {PUBLIC_WORD} sync service needs a change. We will write here as soon as we"
    " know more."
)
THANKS = ["Thank you, all good now.", "Confirmed, it works for us. Thanks!", "Great, thanks for the quick help."]
NOTES = [
    f"Escalated to the {INTERNAL_WORD} team, do not promise a date.",
    "Customer is on a renewal call next week.",
    "Same cause as an older engineering issue.",
    "Checked the logs: nothing unusual on our side.",
]


def _conversation(state: str, topic: Topic, rng: random.Random) -> list[tuple[bool, str]]:
    """The public parts a ticket in ``state`` has so far, as (by the customer, text), oldest first."""
    asked = [(False, topic.question)]
    answered = [*asked, (True, topic.answer)]
    if state == "New":
        return []
    if state == "Needs customer":
        return asked
    if state == "Investigating":
        return answered if rng.random() < 0.5 else [*answered, (False, rng.choice(UPDATES))]
    if state == "Waiting on engineering":
        return [*answered, (False, HANDED_TO_ENGINEERS)]
    ending = [(True, rng.choice(THANKS))] if rng.random() < 0.5 else []
    return [*answered, (False, rng.choice(UPDATES)), (False, topic.resolution), *ending]


def _titled(topic: Topic, company: str | None, raised: Counter[tuple[str | None, str]]) -> tuple[str, str]:
    """The title and description of ``topic`` for ``company``: the plain title the first time, then told apart."""
    again = raised[company, topic.title]
    raised[company, topic.title] += 1
    if again == 0:
        return topic.title, topic.description
    round_, who = divmod(again - 1, len(AGAIN))
    title = f"{topic.title} ({AGAIN[who]}{f' {round_ + 1}' if round_ else ''})"
    return title, f"{title}. {topic.description}"


def _ticket(number: int, now: int, rng: random.Random, raised: Counter[tuple[str | None, str]]) -> TicketLine:
    """The demo ticket ``number``: its creator's ``round``-th ticket, in state ``round`` (mod the states)."""
    round_, person = divmod(number, len(PEOPLE))
    user_id, _, _, companies = PEOPLE[person]
    state = STATES[round_ % len(STATES)].internal_label
    type_name, category = TYPES[(person + round_ // len(STATES)) % len(TYPES)]
    topic = rng.choice(TOPICS[type_name])
    created = now - rng.randint(1, 120) * DAY - rng.randint(0, DAY)
    latest = min(now - 60, created + 30 * DAY)
    public = _conversation(state, topic, rng)
    times = sorted(rng.randint(created + HOUR, max(created + HOUR, latest)) for _ in range(len(public) + 2))
    parts = [
        PartLine(
            author=user_id if by_customer else None,
            author_name=None if by_customer else rng.choice(TEAMMATES),
            body=body,
            public=True,
            created_at=at,
        )
        for (by_customer, body), at in zip(public, times, strict=False)
    ]
    parts += [
        PartLine(author_name=rng.choice(TEAMMATES), body=rng.choice(NOTES), public=False, created_at=at)
        for at in times[len(public) : len(public) + rng.randint(0, 2)]
    ]
    company = companies[round_ % len(companies)] if companies else None
    title, description = _titled(topic, company, raised)
    return TicketLine(
        kind="ticket",
        ticket_id=str(1001 + number),
        type=type_name,
        state=state,
        category=category,
        is_shared=category == "Back-office" and round_ % 2 == 0,
        company=company,
        creator=user_id,
        title=title,
        description=description,
        created_at=created,
        updated_at=max([created, *(part.created_at for part in parts)]),
        parts=parts,
        participants=[user_id],
    )


def demo_lines(now: int, seed: int = 7) -> list[Line]:
    """Every line of the demo store, in import order."""
    rng = random.Random(seed)  # noqa: S311 (demo data, not a secret)
    lines: list[Line] = [*COMPANIES]
    lines += [
        ContactLine(
            kind="contact",
            user_id=user_id,
            name=name,
            email=email,
            companies=companies,
            custom_attributes={"role": "admin" if user_id in ADMINS else "member"},
        )
        for user_id, name, email, companies in PEOPLE
    ]
    lines += STATES
    raised: Counter[tuple[str | None, str]] = Counter()
    lines += [_ticket(number, now, rng, raised) for number in range(TICKETS)]
    return lines


async def seed_if_empty(store: Store, now: int) -> bool:
    """Write the demo store unless the store already holds contacts; return whether it did."""
    return await store.seed(demo_lines(now))
