"""More than one hub process on one PostgreSQL and one broker (issue 24): instances, leases, cross-hub fan-out."""

from __future__ import annotations

import os
import secrets
import socket


def new_instance_id() -> str:
    """This process's id in the deployment: host, pid and a random tail (a restarted hub is a new instance)."""
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{secrets.token_hex(3)}"
