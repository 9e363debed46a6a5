"""The console's fleet page with 200 live nodes: how fast it loads and what it costs the browser while live.

What is measured
----------------
A hub whose ``--nodes`` enrolled nodes (default 200) are live: 2 real ``hark-node`` processes
with synthetic audio and the rest simulated by ``bench/fleet.py``'s generator (a meter frame per
node at 10 Hz, a heartbeat every 10 s), except a few made offline (one heartbeat, then silence),
degraded (an open critical health event) or pending (never seen), as ``tests/console/fleet_scale.py``
sets them up. So the page's meter stream carries about 1,940 frames/s. In headless Chromium
(Debian's), signed in as admin, at 1440 x 900, for each variant of the console in each round:

* load: from the navigation to ``/#/fleet`` (``performance.now()`` in the page, so from the
  navigation's start) until the view holds an element with ``data-node-id`` for every node (a
  MutationObserver installed before the console's scripts); "painted" is the animation frame
  after that. The console's files are answered by Playwright's routing for both variants (which
  also turns the HTTP cache off), so both pay the same interception cost; the rest is the
  page's own module loading, its API calls and its rendering. "files" and "nodes API" say when,
  in the load, the last console file and the node list's last page had arrived (resource timing);
* in-app visit: the same from a hash change ``#/me`` -> ``#/fleet`` once the modules are loaded:
  the fleet view's own cost;
* live cost: after ``--settle`` seconds, over ``--window`` seconds, the deltas of CDP
  ``Performance.getMetrics`` (durations in thread ticks, i.e. the main thread's CPU time):
  ScriptDuration ("script"), TaskDuration ("tasks": everything the main thread ran), LayoutDuration
  plus RecalcStyleDuration ("layout+style") and ThreadTime ("main thread"), each as % of one core
  of the window's wall time; the meter frames the page received per second (its EventSource is
  wrapped to count them) and the ``event: reset`` the hub sent when the page fell behind;
* CPU over the same window (utime + stime from ``/proc``, % of one core): the browser (every
  Chromium process under this one), the hub, the broker, the generator, the real nodes; the
  machine's busy % (all CPUs, ``/proc/stat``) and its load average.

Variants, run in alternating rounds (each round runs every variant, starting with a different one):

* ``reference``: the console as it was before issue 17's console work, its files taken from
  ``git show REF:hub/console/...`` (``--reference``, default ``ff96381^``);
* ``subject``: the console files of the working tree;
* ``hub-served`` with ``--hub-served``: the subject's files served by the hub itself, no
  routing: the load without the interception's cost (the browser's cache is still empty);
* ``max_rate=N`` for each N of ``--max-rate N[,N...]``: the subject, its meter stream
  request given ``max_rate=N`` (the hub sends each node's frames at most N times a second), to
  see what that gives before the page asks for it itself.

It prints every round, then per variant the median and the spread (min-max), against the
targets of issue 17: the page loads in under 1 s and stays under 10 % of one core of script
time while live (the subject's medians).

How
---
``tests/console/fleet_scale.py`` (``ScaleFleet``, ``measure_fleet_page``) sets up the fleet and
measures a page; the browser is ``tests/browser.py``'s. Every page is a new browser context
with the admin's session cookie (one login at the start).

The hub's content security policy is not sent with routed files, and every context bypasses it
(the probe's waits evaluate strings). Painting and rasterising run off the main thread in
Chromium: they are in the browser's CPU, not in the main-thread figures; headless Chromium
rasterises in software.

Run it from the repository root::

    .venv/bin/python bench/console_fleet.py [--nodes 200] [--rounds 5] [--window 20] [--settle 3]
                                            [--reference ff96381^] [--hub-served] [--max-rate N[,N...]]
    .venv/bin/python bench/console_fleet.py --quick    # smoke run: 1 round, 5 s windows

It exits 0 when the subject meets both targets, 2 when it misses one, 1 on an error, 130 on
Ctrl-C. The hub, the broker, the nodes, the generator and the browser are stopped at the end,
also on Ctrl-C, SIGTERM or an error, and the temporary directory is removed.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

import fleet  # noqa: E402  (puts the repository root on sys.path too)
import hub_http  # noqa: E402
from report import TextTable, number, print_report  # noqa: E402
from rounds import machine_busy_s, process_cpu_s  # noqa: E402

from tests.browser import CHROMIUM, headless_chromium  # noqa: E402
from tests.console.fleet_scale import (  # noqa: E402
    DEGRADED,
    OFFLINE,
    PENDING,
    VIEWPORT,
    PageFigures,
    ScaleFleet,
    console_files_at,
    measure_fleet_page,
    signed_in_state,
)

TITLE = "hark console fleet page with live nodes (headless Chromium)"
TARGET_LOAD_MS = 1000.0
TARGET_SCRIPT_PCT = 10.0
QUICK_ROUNDS = 1
QUICK_WINDOW_S = 5.0


@dataclass
class Variant:
    name: str
    read: Callable[[str], bytes | None] | None  # None: the hub serves the console's files
    meter_params: str = ""


@dataclass
class Round:
    """One page of one variant, with the CPU of everyone over its window."""

    number: int
    variant: str
    page: PageFigures
    cpu: dict[str, float] = field(default_factory=dict)  # role -> % of one core
    machine_pct: float | None = None
    load_avg: float | None = None


def _descendants(root: int) -> list[int]:
    """Every process under `root` (from /proc's parent links)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                ppid = int(stat.read().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _browser_pids() -> list[int]:
    pids = []
    for pid in _descendants(os.getpid()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                if b"chromium" in cmdline.read().split(b"\0", 1)[0]:
                    pids.append(pid)
        except OSError:
            continue
    return pids


class CpuWindow:
    """CPU seconds of the fleet's processes and the browser between "start" and "end"."""

    def __init__(self, scale: ScaleFleet) -> None:
        self.scale = scale
        self.marks: dict[str, tuple[float, dict[str, float], tuple[float, float] | None]] = {}

    def __call__(self, edge: str) -> None:
        pids = {**self.scale.pids(), "browser": _browser_pids()}
        seconds = {role: sum(process_cpu_s(pid) or 0.0 for pid in group) for role, group in pids.items()}
        self.marks[edge] = (time.monotonic(), seconds, machine_busy_s())

    def result(self) -> tuple[dict[str, float], float | None]:
        (t0, cpu0, m0), (t1, cpu1, m1) = self.marks["start"], self.marks["end"]
        wall = t1 - t0
        cpu = {role: 100 * (cpu1.get(role, 0.0) - cpu0.get(role, 0.0)) / wall for role in cpu1}
        machine = 100 * (m1[0] - m0[0]) / (m1[1] - m0[1]) if m0 and m1 and m1[1] > m0[1] else None
        return cpu, machine


# -- report ----------------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return number(value, "{:.1f}")


def _ms(value: float | None) -> str:
    return number(value, "{:,.0f}")


def _spread(values: list[float | None], text: Callable[[float | None], str]) -> str:
    got = [v for v in values if v is not None]
    if not got:
        return "n/a"
    missing = len(values) - len(got)
    line = f"{text(statistics.median(got))} ({text(min(got))}–{text(max(got))})"
    return line + (f", {missing} n/a" if missing else "")


ROLES = ("browser", "hub", "broker", "generator", "real nodes")


def _tables(rounds: list[Round], variants: list[str]) -> list[TextTable]:
    pages, cpu = [], []
    for r in rounds:
        p = r.page
        layout = p.costs_pct.get("LayoutDuration", 0.0) + p.costs_pct.get("RecalcStyleDuration", 0.0)
        pages.append(
            [
                str(r.number),
                r.variant,
                _ms(p.load_ms),
                _ms(p.parts_ms.get("files")),
                _ms(p.parts_ms.get("nodes")),
                _ms(p.painted_ms),
                _ms(p.visit_ms),
                f"{p.shown}",
                _pct(p.script_pct),
                _pct(p.costs_pct.get("TaskDuration")),
                _pct(layout),
                _pct(p.costs_pct.get("ThreadTime")),
                f"{p.frames_per_s:,.0f}",
                str(p.resets),
            ]
        )
        cpu.append(
            [
                str(r.number),
                r.variant,
                *(_pct(r.cpu.get(role)) for role in ROLES),
                _pct(r.machine_pct),
                number(r.load_avg, "{:.2f}"),
            ]
        )
    summary = []
    for name in variants:
        mine = [r for r in rounds if r.variant == name]
        summary.append(
            [
                name,
                _spread([r.page.load_ms for r in mine], _ms),
                _spread([r.page.visit_ms for r in mine], _ms),
                _spread([r.page.script_pct for r in mine], _pct),
                _spread([r.page.costs_pct.get("ThreadTime") for r in mine], _pct),
                _spread([r.page.frames_per_s for r in mine], lambda v: number(v, "{:,.0f}")),
                str(sum(r.page.resets for r in mine)),
                _spread([r.cpu.get("browser") for r in mine], _pct),
                _spread([r.cpu.get("hub") for r in mine], _pct),
            ]
        )
    return [
        (
            "every page (ms from the navigation's start; in the load, when the console's files and the node list were in; "
            "live window: the page's main thread, % of one core)",
            [
                "round",
                "variant",
                "load ms",
                "files ms",
                "nodes API ms",
                "painted ms",
                "in-app ms",
                "shown",
                "script %",
                "tasks %",
                "layout+style %",
                "main thread %",
                "frames/s",
                "resets",
            ],
            pages,
            2,
        ),
        (
            "CPU in each live window (% of one core; machine busy: % of all cores)",
            ["round", "variant", *(f"{role} %" for role in ROLES), "machine busy %", "load avg"],
            cpu,
            2,
        ),
        (
            f"per variant over {max(r.number for r in rounds)} round(s): median (min–max)",
            ["variant", "load ms", "in-app ms", "script %", "main thread %", "frames/s", "resets", "browser CPU %", "hub CPU %"],
            summary,
            1,
        ),
    ]


def _targets(rounds: list[Round]) -> tuple[list[str], bool]:
    mine = [r for r in rounds if r.variant == "subject"]
    loads = [r.page.load_ms for r in mine]
    scripts = [r.page.script_pct for r in mine]
    if not mine or any(v is None for v in loads):
        return ["TARGET load < 1 s: FAIL (the subject did not show every node in time)"], False
    load = statistics.median(v for v in loads if v is not None)
    script = statistics.median(scripts)
    load_ok, script_ok = load < TARGET_LOAD_MS, script < TARGET_SCRIPT_PCT
    return [
        f"TARGET subject load < {TARGET_LOAD_MS:,.0f} ms: median {load:,.0f} ms: {'PASS' if load_ok else 'FAIL'}",
        f"TARGET subject script < {TARGET_SCRIPT_PCT:.0f} % of one core while live: median {script:.1f} %: "
        + ("PASS" if script_ok else "FAIL"),
    ], load_ok and script_ok


def _notes(rounds: list[Round], scale: ScaleFleet) -> list[str]:
    notes = []
    if any(r.page.resets for r in rounds):
        notes.append(
            "resets: the hub dropped a page's meter stream (its queue of 256 frames, about 0.13 s at these rates, "
            "filled while the page or the hub was busy); the page reconnects after 0.5 s"
        )
    short = [r for r in rounds if r.page.shown < scale.nodes]
    for r in short:
        notes.append(f"round {r.number} {r.variant}: the view showed {r.page.shown} of {scale.nodes} nodes in time")
    busy = [r.machine_pct for r in rounds if r.machine_pct is not None]
    if busy and max(busy) > 90:
        notes.append(
            "WARNING: the machine was busier than 90 % in some windows; CPU-bound figures (tasks, load) "
            "are inflated there, run again on a quieter machine"
        )
    return notes


def _context(args: argparse.Namespace, scale: ScaleFleet, statuses: dict[str, int]) -> list[tuple[str, str]]:
    cpu_count = os.cpu_count() or 1
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    chromium = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    dirty = subprocess.run(["git", "status", "--porcelain", "hub/console"], capture_output=True, text=True, check=False)
    return [
        ("machine", f"{platform.machine()} {platform.system()} {platform.release()}"),
        ("CPUs", f"{cpu_count}; load average at the end {number(load and load[0], '{:.2f}')}"),
        ("browser", f"{chromium or CHROMIUM}, headless, {VIEWPORT['width']}x{VIEWPORT['height']}"),
        ("hub", "python -m hark_fleet.hub run, SQLite, HARK_MQTT_URL to an anonymous Mosquitto, log level WARNING"),
        (
            "fleet",
            f"{scale.nodes} nodes: {scale.real} real hark-node (synthetic audio), {len(scale.live_ids)} simulated at "
            f"{fleet.METER_HZ:g} meter frames/s + a heartbeat every {fleet.HEARTBEAT_INTERVAL_S:g} s, {OFFLINE} offline, "
            f"{DEGRADED} of them degraded, {PENDING} pending; statuses {statuses}",
        ),
        (
            "variants",
            f"reference = console at {args.reference}; subject = working tree at {commit.stdout.strip()}"
            + (" (hub/console modified)" if dirty.stdout.strip() else "")
            + ("; hub-served = the subject served by the hub, no routing" if args.hub_served else "")
            + "".join(f"; max_rate={rate} = the subject, its meter stream with max_rate={rate}" for rate in args.max_rate),
        ),
        ("parameters", f"{args.rounds} round(s), settle {args.settle:g} s, window {args.window:g} s"),
    ]


# -- main ------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, hub_http._raise_keyboard_interrupt)  # a SIGTERM cleans up like Ctrl-C
    temp_dir = Path(tempfile.mkdtemp(prefix="hark-console-fleet-"))
    scale = ScaleFleet(temp_dir, args.nodes)
    variants = [Variant("reference", console_files_at(args.reference)), Variant("subject", console_files_at(None))]
    if args.hub_served:
        variants.append(Variant("hub-served", None))
    for rate in args.max_rate:
        variants.append(Variant(f"max_rate={rate}", console_files_at(None), f"max_rate={rate}"))
    rounds: list[Round] = []
    try:
        if console_files_at(args.reference)("index.html") is None:
            raise RuntimeError(f"no hub/console/index.html at {args.reference}")
        scale.start(lambda line: print(line, flush=True))
        assert scale.hub is not None
        with headless_chromium() as browser:
            state = signed_in_state(browser, scale.hub.url)
            for number in range(1, args.rounds + 1):
                shift = (number - 1) % len(variants)
                for variant in variants[shift:] + variants[:shift]:
                    scale.check_alive()
                    window = CpuWindow(scale)
                    page = measure_fleet_page(
                        browser,
                        scale.hub.url,
                        state,
                        scale.nodes,
                        variant.read,
                        settle_s=args.settle,
                        window_s=args.window,
                        on_window=window,
                        meter_params=variant.meter_params,
                    )
                    cpu, machine = window.result()
                    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
                    rounds.append(Round(number, variant.name, page, cpu, machine, load))
                    print(
                        f"round {number} {variant.name}: load {_ms(page.load_ms)} ms (in-app {_ms(page.visit_ms)} ms), "
                        f"script {page.script_pct:.1f} %, main thread {_pct(page.costs_pct.get('ThreadTime'))} %, "
                        f"{page.frames_per_s:,.0f} frames/s, resets {page.resets}, browser CPU {_pct(cpu.get('browser'))} %, "
                        f"hub CPU {_pct(cpu.get('hub'))} %, machine {_pct(machine)} %",
                        flush=True,
                    )
        statuses = scale.statuses()
        scale.check_alive()
        targets, met = _targets(rounds)
        print_report(
            _context(args, scale, statuses),
            _tables(rounds, [v.name for v in variants]),
            [*targets, *_notes(rounds, scale)],
            TITLE,
        )
        return 0 if met else 2
    except KeyboardInterrupt:
        print("\ninterrupted; stopping everything", file=sys.stderr)
        return 130
    except (RuntimeError, AssertionError, OSError, httpx.HTTPError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        # Cleanup is bounded; do not let a second Ctrl-C cut it short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        scale.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _rates(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError("expected a comma-separated list of whole numbers") from err
    if not values or any(not 1 <= v <= 10 for v in values):
        raise argparse.ArgumentTypeError("each max_rate must be from 1 to 10")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark the console's fleet page with live nodes in headless Chromium.")
    parser.add_argument("--nodes", type=int, default=200, help="enrolled nodes (default 200)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds; each runs every variant (default 5; --quick 1)")
    parser.add_argument("--window", type=float, default=None, help="seconds of live measurement per page (default 20; --quick 5)")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds live before the window (default 3)")
    parser.add_argument("--reference", default="ff96381^", help="git revision of the reference console (default ff96381^)")
    parser.add_argument(
        "--max-rate",
        type=_rates,
        default=[],
        metavar="N[,N...]",
        help="also run the subject with max_rate=N on its meter stream, for each N (1-10)",
    )
    parser.add_argument(
        "--hub-served",
        action="store_true",
        help="also run the subject served by the hub itself (no routing: its load without the interception's cost)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round, 5 s windows")
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = QUICK_ROUNDS if args.quick else 5
    if args.window is None:
        args.window = QUICK_WINDOW_S if args.quick else 20.0
    if args.nodes < 12 or args.rounds < 1 or args.window <= 0 or args.settle < 0:
        parser.error("--nodes must be at least 12, --rounds at least 1, --window positive, --settle not negative")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
