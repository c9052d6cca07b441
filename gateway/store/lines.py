"""The lines of ``portal-gateway import`` (and of the demo seed) as typed, validated models."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from gateway.store.models import TICKET_ID_PATTERN, StateCategory, TicketCategory


class _Line(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CompanyLine(_Line):
    """A company, upserted by ``company_id``."""

    kind: Literal["company"]
    remote_id: str | None = Field(default=None, min_length=1, description="Intercom's id for it (the connector's)")
    company_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    plan: str | None = None
    size: int | None = None
    monthly_spend: float | None = None
    custom_attributes: dict[str, Any] = Field(default_factory=dict)


class ContactLine(_Line):
    """A contact, upserted by ``user_id``; ``companies`` replaces their memberships."""

    kind: Literal["contact"]
    remote_id: str | None = Field(default=None, min_length=1, description="Intercom's id for them (the connector's)")
    user_id: str = Field(min_length=1)
    email: str | None = None
    name: str | None = None
    companies: list[str] = Field(default_factory=list)
    custom_attributes: dict[str, Any] = Field(default_factory=dict)


class StateLine(_Line):
    """A ticket state; tickets refer to it by ``internal_label``."""

    kind: Literal["ticket_state"]
    category: StateCategory
    internal_label: str = Field(min_length=1)
    external_label: str = Field(min_length=1)


class PartLine(_Line):
    """A conversation part: a public reply or an internal note."""

    author: str | None = Field(default=None, description="user_id of a contact author")
    author_name: str | None = Field(default=None, description="display name of a teammate author")
    body: str
    public: bool
    created_at: int


class TicketLine(_Line):
    """A ticket with its conversation."""

    kind: Literal["ticket"]
    remote_id: str | None = Field(default=None, min_length=1, description="Intercom's id for it (the connector's)")
    conversation: str | None = Field(default=None, min_length=1, description="Intercom's id of its linked conversation")
    ticket_id: str = Field(pattern=TICKET_ID_PATTERN)
    type: str = Field(min_length=1)
    state: str = Field(min_length=1)
    category: TicketCategory
    is_shared: bool = False
    company: str | None = None
    creator: str = Field(min_length=1)
    title: str = Field(min_length=1)
    description: str = ""
    created_at: int
    updated_at: int
    parts: list[PartLine] = Field(default_factory=list)
    participants: list[str] = Field(default_factory=list)


Line = CompanyLine | ContactLine | StateLine | TicketLine
LINE: TypeAdapter[Line] = TypeAdapter(Annotated[Line, Field(discriminator="kind")])
"""Validates one line of any kind, told apart by ``kind``."""


class LineError(ValueError):
    """A line refers to something that is not in the store."""


class TakenBack(Exception):
    """Raised out of an all-or-nothing import to roll it back, with the lines refused."""

    def __init__(self, refused: list[tuple[int, str]]) -> None:
        super().__init__(refused)
        self.refused = refused
