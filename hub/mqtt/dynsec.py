"""Node identities on an external Mosquitto, managed through its dynamic security plugin.

The hub logs in as the plugin's admin, publishes JSON command batches to
`$CONTROL/dynamic-security/v1` and reads the answers on `.../response`. Building
commands and reading answers are pure functions; `DynsecClient` only moves them
over MQTT. paho runs its network loop on a thread of its own; everything it
reports is handed to the asyncio loop with `call_soon_threadsafe`.

Mosquitto 2.0.11 behaviour this module relies on:
- `setClientPassword`, `modifyClient`, `deleteClient` and `disableClient` disconnect
  every session logged in with that username; `modifyRole` and `enableClient` do not.
- `modifyRole` with `acls` replaces the role's whole ACL list; `modifyClient` with
  `roles` replaces the client's whole role list.
- `addClientRole` for a role the client already has answers "Internal error".
- `correlationData` must be a string; it is echoed on each command's answer.
- A shared subscription is checked against the whole `$share/<group>/<filter>`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from hark_fleet.hub.const import HUB_MQTT_USERNAME
from hark_fleet.hub.errors import HubError
from hark_fleet.hub.mqtt.bridge import BrokerAddress
from hark_fleet.protocol.decoding import PayloadError, decode
from hark_fleet.protocol.topics import TOPIC_ROOT
from paho.mqtt.enums import CallbackAPIVersion

log = logging.getLogger(__name__)

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"
HUB_ROLE = "hark-hub"
HUB_SHARE_GROUP = "hark-hub"  # `$share/hark-hub/...`: several hubs splitting ingest (DESIGN "Scale")
NODE_ROLE_PREFIX = "hark-node-"
DEFAULT_TIMEOUT_S = 5.0
NODE_BATCH = 100  # nodes per command batch when the hub brings every node up to date at start
KEEPALIVE_S = 30
MAX_RESPONSE_BYTES = 16 * 1024 * 1024  # a listing of every client and role of a large fleet

# The plugin's answers that mean "already in the state we want" (Mosquitto 2.0.x wording).
CLIENT_EXISTS = "Client already exists"
ROLE_EXISTS = "Role already exists"
CLIENT_NOT_FOUND = "Client not found"
ROLE_NOT_FOUND = "Role not found"

DEFAULT_ACL_PRIORITY = -1  # what the plugin gives an ACL without one

# One topic level, usable as a username and inside a role name: no wildcards, no `/`, no `$`.
_NODE_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


class DynsecError(HubError):
    """The broker refused a dynamic security command, or could not be reached in time."""

    def __init__(self, message: str, *, command: str | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.command = command
        self.reason = reason


# -- commands (pure) -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Acl:
    """One ACL entry of a role: `acltype` as the plugin names it, a topic filter, allow or deny; higher priority first."""

    acltype: str
    topic: str
    allow: bool = True
    priority: int = DEFAULT_ACL_PRIORITY

    def as_json(self) -> dict[str, Any]:
        return {"acltype": self.acltype, "topic": self.topic, "allow": self.allow, "priority": self.priority}


@dataclass(frozen=True, slots=True, repr=False)
class Command:
    """One plugin command, and the errors that mean the wanted state is already there."""

    body: dict[str, Any]
    tolerate: frozenset[str] = field(default_factory=frozenset)

    @property
    def name(self) -> str:
        return str(self.body["command"])

    def __repr__(self) -> str:  # bodies may carry passwords: never show them
        return f"Command({self.name!r})"


@dataclass(frozen=True, slots=True)
class CommandResult:
    """The plugin's answer to one command: `error` is None on success."""

    command: str
    error: str | None = None
    data: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """A plugin client as `getClient` reports it."""

    username: str
    roles: tuple[str, ...]
    disabled: bool
    clientid: str | None = None  # the only client id it may connect with, when bound


def validate_node_id(node_id: str) -> str:
    """Return `node_id` when it is safe as a username and a single topic level; raise otherwise."""
    if not isinstance(node_id, str) or not _NODE_ID.fullmatch(node_id):
        raise DynsecError(f"invalid node id for the broker: {node_id!r}")
    if node_id == HUB_MQTT_USERNAME:
        raise DynsecError(f"node id {node_id!r} is reserved for the hub")
    return node_id


