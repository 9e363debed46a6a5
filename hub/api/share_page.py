"""The public share page (issue 23): `/s/{token}` plays a shared recording without an account.

A small self-contained HTML page (no script): the recording's name, length and the link's expiry, an
`<audio>` element fed by `/s/{token}/audio` (Range, so it seeks) and a Download button when allowed; a
password form first when the link has one. Errors are pages that say what happened (404 unknown link,
410 expired/revoked/used up, 429 locked after wrong passwords); a JSON `POST` gets the API's error shape.
The token is in the path, so every answer tells the browser not to send it on (no-referrer) nor to cache it.
"""

from __future__ import annotations

import base64
import hashlib
import html
from typing import Any
from urllib.parse import parse_qs

import msgspec
from hark_fleet.hub.api.base import PUBLIC
from hark_fleet.hub.api.recordings_library import FileSender
from hark_fleet.hub.auth.passwords import MAX_LENGTH, verify_password
from hark_fleet.hub.auth.principal import ALL_SITES, SiteScope
from hark_fleet.hub.errors import ApiError, Forbidden, InvalidRequest
from hark_fleet.hub.services import share_links
from hark_fleet.hub.services.share_links import Shared, WrongPassword
from hark_fleet.protocol.decoding import PayloadError, decode

COOKIE = "hark_share"
STYLE = (
    "body{font:16px/1.5 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1b1f24}"
    "main{max-width:36rem;margin:3rem auto;padding:1.5rem;background:#fff;border-radius:.5rem;box-shadow:0 1px 4px #0002}"
    "h1{font-size:1.4rem;margin:0 0 .5rem}audio{width:100%;margin:1rem 0}"
    ".button,button{display:inline-block;padding:.5rem 1rem;border-radius:.3rem;border:0;background:#1f5fbf;color:#fff;"
    "text-decoration:none;font:inherit;cursor:pointer}"
    "input{font:inherit;padding:.4rem;width:100%;box-sizing:border-box;margin:.25rem 0 .75rem}"
    ".error{color:#a11}.hint{color:#555;font-size:.9rem}"
    "@media (prefers-color-scheme:dark){body{background:#15181c;color:#e6e8eb}main{background:#1f2329}.hint{color:#aab}"
    ".error{color:#f88}}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
SECURITY_HEADERS = {
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        f"default-src 'none'; media-src 'self'; style-src 'sha256-{_STYLE_HASH}'; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'"
    ),
}
TITLES = {404: "Link not found", 410: "This link no longer works", 429: "Too many wrong passwords", 403: "Not allowed"}


class PasswordBody(msgspec.Struct, forbid_unknown_fields=True):
    password: str


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1"><meta name="referrer" content="no-referrer">'
        f"<title>{html.escape(title)} · hark</title><style>{STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>"
    )


