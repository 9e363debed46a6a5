"""The recorder's error types."""

from __future__ import annotations

from hark_fleet.node.errors import NodeError


class RecorderError(NodeError):
    """Base of every error the recorder raises on purpose."""


class UnsupportedProfile(RecorderError):
    """The profile asks for something this recorder cannot write (format, depth, channels)."""


class DiskFull(RecorderError):
    """The cache disk ran out of space; everything up to the last whole frame is kept."""


class WriteFailed(RecorderError):
    """Writing the working file failed for another reason than a full disk."""


class CorruptRecording(RecorderError):
    """A working file or manifest in the cache cannot be understood."""


class TranscodeFailed(RecorderError):
    """The WAV could not be transcoded to FLAC; the WAV is kept as the recording's file."""


class CachePolicyError(RecorderError):
    """The node's cache policy is invalid; the message names the key."""
