"""The sites a test module's nodes and grants name: a node's or grant's site must exist."""

from __future__ import annotations

from typing import Any

import pytest

from tests.harness import HubProcess


def sites_exist(*site_ids: str) -> Any:
    """A module-scoped autouse fixture making `site_ids` on the module's hub: `_sites_exist = sites_exist("north")`."""

    @pytest.fixture(scope="module", autouse=True)
    def _sites_exist(hub: HubProcess) -> None:
        for site in site_ids:
            hub.ensure_site(site)

    return _sites_exist
