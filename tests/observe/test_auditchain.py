"""The audit log's hash chain: the writer's lines, and ``audit verify`` catching every single-line edit, deletion,
insertion and move of a log written by a real gateway (across a reload that rotates the file)."""

from __future__ import annotations

import hashlib
import hmac
import json
from itertools import accumulate
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.cli import main
from gateway.observe.audit import AuditEntry, AuditLog
from gateway.observe.auditchain import GENESIS, Chain, Location, last_line, line_hash, verify
from tests.conftest import Gateway, StartGateway, audit_records

KEY = "audit-chain-key-held-by-security-0123456789"
Files = list[tuple[str, list[bytes]]]


def record(request_id: str) -> AuditEntry:
    return AuditEntry(request_id, "127.0.0.1", "GET", "h", f"/{request_id}")


def written(path: Path, count: int, key: bytes | None = None) -> list[bytes]:
    log = AuditLog(path, key)
    for number in range(count):
        log.write(record(f"r{number}"), 0)
    log.close()
    return path.read_bytes().splitlines(keepends=True)


# --- the writer ----------------------------------------------------------------------------------------------


def test_each_line_names_the_hash_of_the_line_before_it(tmp_path: Path) -> None:
    lines = written(tmp_path / "audit.jsonl", 3)
    links = [json.loads(line)["chain"] for line in lines]
    assert [link["seq"] for link in links] == [1, 2, 3]
    assert len({link["id"] for link in links}) == 1
    assert links[0]["prev"] == GENESIS  # a new file
    assert [link["prev"] for link in links[1:]] == [hashlib.sha256(line[:-1]).hexdigest() for line in lines[:2]]
    assert json.loads(lines[0])["request_id"] == "r0"  # the record itself is unchanged, chain appended
    assert list(json.loads(lines[0]))[-1] == "chain"


def test_a_new_writer_on_an_existing_file_names_its_last_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    first = written(path, 2)
    second = written(path, 1)[len(first) :]
    link = json.loads(second[0])["chain"]
    assert (link["seq"], link["prev"]) == (1, line_hash(first[-1][:-1]))
    assert verify([(str(path), path.read_bytes().splitlines(keepends=True))]).ok


def test_last_line_reads_back_past_long_lines(tmp_path: Path) -> None:
    path = tmp_path / "long.jsonl"
    assert last_line(path) is None
    path.write_bytes(b"")
    assert last_line(path) is None
    long = b"x" * 200_000
    path.write_bytes(b"a\n" + long + b"\n")
    assert last_line(path) == long
    path.write_bytes(long)
    assert last_line(path) == long


def test_with_a_key_every_line_carries_the_hmac_of_what_precedes_it(tmp_path: Path) -> None:
    lines = written(tmp_path / "audit.jsonl", 2, KEY.encode())
    for line in lines:
        body, _, mac = line.rstrip(b"\n").rpartition(b',"mac":"')
        assert mac[:-2].decode() == hmac.new(KEY.encode(), body + b"}", hashlib.sha256).hexdigest()
    files = [("audit.jsonl", lines)]
    assert verify(files, KEY.encode()).ok
    wrong = verify(files, b"another key")
    assert wrong.failure is not None
    assert wrong.failure.where == Location("audit.jsonl", 1)
    assert "MAC" in wrong.failure.message


def test_a_reopen_carries_the_chain_into_the_new_file_marked(tmp_path: Path) -> None:
    path, rotated = tmp_path / "audit.jsonl", tmp_path / "audit.jsonl.1"
    log = AuditLog(path)
    log.write(record("before"), 0)
    path.rename(rotated)
    log.reopen()
    log.write(record("after"), 0)
    log.close()
    old, new = rotated.read_bytes().splitlines(keepends=True), path.read_bytes().splitlines(keepends=True)
    link = json.loads(new[0])["chain"]
    assert link == {"id": json.loads(old[0])["chain"]["id"], "seq": 2, "prev": line_hash(old[0][:-1]), "reopened": True}
    assert verify([("rotated", old), ("current", new)]).ok
    alone = verify([("current", new)])  # the rotated file not given: allowed, and said
    assert alone.ok
    assert [chain.continued for chain in alone.chains.values()] == [True]


def test_chain_link_of_an_empty_object() -> None:
    assert json.loads(Chain(GENESIS).link(b"{}"))["chain"]["seq"] == 1


@given(st.binary(max_size=40).map(lambda raw: orjson.dumps({"r": raw.hex()})), st.lists(st.booleans(), max_size=4))
def test_a_link_is_written_as_orjson_writes_the_chain_object(body: bytes, reopens: list[bool]) -> None:
    """The link is spelled out, not encoded: it must still be the bytes orjson would write for it."""
    chain, prev = Chain(GENESIS), GENESIS
    for seq, reopened in enumerate(reopens, 1):
        chain.reopened = reopened
        line = chain.link(body)
        link = {"id": chain.id, "seq": seq, "prev": prev, **({"reopened": True} if reopened else {})}
        assert line == body[:-1] + b',"chain":' + orjson.dumps(link) + b"}\n"
        prev = line_hash(line[:-1])


