"""hark's version: one for the hub, the node and the installer's tool (they speak one protocol)."""

__version__ = "0.1.0"
