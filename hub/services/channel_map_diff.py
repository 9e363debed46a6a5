"""What a change of channel-map template does to a node's channels: inputs mapped or no longer mapped, channels
renamed or re-set (calibration, role), programmes added, removed or regrouped."""

from __future__ import annotations

from typing import Any

from hark_fleet.hub.db.models import ChannelMapTemplate


def template_side(template: ChannelMapTemplate | None) -> dict[str, Any] | None:
    """A template as a diff shows it (None: no template)."""
    if template is None:
        return None
    return {
        "template_id": template.id,
        "name": template.name,
        "version": template.version,
        "channels": list(template.channels or []),
        "programmes": list(template.programmes or []),
    }


def template_diff(before: ChannelMapTemplate | None, after: ChannelMapTemplate | None) -> dict[str, Any]:
    """What a node's channels become: inputs mapped or no longer mapped, channels renamed or re-set, programmes changed."""
    old = {c["input"]: c for c in (before.channels if before is not None else [])}
    new = {c["input"]: c for c in (after.channels if after is not None else [])}
    renamed = [
        {"input": i, "before": old[i]["name"], "after": new[i]["name"]}
        for i in sorted(old.keys() & new.keys())
        if old[i]["name"] != new[i]["name"]
    ]
    settings = [
        {"input": i, "field": field, "before": old[i].get(field), "after": new[i].get(field)}
        for i in sorted(old.keys() & new.keys())
        for field in ("calibration_db", "role")
        if old[i].get(field) != new[i].get(field)
    ]
    old_programmes = {p["name"]: list(p["channels"]) for p in (before.programmes if before is not None else [])}
    new_programmes = {p["name"]: list(p["channels"]) for p in (after.programmes if after is not None else [])}
    programmes = {
        "added": sorted(new_programmes.keys() - old_programmes.keys()),
        "removed": sorted(old_programmes.keys() - new_programmes.keys()),
        "changed": [
            {"name": n, "before": old_programmes[n], "after": new_programmes[n]}
            for n in sorted(old_programmes.keys() & new_programmes.keys())
            if old_programmes[n] != new_programmes[n]
        ],
    }
    inputs = {"added": sorted(new.keys() - old.keys()), "removed": sorted(old.keys() - new.keys())}
    same_channels = not (inputs["added"] or inputs["removed"] or renamed or settings or any(programmes.values()))
    return {"inputs": inputs, "names": renamed, "settings": settings, "programmes": programmes, "same_channels": same_channels}
