"""hark hub: node telemetry over MQTT, state in SQL, the REST API and the console."""

__version__ = "0.1.0"
