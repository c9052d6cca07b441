"""The request pipeline: one middleware that runs every stage in order.

::

    head in time ─▶ request id + audit ─▶ framing ─▶ error pages ─▶ stages ─▶ route handler
    (slowclients)    (observe/audit)       (framing)   (errorpages)    │
                                                                       ├─ host, path, forwarded (sync)
                                                                       ├─ identity (sync, but for a JWKS refetch)
                                                                       ├─ page context (aiohttp-jinja2's processors)
                                                                       ├─ access (portal paths: the store's contact)
                                                                       └─ body (the gateway's own handlers)

Each stage is a function of the request in its own module: it refuses by
raising (the error pages answer), or records what it decided on the request.
A stage with nothing to wait for returns None; one that must wait returns what
to await. So a request crosses the stages in one loop of plain calls, not
through a coroutine and a closure per stage, as a chain of aiohttp middlewares
would have it (bench/bench_pipeline.py measures each stage's share).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import aiohttp_jinja2
from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.edge.errorpages import error_answer, error_response, refused_answer
from gateway.edge.framing import framing_problem, upgrade_refused
from gateway.edge.slowclients import HeadDeadline
from gateway.observe.audit import close_entry, open_entry

Stage = Callable[[web.Request], Awaitable[None] | None]
"""One step of the pipeline: raises to refuse; returns None when done, or an awaitable to finish it."""


async def page_context_stage(request: web.Request) -> None:
    """Run aiohttp-jinja2's context processors into the request's template context, as its middleware would."""
    # Its own middleware would be one more layer for every request; the context is kept under its plain string
    # key (gateway/app.py silences the warning aiohttp gives for that key once a process).
    context = request.get(aiohttp_jinja2.REQUEST_CONTEXT_KEY)
    if context is None:
        context = request[aiohttp_jinja2.REQUEST_CONTEXT_KEY] = {}
    for processor in request.config_dict[aiohttp_jinja2.APP_CONTEXT_PROCESSORS_KEY]:
        context.update(await processor(request))


@dataclass(frozen=True)
class Pipeline:
    """Every stage a request crosses before its handler, outermost first, run by :meth:`middleware`."""

    head_deadline: HeadDeadline
    refuse_underscores: bool
    """``requests.underscore_headers: refuse``: a header name with "_" is a framing problem."""
    stages: Sequence[Stage]
    """Inside the error pages, in order: what refuses here gets a page (and still an audit record)."""

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The whole pipeline around ``handler``, in one coroutine."""
        self.head_deadline.arrived(request)  # the request head arrived in time (server.py starts the clock)
        # The audit is outermost, so that it records the status the client really got.
        started = time.perf_counter()
        entry = open_entry(request)
        status = 500
        try:
            # Ambiguous framing refused (and "_" in header names, if so configured) before any stage reads the head.
            problem = framing_problem(request.method, request.headers, refuse_underscores=self.refuse_underscores)
            if problem is not None:
                response: web.StreamResponse = error_response(request, 400, "Bad request", problem)
                response.force_close()
            else:
                response = refused_answer(request) or await self._staged(request, handler)
                if upgrade_refused(request, response):
                    response.force_close()
            status = response.status
            return response
        except web.HTTPException as exc:  # a redirect: the error pages let those through
            status = exc.status
            raise
        except BaseException:
            entry.aborted = True
            raise
        finally:
            close_entry(request, entry, status, started)

    async def _staged(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The stages and the handler, any failure of theirs answered by the error pages."""
        try:
            for stage in self.stages:
                pending = stage(request)
                if pending is not None:
                    await pending
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return error_answer(request, exc)
        except Exception as exc:  # every other failure is a page too: error_answer logs the bugs among them
            return error_answer(request, exc)