def node_role(node_id: str) -> str:
    return f"{NODE_ROLE_PREFIX}{node_id}"


def node_acls(node_id: str) -> tuple[Acl, ...]:
    """A node publishes under its own prefix but not into its `cmd/`, and subscribes to (and receives) only its own `cmd/`."""
    prefix = f"{TOPIC_ROOT}/{node_id}"
    return (
        Acl("publishClientSend", f"{prefix}/cmd/#", allow=False, priority=1),  # commands come from the hub only
        Acl("publishClientSend", f"{prefix}/#"),
        Acl("subscribePattern", f"{prefix}/cmd/#"),
        Acl("publishClientReceive", f"{prefix}/cmd/#"),
    )


def hub_acls(share_group: str = HUB_SHARE_GROUP) -> tuple[Acl, ...]:
    """The hub publishes, subscribes (also as a shared subscription of `share_group`) and receives anywhere under
    the node root."""
    every_node = f"{TOPIC_ROOT}/#"
    return (
        Acl("publishClientSend", every_node),
        Acl("subscribePattern", every_node),
        # Mosquitto 2.0.11 checks a shared subscription's ACL on the whole `$share/<group>/...` filter.
        Acl("subscribePattern", f"$share/{share_group}/{every_node}"),
        Acl("publishClientReceive", every_node),
    )


def default_acl_access_commands() -> list[Command]:
    """Deny publishing and subscribing that no role allows; receiving and unsubscribing stay open."""
    acls = [
        {"acltype": "publishClientSend", "allow": False},
        {"acltype": "subscribe", "allow": False},
        {"acltype": "publishClientReceive", "allow": True},
        {"acltype": "unsubscribe", "allow": True},
    ]
    return [Command({"command": "setDefaultACLAccess", "acls": acls})]


def role_commands(rolename: str, acls: Sequence[Acl]) -> list[Command]:
    """Create the role if missing, then set its ACL list to exactly `acls`."""
    listed = [acl.as_json() for acl in acls]
    return [
        Command({"command": "createRole", "rolename": rolename, "acls": listed}, frozenset({ROLE_EXISTS})),
        Command({"command": "modifyRole", "rolename": rolename, "acls": listed}),
    ]


def upsert_node_commands(node_id: str, password: str) -> list[Command]:
    """The node's role with exactly its ACLs, and its client with this password, only that role, enabled.

    The client is bound to the node id as client id: Mosquitto keys sessions by client id, and
    any other would let one node's login resume or take over another's session.
    """
    validate_node_id(node_id)
    role = node_role(node_id)
    client = {"username": node_id, "clientid": node_id, "password": password, "roles": [{"rolename": role}]}
    return [
        *role_commands(role, node_acls(node_id)),
        Command({"command": "createClient", **client}, frozenset({CLIENT_EXISTS})),
        # For a client that already existed: the client id, password and role list are set anyway (and it is kicked).
        Command({"command": "modifyClient", **client}),
        Command({"command": "enableClient", "username": node_id}),
    ]


def bind_client_id_commands(node_ids: Sequence[str]) -> list[Command]:
    """Bind each node's client to its node id as client id (its sessions are dropped)."""
    return [Command({"command": "modifyClient", "username": validate_node_id(n), "clientid": n}) for n in node_ids]


def set_password_commands(node_id: str, password: str, kick: bool) -> list[Command]:
    validate_node_id(node_id)
    commands = [Command({"command": "setClientPassword", "username": node_id, "password": password})]
    if kick:
        commands += kick_commands(node_id, missing_ok=False)
    return commands


def kick_commands(node_id: str, missing_ok: bool = True) -> list[Command]:
    """Disable then enable the client: the broker drops its sessions, and it may log in again."""
    validate_node_id(node_id)
    tolerate = frozenset({CLIENT_NOT_FOUND}) if missing_ok else frozenset()
    return [
        Command({"command": "disableClient", "username": node_id}, tolerate),
        Command({"command": "enableClient", "username": node_id}, tolerate),
    ]


def delete_node_commands(node_id: str) -> list[Command]:
    validate_node_id(node_id)
    return [
        Command({"command": "deleteClient", "username": node_id}, frozenset({CLIENT_NOT_FOUND})),
        Command({"command": "deleteRole", "rolename": node_role(node_id)}, frozenset({ROLE_NOT_FOUND})),
    ]


