"""The web console's static files, served at `/` and `/console/`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import tornado.web
from hark_fleet.hub.api.base import EveryMethod
from tornado.httputil import responses

CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; media-src 'self' blob:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


class ConsoleFileHandler(tornado.web.StaticFileHandler):
    """Console assets with a strict content security policy; GET and HEAD only, errors in the API's shape."""

    SUPPORTED_METHODS = EveryMethod()

    def prepare(self) -> None:
        if self.request.method not in ("GET", "HEAD"):
            raise tornado.web.HTTPError(405)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if status_code == 405:
            self.set_header("Allow", "GET, HEAD")
        code = {404: "not_found", 405: "method_not_allowed"}.get(status_code, "error" if status_code < 500 else "internal_error")
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps({"error": {"code": code, "message": responses.get(status_code, "Error") + "."}}))

    def set_extra_headers(self, path: str) -> None:
        for name, value in SECURITY_HEADERS.items():
            self.set_header(name, value)
        if path == "index.html":
            self.set_header("Cache-Control", "no-cache")
