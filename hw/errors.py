"""The hardware package's error types."""

from __future__ import annotations


class HwError(Exception):
    """Base of every error the hardware package raises on purpose."""


class HardwareConfigError(HwError, ValueError):
    """The hardware configuration is invalid; the message names the key."""


class DeviceError(HwError):
    """A serial device cannot be opened, read or written (drivers catch it and reconnect)."""


class ProtocolError(HwError):
    """A line from a device does not follow its protocol (drivers count it and go on)."""


class WatchdogError(HwError):
    """The hardware watchdog cannot be opened or pinged."""