def get_client_command(username: str) -> Command:
    return Command({"command": "getClient", "username": username}, frozenset({CLIENT_NOT_FOUND}))


def get_role_command(rolename: str) -> Command:
    return Command({"command": "getRole", "rolename": rolename}, frozenset({ROLE_NOT_FOUND}))


def correlation(request_id: str, index: int) -> str:
    return f"{request_id}:{index}"


def encode_request(commands: Sequence[Command], request_id: str) -> bytes:
    """The JSON batch, each command tagged with `correlationData` `<request_id>:<index>`."""
    listed = [{**command.body, "correlationData": correlation(request_id, i)} for i, command in enumerate(commands)]
    return json.dumps({"commands": listed}, separators=(",", ":")).encode()


def decode_response(payload: bytes) -> dict[str, CommandResult]:
    """The answers in one response message, keyed by correlation; answers without one are skipped."""
    try:
        document = decode(payload, max_bytes=MAX_RESPONSE_BYTES)
    except PayloadError as err:
        raise DynsecError(f"the broker's dynamic security response is not usable JSON ({err.reason})") from err
    responses = document.get("responses") if isinstance(document, dict) else None
    if not isinstance(responses, list):
        raise DynsecError("the broker's dynamic security response has no `responses` list")
    results: dict[str, CommandResult] = {}
    for item in responses:
        if not isinstance(item, dict) or not isinstance(item.get("correlationData"), str):
            continue
        error = item.get("error")
        data = item.get("data")
        results[item["correlationData"]] = CommandResult(
            command=str(item.get("command", "")),
            error=str(error) if error is not None else None,
            data=data if isinstance(data, dict) else None,
        )
    return results


def check_results(commands: Sequence[Command], results: Sequence[CommandResult]) -> None:
    """Raise for the first answer whose error is not one its command tolerates."""
    for command, result in zip(commands, results, strict=True):
        if result.error is not None and result.error not in command.tolerate:
            raise DynsecError(f"{command.name} failed: {result.error}", command=command.name, reason=result.error)


def client_info(result: CommandResult) -> ClientInfo | None:
    """Read a `getClient` answer; None when the client does not exist."""
    if result.error == CLIENT_NOT_FOUND or result.data is None:
        return None
    client = result.data.get("client") or {}
    roles = tuple(str(r.get("rolename")) for r in client.get("roles") or [] if isinstance(r, dict))
    clientid = client.get("clientid")
    return ClientInfo(
        username=str(client.get("username", "")),
        roles=roles,
        disabled=bool(client.get("disabled", False)),
        clientid=str(clientid) if clientid else None,
    )


def role_acls(result: CommandResult) -> tuple[Acl, ...] | None:
    """Read a `getRole` answer; None when the role does not exist."""
    if result.error == ROLE_NOT_FOUND or result.data is None:
        return None
    acls = (result.data.get("role") or {}).get("acls") or []
    return tuple(
        Acl(str(a["acltype"]), str(a["topic"]), bool(a.get("allow", False)), int(a.get("priority", DEFAULT_ACL_PRIORITY)))
        for a in acls
        if isinstance(a, dict)
    )


# -- client (I/O) -------------------------------------------------------------------------


@dataclass(slots=True)
class _Pending:
    future: asyncio.Future[list[CommandResult]]
    results: list[CommandResult | None]


