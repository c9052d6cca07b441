"""Which build runs: the hot modules compiled by mypyc (setup.py) or the same modules as pure Python."""

from __future__ import annotations

from importlib import import_module, metadata
from importlib.machinery import EXTENSION_SUFFIXES

# The modules setup.py compiles with mypyc where a C compiler is present (it reads this tuple from here).
COMPILED = (
    "gateway.policy.cookies",
    "gateway.edge.headers",
    "gateway.edge.paths",
    "gateway.policy.rules",
)


def compiled_modules() -> list[str]:
    """The modules of :data:`COMPILED` that were imported from an extension module rather than a ``.py`` file."""
    suffixes = tuple(EXTENSION_SUFFIXES)
    return [name for name in COMPILED if (import_module(name).__file__ or "").endswith(suffixes)]


def variant() -> str:
    """``compiled`` or ``pure Python``, saying which modules when only some are compiled."""
    done = compiled_modules()
    if len(done) == len(COMPILED):
        return "compiled (mypyc)"
    if not done:
        return "pure Python"
    return f"partly compiled (mypyc: {', '.join(done)})"


def version_line() -> str:
    """What ``portal-gateway --version`` prints: the installed version and the variant running."""
    return f"portal-gateway {metadata.version('portal-gateway')}, {variant()}"
