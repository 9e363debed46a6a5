"""Commands from the hub (`hark/v1/nodes/{id}/cmd/{kind}`), decoded into their message structs."""

from __future__ import annotations

from hark_fleet.node import const
from hark_fleet.node.errors import NodeError
from hark_fleet.protocol.decoding import PayloadError, decode
from hark_fleet.protocol.messages import Ack, ConfigChanged, JobReady, LifecycleCommand, NewCredential
from hark_fleet.protocol.watchdog import CalibrateCommand

CMD_CALIBRATE = "calibrate"
Command = Ack | NewCredential | ConfigChanged | LifecycleCommand | JobReady | CalibrateCommand

COMMAND_TYPES: dict[str, type[Command]] = {
    const.CMD_ACK: Ack,
    const.CMD_CREDENTIALS: NewCredential,
    const.CMD_CONFIG: ConfigChanged,
    const.CMD_LIFECYCLE: LifecycleCommand,
    const.CMD_JOB: JobReady,
    CMD_CALIBRATE: CalibrateCommand,
}


class MalformedCommand(NodeError):
    """A command whose payload does not match its kind."""


def decode_command(kind: str, payload: bytes) -> Command | None:
    """The command of `kind` in `payload`; None for a kind this agent does not know."""
    schema = COMMAND_TYPES.get(kind)
    if schema is None:
        return None
    if schema in (ConfigChanged, JobReady) and not payload.strip():
        return schema()
    try:
        command = decode(payload, schema)
    except PayloadError as err:
        raise MalformedCommand(f"cmd/{kind}: {err.reason}: {err}") from err
    if isinstance(command, LifecycleCommand) and not 1 <= len(command.job_id) <= 40:
        raise MalformedCommand(f"cmd/{kind}: job_id must be 1-40 characters")
    if isinstance(command, LifecycleCommand) and not 0 < command.timeout_s <= 86_400:
        raise MalformedCommand(f"cmd/{kind}: timeout_s out of range")
    if isinstance(command, CalibrateCommand) and not _topic_level(command.calibration_id):
        raise MalformedCommand(f"cmd/{kind}: calibration_id must be 1-64 characters without '/', '+', '#'")
    if isinstance(command, NewCredential) and not command.credential.strip():
        raise MalformedCommand(f"cmd/{kind}: the credential is empty")
    return command


def _topic_level(value: str) -> bool:
    """Whether `value` can be one MQTT topic level (the calibration's result topic ends with it)."""
    return 0 < len(value) <= 64 and not set(value) & set("/+#\x00")
