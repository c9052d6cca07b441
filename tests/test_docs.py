"""The documentation stands alone: every path it links or names resolves to a file of this repository.

A clone is all a contributor has; a link to ``../somewhere`` works only in the
workspace it was written in. Links with a scheme (``https:``, ``mailto:``) go
to the web and are left alone; everything else is checked.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token

from gateway.cli import NESTED_COMMANDS, build_parser

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = sorted(
    [REPO / "README.md", REPO / "SECURITY.md", REPO / "bench" / "README.md", *(REPO / "docs").glob("*.md")]
)


def inline_tokens(document: Path) -> Iterator[Token]:
    """Every inline token of ``document`` (links, code spans, images), fenced code left out."""
    for block in MarkdownIt("commonmark").parse(document.read_text(encoding="utf-8")):
        yield from block.children or ()


def link_targets(document: Path) -> Iterator[str]:
    """The relative targets of the links and images in ``document`` (inline and reference-style)."""
    for token in inline_tokens(document):
        target = token.attrGet("href") if token.type == "link_open" else token.attrGet("src")
        if isinstance(target, str) and not urlsplit(target).scheme and not target.startswith(("#", "//")):
            yield target


def named_relative_paths(document: Path) -> Iterator[str]:
    """Paths written as code that climb from the document's folder (``../x``, ``./x``)."""
    for token in inline_tokens(document):
        if token.type == "code_inline" and token.content.startswith(("../", "./")):
            yield token.content


def resolves_inside_the_repo(document: Path, target: str) -> str | None:
    """Why ``target``, relative to ``document``, is not a file of the repository; None when it is."""
    path = (document.parent / unquote(urlsplit(target).path)).resolve()
    if not path.is_relative_to(REPO):
        return f"{target} leaves the repository ({path})"
    if not path.exists():
        return f"{target} does not exist ({path})"
    return None


@pytest.mark.parametrize("document", DOCUMENTS, ids=[str(path.relative_to(REPO)) for path in DOCUMENTS])
def test_every_relative_link_and_named_path_is_a_file_of_the_repository(document: Path) -> None:
    problems = [
        problem
        for target in [*link_targets(document), *named_relative_paths(document)]
        if (problem := resolves_inside_the_repo(document, target))
    ]
    assert not problems, f"{document.relative_to(REPO)}: {problems}"


def test_the_readme_links_the_design_kept_in_the_repository() -> None:
    assert "docs/DESIGN.md" in link_targets(REPO / "README.md")
    assert (REPO / "docs" / "DESIGN.md").is_file()


def test_a_link_out_of_the_repository_is_reported(tmp_path: Path) -> None:
    # The checker itself: a document in the repo's root that links and names ../ paths is caught.
    document = REPO / "README.md"
    assert resolves_inside_the_repo(document, "../shared/DESIGN.md") is not None
    assert resolves_inside_the_repo(document, "docs/missing.md") is not None
    assert resolves_inside_the_repo(document, "docs/DESIGN.md#layout-top-level-is-fixed") is None
    sample = tmp_path / "sample.md"
    sample.write_text("[design](../DESIGN.md), see `../shared/x.md`, [web](https://example.com)\n", encoding="utf-8")
    assert list(link_targets(sample)) == ["../DESIGN.md"]
    assert list(named_relative_paths(sample)) == ["../shared/x.md"]


def command_rows() -> dict[str, str]:
    """The README's command table: each command's first cell, by the command it names (``token inspect``)."""
    rows = {}
    for text in (REPO / "README.md").read_text(encoding="utf-8").splitlines():
        if text.startswith("| `portal-gateway "):
            cell = text.split("` |", 1)[0].removeprefix("| `portal-gateway ")
            words = cell.split()
            name = " ".join(words[:2]) if " ".join(words[:2]) in NESTED_COMMANDS else words[0]
            rows[name] = cell
    return rows


def test_the_readme_command_table_names_every_option_of_every_command() -> None:
    parser = build_parser()
    (commands,) = (action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    rows = command_rows()
    assert set(rows) == set(commands.choices)
    for name, command in commands.choices.items():
        for action in command._actions:
            if action.option_strings and not isinstance(action, argparse._HelpAction):
                said = [
                    option
                    for option in action.option_strings
                    if re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", rows[name])
                ]
                assert said, f"the README's row of {name!r} does not name {'/'.join(action.option_strings)}"
