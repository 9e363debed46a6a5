"""One email over SMTP to a checked server: STARTTLS, implicit TLS, or none (a local relay).

aiosmtplib (asyncio, maintained) rather than smtplib in a thread: a send is cancellable and bounded by one
deadline on the hub's event loop, and up to eight in flight cost no threads. The connection is made here
to the addresses `outbound.check_smtp_destination` pinned, and handed to aiosmtplib as a connected socket;
TLS verifies the certificate against the configured host name, trusting `ca_pem` when given, else the
system's store.

The outcome in the retry policy's terms (`hub.notify.retry.classify`): the server's 2xx reply code as is
(delivered), a 4xx reply (temporary) as 503 and a 5xx reply (permanent) as 400; `message` says what the
server said, with its own code. No answer at all (refused connection, timeout, TLS failure) is None.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import aiosmtplib
from hark_fleet.hub.notify.outbound import Destination, check_smtp_destination

TEMPORARY = 503  # what a 4xx SMTP reply counts as
PERMANENT = 400  # what a 5xx SMTP reply counts as
SECURITIES = ("starttls", "tls", "none")


@dataclass(frozen=True, slots=True)
class SmtpResult:
    status: int | None  # 2xx reply code, or TEMPORARY / PERMANENT, or None when the server never answered
    error: str | None
    message: str
    latency_ms: float


@dataclass(frozen=True, slots=True)
class SmtpServer:
    host: str
    port: int
    security: str
    username: str | None
    password: str | None
    ca_pem: str | None


def server(config: Mapping[str, Any], secrets: Mapping[str, Any]) -> SmtpServer:
    """The SMTP server a channel names (ValueError when the security is unknown)."""
    security = str(config.get("security") or "starttls")
    if security not in SECURITIES:
        raise ValueError(f"config.security {security!r} is not one of {', '.join(SECURITIES)}")
    return SmtpServer(
        host=str(config.get("host") or "").strip(),
        port=int(config.get("port") or 587),
        security=security,
        username=str(config["username"]) if config.get("username") else None,
        password=str(secrets["password"]) if secrets.get("password") else None,
        ca_pem=str(config["ca_pem"]) if config.get("ca_pem") else None,
    )


async def checked(smtp: SmtpServer, allow_private: bool) -> Destination:
    """`check_smtp_destination` off the event loop (it resolves the host name)."""
    return await asyncio.get_running_loop().run_in_executor(
        None, lambda: check_smtp_destination(smtp.host, smtp.port, allow_private=allow_private, tls=smtp.security == "tls")
    )


def tls_context(ca_pem: str | None) -> ssl.SSLContext:
    """Verifying context: only `ca_pem` when given, else the system's trust store."""
    return ssl.create_default_context(cadata=ca_pem) if ca_pem else ssl.create_default_context()


async def _connect(destination: Destination, timeout_s: float) -> socket.socket:
    loop = asyncio.get_running_loop()
    last: OSError | None = None
    for address in destination.addresses:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (address, destination.port)), timeout_s)
            return sock
        except (OSError, TimeoutError) as err:
            sock.close()
            last = err if isinstance(err, OSError) else TimeoutError(f"connecting to {address} timed out")
    raise last or OSError("no address to connect to")


async def send(
    smtp: SmtpServer, destination: Destination, mail: EmailMessage, sender: str, recipients: Sequence[str], timeout_s: float
) -> SmtpResult:
    """Send `mail` to `recipients` through the checked server, within `timeout_s` in all."""
    started = time.perf_counter()
    client: aiosmtplib.SMTP | None = None
    sock: socket.socket | None = None
    handed = False  # once asyncio's transport has the socket, only the transport may close it
    try:
        async with asyncio.timeout(timeout_s):
            sock = await _connect(destination, timeout_s)
            client = aiosmtplib.SMTP(
                hostname=destination.host,
                sock=sock,
                use_tls=smtp.security == "tls",
                start_tls=smtp.security == "starttls",
                tls_context=tls_context(smtp.ca_pem) if smtp.security != "none" else None,
                timeout=timeout_s,
            )
            handed = True
            await client.connect()
            if smtp.username:
                await client.login(smtp.username, smtp.password or "")
            refused, reply = await client.send_message(mail, sender=sender, recipients=list(recipients))
            text = f"SMTP 250 {_one_line(reply)}"
            if refused:
                text += (
                    f" ({len(refused)} of {len(recipients)} recipients refused: "
                    + "; ".join(f"{who}: {r.code} {_one_line(r.message)}" for who, r in refused.items())
                    + ")"
                )
            try:
                await client.quit()
            except aiosmtplib.SMTPException:
                pass
            return SmtpResult(250, None, text, _since(started))
    except aiosmtplib.SMTPRecipientsRefused as err:
        codes = [r.code for r in err.recipients]
        said = "; ".join(f"{r.recipient}: {r.code} {_one_line(r.message)}" for r in err.recipients)
        status = PERMANENT if codes and all(c >= 500 for c in codes) else TEMPORARY
        return SmtpResult(
            status, f"every recipient refused: {said}", f"SMTP {min(codes, default=550)}: recipients refused", _since(started)
        )
    except aiosmtplib.SMTPResponseException as err:
        said = f"SMTP {err.code} {_one_line(err.message)}"
        outcome = PERMANENT if err.code >= 500 else TEMPORARY if err.code >= 400 else None
        return SmtpResult(outcome, said, said, _since(started))
    except aiosmtplib.SMTPNotSupported as err:
        said = f"SMTP: {_one_line(str(err))}"
        return SmtpResult(PERMANENT, said, said, _since(started))
    except (TimeoutError, aiosmtplib.SMTPTimeoutError):
        said = f"timed out after {timeout_s:g} s"
        return SmtpResult(None, said, said, _since(started))
    except (aiosmtplib.SMTPException, OSError, ValueError) as err:
        said = f"{type(err).__name__}: {_one_line(str(err))}"
        return SmtpResult(None, said, said, _since(started))
    finally:
        # Closing the socket under its transport frees the descriptor while the loop still maps it to that
        # transport (closed on the loop's next turn): the next connection given the same number then fails
        # with "File descriptor N is used by transport". The transport closes the socket itself.
        if client is not None:
            client.close()
        if sock is not None and not handed:
            sock.close()


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:300]


def _since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 1)