# --- audit verify on a real gateway's log ---------------------------------------------------------------------


async def requests(gateway: Gateway, label: str, count: int) -> set[str]:
    ids = set()
    for number in range(count):
        async with gateway.client.get(gateway.url / f"{label}-{number}", headers={"Cookie": "_ga=1"}) as response:
            ids.add(response.headers["X-Request-Id"])
    return ids


async def wait_written(gateway: Gateway, ids: set[str]) -> list[bytes]:
    """The current audit file's lines once the records of ``ids`` are in it."""
    for request_id in ids:
        await gateway.audit_for(request_id)
    return gateway.config.audit.path.read_bytes().splitlines(keepends=True)


def test_a_poll_of_the_live_log_reads_whole_records_only(tmp_path: Path) -> None:
    """What ``wait_written`` sees while the writer thread is midway through a batch: the records before it."""
    path = tmp_path / "audit.jsonl"
    lines = written(path, 3)
    path.write_bytes(b"".join(lines[:2]) + lines[2][:100])  # the next batch's first page has landed
    assert [record["request_id"] for record in audit_records(path)] == ["r0", "r1"]
    assert audit_records(tmp_path / "not-yet.jsonl") == []


async def real_log(gateway: Gateway, tmp_path: Path) -> Files:
    """12 requests, a rotation (rename, then the reload SIGHUP runs), 12 more: the two files, oldest first."""
    audit = gateway.config.audit.path
    first = await requests(gateway, "before", 12)
    await wait_written(gateway, first)
    rotated = tmp_path / "audit.jsonl.1"
    audit.rename(rotated)
    await gateway.running.reload(gateway.config)
    second = await requests(gateway, "after", 12)
    current = await wait_written(gateway, second)
    return [(str(rotated), rotated.read_bytes().splitlines(keepends=True)), (str(audit), current)]


def mutate(files: Files, data: st.DataObject, keyed: bool) -> tuple[Files, Location]:
    """One single-line change to ``files`` (read as one sequence); the changed files and the first line that differs."""
    flat = [line for _, lines in files for line in lines]
    sizes = [len(lines) for _, lines in files]
    last = len(flat) - 1
    kind = data.draw(st.sampled_from(["edit", "delete", "insert", "move"]))
    changed = list(flat)
    if kind == "edit":
        # Without a key, nothing follows the newest line to vouch for it (the README says so).
        position = data.draw(st.integers(0, last if keyed else last - 1))
        line = flat[position]
        cut = data.draw(st.integers(0, len(line) - 2))
        byte = data.draw(st.integers(0x20, 0x7E).filter(lambda b: b != line[cut]))
        changed[position] = line[:cut] + bytes([byte]) + line[cut + 1 :]
    elif kind == "delete":
        position = data.draw(st.integers(0, last - 1))  # a cut newest line is named by nothing (README)
        del changed[position]
    elif kind == "insert":
        position = data.draw(st.integers(0, last + 1))
        copy = flat[data.draw(st.integers(0, last))]
        changed.insert(position, data.draw(st.sampled_from([copy, b'{"request_id":"forged"}\n', b"not json\n", b"\n"])))
    else:
        source = data.draw(st.integers(0, last))
        position = data.draw(st.integers(0, last).filter(lambda target: target != source))
        changed.insert(position, changed.pop(source))
    if kind in ("delete", "insert"):  # the file holding the position shrinks or grows by one
        index = next((i for i, end in enumerate(accumulate(sizes)) if position < end), len(sizes) - 1)
        sizes[index] += 1 if kind == "insert" else -1
    first = next((i for i, (a, b) in enumerate(zip(changed, flat, strict=False)) if a != b), len(flat))
    out: Files = []
    for (name, _), start, size in zip(files, accumulate([0, *sizes]), sizes, strict=False):
        out.append((name, changed[start : start + size]))
        if start <= first < start + size:
            where = Location(name, first - start + 1)
    return out, where


@pytest.mark.parametrize("keyed", [False, True], ids=["chain", "chain and key"])
async def test_verify_catches_every_single_line_edit_deletion_insertion_and_move(
    start_gateway: StartGateway, tmp_path: Path, keyed: bool
) -> None:
    gateway = await start_gateway(audit={"chain_key": KEY} if keyed else {})
    files = await real_log(gateway, tmp_path)
    key = KEY.encode() if keyed else None
    intact = verify(files, key)
    assert intact.ok, intact.failure
    assert intact.lines == 24
    assert len(intact.chains) == 1  # one process: one chain, carried across the reload and the rotation

    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.data())
    def check(data: st.DataObject) -> None:
        changed, first = mutate(files, data, keyed)
        result = verify(changed, key)
        assert result.failure is not None, f"not caught; first change at {first}"
        assert first in result.failure.suspects, f"first change at {first}, verify says {result.failure}"

    check()


