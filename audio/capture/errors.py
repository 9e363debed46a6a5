"""Errors of audio capture: one base error, small subclasses; library errors are wrapped `from err`."""

from __future__ import annotations


class CaptureError(Exception):
    """Base of every audio capture error."""


class BackendUnavailable(CaptureError):
    """A capture library or the native library under it is missing; the message says what to install."""


class NoInputDevice(CaptureError):
    """No usable input device matches the source."""


class DeviceOpenError(CaptureError):
    """The input device exists but its stream could not be opened or started."""


class SourceFileError(CaptureError):
    """The file of a `file:` source cannot be read or does not fit the capture format."""
