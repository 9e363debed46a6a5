"""Commands from the hub (`hark/v1/nodes/{id}/cmd/{kind}`), decoded into their message structs."""

from __future__ import annotations

from hark_fleet.node import const
from hark_fleet.node.errors import NodeError
from hark_fleet.protocol.decoding import PayloadError, decode
from hark_fleet.protocol.listen import CODECS, MAX_CHANNELS, OPUS_BITRATES, OPUS_RATES, PCM_RATES, ListenCommand
from hark_fleet.protocol.messages import Ack, ConfigChanged, JobReady, LifecycleCommand, NewCredential
from hark_fleet.protocol.watchdog import CalibrateCommand

CMD_CALIBRATE = "calibrate"
CMD_LISTEN = "listen"  # live listen (issue 23): the whole set of streams the hub (instance) wants now
Command = Ack | NewCredential | ConfigChanged | LifecycleCommand | JobReady | CalibrateCommand | ListenCommand
MAX_LISTEN_STREAMS = 64  # more than the hub's per-node listener limit can ever ask for
MAX_LISTEN_LEASE_S = 3600.0
MAX_LOGICAL_CHANNEL = 255
MAX_LISTEN_HUB = 100  # a hub instance's id (issue 24: each instance's set is kept apart)

COMMAND_TYPES: dict[str, type[Command]] = {
    const.CMD_ACK: Ack,
    const.CMD_CREDENTIALS: NewCredential,
    const.CMD_CONFIG: ConfigChanged,
    const.CMD_LIFECYCLE: LifecycleCommand,
    const.CMD_JOB: JobReady,
    CMD_CALIBRATE: CalibrateCommand,
    CMD_LISTEN: ListenCommand,
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
    if isinstance(command, ListenCommand):
        problem = _listen_problem(command)
        if problem is not None:
            raise MalformedCommand(f"cmd/{kind}: {problem}")
    return command


def _listen_problem(command: ListenCommand) -> str | None:
    """What makes a `cmd/listen` unusable as a whole (None: nothing); channels the map lacks are the stream's own error."""
    if command.version < 0:
        return "version must not be negative"
    if not 0 < command.lease_s <= MAX_LISTEN_LEASE_S:
        return f"lease_s must be in 0..{MAX_LISTEN_LEASE_S:g} seconds"
    if len(command.hub) > MAX_LISTEN_HUB:
        return f"hub must be at most {MAX_LISTEN_HUB} characters"
    if command.transport not in ("mqtt", "http"):
        return f"transport must be mqtt or http, not {command.transport!r}"
    if len(command.streams) > MAX_LISTEN_STREAMS:
        return f"more than {MAX_LISTEN_STREAMS} streams"
    if len({s.stream_id for s in command.streams}) != len(command.streams):
        return "a stream_id is listed twice"
    for stream in command.streams:
        where = f"stream {stream.stream_id!r}"
        if not _topic_level(stream.stream_id):
            return "stream_id must be 1-64 characters without '/', '+', '#'"
        if not 1 <= len(stream.channels) <= MAX_CHANNELS:
            return f"{where}: 1 to {MAX_CHANNELS} channels"
        if any(not 0 <= c <= MAX_LOGICAL_CHANNEL for c in stream.channels):
            return f"{where}: a channel index out of 0..{MAX_LOGICAL_CHANNEL}"
        if stream.codec not in CODECS:
            return f"{where}: codec must be one of {', '.join(CODECS)}, not {stream.codec!r}"
        rates = OPUS_RATES if stream.codec == "opus" else PCM_RATES
        if stream.sample_rate not in rates:
            return f"{where}: {stream.codec} runs at {', '.join(map(str, rates))} Hz, not {stream.sample_rate}"
        if stream.codec == "opus" and stream.bitrate is not None and not OPUS_BITRATES[0] <= stream.bitrate <= OPUS_BITRATES[1]:
            return f"{where}: bitrate must be in {OPUS_BITRATES[0]}..{OPUS_BITRATES[1]}"
    return None


def _topic_level(value: str) -> bool:
    """Whether `value` can be one MQTT topic level (the calibration's result topic ends with it)."""
    return 0 < len(value) <= 64 and not set(value) & set("/+#\x00")
