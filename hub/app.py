"""The Tornado application: the whole route table in one place."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import tornado.web

from hub.api import auth, nodes, system
from hub.api.base import BaseHandler, NotFoundHandler
from hub.api.console import CONSOLE_DIR, ConsoleFileHandler
from hub.const import API_PREFIX as V1

if TYPE_CHECKING:
    from hub.server import Hub

# (path template, handler). `{name}` is one path segment, passed to the handler as `name`.
ROUTES: tuple[tuple[str, type[BaseHandler]], ...] = (
    # system
    ("/healthz", system.HealthzHandler),
    ("/readyz", system.ReadyzHandler),
    ("/metrics", system.MetricsHandler),
    (f"{V1}/openapi.yaml", system.OpenApiHandler),
    # identity
    (f"{V1}/auth/login", auth.LoginHandler),
    (f"{V1}/auth/logout", auth.LogoutHandler),
    (f"{V1}/auth/me", auth.MeHandler),
    # fleet
    (f"{V1}/nodes", nodes.NodesHandler),
    (f"{V1}/nodes/facets", nodes.NodeFacetsHandler),
    (f"{V1}/nodes/export", nodes.NodeExportHandler),
)


def template_to_regex(template: str) -> str:
    """`/nodes/{id}` -> `/nodes/(?P<id>[^/]+)$`."""
    return re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template) + "$"


def make_app(hub: Hub, **settings: Any) -> tornado.web.Application:
    """Build the application with every route bound to `hub`, and the console's files."""
    handlers: list[Any] = [(template_to_regex(path), handler, {"hub": hub, "route": path}) for path, handler in ROUTES]
    handlers += [
        (r"/()$", ConsoleFileHandler, {"path": str(CONSOLE_DIR), "default_filename": "index.html"}),
        (r"/console/(.*)", ConsoleFileHandler, {"path": str(CONSOLE_DIR)}),
    ]
    return tornado.web.Application(
        handlers,
        default_handler_class=NotFoundHandler,
        default_handler_args={"hub": hub, "route": "unmatched"},
        compress_response=False,
        xheaders=False,
        **settings,
    )
