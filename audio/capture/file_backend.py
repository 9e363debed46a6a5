"""The file backend: a WAV or FLAC file through `soundfile`, played in a loop and paced in real time."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from hark_fleet.audio.capture.base import PacedCapture
from hark_fleet.audio.capture.errors import BackendUnavailable, SourceFileError


def load_soundfile() -> ModuleType:
    """The `soundfile` module, or BackendUnavailable saying what to install."""
    try:
        import soundfile
    except ImportError as err:
        raise BackendUnavailable("file sources need the soundfile package: pip install soundfile") from err
    except OSError as err:  # the wheel bundles libsndfile; a source build needs the system one
        raise BackendUnavailable(f"soundfile cannot load libsndfile ({err}): apt-get install libsndfile1") from err
    return soundfile


def file_format(path: str) -> tuple[int, int]:
    """(rate, channels) of a sound file; SourceFileError when it cannot be read."""
    soundfile = load_soundfile()
    try:
        info = soundfile.info(path)
    except (RuntimeError, OSError) as err:  # soundfile.LibsndfileError is a RuntimeError
        raise SourceFileError(f"cannot read {path}: {err}") from err
    return int(info.samplerate), int(info.channels)


class FileCapture(PacedCapture):
    """`file:<path>`: the file's frames over and over; its channels are mapped onto the ring's (first N, or repeated)."""

    kind = "file"

    _file: Any = None

    def prepare(self) -> None:
        soundfile = load_soundfile()
        path = Path(self.source.target)
        try:
            sound = soundfile.SoundFile(str(path))
        except (RuntimeError, OSError) as err:
            raise SourceFileError(f"cannot open {path}: {err}") from err
        if sound.frames == 0:
            sound.close()
            raise SourceFileError(f"{path} holds no audio")
        if sound.samplerate != self.ring.rate:
            sound.close()
            raise SourceFileError(
                f"{path} is {sound.samplerate} Hz and the capture runs at {self.ring.rate} Hz: add ?rate={sound.samplerate}"
            )
        self._file = sound
        self._chunk = np.zeros((self.block_frames, sound.channels), dtype=np.float32)
        self._map = [i % sound.channels for i in range(self.ring.channels)]

    def fill(self, block: np.ndarray) -> None:
        filled = 0
        while filled < len(block):
            got = self._file.read(len(block) - filled, dtype="float32", always_2d=True, out=self._chunk[: len(block) - filled])
            if len(got) == 0:
                self._file.seek(0)
                continue
            block[filled : filled + len(got)] = got[:, self._map]
            filled += len(got)

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def describe(self) -> str:
        return f"file {self.source.target}"
