"""`hark-provision`: the installer's command line (discover, claim, bulk, reset, ca)."""

from __future__ import annotations

import argparse
import asyncio
import csv
import getpass
import os
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hark_fleet.protocol.tls import TlsError
from hark_fleet.protocol.version import __version__
from hark_fleet.provision.ca_commands import add_ca_commands
from hark_fleet.provision.errors import CsvError, NodeNotFound, ProvisionError, RequestFailed
from hark_fleet.provision.http import trust_ca
from hark_fleet.provision.hub_api import HubApi
from hark_fleet.provision.local_client import reset_node
from hark_fleet.provision.mdns import DiscoveredNode, Interfaces, browse_nodes, find_hub, parse_interfaces
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

EXIT_FAILED = 1
EXIT_USAGE = 2
CLAIM_WAIT_S = 15.0  # how long a claim waits for the hub to see a node that just came up
CSV_COLUMNS = ("hardware_id", "claim_code", "name", "site", "tags")

console = Console()
errors = Console(stderr=True)


# -- discovery -------------------------------------------------------------------------


def node_table(nodes: dict[str, DiscoveredNode]) -> Table:
    table = Table(title=f"hark nodes on the LAN ({len(nodes)})")
    for column in ("hardware id", "state", "node id", "address", "version", "audio"):
        table.add_column(column)
    for node in sorted(nodes.values(), key=lambda n: n.hardware_id):
        table.add_row(node.hardware_id, node.state, node.node_id or "-", node.local_url, node.version, node.audio)
    return table


async def seen_nodes(interfaces: Interfaces, timeout_s: float) -> dict[str, DiscoveredNode]:
    browser = await browse_nodes(interfaces)
    try:
        await asyncio.sleep(timeout_s)
        return browser.nodes()
    finally:
        await browser.close()


async def discover(args: argparse.Namespace) -> int:
    if args.once:
        nodes = await seen_nodes(args.interfaces, args.timeout)
        console.print(node_table(nodes), width=200)
        return 0
    browser = await browse_nodes(args.interfaces)
    try:
        with Live(node_table({}), console=console, refresh_per_second=2) as live:
            while True:
                await asyncio.sleep(0.5)
                live.update(node_table(browser.nodes()))
    except asyncio.CancelledError:
        return 0
    finally:
        await browser.close()


# -- the hub ---------------------------------------------------------------------------


async def connect_hub(args: argparse.Namespace) -> HubApi:
    """The hub from --hub, HARK_HUB_URL or mDNS, authenticated by an API key or a login."""
    url = args.hub or os.environ.get("HARK_HUB_URL")
    if not url:
        found = await find_hub(args.interfaces, 5.0)
        if found is None:
            raise ProvisionError("no hub found by mDNS: pass --hub URL or set HARK_HUB_URL")
        url = found.api_url
        errors.print(f"hub found by mDNS: {url}")
    trust_ca(args.ca or os.environ.get("HARK_HUB_CA"))
    api = HubApi(url, args.token or os.environ.get("HARK_HUB_TOKEN"))
    if not api.token:
        username = args.username or input("hub username: ")
        await api.login(username, getpass.getpass(f"password for {username}: "))
    return api


async def claim_one(api: HubApi, hardware_id: str, code: str, name: str, site: str | None, tags: list[str]) -> dict[str, Any]:
    """Enroll a node the hub sees on the LAN; waits a little for a node that just came up."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CLAIM_WAIT_S
    while True:
        try:
            return await api.enroll_discovered(hardware_id, code, name, site, tags)
        except RequestFailed as err:
            if err.status != 404 or loop.time() > deadline:
                raise
        await asyncio.sleep(0.5)


def split_tags(raw: str | None) -> list[str]:
    return [t.strip() for t in (raw or "").replace(";", ",").split(",") if t.strip()]


async def claim(args: argparse.Namespace) -> int:
    api = await connect_hub(args)
    node = await claim_one(api, args.hardware_id, args.code, args.name, args.site, split_tags(args.tags))
    console.print(f"enrolled {args.hardware_id} as {node['id']} ({node['name']})")
    return 0


# -- bulk ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BulkRow:
    """One node of a bulk file."""

    line: int
    hardware_id: str
    claim_code: str
    name: str
    site: str | None
    tags: list[str]


def read_bulk_file(path: Path) -> list[BulkRow]:
    """The rows of a CSV with columns hardware_id,claim_code,name,site,tags; CsvError names a bad line."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in CSV_COLUMNS[:3] if c not in (reader.fieldnames or [])]
            if missing:
                raise CsvError(f"{path}: missing columns {', '.join(missing)} (expected {','.join(CSV_COLUMNS)})")
            rows = []
            for record in reader:
                hardware_id, code, name = (str(record.get(c) or "").strip() for c in CSV_COLUMNS[:3])
                if not (hardware_id and code and name):
                    raise CsvError(f"{path}:{reader.line_num}: hardware_id, claim_code and name are required")
                site = str(record.get("site") or "").strip() or None
                rows.append(BulkRow(reader.line_num, hardware_id, code, name, site, split_tags(record.get("tags"))))
            return rows
    except OSError as err:
        raise CsvError(f"{path}: cannot read: {err}") from err


