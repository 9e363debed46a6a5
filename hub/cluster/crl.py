"""The deployment-wide part of certificate revocation (issue 24): keeping the published CRL from expiring.

`ca/crl.pem` (in the shared data directory) is rewritten by every revocation, on whatever instance it happens,
and carries a `next_update` CRL_DAYS ahead (provision/revocation.py). Listeners check client certificates against
it with VERIFY_CRL_CHECK_LEAF, which refuses every client once the CRL has expired: a deployment with no revocation
for that long needs the CRL published again before then. That is this role (lease CRL): the instance holding it
looks every CHECK_S and, once the CRL is within REPUBLISH_BEFORE of its `next_update`, rewrites it from the index
(under the CA's lock). Loading the CRL into the TLS contexts (and Mosquitto) stays on every instance: each one
watches the file's modification time (`Hub._watch_crl`) and reloads what any instance wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from typing import TYPE_CHECKING

from cryptography import x509
from hark_fleet.hub.cluster.leases import CRL
from hark_fleet.provision.revocation import CRL_DAYS, write_crl

if TYPE_CHECKING:
    from hark_fleet.hub.server import Hub
    from hark_fleet.provision.ca import CertificateAuthority

log = logging.getLogger(__name__)

CHECK_S = 3600.0
REPUBLISH_BEFORE = dt.timedelta(days=CRL_DAYS / 3)


def republish_if_due(ca: CertificateAuthority, now: dt.datetime | None = None) -> bool:
    """Rewrite the CRL when it is missing, unreadable or within REPUBLISH_BEFORE of its next update; whether it did."""
    now = now or dt.datetime.now(dt.UTC)
    try:
        crl = x509.load_pem_x509_crl(ca.crl_path.read_bytes())
        next_update = crl.next_update_utc
    except (OSError, ValueError):
        next_update = None
    if next_update is not None and next_update - now > REPUBLISH_BEFORE:
        return False
    locked = getattr(ca, "locked", None)
    with locked() if locked is not None else contextlib.nullcontext():
        write_crl(ca)
    return True


class CrlPublisher:
    """`hub.crl_publisher`: the CRL role; started and stopped by the CRL lease."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._task: asyncio.Task[None] | None = None

    def register(self) -> None:
        self.hub.leases.role(CRL, self.start, self.stop)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="crl publisher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            ca = self.hub.ca
            if ca is not None:
                try:
                    if await asyncio.get_running_loop().run_in_executor(None, republish_if_due, ca):
                        log.info("certificate revocation list published again before it expires")  # reloaded by the watch
                except Exception:  # noqa: BLE001 - tried again at the next check
                    log.exception("could not publish the certificate revocation list again")
            await asyncio.sleep(CHECK_S)
