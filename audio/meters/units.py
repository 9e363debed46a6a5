"""Decibel conversions that report silence as None instead of -inf."""

from __future__ import annotations

import math

import numpy as np
from hark_fleet.audio.meters.const import FLOOR_DB, LUFS_OFFSET


def power_db(power: float, offset: float = 0.0) -> float | None:
    """10 log10(power) + offset, rounded to 2 decimals; None when the level is at or under the floor."""
    if not power > 0.0:
        return None
    level = 10.0 * math.log10(power)
    if level <= FLOOR_DB:
        return None
    return round(level + offset, 2)


def amplitude_db(amplitude: float) -> float | None:
    """20 log10(amplitude), rounded to 2 decimals; None at or under the floor."""
    return power_db(amplitude * amplitude)


def energy_lufs(energy: float) -> float | None:
    """Loudness (LUFS) of a weighted sum of K-weighted channel mean squares; None at or under the floor."""
    return power_db(energy, LUFS_OFFSET)


def energies_lufs(energies: np.ndarray) -> list[float | None]:
    """energy_lufs over an array."""
    return [energy_lufs(e) for e in energies.tolist()]


def lufs_energy(lufs: float) -> float:
    """The weighted mean square that reads `lufs`."""
    return float(10.0 ** ((lufs - LUFS_OFFSET) / 10.0))
