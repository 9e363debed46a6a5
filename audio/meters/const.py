"""Names and defaults of the meters (no logic)."""

from __future__ import annotations

# Levels
CLIP_THRESHOLD = 0.999  # |sample| at or over this counts as clipped: about -0.009 dBFS, the top 33 codes of 16-bit audio
SILENCE_THRESHOLD_DBFS = -60.0  # a channel is quiet while no sample reaches this level
SILENCE_HOLD_S = 2.0  # ...and silent once it stayed quiet this long
FLOOR_DB = -150.0  # levels at or below this (digital silence, filter tails) are reported as None, never -inf

# Loudness, ITU-R BS.1770-4 and EBU Tech 3341/3342
LUFS_OFFSET = -0.691  # loudness of a K-weighted mean square: -0.691 + 10 log10(sum of weighted channel powers)
SEGMENT_S = 0.1  # gating blocks and short-term windows advance in steps of 100 ms of the stream
MOMENTARY_SEGMENTS = 4  # 400 ms
SHORT_TERM_SEGMENTS = 30  # 3 s
LRA_STEP_SEGMENTS = 10  # LRA takes a 3 s short-term value every 1 s (2 s overlap, as libebur128)
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0  # integrated loudness
LRA_RELATIVE_GATE_LU = -20.0
LRA_LOW_PERCENTILE = 0.10
LRA_HIGH_PERCENTILE = 0.95
HISTOGRAM_BIN_LU = 0.01  # block energies are binned this finely (with exact sums per bin) for bounded memory
HISTOGRAM_TOP_LUFS = 30.0  # louder blocks share the top bin (their energies still add exactly)

# Channel weights, BS.1770-4: 1.41 for surrounds at 60-120 degrees azimuth, LFE excluded, 1.0 for the rest
SURROUND_WEIGHT = 1.41
SURROUND_NAMES = frozenset({"ls", "rs", "sl", "sr", "lss", "rss", "left surround", "right surround"})
LFE_NAMES = frozenset({"lfe", "lfe1", "lfe2"})

# Sound pressure level
FAST_TIME_CONSTANT_S = 0.125  # IEC 61672 "fast" exponential time weighting
LA90_STEP_S = 0.001  # LA90 is the 10th percentile of the fast-weighted level sampled every 1 ms over the interval
REFERENCE_SPL_DB = 94.0  # a class 1 calibrator: 1 kHz at 94 dB SPL (1 Pa)