async def bulk_one(api: HubApi, row: BulkRow) -> tuple[str, str]:
    """(`enrolled` | `done` | `failed`, detail) for one row; a node claimed already under the same name is done."""
    try:
        node = await claim_one(api, row.hardware_id, row.claim_code, row.name, row.site, row.tags)
        return "enrolled", node["id"]
    except RequestFailed as err:
        if err.status in (404, 409):
            existing = await api.node_by_hardware_id(row.hardware_id)
            if existing is not None and existing["name"] == row.name:
                return "done", f"{existing['id']} (claimed already)"
            if existing is not None:
                return "failed", f"enrolled already as {existing['id']} named {existing['name']!r}"
        return "failed", str(err)


async def bulk(args: argparse.Namespace) -> int:
    rows = read_bulk_file(Path(args.file))
    api = await connect_hub(args)
    results: list[tuple[BulkRow, str, str]] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("enrolling", total=len(rows))
        for row in rows:
            progress.update(task, description=f"enrolling {row.name}")
            outcome, detail = await bulk_one(api, row)
            results.append((row, outcome, detail))
            progress.advance(task)
    table = Table(title="bulk enrollment")
    for column in ("line", "hardware id", "name", "result", "detail"):
        table.add_column(column)
    for row, outcome, detail in results:
        table.add_row(str(row.line), row.hardware_id, row.name, outcome, detail)
    console.print(table, width=200)
    failed = sum(1 for _, outcome, _ in results if outcome == "failed")
    console.print(f"{len(results) - failed} succeeded, {failed} failed")
    return EXIT_FAILED if failed else 0


# -- reset -----------------------------------------------------------------------------


async def reset(args: argparse.Namespace) -> int:
    nodes = await seen_nodes(args.interfaces, args.timeout)
    found = next((n for n in nodes.values() if args.node in (n.hardware_id, n.node_id)), None)
    if found is None:
        raise NodeNotFound(f"no node {args.node} seen on the LAN within {args.timeout:g}s")
    if not args.code and not args.credential:
        raise ProvisionError("reset needs --code (the node's claim code) or --credential")
    await reset_node(found.local_url, args.code, args.credential)
    console.print(f"reset {found.hardware_id}: unprovisioned, claimable with its claim code again")
    return 0


# -- entry point -----------------------------------------------------------------------


def _interfaces(raw: str) -> Interfaces:
    parsed = parse_interfaces(raw)
    if parsed is False or parsed is True:
        raise argparse.ArgumentTypeError("mDNS cannot be off for hark-provision")
    return parsed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hark-provision", description="Find, enroll and reset hark nodes on the LAN.")
    parser.add_argument("--version", action="version", version=f"hark-provision {__version__}")
    parser.add_argument("--hub", help="hub URL (default: HARK_HUB_URL, else found by mDNS)")
    parser.add_argument(
        "--ca", help="the hub's CA certificate for HTTPS (default: HARK_HUB_CA; a copy of <hub data dir>/ca/ca.pem)"
    )
    parser.add_argument("--token", help="API key (default: HARK_HUB_TOKEN; without one, asks for a username and password)")
    parser.add_argument("--username", help="log in as this user (the password is asked for)")
    parser.add_argument(
        "--mdns-interfaces",
        dest="interfaces",
        type=_interfaces,
        default=_interfaces(os.environ.get("HARK_MDNS_INTERFACES", "all")),
        help="IPv4 addresses to speak mDNS on, comma-separated, or 'all' (default: HARK_MDNS_INTERFACES or all)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("discover", help="a live table of the nodes on the LAN")
    p.add_argument("--once", action="store_true", help="print one table after --timeout seconds and exit")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds to listen with --once (default 3)")
    p.set_defaults(run=discover)
    p = commands.add_parser("claim", help="enroll one node with its claim code")
    p.add_argument("hardware_id")
    p.add_argument("--code", required=True, help="the claim code on the node's label (e.g. 7KQ2-M9XD)")
    p.add_argument("--name", required=True)
    p.add_argument("--site")
    p.add_argument("--tags", help="comma-separated")
    p.set_defaults(run=claim)
    p = commands.add_parser("bulk", help="enroll every node of a CSV (hardware_id,claim_code,name,site,tags); safe to re-run")
    p.add_argument("file")
    p.set_defaults(run=bulk)
    p = commands.add_parser("reset", help="factory-reset a node (by hardware id or node id)")
    p.add_argument("node")
    p.add_argument("--code", help="the node's claim code")
    p.add_argument("--credential", help="the node's credential")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds to look for the node by mDNS (default 3)")
    p.set_defaults(run=reset)
    add_ca_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command: Callable[[argparse.Namespace], Coroutine[Any, Any, int]] = args.run
    try:
        return asyncio.run(command(args))
    except KeyboardInterrupt:
        return 0
    except (ProvisionError, TlsError) as err:
        errors.print(f"hark-provision: {err}")
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
