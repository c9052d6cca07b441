"""The error tree (gateway/errors.py): every error type lives there, drawn in its docstring as it is defined."""

from __future__ import annotations

import inspect
import re
from types import ModuleType

import aiohttp
from aiohttp import web

from gateway import errors
from gateway.edge import errorpages

# A tree line: the drawing, then a name (``web.HTTPException`` included), then what it is.
_LINE = re.compile(r"^(?P<indent>[ │├└─]*)(?P<name>[\w.]+)")


def drawn_parents() -> dict[str, str | None]:
    """Each name drawn in the module docstring's tree, with the name drawn above it one level up."""
    tree = (errors.__doc__ or "").split("\n\n")[1:-1]
    parents: dict[str, str | None] = {}
    for block in tree:
        stack: list[tuple[int, str]] = []
        for line in block.splitlines():
            match = _LINE.match(line)
            assert match is not None, line
            depth = len(match["indent"])
            while stack and stack[-1][0] >= depth:
                stack.pop()
            parents[match["name"]] = stack[-1][1] if stack else None
            stack.append((depth, match["name"]))
    return parents


def defined_here(module: ModuleType) -> dict[str, type]:
    return {
        name: obj for name, obj in vars(module).items() if inspect.isclass(obj) and obj.__module__ == module.__name__
    }


def test_the_docstring_draws_every_error_type_under_its_base() -> None:
    """Each class defined in gateway/errors.py is drawn, under the base it really has; nothing else is drawn."""
    parents = drawn_parents()
    classes = defined_here(errors)
    assert set(parents) - {"web.HTTPException"} == set(classes)
    for name, cls in classes.items():
        parent = parents[name]
        if parent == "web.HTTPException":
            assert issubclass(cls, web.HTTPException), name
            assert cls.__bases__[0].__module__ != errors.__name__, name
        elif parent is not None:
            assert classes[parent] in cls.__bases__, name


def test_the_error_middleware_module_defines_no_error_types() -> None:
    """Errors are defined in one module; gateway/edge/errorpages.py only turns them into answers."""
    assert not [name for name, cls in defined_here(errorpages).items() if issubclass(cls, BaseException)]


def test_no_error_type_shadows_an_aiohttp_name() -> None:
    """``errors.ClientTimeout`` read as aiohttp's ``ClientTimeout`` (a timeout setting); no name may do that."""
    assert not set(defined_here(errors)) & set(dir(aiohttp))
