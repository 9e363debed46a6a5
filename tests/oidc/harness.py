"""A real OpenID Connect provider for tests: panva/node-oidc-provider run by Node.js (see provider.mjs).

`OidcProvider` starts it on a free loopback port with one confidential client and a map of users;
`browser_login` plays the user's browser through the provider's login and consent pages.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from tests.harness import free_port, spawn, terminate, wait_for

HERE = Path(__file__).resolve().parent
PROVIDER_SCRIPT = HERE / "provider.mjs"
NODE_MODULES = HERE / "node_modules"
_STAMP = NODE_MODULES / ".hark-install-stamp"
NPM_TIMEOUT = 300.0

DEFAULT_USERS: dict[str, dict[str, Any]] = {
    "alice": {
        "email": "alice@example.org",
        "email_verified": True,
        "name": "Alice",
        "preferred_username": "alice",
        "groups": ["ops"],
        "sites": ["north"],
    },
    "bob": {
        "email": "bob@example.org",
        "email_verified": True,
        "name": "Bob",
        "preferred_username": "bob",
        "groups": ["viewers"],
        "sites": ["north", "south"],
    },
}


# -- installation -------------------------------------------------------------------------


def _install_fingerprint() -> str:
    digest = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        path = HERE / name
        digest.update(name.encode())
        digest.update(path.read_bytes() if path.exists() else b"-")
    return digest.hexdigest()


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise RuntimeError(
            f"`{tool}` is not on PATH: the OIDC provider tests need Node.js and npm to run panva/node-oidc-provider "
            f"from {HERE} (oidc-provider 9 targets Node 22 LTS or later; Node 20 works with a warning)"
        )
    return path


def ensure_installed() -> None:
    """Install tests/oidc/node_modules with `npm ci` when it is missing or does not match package(-lock).json."""
    _require("node")
    npm = _require("npm")
    fingerprint = _install_fingerprint()
    lock_path = Path(tempfile.gettempdir()) / f"hark-oidc-npm-{hashlib.sha256(str(HERE).encode()).hexdigest()[:12]}.lock"
    with open(lock_path, "w") as lock:  # one installer at a time (parallel test runs)
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (NODE_MODULES / "oidc-provider" / "package.json").exists() and _STAMP.exists():
            if _STAMP.read_text().strip() == fingerprint:
                return
        has_lock = (HERE / "package-lock.json").exists()
        args = [npm, "ci" if has_lock else "install", "--no-audit", "--no-fund"]
        try:
            result = subprocess.run(args, cwd=HERE, capture_output=True, text=True, timeout=NPM_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"`{' '.join(args)}` in {HERE} did not finish in {NPM_TIMEOUT}s") from exc
        if result.returncode != 0:
            raise RuntimeError(f"`{' '.join(args)}` in {HERE} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        _STAMP.write_text(_install_fingerprint() + "\n")


# -- the provider process ---------------------------------------------------------------------


@dataclass
class OidcProvider:
    """oidc-provider on http://127.0.0.1:<port> with one confidential client (client_secret_basic or _post, PKCE S256).

    Scopes: openid profile email groups sites; all granted claims are in the ID token.
    """

    workdir: Path
    redirect_uris: list[str]
    client_id: str = "hark-hub"
    client_secret: str = field(default_factory=lambda: os.urandom(24).hex())
    users: dict[str, dict[str, Any]] = field(default_factory=lambda: dict(DEFAULT_USERS))
    post_logout_redirect_uris: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    @property
    def log_path(self) -> Path:
        return self.workdir / "oidc-provider.log"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OIDC_")}
        env.update(
            OIDC_PORT=str(self.port),
            OIDC_CLIENT_ID=self.client_id,
            OIDC_CLIENT_SECRET=self.client_secret,
            OIDC_REDIRECT_URI=",".join(self.redirect_uris),
            OIDC_POST_LOGOUT_REDIRECT_URI=",".join(self.post_logout_redirect_uris),
            OIDC_USERS=json.dumps(self.users),
            NODE_ENV="test",
        )
        return env

    def start(self, timeout: float = 30.0) -> None:
        ensure_installed()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = spawn([_require("node"), str(PROVIDER_SCRIPT)], env=self.env(), log_path=self.log_path)

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"oidc provider exited with {self.proc.returncode}:\n{self.log()}")
            try:
                return httpx.get(self.discovery_url, timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            wait_for(ready, timeout, "the OIDC provider to serve its discovery document", interval=0.1)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> int:
        code = terminate(self.proc) if self.proc is not None else 0
        self.proc = None
        return code

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def discovery(self) -> dict[str, Any]:
        response = httpx.get(self.discovery_url, timeout=10)
        response.raise_for_status()
        return response.json()


# -- a scripted browser ---------------------------------------------------------------------------


@dataclass
class _Form:
    action: str | None
    method: str
    fields: list[tuple[str, str, str]] = field(default_factory=list)  # (type, name, value)


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[_Form] = []
        self._current: _Form | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._current = _Form(action=a.get("action"), method=(a.get("method") or "get").lower())
            self.forms.append(self._current)
        elif tag in ("input", "button") and self._current is not None and a.get("name"):
            kind = a.get("type", "text" if tag == "input" else "submit").lower()
            self._current.fields.append((kind, a["name"], a.get("value", "")))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


def _fill(form: _Form, username: str, password: str) -> dict[str, str]:
    data: dict[str, str] = {}
    submitted = False
    for kind, name, value in form.fields:
        if kind == "password":
            data[name] = password
        elif kind in ("text", "email") and name in ("login", "username", "user", "email"):
            data[name] = username
        elif kind in ("submit", "button"):
            if not submitted:  # only the first named submit button counts as clicked
                data[name] = value
                submitted = True
        elif kind in ("checkbox", "radio"):
            continue
        else:
            data.setdefault(name, value)
    return data


def browser_login(authorize_url: str, username: str, password: str = "any-password", max_steps: int = 20) -> str:
    """Go from an authorization URL through the provider's login and consent pages like a browser would.

    Returns the `Location` of the first redirect that leaves the provider (the client's redirect URI, with `code` and
    `state`, or `error`), without following it.
    """
    provider = _origin(authorize_url)
    url = authorize_url
    with httpx.Client(follow_redirects=False, timeout=10) as browser:
        response = browser.get(url)
        for _ in range(max_steps):
            if response.is_redirect:
                location = urljoin(str(response.url), response.headers["location"])
                if _origin(location) != provider:
                    return location
                response = browser.get(location)
                continue
            if response.status_code != 200 or "html" not in response.headers.get("content-type", ""):
                raise AssertionError(f"provider answered {response.status_code} at {response.url}:\n{response.text[:2000]}")
            parser = _FormParser()
            parser.feed(response.text)
            forms = [f for f in parser.forms if f.method == "post"]
            if not forms:
                raise AssertionError(f"no form to submit at {response.url}:\n{response.text[:2000]}")
            form = forms[0]
            action = urljoin(str(response.url), form.action or str(response.url))
            if _origin(action) != provider:
                raise AssertionError(f"the provider posts a form to {action} (response_mode=form_post is not supported here)")
            response = browser.post(action, data=_fill(form, username, password))
    raise AssertionError(f"no redirect to the client after {max_steps} steps from {authorize_url}")