async def test_a_line_cut_from_the_end_of_a_live_log_is_named_by_the_next_record(
    gateway: Gateway, tmp_path: Path
) -> None:
    audit = gateway.config.audit.path
    await wait_written(gateway, await requests(gateway, "r", 3))
    lines = audit.read_bytes().splitlines(keepends=True)
    with audit.open("r+b") as file:  # the writer's O_APPEND descriptor goes on at the new end
        file.truncate(sum(map(len, lines[:-1])))
    await wait_written(gateway, await requests(gateway, "next", 1))
    result = verify([("audit.jsonl", audit.read_bytes().splitlines(keepends=True))])
    assert result.failure is not None
    assert result.failure.where == Location("audit.jsonl", 3)
    assert "seq 3 of chain" in result.failure.message
    assert "missing before this line: removed" in result.failure.message


async def test_verify_command_exit_codes_and_json(
    start_gateway: StartGateway, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = await start_gateway(audit={"chain_key": KEY})
    files = await real_log(gateway, tmp_path)
    paths = [name for name, _ in files]
    assert main(["audit", "verify", *paths]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: 24 lines, 1 chains, every line in place\n")
    assert "head sha256 " + line_hash(files[1][1][-1][:-1]) in out
    (tmp_path / "key").write_text(KEY + "\n")
    assert main(["audit", "verify", "--key", f"file:{tmp_path / 'key'}", "--json", *paths]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["ok"], report["lines"], len(report["chains"])) == (True, 24, 1)

    lines = files[0][1]
    Path(paths[0]).write_bytes(b"".join([lines[0], lines[1].replace(b"/before-1", b"/before-X"), *lines[2:]]))  # noqa: ASYNC240
    monkeypatch.setenv("AUDIT_KEY", KEY)
    assert main(["audit", "verify", "--key", "env:AUDIT_KEY", "--json", *paths]) == 1
    failure = json.loads(capsys.readouterr().out)["failure"]
    assert (failure["file"], failure["line"]) == (paths[0], 2)
    assert main(["audit", "verify", *paths]) == 1  # without the key, the chain alone names it too
    assert capsys.readouterr().out.startswith(f"FAILED at {paths[0]}:2: changed")

    assert main(["audit", "verify", "--key", KEY, *paths]) == 2  # never a key on the command line
    assert "env:NAME or file:PATH" in capsys.readouterr().err
    assert main(["audit", "verify", "--key", "env:NOT_SET_ANYWHERE", *paths]) == 2
    assert main(["audit", "verify", str(tmp_path / "missing.jsonl")]) == 1
    assert "cannot read audit log" in capsys.readouterr().err


@pytest.mark.parametrize("keyed", [False, True], ids=["chain", "chain and key"])
def test_a_record_still_being_written_is_reported_unfinished_not_changed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], keyed: bool
) -> None:
    """``audit verify`` on a live log may read the newest line half written: that is no break."""
    key = KEY.encode() if keyed else None
    path = tmp_path / "audit.jsonl"
    lines = written(path, 4, key)
    for cut in (1, len(lines[3]) // 2, len(lines[3]) - 2):
        path.write_bytes(b"".join(lines[:3]) + lines[3][:cut])
        result = verify([(str(path), path.read_bytes().splitlines(keepends=True))], key)
        assert result.ok, (cut, result.failure)
        assert (result.lines, result.unfinished) == (3, Location(str(path), 4))
        assert main(["audit", "verify", str(path)]) == 0
        assert f"{path}:4: still being written (no newline yet), not checked" in capsys.readouterr().out
    # Only the newest file's last line can be unfinished: in a rotated file the same bytes are a cut.
    rotated = tmp_path / "audit.jsonl.1"
    rotated.write_bytes(b"".join(lines[:3]) + lines[3][:20])
    assert not verify([(str(rotated), rotated.read_bytes().splitlines(keepends=True)), (str(path), [])], key).ok
    # A whole record without its newline is checked like any other: an edit of it is still caught.
    edited = lines[3][:-1].replace(b'"r3"', b'"r9"')
    path.write_bytes(b"".join(lines[:3]) + edited)
    changed = verify([(str(path), path.read_bytes().splitlines(keepends=True))], key)
    assert changed.unfinished is None
    if keyed:
        assert changed.failure is not None
        assert changed.failure.where == Location(str(path), 4)
