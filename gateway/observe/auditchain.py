"""The audit log's hash chain: how the writer links each record to the one before, and how ``audit verify`` checks it.

Every line ends with ``"chain": {"id", "seq", "prev"}``: the writer's chain (one per gateway process, so one per
worker), the record's place in it (1, 2, ...) and the SHA-256 (hex) of the bytes of that chain's previous line,
newline excluded. A chain's first record names the last line of the file its process opened (or ``GENESIS``,
when the file was empty): a run that follows another vouches for how the earlier one ended. After a SIGHUP the
chain goes on in the new file; its first record there says ``"reopened": true``, so that a file verified without
its predecessors may start in the middle of a chain, while one whose first lines were cut may not. With
``audit.chain_key`` each line also ends with ``"mac"``: the HMAC-SHA256 of everything before it, which nobody
without the key can forge, so a rewritten chain cannot pass for the gateway's.

What no chain can show: lines cut from the end of the newest file after the gateway last wrote (nothing
follows them to name them); ``audit verify`` prints each chain's head so that heads can be kept elsewhere.
A live log may end in a record still being written (no newline yet, not yet JSON): that line is reported as
unfinished and left unchecked, as a cut line would be, never as a change.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

GENESIS = "0" * 64
LOOKAHEAD = 10_000  # lines read past a break to tell a changed line from a removed or moved one
_BLOCK = 65536
_MAC = re.compile(rb',"mac":"([0-9a-f]{64})"\}$')
_HEX64 = re.compile(r"[0-9a-f]{64}")


def line_hash(line: bytes) -> str:
    """The hash a successor names: hex SHA-256 of the line's bytes without its newline."""
    return hashlib.sha256(line).hexdigest()


def _mac(key: bytes, data: bytes) -> str:
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def last_line(path: Path) -> bytes | None:
    """The last line of ``path`` without its newline; None when the file is empty or absent."""
    try:
        with path.open("rb") as file:
            position = file.seek(0, os.SEEK_END)
            tail = b""
            while position > 0:
                step = min(_BLOCK, position)
                position -= step
                file.seek(position)
                tail = file.read(step) + tail
                body = tail[:-1] if tail.endswith(b"\n") else tail
                cut = body.rfind(b"\n")
                if cut >= 0 or position == 0:
                    return body[cut + 1 :] or None
    except FileNotFoundError:
        return None
    return None


class Chain:
    """The writer's side: turns each encoded record into a line linked to the line before it."""

    def __init__(self, prev: str, key: bytes | None = None) -> None:
        # The pid says which worker wrote it; the random part keeps ids apart when pids come round again.
        self.id = f"{os.getpid()}-{secrets.token_hex(4)}"
        self.seq = 0
        self.prev = prev
        self.key = key
        self.reopened = False

    @classmethod
    def continuing(cls, path: Path, key: bytes | None = None) -> Chain:
        """A new chain whose first record names the last line already in ``path`` (GENESIS if none)."""
        last = last_line(path)
        return cls(GENESIS if last is None else line_hash(last), key)

    def link(self, body: bytes) -> bytes:
        """The line (newline included) for the JSON object ``body``, chained (and MACed) after the previous one."""
        self.seq += 1
        # What orjson.dumps({"id", "seq", "prev"[, "reopened"]}) writes, spelled out: the id is a pid and hex, the
        # prev hex, so nothing in them needs escaping (a dict and an encoder call a line cost more than the hash).
        reopened = ',"reopened":true' if self.reopened else ""
        self.reopened = False
        link = f'"chain":{{"id":"{self.id}","seq":{self.seq},"prev":"{self.prev}"{reopened}}}}}'.encode()
        data = b"".join((body[:-1], b"," if body != b"{}" else b"", link))
        if self.key is not None:
            data = data[:-1] + b',"mac":"' + _mac(self.key, data).encode() + b'"}'
        self.prev = line_hash(data)
        return data + b"\n"


# --- verification ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Location:
    """A line of one of the files verified (numbered from 1)."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class _Entry:
    where: Location
    hash: str
    id: str = ""
    seq: int = 0
    prev: str = ""
    reopened: bool = False
    error: str | None = None
    unfinished: bool = False


@dataclass
class ChainHead:
    """What the files hold of one chain: its first and last record and the hash of the last (to keep elsewhere)."""

    id: str
    first_seq: int
    first: Location
    seq: int
    head: Location
    hash: str
    records: int = 1
    continued: bool = False
    """It starts in the middle (after a rotation): its earlier records are in a file not given."""


@dataclass(frozen=True)
class Break:
    """The first place the chain does not hold: the lines to blame (earliest first) and why."""

    suspects: tuple[Location, ...]
    message: str

    @property
    def where(self) -> Location:
        """The first line named."""
        return self.suspects[0]

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass
class Verification:
    """The outcome of :func:`verify`: every chain's head, and the first break (None: the chains hold)."""

    lines: int = 0
    chains: dict[str, ChainHead] = field(default_factory=dict)
    failure: Break | None = None
    unfinished: Location | None = None
    """The newest file's last line, when the writer was still writing it: not a record yet, so not checked."""

    @property
    def ok(self) -> bool:
        """True when every line is in place."""
        return self.failure is None


