"""The topics of one node, built from the shared helpers in `hub.mqtt.topics`."""

from __future__ import annotations

from dataclasses import dataclass

from hark_fleet.node import const
from hark_fleet.protocol.listen import listen_topic
from hark_fleet.protocol.topics import command_topic, node_prefix, parse_node_topic


@dataclass(frozen=True, slots=True)
class NodeTopics:
    """`hark/v1/nodes/{node_id}/...` for this node."""

    node_id: str

    def _topic(self, kind: str) -> str:
        return node_prefix(self.node_id) + kind

    @property
    def status(self) -> str:
        return self._topic(const.TOPIC_STATUS)

    @property
    def heartbeat(self) -> str:
        return self._topic(const.TOPIC_HEARTBEAT)

    @property
    def health(self) -> str:
        return self._topic(const.TOPIC_HEALTH)

    @property
    def meters(self) -> str:
        return self._topic(const.TOPIC_METERS)

    @property
    def applied(self) -> str:
        return self._topic("applied")  # ConfigApplied: a channel map or watchdog policy applied (or refused)

    @property
    def remediation(self) -> str:
        return self._topic("watchdog/remediation")  # RemediationReport: one step of a watchdog's remediation ladder

    def calibration(self, calibration_id: str) -> str:
        return self._topic(f"watchdog/calibration/{calibration_id}")  # CalibrationResult

    def listen(self, stream_id: str) -> str:
        return listen_topic(self.node_id, stream_id)  # live listen chunks (QoS 0)

    def listen_error(self, stream_id: str) -> str:
        return listen_topic(self.node_id, stream_id) + "/error"  # ListenError (QoS 1): the stream cannot run

    def lifecycle(self, job_id: str) -> str:
        return self._topic(f"{const.TOPIC_LIFECYCLE}/{job_id}")

    @property
    def commands_filter(self) -> str:
        return command_topic(self.node_id, "#")

    def command_kind(self, topic: str) -> str | None:
        """`ack` for `hark/v1/nodes/{this node}/cmd/ack`; None for any other topic."""
        parsed = parse_node_topic(topic)
        if parsed is None or parsed.node_id != self.node_id or parsed.kind != const.TOPIC_COMMANDS or not parsed.rest:
            return None
        return parsed.rest
