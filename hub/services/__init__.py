"""Domain logic of each family; plain functions that know nothing of HTTP or MQTT."""