def _parse(where: Location, raw: bytes, key: bytes | None) -> _Entry:
    """One line read as a chained record, or what is wrong with it."""
    line = raw[:-1] if raw.endswith(b"\n") else raw
    digest = line_hash(line)
    if key is not None:
        mac = _MAC.search(line)
        if mac is None:
            return _Entry(where, digest, error="no MAC: not written by a gateway holding the chain key (inserted?)")
        unsigned = line[: mac.start()] + b"}"
        if not hmac.compare_digest(_mac(key, unsigned).encode(), mac[1]):
            return _Entry(where, digest, error="its MAC does not match: the line was changed, or forged")
    try:
        record = json.loads(line)
        link = record["chain"]
        chain_id, seq, prev = link["id"], link["seq"], link["prev"]
    except (ValueError, TypeError, KeyError):
        return _Entry(where, digest, error="not a chained audit record: inserted, or changed")
    if not (isinstance(chain_id, str) and type(seq) is int and seq > 0 and isinstance(prev, str)):
        return _Entry(where, digest, error="its chain fields are not an id, a positive seq and a hash: changed")
    if not _HEX64.fullmatch(prev):
        return _Entry(where, digest, error="its prev is not a SHA-256: changed")
    return _Entry(where, digest, chain_id, seq, prev, link.get("reopened") is True)


def _entries(files: Sequence[tuple[str, Iterable[bytes]]], key: bytes | None) -> Iterator[_Entry]:
    for index, (name, lines) in enumerate(files):
        newest = index == len(files) - 1
        for number, raw in enumerate(lines, 1):
            where = Location(name, number)
            # The writer never writes an empty line: one is an inserted line, or what is left of a changed one.
            entry = _parse(where, raw, key) if raw.strip() else _Entry(where, "", error="an empty line: inserted")
            # A line without its newline is the newest file's last (only there can a read stop short); the writer
            # is midway through it when it is no JSON yet. A whole record lacking its newline is checked as any.
            if newest and entry.error is not None and not raw.endswith(b"\n") and _torn(raw):
                yield _Entry(where, "", unfinished=True)
            else:
                yield entry


def _torn(raw: bytes) -> bool:
    """Whether ``raw`` cannot be read as JSON: the first part of a record still being written."""
    try:
        json.loads(raw)
    except ValueError:
        return True
    return False


def verify(files: Sequence[tuple[str, Iterable[bytes]]], key: bytes | None = None) -> Verification:
    """Check the chains through ``files`` (name, lines as bytes) taken in order: oldest (rotated) first."""
    result = Verification()
    seen: set[str] = {GENESIS}
    entries = _entries(files, key)
    for entry in entries:
        if entry.unfinished:
            result.unfinished = entry.where
            continue
        result.lines += 1
        if entry.error is not None:
            result.failure = Break((entry.where,), entry.error)
            return result
        state = result.chains.get(entry.id)
        if state is not None and entry.seq == state.seq + 1 and entry.prev == state.hash:
            state.seq, state.head, state.hash = entry.seq, entry.where, entry.hash
            state.records += 1
        elif state is None and ((entry.seq == 1 and entry.prev in seen) or entry.reopened):
            result.chains[entry.id] = ChainHead(
                entry.id, entry.seq, entry.where, entry.seq, entry.where, entry.hash, continued=entry.seq > 1
            )
        else:
            result.failure = _diagnose(entry, state, result.chains, list(islice(entries, LOOKAHEAD)))
            return result
        seen.add(entry.hash)
    return result


def _strays(chains: dict[str, ChainHead], after: list[_Entry], seqs: range) -> list[Location]:
    """A one-record chain at one of ``seqs`` that goes no further: the missing record, changed to name it."""
    going_on = {other.id for other in after if other.error is None}
    return [
        chain.head for chain in chains.values() if chain.records == 1 and chain.seq in seqs and chain.id not in going_on
    ][:1]


def _diagnose(entry: _Entry, state: ChainHead | None, chains: dict[str, ChainHead], after: list[_Entry]) -> Break:
    """Why ``entry`` does not follow its chain, and which line to blame, from what comes ``after`` it."""
    here, name = entry.where, f"chain {entry.id}"
    later = [other for other in after if other.error is None and other.id == entry.id]
    if state is None:
        if entry.seq == 1:
            return Break((here,), f"starts {name} after a line that is not in these files: changed or removed")
        return Break(
            (*_strays(chains, after, range(1, entry.seq)), here),
            f"{name} resumes at seq {entry.seq} without its earlier records: a line before it was removed, "
            "or this one changed",
        )
    if state.continued and entry.seq < state.first_seq:  # it was taken to start after a rotation: it was moved
        return Break((state.first,), f"out of order: seq {entry.seq} of {name} comes later, at {here}")
    expected = state.seq + 1
    if entry.seq == expected:
        successor = later[0] if later else None
        if successor is None:
            return Break((state.head, here), f"line {state.head.line} or this line of {name} was changed")
        if successor.seq == entry.seq + 1 and successor.prev == entry.hash:
            return Break((state.head,), f"changed: the next record of {name} ({here}) names another predecessor")
        return Break((here,), f"changed: it does not name the line before it in {name} ({state.head})")
    if entry.seq > expected:
        if entry.prev == state.hash:
            return Break((here,), f"changed: seq {entry.seq} follows seq {state.seq} of {name} ({state.head})")
        moved = next((other for other in later if expected <= other.seq < entry.seq), None)
        if moved is not None:
            return Break((here,), f"out of order: seq {moved.seq} of {name} comes later, at {moved.where}")
        missing = f"seq {expected}" if entry.seq == expected + 1 else f"seq {expected} to {entry.seq - 1}"
        return Break(
            (*_strays(chains, after, range(expected, entry.seq)), here),
            f"{missing} of {name} missing before this line: removed, or changed so that it names another chain",
        )
    if entry.seq == state.seq and entry.hash == state.hash:
        return Break((here,), f"repeats the line before it in {name} ({state.head}): inserted")
    return Break(
        (here,), f"seq {entry.seq} of {name} again, after seq {state.seq} at {state.head}: inserted, moved or changed"
    )
