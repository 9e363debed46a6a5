"""Audio source strings: the parser lives in audio/source.py; re-exported so existing imports keep working."""

from hark_fleet.audio.source import AudioSource, parse_audio_source

__all__ = ["AudioSource", "parse_audio_source"]
