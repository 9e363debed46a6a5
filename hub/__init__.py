"""hark hub: node telemetry over MQTT, state in SQL, the REST API and the console."""