def _length(seconds: float | None) -> str:
    if seconds is None:
        return "unknown length"
    whole = round(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}" if whole >= 3600 else f"{whole // 60}:{whole % 60:02d}"


def _expiry(shared: Shared) -> str:
    stamp = shared.expires_at.strftime("%Y-%m-%d %H:%M UTC")
    return f'<time datetime="{shared.expires_at.isoformat(timespec="seconds")}Z">{stamp}</time>'


def player_page(shared: Shared, token: str) -> str:
    base = f"/s/{html.escape(token)}"
    name = html.escape(shared.name or shared.recording_id)
    download = (
        f'<p><a class="button" href="{base}/download" download>Download</a></p>'
        if shared.allow_download
        else '<p class="hint">Downloading is not allowed for this link.</p>'
    )
    return _page(
        shared.name or "Shared recording",
        f"<h1>{name}</h1><p>Length {_length(shared.duration_s)} · this link expires {_expiry(shared)}</p>"
        f'<audio controls preload="metadata" src="{base}/audio" aria-label="Play {name}"></audio>{download}',
    )


def password_page(token: str, problem: str | None = None) -> str:
    error = f'<p class="error" role="alert">{html.escape(problem)}</p>' if problem else ""
    return _page(
        "Password needed",
        "<h1>This recording is protected</h1><p>Enter the password you were given with the link.</p>"
        f'<form method="post" action="/s/{html.escape(token)}"><label for="password">Password</label>'
        '<input type="password" id="password" name="password" required autocomplete="current-password" autofocus>'
        f'<button type="submit">Open</button></form>{error}',
    )


def error_page(status: int, message: str) -> str:
    title = TITLES.get(status, "Something went wrong")
    return _page(title, f"<h1>{html.escape(title)}</h1><p>{html.escape(message)}</p>")


class ShareRoute(FileSender):
    """What every public share route shares: no account, security headers, errors as pages, the grant cookie."""

    permissions = {"get": PUBLIC}

    def set_default_headers(self) -> None:
        for name, value in SECURITY_HEADERS.items():
            self.set_header(name, value)

    @property
    def reader(self) -> SiteScope:
        return ALL_SITES  # the token is the permission

    def wants_json(self) -> bool:
        return self.request.headers.get("Content-Type", "").startswith("application/json")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if self.wants_json():
            super().write_error(status_code, **kwargs)  # the security headers are on: send_error cleared to the defaults
            return
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = "The hub could not answer; try again later."
        if isinstance(exc, ApiError):
            for name, value in exc.headers.items():
                self.set_header(name, value)
            message = exc.message
        elif status_code < 500:
            message = "The request was not understood."
        if self._body_unread:
            self.set_header("Connection", "close")
        self.set_header("Content-Type", "text/html; charset=utf-8")
        token = self.path_kwargs.get("token", "")
        page = password_page(token, message) if isinstance(exc, WrongPassword) else error_page(status_code, message)
        self.finish(page)

    def write_html(self, page: str) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(page)

    def grant(self, shared: Shared, kinds: tuple[str, ...]) -> bool:
        return share_links.grant_valid(self.hub.secrets, self.get_cookie(COOKIE), shared.link_id, kinds)

    def give_grant(self, token: str, shared: Shared, kind: str) -> None:
        value, lifetime = share_links.make_grant(self.hub.secrets, shared, kind)
        self.set_cookie(
            COOKIE,
            value,
            path=f"/s/{token}",
            max_age=lifetime,
            httponly=True,
            samesite="Strict",
            secure=self.request.protocol == "https",
        )

    async def playable(self, token: str) -> Shared:
        """The link, for a visitor whose open was granted; 403 when they have not opened the page."""
        shared = share_links.usable(await self.hub.db.run(share_links.resolve, token), after_open=True)
        if not self.grant(shared, ("play",)):
            raise Forbidden("Open the link's page first (it gives this browser a pass for the audio).", code="not_opened")
        return shared


class SharePageHandler(ShareRoute):
    """`GET /s/{token}`: the player (one use, audited) or the password form; `POST` takes the password."""

    permissions = {"get": PUBLIC, "post": PUBLIC}
    max_body_bytes = 8 * 1024

    async def get(self, token: str) -> None:
        shared = share_links.usable(await self.hub.db.run(share_links.resolve, token))
        if shared.has_password and not self.grant(shared, ("unlock", "play")):
            self.write_html(password_page(token))
            return
        if self.request.method == "HEAD":
            self.write_html(player_page(shared, token))  # a look at the headers is not an open
            return
        ip, agent = self.request.remote_ip, self.request.headers.get("User-Agent")
        shared = await self.hub.db.run(share_links.open_link, token, ip, agent)
        self.give_grant(token, shared, "play")
        self.write_html(player_page(shared, token))

    async def post(self, token: str) -> None:
        password = self._password()
        shared = await self.hub.db.run(share_links.check_unlock, token, self.request.remote_ip)
        if shared.password_hash is not None:
            ok = await self.hub.run_cpu(verify_password, shared.password_hash, password[:MAX_LENGTH])
            await self.hub.db.run(share_links.finish_unlock, shared, ok, self.request.remote_ip)
        self.give_grant(token, shared, "unlock")
        if self.wants_json():
            self.write_data({"unlocked": True, "page_url": f"/s/{token}"})
        else:
            self.redirect(f"/s/{token}", status=303)

    def _password(self) -> str:
        raw = self.body_bytes()
        if self.wants_json():
            try:
                return decode(raw, PasswordBody, max_bytes=self.max_body_bytes).password
            except PayloadError as err:
                raise InvalidRequest(
                    'Send the password as JSON: {"password": "..."}.', fields={"password": "is required"}
                ) from err
        try:
            values = parse_qs(raw.decode("utf-8"), keep_blank_values=True).get("password")
        except UnicodeDecodeError as err:
            raise InvalidRequest("The form is not UTF-8.") from err
        if not values:
            raise InvalidRequest("Enter the password.", fields={"password": "is required"})
        return values[-1]


class ShareAudioHandler(ShareRoute):
    """`GET /s/{token}/audio`: the recording for the page's player, with Range (206), for an opened link."""

    async def get(self, token: str) -> None:
        shared = await self.playable(token)
        await super().get(shared.recording_id)


class ShareDownloadHandler(ShareRoute):
    """`GET /s/{token}/download`: the file as an attachment, when the link allows it (403 otherwise)."""

    disposition = "attachment"

    async def get(self, token: str) -> None:
        shared = await self.playable(token)
        if not shared.allow_download:
            raise Forbidden("The person who shared this recording did not allow downloading it.", code="download_not_allowed")
        if self.request.method == "GET" and not self.request.headers.get("Range"):
            await self.hub.db.run(share_links.audit_download, shared, self.request.remote_ip)
        await super().get(shared.recording_id)
