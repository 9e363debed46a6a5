"""PortAudio input devices: enumeration for the node's status report, and finding the one a source names."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hark_fleet.audio.capture.errors import BackendUnavailable, NoInputDevice

# Rates worth probing: those a source string may ask for (audio/source.py: 16 kHz to 96 kHz).
PROBE_RATES = (16_000, 22_050, 32_000, 44_100, 48_000, 88_200, 96_000)


@dataclass(frozen=True, slots=True)
class InputDevice:
    """One PortAudio device with inputs; `index` is PortAudio's, shared by sounddevice and pyaudio."""

    index: int
    name: str
    channels: int
    default_rate: int
    default: bool


def load_sounddevice() -> Any:
    """The `sounddevice` module, or BackendUnavailable saying what to install."""
    try:
        import sounddevice
    except ImportError as err:
        raise BackendUnavailable("sounddevice is not installed: pip install sounddevice") from err
    except OSError as err:  # raised at import when libportaudio2 is missing
        raise BackendUnavailable(f"sounddevice cannot load PortAudio ({err}): apt-get install libportaudio2") from err
    return sounddevice


def load_pyaudio() -> Any:
    """The `pyaudio` module, or BackendUnavailable saying what to install."""
    try:
        import pyaudio
    except ImportError as err:
        raise BackendUnavailable(
            f"pyaudio is not usable ({err}): apt-get install portaudio19-dev, then pip install 'hark[audio]'"
        ) from err
    return pyaudio


def rescan_devices() -> None:
    """Make PortAudio list devices again (a USB interface plugged back in); call with no stream open."""
    sd = load_sounddevice()
    sd._terminate()  # sounddevice's documented way to refresh its device list
    sd._initialize()


def sounddevice_inputs() -> list[InputDevice]:
    """Input devices as sounddevice sees them."""
    sd = load_sounddevice()
    try:
        default_index = sd.query_devices(kind="input")["index"]
    except sd.PortAudioError:  # no default input device
        default_index = -1
    devices = []
    for index, info in enumerate(sd.query_devices()):
        if info["max_input_channels"] > 0:
            rate = int(info["default_samplerate"])
            devices.append(InputDevice(index, info["name"], info["max_input_channels"], rate, index == default_index))
    return devices


def pyaudio_inputs(pa: Any) -> list[InputDevice]:
    """Input devices as an open `pyaudio.PyAudio` sees them."""
    try:
        default_index = pa.get_default_input_device_info()["index"]
    except OSError:
        default_index = -1
    devices = []
    for index in range(pa.get_device_count()):
        info = pa.get_device_info_by_index(index)
        if info["maxInputChannels"] > 0:
            devices.append(
                InputDevice(index, info["name"], info["maxInputChannels"], int(info["defaultSampleRate"]), index == default_index)
            )
    return devices


def find_input(devices: list[InputDevice], target: str, channels: int) -> InputDevice:
    """The device `target` names: `default`, a PortAudio index, an exact name or a unique part of one."""
    if not devices:
        raise NoInputDevice("no input device found")
    target = target.strip()
    if target in ("", "default"):
        chosen = next((d for d in devices if d.default), None)
        if chosen is None:
            raise NoInputDevice(f"no default input device (inputs: {_names(devices)})")
    elif target.isdigit():
        chosen = next((d for d in devices if d.index == int(target)), None)
        if chosen is None:
            raise NoInputDevice(f"no input device with index {target} (inputs: {_names(devices)})")
    else:
        exact = [d for d in devices if d.name == target]
        partial = exact or [d for d in devices if target.lower() in d.name.lower()]
        if not partial:
            raise NoInputDevice(f"no input device named {target!r} (inputs: {_names(devices)})")
        if len(partial) > 1:
            raise NoInputDevice(f"{target!r} names several input devices ({_names(partial)}): give the index")
        chosen = partial[0]
    if chosen.channels < channels:
        raise NoInputDevice(f"input device {chosen.name!r} has {chosen.channels} channels, the source asks for {channels}")
    return chosen


def list_input_devices(kind: str = "sounddevice") -> list[dict[str, object]]:
    """Input devices as `{id, name, channels, rates, default}` (the hub's AudioInterface); raises BackendUnavailable.

    Probing rates opens each device briefly, so call it before capture starts or while it runs on another device.
    """
    if kind == "pyaudio":
        pyaudio = load_pyaudio()
        pa = pyaudio.PyAudio()
        try:
            devices = pyaudio_inputs(pa)
            return [_describe(kind, d, devices, _pyaudio_probe(pa, pyaudio.paFloat32)) for d in devices]
        finally:
            pa.terminate()
    if kind != "sounddevice":
        raise ValueError(f"devices are listed for sounddevice or pyaudio, not {kind!r}")
    sd = load_sounddevice()
    devices = sounddevice_inputs()
    return [_describe(kind, d, devices, _sounddevice_probe(sd)) for d in devices]


def _describe(
    kind: str, device: InputDevice, devices: list[InputDevice], supports: Callable[[InputDevice, int], bool]
) -> dict[str, object]:
    unique = sum(d.name == device.name for d in devices) == 1
    rates = [rate for rate in PROBE_RATES if supports(device, rate)]
    return {
        "id": f"{kind}:{device.name if unique else device.index}",
        "name": device.name,
        "channels": device.channels,
        "rates": rates,
        "default": device.default,
    }


def _sounddevice_probe(sd: Any) -> Callable[[InputDevice, int], bool]:
    def supports(device: InputDevice, rate: int) -> bool:
        try:
            sd.check_input_settings(device=device.index, channels=min(device.channels, 2), samplerate=rate, dtype="float32")
        except (sd.PortAudioError, ValueError):
            return False
        return True

    return supports


def _pyaudio_probe(pa: Any, sample_format: int) -> Callable[[InputDevice, int], bool]:
    def supports(device: InputDevice, rate: int) -> bool:
        try:
            return bool(
                pa.is_format_supported(
                    rate, input_device=device.index, input_channels=min(device.channels, 2), input_format=sample_format
                )
            )
        except ValueError:
            return False

    return supports


def _names(devices: list[InputDevice]) -> str:
    return ", ".join(f"{d.index}: {d.name}" for d in devices) or "none"
