"""Channel maps on the node: which physical inputs become which named logical channels and programmes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def default_names(count: int) -> list[str]:
    if count == 1:
        return ["M"]
    if count == 2:
        return ["L", "R"]
    return [str(i + 1) for i in range(count)]


@dataclass(frozen=True, slots=True)
class ChannelMap:
    """`inputs[i]` is the physical input of logical channel i, named `names[i]`; programmes index logical channels."""

    name: str
    inputs: list[int]
    names: list[str]
    programmes: dict[str, list[int]] = field(default_factory=dict)
    calibration: dict[int, float] = field(default_factory=dict)  # logical channel -> dB SPL at 0 dBFS RMS

    def describe(self) -> str:
        text = f"channel map {self.name!r}: {len(self.inputs)} channels ({', '.join(self.names)})"
        if self.programmes:
            text += f", programmes {', '.join(self.programmes)}"
        return text

    @classmethod
    def from_template(cls, template: dict[str, Any], available: int) -> ChannelMap:
        """Build from a hub template `{name, channels: [{input, name, calibration_db}], programmes: [{name, channels}]}`."""
        channels = template.get("channels") or []
        if not channels:
            raise ValueError("the template has no channels")
        inputs: list[int] = []
        names: list[str] = []
        calibration: dict[int, float] = {}
        for index, channel in enumerate(channels):
            physical = int(channel["input"])
            if not 0 <= physical < available:
                raise ValueError(f"channel {channel.get('name')!r} uses input {physical}, but the source has {available} inputs")
            inputs.append(physical)
            names.append(str(channel.get("name") or index + 1))
            if channel.get("calibration_db") is not None:
                calibration[index] = float(channel["calibration_db"])
        position = {name: i for i, name in enumerate(names)}
        programmes: dict[str, list[int]] = {}
        for programme in template.get("programmes") or []:
            members = [position[n] for n in programme.get("channels", []) if n in position]
            if members:
                programmes[str(programme["name"])] = members
        return cls(str(template.get("name") or template.get("id") or "template"), inputs, names, programmes, calibration)


def default_map(inputs: int) -> ChannelMap:
    """Every input as its own channel, no programmes beyond the default one."""
    return ChannelMap("default", list(range(inputs)), default_names(inputs))
