"""Commands from the hub (`hark/v1/nodes/{id}/cmd/{kind}`), decoded into their message structs."""

from __future__ import annotations

import msgspec

from hub.mqtt.messages import Ack, ConfigChanged, NewCredential
from node import const
from node.errors import NodeError

Command = Ack | NewCredential | ConfigChanged

COMMAND_TYPES: dict[str, type[Command]] = {
    const.CMD_ACK: Ack,
    const.CMD_CREDENTIALS: NewCredential,
    const.CMD_CONFIG: ConfigChanged,
}


class MalformedCommand(NodeError):
    """A command whose payload does not match its kind."""


def decode_command(kind: str, payload: bytes) -> Command | None:
    """The command of `kind` in `payload`; None for a kind this agent does not know."""
    schema = COMMAND_TYPES.get(kind)
    if schema is None:
        return None
    if schema is ConfigChanged and not payload.strip():
        return ConfigChanged()
    try:
        command = msgspec.json.decode(payload, type=schema)
    except msgspec.DecodeError as err:  # ValidationError is a DecodeError
        raise MalformedCommand(f"cmd/{kind}: {err}") from err
    if isinstance(command, NewCredential) and not command.credential.strip():
        raise MalformedCommand(f"cmd/{kind}: the credential is empty")
    return command
