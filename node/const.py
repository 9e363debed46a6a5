"""Names and defaults of the node agent."""

from __future__ import annotations

DEFAULT_DATA_DIR = "./var/node"
CONFIG_FILE = "hark.toml"
STATE_FILE = "state.json"
OUTBOX_FILE = "outbox.sqlite3"

DEFAULT_AUDIO_SOURCE = "synthetic:sine?freq=1000&dbfs=-20&channels=2"
DEFAULT_LOCAL_PORT = 8081
DEFAULT_LOCAL_HOST = "0.0.0.0"  # the installer's laptop reaches the local endpoint over the LAN
HUB_SEARCH_TIMEOUT_S = 5.0  # one mDNS search for the hub; repeated with backoff until found
DEFAULT_HEARTBEAT_INTERVAL_S = 10.0
DEFAULT_METER_INTERVAL_MS = 100
DEFAULT_OUTBOX_CAPACITY = 10_000

# MQTT
KEEPALIVE_S = 30
RECONNECT_BASE_S = 1.0
RECONNECT_CAP_S = 30.0
STABLE_CONNECTION_S = 10.0  # a connection that lasted this long restarts the reconnect backoff
PROMPT_RECONNECT_S = 1.0  # a deliberate reconnect (new credential, new broker) happens within this
OFFLINE_PUBLISH_TIMEOUT_S = 3.0  # how long a clean stop waits for the broker to take the offline status

# HTTP to the hub
HTTP_CONNECT_TIMEOUT_S = 5.0
HTTP_REQUEST_TIMEOUT_S = 10.0
CONFIG_RETRY_BASE_S = 1.0
CONFIG_RETRY_CAP_S = 60.0

# Outbox
OUTBOX_MAX_IN_FLIGHT = 100  # published rows the hub has not acknowledged yet
OUTBOX_RESEND_AFTER_S = 15.0
OUTBOX_SEND_POLL_S = 0.5  # the sender also wakes on every enqueue, ack and reconnect
OUTBOX_HIGH_FRACTION = 0.8  # above: report outbox.high (open)
OUTBOX_LOW_FRACTION = 0.5  # below, after a report: report outbox.high (resolved)

# Topic kinds under hark/v1/nodes/{id}/
TOPIC_STATUS = "status"
TOPIC_HEARTBEAT = "heartbeat"
TOPIC_HEALTH = "health"
TOPIC_METERS = "meters"
TOPIC_LIFECYCLE = "lifecycle"  # lifecycle/{job_id}
TOPIC_COMMANDS = "cmd"

CMD_ACK = "ack"
CMD_CREDENTIALS = "credentials"
CMD_CONFIG = "config"
CMD_LIFECYCLE = "lifecycle"
CMD_JOB = "job"
