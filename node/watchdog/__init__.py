"""The node's signal-chain watchdog: detectors on the meter stream, remediation ladders, calibration (issue 18).

`policy` (what runs: the hub's last policy or the built-in default), `detectors` (per-channel
state machines), `frame_watch` (every detector over a frame, device conditions, disk hours-left),
`events` (one event per node and kind), `remediation` and `remediation_log` (the ladder and its
limits, across restarts), `calibration` (a baseline from the frames), `disk` (the recording rate),
`runtime` (the `Watchdog` the agent runs).
"""
