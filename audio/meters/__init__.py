"""Broadcast-grade streaming meters: levels, true peak, BS.1770-4 loudness, LRA and calibrated SPL, in numpy/scipy."""

from __future__ import annotations

from audio.meters.engine import MeterEngine
from audio.meters.errors import InvalidBlock, InvalidSetup, MeterError
from audio.meters.loudness import LoudnessMeter, LoudnessReading, Programme, channel_weight
from audio.meters.spl import calibration_offset
from audio.meters.true_peak import TruePeakMeter

__all__ = [
    "InvalidBlock",
    "InvalidSetup",
    "LoudnessMeter",
    "LoudnessReading",
    "MeterEngine",
    "MeterError",
    "Programme",
    "TruePeakMeter",
    "calibration_offset",
    "channel_weight",
]
