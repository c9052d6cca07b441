"""Build script: compiles the pure hot modules with mypyc when it can, ships pure Python otherwise.

Shipped the way aiohttp, yarl and multidict ship their extensions: a compiled wheel where a C
compiler is present, the same modules as plain Python where it is not (a failed compile falls back
to pure, saying so), and ``PORTAL_GATEWAY_PURE_PYTHON=1`` forces pure. Editable installs
(``pip install -e``) are always pure unless ``PORTAL_GATEWAY_COMPILE=1``: a stale ``.so`` next to
an edited ``.py`` would silently shadow the edit.
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

# The modules compiled (all mypy --strict typed, free of the dynamic code mypyc rejects), named where the
# running gateway reports its variant from; read without importing the package, whose dependencies the
# build environment may lack.
COMPILED = [
    f"{name.replace('.', '/')}.py"
    for name in runpy.run_path(str(Path(__file__).parent / "gateway" / "ops" / "variant.py"))["COMPILED"]
]


def wanted() -> bool:
    """Whether this build should try to compile: not when forced pure, not for an editable install."""
    if os.environ.get("PORTAL_GATEWAY_PURE_PYTHON", "") not in ("", "0"):
        return False
    editable = any(arg in ("editable_wheel", "develop") for arg in sys.argv)
    return not editable or os.environ.get("PORTAL_GATEWAY_COMPILE", "") not in ("", "0")


def compiled_modules() -> list[Any]:  # mypyc's Extension: setuptools' or distutils'
    """The mypyc extensions, or none (pure Python) when mypyc or a C compiler is missing."""
    if not wanted():
        print("portal-gateway: building pure Python", file=sys.stderr)
        return []
    try:
        from mypyc.build import mypycify

        # The build environment has neither the dependencies nor the pydantic plugin the project's
        # mypy config names: read no config, take what is not installed as Any, and report only
        # the compiled modules' own errors (the project's mypy run checks everything strictly).
        options = ["--config-file=", "--ignore-missing-imports", "--follow-imports=silent"]
        return list(mypycify([*options, *COMPILED], opt_level="3"))
    except (Exception, SystemExit) as error:  # mypyc exits on a type error: ship pure
        print(f"portal-gateway: mypyc unavailable ({error!r}); building pure Python", file=sys.stderr)
        return []


class FallBackToPure(build_ext):
    """build_ext that ships pure Python, saying so, when the C compile fails (no compiler, no headers)."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as error:  # a failed compile means: ship pure
            print(f"portal-gateway: compiling failed ({error}); building pure Python", file=sys.stderr)
            self.extensions = []
            self.distribution.ext_modules = []


setup(ext_modules=compiled_modules(), cmdclass={"build_ext": FallBackToPure})
