"""What authentication costs in the hark hub: password hashing, logins and per-request checks.

What is measured
----------------
All in one run, against one ``hark-hub run`` process:

1. Password hashing, in this process: the argon2id parameters the hub uses (read from
   ``hub.auth.passwords._hasher``) and the median time of one ``hash_password`` and one
   ``verify_password`` over 10 calls each.
2. Logins over HTTP: ``POST /api/v1/auth/login`` as ``admin`` with the right password, with
   1 connection and with ``--connections`` connections. Every login verifies the argon2id hash
   on the hub's database worker and writes a session row and an audit event. Only *failed*
   logins count towards the hub's lockout, so a stream of correct ones is never throttled.
3. Per-request authentication overhead: ``GET /metrics`` on a hub started with
   ``HARK_METRICS_OPEN_ON_LOOPBACK=true``, so a loopback caller without credentials is let in
   unchecked, while a credential that *is* sent is always checked. Three variants, each with 1
   and with ``--connections`` connections:

   (a) no credentials (no authentication at all),
   (b) ``Authorization: Bearer <session token>`` of the admin's login session,
   (c) ``Authorization: Bearer <API key secret>`` of a service key with scope ``metrics:read``.

   It prints the req/s ratios (b)/(a) and (c)/(a) and the added time per request in
   microseconds, from the p50 difference and from the 1/rps difference. The hub caches a
   verified secret for ``CACHE_TTL_S`` (2 s, ``hub/auth/authenticator.py``), so these are
   steady-state figures: a SHA-256 of the secret and a dict lookup per request, and a database
   lookup about once every 2 s per token. The uncached cost is therefore measured separately,
   in this process, on a SQLite database in a temporary directory: the services
   ``authenticate_session_token`` and ``authenticate_key`` called directly (mean over 2000
   calls), and the hub's ``Authenticator`` on a ``HubDatabase`` worker with its cache emptied
   before every call (a miss, including the hop to the database thread) and kept (a hit).
4. Machine context, as ``bench/hub_http.py`` prints it.

How
---
The hub, its readiness wait, the ``GET`` load generator (a separate process, 2 s warm-up, then
``--duration`` seconds of closed-loop keep-alive HTTP/1.1) are those of ``bench/hub_http.py``, the
report printing that of ``bench/report.py``. That load generator only sends ``GET`` requests, so the logins are sent by
a POST variant here that reuses its connection loop in the same kind of separate process.

Run it from the repository root::

    .venv/bin/python bench/auth.py [--duration 5] [--connections 16]

The hub is stopped at the end (SIGTERM, then SIGKILL after 10 s) and the temporary
directories are removed, also on Ctrl-C or an error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import tornado
from hark_fleet.hub.auth.authenticator import CACHE_TTL_S, Authenticator
from hark_fleet.hub.auth.passwords import _hasher, hash_password, verify_password
from hark_fleet.hub.auth.tokens import new_password
from hark_fleet.hub.db.database import HubDatabase, open_database
from hark_fleet.hub.services.api_keys import authenticate_key, create_key
from hark_fleet.hub.services.audit import Actor
from hark_fleet.hub.services.auth import authenticate_session_token, ensure_first_admin, login
from hark_fleet.hub.services.grants import principal_for_user

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hub_http  # noqa: E402
import report  # noqa: E402
from hub_http import (  # noqa: E402
    HOST,
    READY_TIMEOUT_S,
    STOP_TIMEOUT_S,
    WARMUP_S,
    LoadResult,
    Target,
    free_port,
    http_request,
    log_tail,
    measure_python,
    start_process,
    stop_process,
    wait_for_200,
)

LOGIN_PATH = "/api/v1/auth/login"
HASH_SAMPLES = 10
DEFAULT_LOOKUPS = 2000
LOOKUP_WARMUP = 100


# -- password hashing (in this process) ----------------------------------------


def time_hashing(samples: int) -> tuple[float, float]:
    """Median seconds of one hash_password and of one verify_password (correct password)."""
    password = secrets.token_urlsafe(24)
    hashes, verifies = [], []
    stored = hash_password(password)
    for _ in range(samples):
        started = time.perf_counter()
        hash_password(password)
        hashes.append(time.perf_counter() - started)
        started = time.perf_counter()
        ok = verify_password(stored, password)
        verifies.append(time.perf_counter() - started)
        if not ok:
            raise RuntimeError("verify_password rejected the right password")
    return statistics.median(hashes), statistics.median(verifies)


# -- uncached token lookups (in this process, own SQLite database) -------------


def _mean_us(call: Callable[[], object], iterations: int) -> float:
    for _ in range(LOOKUP_WARMUP):
        call()
    started = time.perf_counter()
    for _ in range(iterations):
        call()
    return (time.perf_counter() - started) / iterations * 1e6


async def _authenticator_costs(hub_db: HubDatabase, secrets_by_kind: dict[str, str], iterations: int) -> dict[str, float]:
    """Mean µs of Authenticator.authenticate: a miss (cache emptied first, lookup on the db worker) and a hit."""
    authenticator = Authenticator(hub_db)
    costs: dict[str, float] = {}
    for kind, secret in secrets_by_kind.items():
        for label, forget in (("miss", True), ("hit", False)):
            for _ in range(LOOKUP_WARMUP):
                if forget:
                    authenticator.forget_all()
                await authenticator.authenticate(secret)
            started = time.perf_counter()
            for _ in range(iterations):
                if forget:
                    authenticator.forget_all()
                await authenticator.authenticate(secret)
            costs[f"{kind} {label}"] = (time.perf_counter() - started) / iterations * 1e6
    return costs


def time_lookups(data_dir: Path, iterations: int) -> list[tuple[str, float]]:
    """Set up an admin, a session and a service key on a fresh SQLite database; time the lookups."""
    hub_db = HubDatabase(open_database(None, data_dir))
    try:
        hub_db.start()
        hub_db.db.connect(reuse_if_open=True)
        password = secrets.token_urlsafe(24)
        ensure_first_admin(password, new_password)
        session = login("admin", password, HOST, "hark-bench")
        caller = principal_for_user(session.user)
        _, key_secret = create_key(Actor.of(caller, HOST), caller, "bench", "service", ["metrics:read"], None, None)
        for check in (authenticate_session_token(session.token), authenticate_key(key_secret)):
            if check.principal is None:
                raise RuntimeError(f"in-process lookup failed: {check.problem}")
        rows = [
            ("authenticate_session_token() direct", _mean_us(lambda: authenticate_session_token(session.token), iterations)),
            ("authenticate_key() direct", _mean_us(lambda: authenticate_key(key_secret), iterations)),
        ]
        costs = asyncio.run(_authenticator_costs(hub_db, {"session": session.token, "key": key_secret}, iterations))
        rows += [
            ("Authenticator, session token, cache miss (db worker)", costs["session miss"]),
            ("Authenticator, API key, cache miss (db worker)", costs["key miss"]),
            ("Authenticator, session token, cache hit", costs["session hit"]),
            ("Authenticator, API key, cache hit", costs["key hit"]),
        ]
        return rows
    finally:
        if not hub_db.db.is_closed():
            hub_db.db.close()  # this thread's connection; the worker's is closed by hub_db.close()
        hub_db.close()


# -- login load (POST; runs in its own process) ---------------------------------


def measure_post(port: int, path: str, body: Any, connections: int, duration_s: float, server_pid: int) -> LoadResult:
    """POST `body` as JSON to `path` under load, from a separate process (hub_http's load generator)."""
    target = Target(
        "post",
        f"POST {path}",
        port,
        path,
        {"Content-Type": "application/json", "Accept": "application/json"},
        server_pid,
        method="POST",
        body=json.dumps(body).encode(),
    )
    return measure_python(target, connections, duration_s)


# -- report ----------------------------------------------------------------------


def _load_row(label: str, connections: int, result: LoadResult) -> list[str]:
    return [
        label,
        str(connections),
        f"{result.rps:,.0f}",
        f"{result.p50_ms:.2f}",
        f"{result.p99_ms:.2f}",
        str(result.errors),
        report.pct(result.client_cpu_pct),
        report.pct(result.server_cpu_pct),
    ]


def _overhead_row(label: str, connections: int, result: LoadResult, base: LoadResult) -> list[str]:
    if result.rps <= 0 or base.rps <= 0:
        return [label, str(connections), "n/a", "n/a", "n/a"]
    return [
        label,
        str(connections),
        report.ratio(result.rps, base.rps),
        f"{(result.p50_ms - base.p50_ms) * 1000:+.0f}",
        f"{(1 / result.rps - 1 / base.rps) * 1e6:+.0f}",
    ]


def _paragraphs(connections: list[int], verify_s: float, lookups: int) -> list[str]:
    many = max(connections)
    return [
        f"Logins: each one verifies an argon2id hash (deliberately costly: about {verify_s * 1000:.0f} ms) on the hub's "
        f"pool of two CPU threads, off the event loop and the database thread, so one login at a time manages about "
        f"1 / verify_password = {1 / verify_s:,.0f} logins/s and concurrent logins use both cores.",
        f"GET /metrics: (a) sends no credentials and is let in unchecked (HARK_METRICS_OPEN_ON_LOOPBACK=true, "
        f"loopback caller); (b) and (c) send a bearer secret, which is always checked. The hub caches a verified "
        f"secret for CACHE_TTL_S = {CACHE_TTL_S:g} s (hub/auth/authenticator.py), so these HTTP figures are "
        f"steady state: per request a SHA-256 of the secret and a dict lookup, and a database lookup only about "
        f"once every {CACHE_TTL_S:g} s per token. The uncached cost is in the last table.",
        f"Overhead columns: d p50 with 1 connection is the latency each request gains; with {many} connections a "
        f"closed loop keeps {many} requests queued, so there d p50 is roughly {many} x the per-request cost. "
        f"d (1/rps) is the server time each request adds when the server is the bottleneck (with {many} "
        f"connections); with 1 connection it is about the added round-trip time.",
        f"Uncached lookups: in this process on its own SQLite database in a temporary directory, mean of {lookups} "
        f"calls after {LOOKUP_WARMUP} warm-up calls. 'direct' calls the service function on this thread; "
        f"'cache miss' is the hub's Authenticator with its cache emptied before every call, so it adds the SHA-256 "
        f"and the hop to the database worker thread the hub uses; 'cache hit' is what (b) and (c) pay per request.",
    ]


def print_report(
    context: list[tuple[str, str]],
    hashing: list[list[str]],
    logins: dict[int, LoadResult],
    metrics: dict[tuple[str, int], LoadResult],
    lookups: list[tuple[str, float]],
    paragraphs: list[str],
) -> None:
    load_columns = ["request", "connections", "req/s", "p50 ms", "p99 ms", "errors", "client CPU", "server CPU"]
    login_rows = [_load_row("POST /api/v1/auth/login", n, result) for n, result in logins.items()]
    metric_rows = [_load_row(label, n, result) for (label, n), result in metrics.items()]
    counts = sorted(logins)
    overhead_rows = [
        _overhead_row(f"{label} vs (a)", n, metrics[(label, n)], metrics[(VARIANTS[0][0], n)])
        for n in counts
        for label, _ in VARIANTS[1:]
    ]
    lookup_rows = [[label, f"{us:,.1f}"] for label, us in lookups]
    tables: list[report.TextTable] = [
        ("password hashing (in this process)", ["", "value"], hashing, 1),
        ("logins over HTTP (measurement window only)", load_columns, login_rows, 1),
        ("GET /metrics over HTTP (measurement window only)", load_columns, metric_rows, 1),
        (
            "authentication overhead per request, vs (a) no credentials",
            ["", "connections", "req/s ratio", "d p50 us", "d (1/rps) us"],
            overhead_rows,
            1,
        ),
        ("uncached token lookups (in this process, SQLite)", ["lookup", "us per lookup"], lookup_rows, 1),
    ]
    notes = [f"{label}: statuses {dict(sorted(r.statuses.items()))}" for label, r in _all_results(logins, metrics) if r.errors]
    notes += [f"{label}: load process failed: {r.failure}" for label, r in _all_results(logins, metrics) if r.failure]
    report.print_report(context, tables, notes, title="hark hub HTTP benchmark")
    print()
    for paragraph in paragraphs:
        print(textwrap.fill(paragraph, width=110))
        print()


def _all_results(logins: dict[int, LoadResult], metrics: dict[tuple[str, int], LoadResult]) -> list[tuple[str, LoadResult]]:
    return [(f"login x{n}", r) for n, r in logins.items()] + [(f"{label} x{n}", r) for (label, n), r in metrics.items()]


# -- main ------------------------------------------------------------------------

# (label, which bearer secret: None, "session" or "key")
VARIANTS: list[tuple[str, str | None]] = [
    ("(a) no credentials", None),
    ("(b) session token", "session"),
    ("(c) API key", "key"),
]


def _machine_context(duration_s: float, connections: list[int]) -> list[tuple[str, str]]:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "n/a"
    return [
        ("benchmark", "authentication cost (bench/auth.py)"),
        ("machine", f"{platform.machine()} {platform.system()} {platform.release()}"),
        ("CPUs", f"{os.cpu_count()} (usable by this process: {usable})"),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("tornado", tornado.version),
        ("argon2-cffi", metadata.version("argon2-cffi")),
        ("database", "SQLite (hub and in-process lookups)"),
        (
            "parameters",
            f"duration {duration_s:g} s per run, warm-up {WARMUP_S:g} s, "
            f"{' and '.join(str(n) for n in connections)} keep-alive connections",
        ),
        ("load client", "1 process, asyncio raw HTTP/1.1, closed loop (one request in flight per connection)"),
    ]


def metrics_status(port: int, token: str | None) -> int:
    """The status of one `GET /metrics` (Prometheus text, so not hub_http.http_request, which decodes JSON)."""
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    request = urllib.request.Request(f"http://{HOST}:{port}/metrics", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def _check(status: int, what: str, expected: tuple[int, ...] = (200,), payload: Any = None) -> None:
    if status not in expected:
        raise RuntimeError(f"{what} answered HTTP {status}" + ("" if payload is None else f": {payload}"))


def run(duration_s: float, connections: int, lookups: int) -> int:
    signal.signal(signal.SIGTERM, hub_http._raise_keyboard_interrupt)  # a SIGTERM cleans up like Ctrl-C
    temp_dir = Path(tempfile.mkdtemp(prefix="hark-bench-auth-"))
    hub: subprocess.Popen[bytes] | None = None
    hub_log = temp_dir / "hub.log"
    counts = sorted({1, connections})
    try:
        params = (_hasher.time_cost, _hasher.memory_cost, _hasher.parallelism)
        print(f"timing argon2id (t={params[0]}, m={params[1]} KiB, p={params[2]}) in this process ...", flush=True)
        hash_s, verify_s = time_hashing(HASH_SAMPLES)
        hashing = [
            ["argon2id time_cost", str(params[0])],
            ["argon2id memory_cost", f"{params[1]} KiB ({params[1] / 1024:g} MiB)"],
            ["argon2id parallelism", str(params[2])],
            [f"hash_password (median of {HASH_SAMPLES})", f"{hash_s * 1000:.1f} ms"],
            [f"verify_password (median of {HASH_SAMPLES})", f"{verify_s * 1000:.1f} ms"],
        ]

        print(f"timing uncached token lookups in this process ({lookups} each) ...", flush=True)
        lookup_costs = time_lookups(temp_dir / "inproc", lookups)

        hub_port, mqtt_port = free_port(), free_port()
        password = secrets.token_urlsafe(24)
        hub_env = dict(
            os.environ,
            HARK_DATA_DIR=str(temp_dir / "hub"),
            HARK_HTTP_HOST=HOST,
            HARK_HTTP_PORT=str(hub_port),
            HARK_EMBEDDED_MQTT_BIND=f"{HOST}:{mqtt_port}",
            HARK_ADMIN_PASSWORD=password,
            HARK_METRICS_OPEN_ON_LOOPBACK="true",
            HARK_LOG_LEVEL="WARNING",
        )
        hub = start_process([sys.executable, "-m", "hark_fleet.hub", "run"], hub_env, hub_log)
        print(f"starting the hub on :{hub_port} ...", flush=True)
        try:
            wait_for_200(hub_port, "/readyz", hub, READY_TIMEOUT_S)
        except RuntimeError as err:
            print(f"hub: {err}\n{log_tail(hub_log)}", file=sys.stderr)
            return 1

        credentials = {"username": "admin", "password": password}
        status, payload = http_request(hub_port, LOGIN_PATH, body=credentials)
        _check(status, f"POST {LOGIN_PATH}", payload=payload)
        session_token = payload["data"]["token"]
        body = {"name": "bench", "kind": "service", "scopes": ["metrics:read"]}
        status, payload = http_request(hub_port, "/api/v1/auth/keys", body=body, token=session_token)
        _check(status, "POST /api/v1/auth/keys", (200, 201), payload)
        bearers = {"session": session_token, "key": payload["data"]["secret"]}
        for kind, secret in [(None, None), *bearers.items()]:
            status = metrics_status(hub_port, secret)
            _check(status, f"GET /metrics with {kind or 'no'} credentials")
        # A wrong credential must be refused, or (b) and (c) would not be checking anything.
        status = metrics_status(hub_port, "hks_not-a-real-session-token")
        _check(status, "GET /metrics with a wrong bearer token", (401,))

        def hub_alive() -> bool:
            assert hub is not None
            if hub.poll() is None:
                return True
            print(f"hub exited with code {hub.returncode} during the run\n{log_tail(hub_log)}", file=sys.stderr)
            return False

        logins: dict[int, LoadResult] = {}
        for n in counts:
            print(f"measuring logins ({WARMUP_S:g} s warm-up + {duration_s:g} s, {n} connections) ...", flush=True)
            logins[n] = measure_post(hub_port, LOGIN_PATH, credentials, n, duration_s, hub.pid)
            if not hub_alive():
                return 1

        metrics: dict[tuple[str, int], LoadResult] = {}
        for n in counts:
            for label, bearer in VARIANTS:
                headers = {} if bearer is None else {"Authorization": f"Bearer {bearers[bearer]}"}
                target = Target(label, f"GET /metrics {label}", hub_port, "/metrics", headers, hub.pid)
                print(
                    f"measuring GET /metrics {label} ({WARMUP_S:g} s warm-up + {duration_s:g} s, {n} connections) ...", flush=True
                )
                metrics[(label, n)] = measure_python(target, n, duration_s)
                if not hub_alive():
                    return 1

        print()
        print_report(
            _machine_context(duration_s, counts),
            hashing,
            logins,
            metrics,
            lookup_costs,
            _paragraphs(counts, verify_s, lookups),
        )
        return 1 if any(r.failure for _, r in _all_results(logins, metrics)) else 0
    except KeyboardInterrupt:
        print("\ninterrupted; stopping the hub", file=sys.stderr)
        return 130
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        if hub is not None:
            print(log_tail(hub_log), file=sys.stderr)
        return 1
    finally:
        # Cleanup is bounded (STOP_TIMEOUT_S); do not let a second Ctrl-C cut it short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if hub is not None:
            stop_process(hub, STOP_TIMEOUT_S)
        shutil.rmtree(temp_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark what authentication costs in the hark hub.")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per run, after a 2 s warm-up (default 5)")
    parser.add_argument(
        "--connections", type=int, default=16, help="concurrent keep-alive connections (default 16; 1 is run too)"
    )
    parser.add_argument(
        "--lookups", type=int, default=DEFAULT_LOOKUPS, help=f"in-process lookups timed per kind (default {DEFAULT_LOOKUPS})"
    )
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.connections < 1 or args.lookups < 1:
        parser.error("--duration must be positive, --connections and --lookups at least 1")
    return run(args.duration, args.connections, args.lookups)


if __name__ == "__main__":
    sys.exit(main())
