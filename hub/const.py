"""Names and defaults shared across the hub."""

API_PREFIX = "/api/v1"
HUB_MQTT_USERNAME = "hark-hub"

DEFAULT_HTTP_HOST = "127.0.0.1"
DEFAULT_HTTP_PORT = 8080
DEFAULT_EMBEDDED_MQTT_BIND = "127.0.0.1:1883"
DEFAULT_DATA_DIR = "./var/hub"

JSON_BODY_LIMIT = 1024 * 1024  # bytes accepted in a JSON request body
SESSION_TTL_S = 12 * 3600  # idle lifetime of a login session
SHUTDOWN_GRACE_S = 10.0  # how long in-flight requests may take to finish on stop

ADMIN_PASSWORD_FILE = "admin-password.txt"
SQLITE_FILE = "hark.sqlite3"
