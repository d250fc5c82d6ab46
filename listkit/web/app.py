"""The ASGI app: routes from the route modules, plain error pages, a log without secrets.

Each route module (``ROUTE_MODULES``) exposes ``routes``, a list of Starlette
routes, and may expose ``lifespan(app)``, an async context manager entered when
the app starts and left when it stops (the confirmation mailer's). Handlers
reach the database only through ``request.app.state.db`` (a ``WebDB``): reads
on a per-thread connection, writes through one writer thread that commits
before the handler answers.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import time
from collections.abc import Sequence

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from listkit.web.common import WebDB
from listkit.workspace import Workspace

log = logging.getLogger("listkit.serve")

# Route modules, in the order their routes are tried.
ROUTE_MODULES: tuple[str, ...] = ("listkit.web.relays", "listkit.web.hooks", "listkit.web.pages")


async def healthz(request: Request) -> Response:
    """200 when the database answers; used by proxies, monitors and `listkit doctor`."""
    await request.app.state.db.read(lambda db: db.execute("SELECT 1").fetchone())
    return PlainTextResponse("ok\n")


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    headers = getattr(exc, "headers", None)
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=headers)
    return PlainTextResponse(f"{exc.detail}\n", status_code=exc.status_code, headers=headers)


async def server_error(request: Request, exc: Exception) -> Response:
    # The log names the route and the exception type, never the request's values
    # (paths carry tokens and webhook secrets).
    log.error("error in %s: %s", _route_name(request.scope), type(exc).__name__)
    return PlainTextResponse("Something went wrong on our side. Please try again later.\n", 500)


def _route_name(scope: Scope) -> str:
    route = scope.get("route")
    return getattr(route, "path", None) or "(no route)"


class AccessLog:
    """One log line per request: method, route template, status, milliseconds.

    Not uvicorn's access log, which prints the path with its tokens and secrets.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            ms = (time.perf_counter() - started) * 1000
            log.info("%s %s %d %.1fms", scope["method"], _route_name(scope), status, ms)


def create_app(ws: Workspace, *, modules: Sequence[str] | None = None) -> Starlette:
    """The app for workspace ``ws``. Settings are read (and checked) now."""
    ws.settings  # noqa: B018 - read and check the settings before serving
    routes: list[BaseRoute] = [Route("/healthz", healthz, methods=["GET", "HEAD"])]
    lifespans = []
    for name in ROUTE_MODULES if modules is None else modules:
        module = importlib.import_module(name)
        routes.extend(module.routes)
        if hasattr(module, "lifespan"):
            lifespans.append(module.lifespan)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        async with contextlib.AsyncExitStack() as stack:
            for enter in lifespans:
                await stack.enter_async_context(enter(app))
            yield

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(AccessLog)],
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )
    app.state.ws = ws
    app.state.db = WebDB(ws.settings.db_path)
    return app
