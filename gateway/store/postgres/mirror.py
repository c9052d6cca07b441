"""The connector's writes on PostgreSQL: ``gateway/store/mirror.py``'s programs run on a connection.

Async functions on one :class:`~gateway.store.postgres.db.Sql` connection;
:class:`~gateway.store.postgres.store.PostgresStore` owns the transactions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import asyncpg

from gateway.store import mirror
from gateway.store.lines import Line, LineError
from gateway.store.postgres import lines as imports
from gateway.store.postgres import writes
from gateway.store.postgres.db import Sql

T = TypeVar("T")


async def run(sql: Sql, program: mirror.Program[T]) -> T:
    """Run one of ``gateway/store/mirror.py``'s programs on the connection; what it returns."""
    try:
        step = next(program)
        while True:
            step = program.send(await _do(sql, step))
    except StopIteration as done:
        result: T = done.value
        return result


async def _do(sql: Sql, step: mirror.Query | mirror.Write) -> Any:
    match step:
        case mirror.Query(statement, args):
            return [tuple(row) for row in await sql.fetch(statement, *args)]
        case mirror.WriteLine(line):
            return await imports.write_line(sql, line)
        case mirror.TypeId(name):
            return await writes.ticket_type_id(sql, name)
        case mirror.InsertTicket(line, type_id, state_id, company_id, creator_id):
            return await imports.insert_ticket(
                sql, line, type_id=type_id, state_id=state_id, company_id=company_id, creator_id=creator_id
            )
        case mirror.AddPart(conversation, part):
            return await writes.add_part(sql, conversation, *part)
        case mirror.AddParticipant(conversation, contact):
            return await writes.add_participant(sql, conversation, contact)


async def mirror_lines(sql: Sql, lines: Sequence[Line]) -> None:
    """Write each line as Intercom holds it (the caller owns the transaction)."""
    for line in lines:
        try:
            await run(sql, mirror.mirror_line(line))
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise LineError(f"{line.kind} conflicts with the store ({exc})") from None