class DynsecClient:
    """An admin connection to Mosquitto's dynamic security plugin, used from the asyncio loop.

    `start()` connects and subscribes to the response topic; every operation then sends one
    command batch and waits up to `timeout` seconds for its answer. paho reconnects on its own
    after a broker restart; operations wait for that within their timeout.
    """

    def __init__(self, address: BrokerAddress, *, timeout: float = DEFAULT_TIMEOUT_S, client_id: str | None = None) -> None:
        if not address.username:
            raise DynsecError("the dynamic security admin needs a username")
        self.address = address
        self.timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: dict[str, _Pending] = {}
        self._ready = False  # connected and subscribed to the response topic
        self._refused: str | None = None
        self._changed = asyncio.Event()
        self._started = False
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"hark-dynsec-{secrets.token_hex(4)}",
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        client.username_pw_set(address.username, address.password)
        if address.tls:
            client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client

    # -- lifecycle ---------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._ready

    async def start(self) -> None:
        """Connect as the admin and subscribe to the answers; raise DynsecError if that fails in time."""
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        try:
            self._client.connect_async(self.address.host, self.address.port, keepalive=KEEPALIVE_S)
        except (OSError, ValueError) as err:
            raise DynsecError(f"cannot connect to {self.address.url()}: {err}") from err
        self._client.loop_start()
        self._started = True
        try:
            async with asyncio.timeout(self.timeout):
                await self._wait_ready()
        except (TimeoutError, DynsecError) as err:
            await self.close()
            if isinstance(err, DynsecError):
                raise
            raise DynsecError(f"no admin session on {self.address.url()} within {self.timeout}s") from err
        log.info("dynsec admin connected to %s", self.address.url())

    async def close(self) -> None:
        """Disconnect and stop paho's thread; requests still waiting fail."""
        if not self._started:
            return
        self._started = False
        self._client.disconnect()
        await asyncio.get_running_loop().run_in_executor(None, self._client.loop_stop)
        self._ready = False
        self._fail_pending("the dynamic security client was closed")

    async def __aenter__(self) -> DynsecClient:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- requests ----------------------------------------------------------------

    async def execute(self, commands: Sequence[Command]) -> list[CommandResult]:
        """Send one batch and return its answers in order; DynsecError on an untolerated error or timeout."""
        if not commands:
            return []
        if not self._started or self._loop is None:
            raise DynsecError("the dynamic security client is not started")
        request_id = secrets.token_hex(8)
        future: asyncio.Future[list[CommandResult]] = self._loop.create_future()
        try:
            async with asyncio.timeout(self.timeout):
                await self._wait_ready()
                self._pending[request_id] = _Pending(future, [None] * len(commands))
                info = self._client.publish(CONTROL_TOPIC, encode_request(commands, request_id), qos=1)
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    raise DynsecError(f"cannot send to {self.address.url()}: {mqtt.error_string(info.rc)}")
                results = await future
        except TimeoutError as err:
            names = ", ".join(c.name for c in commands)
            raise DynsecError(f"no answer from {self.address.url()} to [{names}] within {self.timeout}s") from err
        finally:
            self._pending.pop(request_id, None)
        check_results(commands, results)
        return results

    async def _wait_ready(self) -> None:
        while not self._ready:
            if self._refused is not None:
                raise DynsecError(f"{self.address.url()} refused the dynamic security admin: {self._refused}")
            self._changed.clear()
            await self._changed.wait()

    # -- operations for the hub ------------------------------------------------------

    async def set_default_acl_access(self) -> None:
        """Deny, broker-wide, every publish and subscribe that no role allows."""
        await self.execute(default_acl_access_commands())

    async def ensure_hub_role(
        self, hub_username: str = HUB_MQTT_USERNAME, hub_password: str | None = None, share_group: str = HUB_SHARE_GROUP
    ) -> None:
        """Role `hark-hub` with exactly the hub's ACLs (shared subscriptions in `share_group`), given to `hub_username`.

        A missing hub client is created with `hub_password` when one is given (an existing
        client's password is left alone, so the hub's own session is not kicked).
        """
        results = await self.execute([*role_commands(HUB_ROLE, hub_acls(share_group)), get_client_command(hub_username)])
        info = client_info(results[-1])
        if info is None:
            if hub_password is None:
                raise DynsecError(f"the hub's broker user {hub_username!r} does not exist", reason=CLIENT_NOT_FOUND)
            create = {
                "command": "createClient",
                "username": hub_username,
                "password": hub_password,
                "roles": [{"rolename": HUB_ROLE}],
            }
            await self.execute([Command(create)])
        elif HUB_ROLE not in info.roles:
            await self.execute([Command({"command": "addClientRole", "username": hub_username, "rolename": HUB_ROLE})])
        log.info("dynsec hub role ensured for %s", hub_username)

    async def upsert_node(self, node_id: str, password: str) -> None:
        """Create or update the node's client and role; an existing node's sessions are dropped."""
        await self.execute(upsert_node_commands(node_id, password))
        log.info("dynsec node %s upserted", node_id)

    async def set_node_password(self, node_id: str, password: str, kick: bool = False) -> None:
        """Change the node's password; with `kick`, drop its sessions explicitly too.

        Mosquitto 2.0.11 drops the sessions on any password change, so `kick=False`
        does not keep them there; `kick=True` guarantees it on any version.
        """
        await self.execute(set_password_commands(node_id, password, kick))
        log.info("dynsec node %s password changed (kick=%s)", node_id, kick)

    async def delete_node(self, node_id: str) -> None:
        """Remove the node's client and role; nothing to remove is fine."""
        await self.execute(delete_node_commands(node_id))
        log.info("dynsec node %s deleted", node_id)

    async def kick(self, node_id: str) -> None:
        """Disconnect every session of the node; it may log in again with its password."""
        await self.execute(kick_commands(node_id))
        log.info("dynsec node %s kicked", node_id)

    async def get_client(self, username: str) -> ClientInfo | None:
        (result,) = await self.execute([get_client_command(username)])
        return client_info(result)

    async def get_role_acls(self, rolename: str) -> tuple[Acl, ...] | None:
        (result,) = await self.execute([get_role_command(rolename)])
        return role_acls(result)

    async def ensure_node_roles(self, node_ids: Sequence[str]) -> None:
        """Give the roles of `node_ids` exactly today's ACLs (sessions stay), in batches."""
        for start in range(0, len(node_ids), NODE_BATCH):
            batch = node_ids[start : start + NODE_BATCH]
            await self.execute([c for n in batch for c in role_commands(node_role(validate_node_id(n)), node_acls(n))])

    async def bind_client_ids(self, node_ids: Sequence[str]) -> list[str]:
        """Bind the clients of `node_ids` made without a client id (by an earlier hub); return those bound now.

        Clients already bound are not touched, so their sessions stay; the others are dropped
        once and log in again with their node id as client id, as every node does.
        """
        (result,) = await self.execute([Command({"command": "listClients", "verbose": True, "count": -1, "offset": 0})])
        listed = [c for c in (result.data or {}).get("clients") or [] if isinstance(c, dict)]
        wanted = set(node_ids)
        unbound = sorted(str(c["username"]) for c in listed if c.get("username") in wanted and c.get("clientid") != c["username"])
        for start in range(0, len(unbound), NODE_BATCH):
            await self.execute(bind_client_id_commands(unbound[start : start + NODE_BATCH]))
        if unbound:
            log.info("dynsec: %d node clients bound to their node id as client id", len(unbound))
        return unbound

    async def list_clients(self) -> list[str]:
        (result,) = await self.execute([Command({"command": "listClients", "count": -1, "offset": 0})])
        clients = (result.data or {}).get("clients") or []
        return [str(c) if not isinstance(c, dict) else str(c.get("username")) for c in clients]

    # -- paho thread -------------------------------------------------------------------

    def _to_loop(self, callback: Any, *args: Any) -> None:
        if self._loop is None:
            return
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed: we are shutting down
            pass

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self._to_loop(self._set_state, False, str(reason))
            return
        client.subscribe(RESPONSE_TOPIC, qos=1)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        if any(r.is_failure for r in reasons):
            self._to_loop(self._set_state, False, f"may not subscribe to {RESPONSE_TOPIC}")
        else:
            self._to_loop(self._set_state, True, None)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self._to_loop(self._set_state, False, None)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._to_loop(self._on_response, bytes(message.payload))

    # -- event loop --------------------------------------------------------------------

    def _set_state(self, ready: bool, refused: str | None) -> None:
        was_ready = self._ready
        self._ready = ready
        if ready or refused is not None:
            self._refused = refused
        if was_ready and not ready:
            # An answer published while we are away is never delivered: fail now, callers may retry.
            self._fail_pending(f"lost the connection to {self.address.url()}")
        self._changed.set()

    def _fail_pending(self, message: str) -> None:
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(DynsecError(message))

    def _on_response(self, payload: bytes) -> None:
        try:
            answers = decode_response(payload)
        except DynsecError as err:
            log.warning("dynsec: %s", err)
            return
        for key, result in answers.items():
            request_id, _, index = key.rpartition(":")
            pending = self._pending.get(request_id)
            if pending is None or pending.future.done() or not index.isdigit() or int(index) >= len(pending.results):
                continue  # another admin's answer, or one we stopped waiting for
            pending.results[int(index)] = result
            if all(r is not None for r in pending.results):
                pending.future.set_result([r for r in pending.results if r is not None])
