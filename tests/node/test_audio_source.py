"""Audio source strings: KIND:TARGET?options."""

from __future__ import annotations

import pytest
from hark_fleet.node.audio_source import parse_audio_source


def test_synthetic_options_are_read() -> None:
    source = parse_audio_source("synthetic:noise?dbfs=-30&channels=1&rate=44100")
    assert (source.kind, source.target, source.dbfs, source.channels, source.rate) == ("synthetic", "noise", -30, 1, 44100)
    assert source.is_synthetic
    assert source.describe() == "synthetic noise -30 dBFS RMS"


def test_bare_synthetic_means_sine() -> None:
    source = parse_audio_source("synthetic:")
    assert source.target == "sine"
    assert source.describe() == "synthetic sine 1000 Hz -20 dBFS"


@pytest.mark.parametrize("text", ["sounddevice:USB Audio?channels=4", "pyaudio:2", "file:/srv/loop.wav"])
def test_capture_kinds_are_accepted(text: str) -> None:
    source = parse_audio_source(text)
    assert not source.is_synthetic


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("sine", "KIND:TARGET"),
        ("synthetic:square", "signal"),
        ("synthetic:sine?gain=2", "unknown option 'gain'"),
        ("synthetic:sine?freq=", "not a number"),
        ("synthetic:sine?channels=0", "outside"),
        ("sounddevice:", "needs a target"),
        ("pyaudio:1?freq=440", "unknown option"),
    ],
)
def test_bad_sources_say_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_audio_source(text)
