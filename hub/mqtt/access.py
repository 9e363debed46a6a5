"""Who may log in to the embedded broker and which topics each may use."""

from __future__ import annotations

import hmac
from typing import Literal

from hub.const import HUB_MQTT_USERNAME

Action = Literal["subscribe", "publish", "receive"]


class BrokerAccess:
    """The embedded broker's policy: deny unless a rule grants.

    The hub logs in as `hark-hub` with a secret made at start and may use every topic.
    Anyone else is refused.
    """

    def __init__(self, hub_password: str) -> None:
        self._hub_password = hub_password

    def check_login(self, username: str | None, password: str | None) -> bool:
        if username == HUB_MQTT_USERNAME:
            return password is not None and hmac.compare_digest(password.encode(), self._hub_password.encode())
        return False

    def may(self, username: str | None, topic: str, action: Action) -> bool:
        return username == HUB_MQTT_USERNAME
