"""Broadcast-grade streaming meters: levels, true peak, BS.1770-4 loudness, LRA and calibrated SPL, in numpy/scipy.

`MeterEngine.process(block)` takes a (frames, channels) float block in [-1, 1] and returns the API's meter
frame body for the interval the block covers. Choices the standards leave open, in one place:

- peak, RMS and DC are over the interval, without ballistics; RMS is plain (a full-scale sine reads -3.01 dBFS);
- `clip` counts samples with |x| >= 0.999 (about -0.009 dBFS; `clip_threshold` changes it);
- `silent` turns true once no sample reached the threshold (-60 dBFS) for the hold time (2 s), sample-exactly,
  and false on the first sample that reaches it;
- loudness follows libebur128's framing (100 ms steps from the stream's start, LRA from 3 s blocks 1 s apart),
  momentary and short-term read the window ending at the block's last sample; a reset restarts I and LRA;
- SPL: LAeq over the interval, LAmax of the fast (125 ms) level, LA90 from the fast level sampled every 1 ms;
- anything silent or absent is None, never -inf; dB values are rounded to 0.01, DC to 1e-6.
"""

from __future__ import annotations

from hark_fleet.audio.meters.engine import MeterEngine
from hark_fleet.audio.meters.errors import InvalidBlock, InvalidSetup, MeterError
from hark_fleet.audio.meters.loudness import LoudnessMeter, LoudnessReading, Programme, channel_weight
from hark_fleet.audio.meters.spl import calibration_offset
from hark_fleet.audio.meters.true_peak import TruePeakMeter

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
