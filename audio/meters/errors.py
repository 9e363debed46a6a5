"""Errors of the meters."""

from __future__ import annotations


class MeterError(Exception):
    """Base error of audio.meters."""


class InvalidBlock(MeterError):
    """A block the engine cannot meter (wrong shape, type or non-finite samples); the meters' state is unchanged."""


class InvalidSetup(MeterError):
    """A meter configuration that cannot work (unknown channel, bad rate, empty programme)."""
