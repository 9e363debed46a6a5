"""Sensor readers on fake /sys and /proc trees and a fake `vcgencmd` on PATH."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hark_fleet.hw.sensors import (
    decode_throttled,
    parse_throttled,
    read_all,
    read_cpu_temperature,
    read_disk,
    read_load,
    read_memory,
    read_power_flags,
    read_thermal_zones,
)

MEMINFO = """MemTotal:        3884096 kB
MemFree:          512000 kB
MemAvailable:    1942048 kB
Buffers:           64000 kB
Cached:           900000 kB
"""


def write_zone(root: Path, number: int, kind: str | None, millidegrees: str) -> None:
    zone = root / "sys/class/thermal" / f"thermal_zone{number}"
    zone.mkdir(parents=True)
    (zone / "temp").write_text(millidegrees + "\n")
    if kind is not None:
        (zone / "type").write_text(kind + "\n")


def fake_vcgencmd(bin_dir: Path, script: str, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir.mkdir(exist_ok=True)
    program = bin_dir / "vcgencmd"
    program.write_text("#!/bin/sh\n" + script + "\n")
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_the_cpu_zone_is_preferred_over_hotter_ones(tmp_path: Path) -> None:
    write_zone(tmp_path, 0, "acpitz", "27800")
    write_zone(tmp_path, 1, "iwlwifi_1", "49000")
    write_zone(tmp_path, 2, "x86_pkg_temp", "61500")
    write_zone(tmp_path, 10, None, "30000")  # a zone without a type keeps its directory name
    zones = read_thermal_zones(tmp_path)
    assert zones is not None
    assert [(z.name, z.temperature_c) for z in zones] == [
        ("acpitz", 27.8),
        ("iwlwifi_1", 49.0),
        ("x86_pkg_temp", 61.5),
        ("thermal_zone10", 30.0),
    ]
    assert read_cpu_temperature(tmp_path) == 61.5


def test_without_a_known_cpu_zone_the_hottest_counts_and_unreadable_zones_are_skipped(tmp_path: Path) -> None:
    write_zone(tmp_path, 0, "board", "41250")
    write_zone(tmp_path, 1, "gpu", "55000")
    write_zone(tmp_path, 2, "sleeping", "")  # reads fail while a sensor sleeps
    assert read_cpu_temperature(tmp_path) == 55.0


def test_no_thermal_zones_means_no_temperature(tmp_path: Path) -> None:
    assert read_thermal_zones(tmp_path) is None
    assert read_cpu_temperature(tmp_path) is None


def test_throttled_bits_decode_into_now_and_since_boot() -> None:
    flags = decode_throttled(0x50005)
    assert flags.problems == ("under_voltage", "throttled")
    assert flags.problems_since_boot == ("under_voltage", "throttled")
    assert decode_throttled(0x80000).problems == ()
    assert decode_throttled(0x80000).problems_since_boot == ("soft_temp_limit",)
    assert decode_throttled(0xA).problems == ("frequency_capped", "soft_temp_limit")
    assert parse_throttled("throttled=0x0\n") == decode_throttled(0)
    assert parse_throttled('error=1 error_msg="Command not registered"') is None
    assert parse_throttled("throttled=zz") is None


def test_power_flags_come_from_vcgencmd_on_a_pi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_vcgencmd(tmp_path / "bin", '[ "$1" = get_throttled ] && echo "throttled=0x50005"', monkeypatch)
    flags = read_power_flags()
    assert flags is not None and flags.under_voltage and flags.under_voltage_since_boot and not flags.frequency_capped


def test_a_failing_or_missing_vcgencmd_gives_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_vcgencmd(tmp_path / "bin", 'echo "VCHI initialization failed" >&2; exit 255', monkeypatch)
    assert read_power_flags() is None
    assert read_power_flags("hark-no-such-vcgencmd") is None


def test_memory_and_load_come_from_proc(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/meminfo").write_text(MEMINFO)
    (tmp_path / "proc/loadavg").write_text("0.52 0.58 0.59 2/345 12345\n")
    memory = read_memory(tmp_path)
    assert memory is not None
    assert (memory.total_bytes, memory.available_bytes, memory.used_pct) == (3884096 * 1024, 1942048 * 1024, 50.0)
    load = read_load(tmp_path)
    assert load is not None and (load.load_1m, load.load_5m, load.load_15m) == (0.52, 0.58, 0.59)
    assert load.cpus == os.cpu_count()


def test_old_kernels_without_memavailable_still_give_memory(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/meminfo").write_text("\n".join(line for line in MEMINFO.splitlines() if "Available" not in line))
    memory = read_memory(tmp_path)
    assert memory is not None and memory.available_bytes == (512000 + 64000 + 900000) * 1024


def test_missing_proc_files_give_none(tmp_path: Path) -> None:
    assert read_memory(tmp_path) is None
    assert read_load(tmp_path) is None
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/loadavg").write_text("garbage\n")
    assert read_load(tmp_path) is None


def test_disk_usage_is_that_of_the_path_and_none_for_a_missing_one(tmp_path: Path) -> None:
    disk = read_disk(tmp_path)
    stats = os.statvfs(tmp_path)
    assert disk is not None and disk.total_bytes == stats.f_blocks * stats.f_frsize
    assert 0.0 <= disk.used_pct <= 100.0 and disk.free_bytes <= disk.total_bytes
    assert read_disk(tmp_path / "missing") is None


def test_read_all_gathers_every_reading_with_none_for_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_zone(tmp_path, 0, "cpu-thermal", "48312")
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/loadavg").write_text("1.00 0.50 0.25 1/100 1\n")
    readings = read_all(tmp_path, root=tmp_path, vcgencmd="hark-no-such-vcgencmd")
    assert readings.cpu_temperature_c == 48.3
    assert readings.power is None and readings.memory is None
    assert readings.load is not None and readings.disk is not None
