"""The web console's static files, served at `/` and `/console/`."""

from __future__ import annotations

from pathlib import Path

import tornado.web

CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; media-src 'self' blob:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


class ConsoleFileHandler(tornado.web.StaticFileHandler):
    """Console assets with a strict content security policy."""

    def set_extra_headers(self, path: str) -> None:
        for name, value in SECURITY_HEADERS.items():
            self.set_header(name, value)
        if path == "index.html":
            self.set_header("Cache-Control", "no-cache")
