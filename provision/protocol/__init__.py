"""What the hub and the node both speak, installed as `hark_fleet.protocol`: the MQTT messages and
topics, payload decoding, backoff, configuration, error, logging, TLS and atomic-file helpers, and
the version. It imports nothing else of hark, so either side (and audio, hw) can depend on it alone.

It lives in `provision/protocol/` because the repository's top-level folders are fixed; the
wheel installs it beside the others as `hark_fleet.protocol`, never as part of provision.
"""
