"""MQTT: the embedded broker, its access policy, and the hub's bridge to any broker."""
