"""`hark-provision ca init|issue|revoke|list`: the hub's CA, worked on in its data directory."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from hark_fleet.protocol.atomic_file import write_atomic
from hark_fleet.provision.ca import CLIENT, SERVER, CertificateAuthority
from hark_fleet.provision.revocation import revoke
from rich.console import Console
from rich.table import Table

DEFAULT_HUB_DATA_DIR = "./var/hub"  # the hub's own default: `ca` commands work on its CA in place

console = Console()


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir or os.environ.get("HARK_DATA_DIR") or DEFAULT_HUB_DATA_DIR)


async def ca_init(args: argparse.Namespace) -> int:
    ca = CertificateAuthority.open(_data_dir(args), create=True)
    console.print(f"CA in {ca.directory} (certificate {ca.cert_path}, CRL {ca.crl_path})")
    console.print(f"fingerprint sha256 {ca.fingerprint}")
    return 0


async def ca_issue(args: argparse.Namespace) -> int:
    ca = CertificateAuthority.open(_data_dir(args), create=False)
    hosts = tuple(h.strip() for h in (args.hosts or "").split(",") if h.strip())
    issued = ca.issue(args.subject, args.kind, hosts)
    out = Path(args.out or ".")
    out.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = out / f"{args.subject}.pem", out / f"{args.subject}.key"
    write_atomic(cert_path, issued.cert_pem)
    write_atomic(key_path, issued.key_pem, mode=0o600)
    console.print(f"issued {args.kind} certificate {issued.record.serial} for {args.subject}: {cert_path}, {key_path}")
    return 0


async def ca_revoke(args: argparse.Namespace) -> int:
    ca = CertificateAuthority.open(_data_dir(args), create=False)
    for record in revoke(ca, args.which):
        console.print(f"revoked {record.serial} ({record.subject})")
    console.print(f"CRL rewritten: {ca.crl_path} (a running hub reloads it on its next revocation or restart)")
    return 0


async def ca_list(args: argparse.Namespace) -> int:
    ca = CertificateAuthority.open(_data_dir(args), create=False)
    table = Table(title=f"certificates issued by {ca.directory}")
    for column in ("serial", "subject", "kind", "expires", "revoked"):
        table.add_column(column)
    for record in ca.issued():
        table.add_row(record.serial, record.subject, record.kind, record.not_after, record.revoked_at or "-")
    console.print(table, width=200)
    return 0


def add_ca_commands(commands: Any) -> None:
    """Add `ca` and its subcommands to the `hark-provision` parser."""
    p = commands.add_parser("ca", help="the hub's certificate authority (init, issue, revoke, list)")
    p.add_argument("--data-dir", help="the hub's data directory (default: HARK_DATA_DIR or the hub's default)")
    sub = p.add_subparsers(dest="ca_command", required=True)
    q = sub.add_parser("init", help="create the CA (the hub also does on first start)")
    q.set_defaults(run=ca_init)
    q = sub.add_parser("issue", help="issue a certificate and key into --out")
    q.add_argument("subject", help="a node id, or the hub's name")
    q.add_argument("--kind", choices=(CLIENT, SERVER), default=CLIENT)
    q.add_argument("--hosts", help="comma-separated DNS names and IP addresses (server certificates)")
    q.add_argument("--out", help="directory for SUBJECT.pem and SUBJECT.key (default: here)")
    q.set_defaults(run=ca_issue)
    q = sub.add_parser("revoke", help="revoke by serial number (hex) or subject, and rewrite the CRL")
    q.add_argument("which")
    q.set_defaults(run=ca_revoke)
    q = sub.add_parser("list", help="every certificate issued, with its revocation")
    q.set_defaults(run=ca_list)
