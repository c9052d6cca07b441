"""Intercom's 2.16 OpenAPI description as a response checker: every answer of the fake is held to it."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from jsonschema.exceptions import ValidationError
from openapi_schema_validator import OAS30Validator
from referencing import Registry
from referencing.jsonschema import DRAFT4

SPEC_PATH = (
    Path(__file__).resolve().parents[3] / "shared" / "reference" / "intercom-openapi" / "api.intercom.io-2.16.yaml"
)
_URN = "urn:intercom-2.16"


@dataclass(frozen=True)
class _Route:
    template: str
    pattern: re.Pattern[str]


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


class IntercomSpec:
    """The response schemas of the description, looked up by method, path and status."""

    def __init__(self, path: Path = SPEC_PATH) -> None:
        with path.open() as file:
            self.document: dict[str, Any] = yaml.load(file, Loader=yaml.CSafeLoader)
        self._registry: Registry[Any] = Registry().with_resource(_URN, DRAFT4.create_resource(self.document))
        routes = [
            _Route(template, re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$"))
            for template in self.document["paths"]
        ]
        # A literal segment wins over a parameter: /companies/scroll is not /companies/{company_id}.
        self._routes = sorted(routes, key=lambda route: route.template.count("{"))

    def template(self, method: str, path: str) -> str:
        """The described path ``path`` is an instance of, for ``method``; KeyError when none is."""
        for route in self._routes:
            if route.pattern.match(path) and method.lower() in self.document["paths"][route.template]:
                return route.template
        raise KeyError(f"{method} {path} is not in the description")

    def request_schema_ref(self, method: str, path: str) -> str | None:
        """The JSON pointer of the request body's schema, None when the operation takes none."""
        template = self.template(method, path)
        operation = self.document["paths"][template][method.lower()]
        if "requestBody" not in operation:
            return None
        return f"{_URN}#/paths/{_escape(template)}/{method.lower()}/requestBody/content/application~1json/schema"

    def response_schema_ref(self, method: str, path: str, status: int) -> str:
        """The JSON pointer of the schema of a ``status`` answer; an undescribed error status is an error.list."""
        template = self.template(method, path)
        responses = self.document["paths"][template][method.lower()]["responses"]
        if str(status) in responses:
            return (
                f"{_URN}#/paths/{_escape(template)}/{method.lower()}/responses/{status}"
                "/content/application~1json/schema"
            )
        if status >= 400:
            return f"{_URN}#/components/schemas/error"
        raise KeyError(f"{method} {path} has no {status} answer in the description")

    def errors(self, ref: str, instance: object) -> list[str]:
        """What in ``instance`` breaks the schema at ``ref`` (empty: it conforms)."""
        validator = _validator(self, ref)
        return [_describe(error) for error in validator.iter_errors(instance)]


@functools.cache
def _validator(spec: IntercomSpec, ref: str) -> OAS30Validator:
    return OAS30Validator({"$ref": ref}, registry=spec._registry)


def _describe(error: ValidationError) -> str:
    where = "/".join(str(part) for part in error.absolute_path) or "(top)"
    return f"{where}: {error.message[:300]}"


@functools.cache
def spec() -> IntercomSpec:
    """The description, read once per test session."""
    return IntercomSpec()
