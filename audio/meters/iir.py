"""Streaming IIR filtering of every channel in runs of samples through matrix products, exact up to rounding.

scipy's lfilter and sosfilt walk every sample of every channel in turn, each step waiting for the one before:
about 5 ns a sample whatever the filter's order, most of the meters' cost. The same filter in state-space form
(state s, N numbers) over a run of R samples is linear in the run's input and the state before it:

    y[run] = x[run] @ T + s @ O        s_next = s @ F.T + x[run] @ P        (F = A^R)

so every run of every channel goes through one matrix product (BLAS), and the recursion walks runs, not
samples: by Cayley-Hamilton each state component obeys chi(z) s = adj(zI - F) u with chi F's characteristic
polynomial, one lfilter over N rows of len/R values per channel, plus F^n s0 for the state the block starts in.
A last partial run gets the leading parts of the same matrices, so any block size works and a stream cut
into blocks filters exactly as if it came in one piece. The products may run in float32 (twice as fast, within 1e-5
of full scale); the recursion always runs in float64.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

RUN = 32  # samples per run: longer runs mean fewer steps of the recursion but larger products


def cascade_state_space(sos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(A, B, C, D) of a cascade of second-order sections, each in transposed direct form II."""
    a_matrix, b_vector, c_vector, d_value = np.zeros((0, 0)), np.zeros(0), np.zeros(0), 1.0
    for b0, b1, b2, a0, a1, a2 in np.asarray(sos, dtype=np.float64):
        b0, b1, b2, a1, a2 = b0 / a0, b1 / a0, b2 / a0, a1 / a0, a2 / a0
        sa = np.array([[-a1, 1.0], [-a2, 0.0]])
        sb = np.array([b1 - a1 * b0, b2 - a2 * b0])
        sc = np.array([1.0, 0.0])
        n = len(a_matrix)  # the section takes the cascade so far as its input
        grown = np.zeros((n + 2, n + 2))
        grown[:n, :n] = a_matrix
        grown[n:, :n] = np.outer(sb, c_vector)
        grown[n:, n:] = sa
        a_matrix, b_vector = grown, np.concatenate([b_vector, sb * d_value])
        c_vector, d_value = np.concatenate([b0 * c_vector, sc]), b0 * d_value
    return a_matrix, b_vector, c_vector, d_value


class BlockIir:
    """A filter given as second-order sections run over (channels, frames) float64 blocks, its state kept across blocks."""

    def __init__(self, sos: np.ndarray, channels: int, dtype: type[np.floating] = np.float64) -> None:
        a, b, c, d = cascade_state_space(sos)
        order = len(a)
        powers = [np.eye(order)]
        for _ in range(RUN):
            powers.append(a @ powers[-1])
        response = [d] + [float(c @ powers[m - 1] @ b) for m in range(1, RUN)]  # impulse response h[0..RUN-1]
        lag = np.arange(RUN)[None, :] - np.arange(RUN)[:, None]
        self._through = np.where(lag >= 0, np.asarray(response)[np.maximum(lag, 0)], 0.0)  # T[j, k] = h[k - j]
        self._from_state = np.stack([c @ powers[k] for k in range(RUN)], axis=1)  # O[:, k] = C A^k
        self._to_state = np.stack([powers[RUN - 1 - j] @ b for j in range(RUN)], axis=0)  # P[j] = A^(RUN-1-j) B
        self._partial_decay = [p.T.copy() for p in powers]  # (A^r).T: the state after a partial run of r samples
        self._decay = powers[RUN]  # F
        poles = np.concatenate([np.roots(section[3:]) for section in np.asarray(sos, dtype=np.float64)])
        poles = np.concatenate([poles, np.zeros(order - len(poles))])  # a first-order section's second state
        self._chi = np.real(np.poly(poles**RUN))  # F's characteristic polynomial, from the filter's poles
        adjugate = [np.eye(order)]  # Faddeev-LeVerrier: adj(zI - F) = sum_m M_m z^(N-1-m)
        for m in range(1, order):
            adjugate.append(self._decay @ adjugate[-1] + self._chi[m] * np.eye(order))
        self._mix = [adjugate[order - 1 - slot].T.copy() for slot in range(order)]  # slot k of u_(n-N) .. u_(n-1)
        # float32 makes the large products (a run's samples in and out) twice as fast; the recursion stays float64
        self._dtype = np.dtype(dtype)
        self._through, self._from_state, self._to_state = (
            m.astype(self._dtype) for m in (self._through, self._from_state, self._to_state)
        )
        self._order = order
        self._channels = channels
        self._state = np.zeros((channels, order))
        self._out = np.zeros((channels, 0), dtype=self._dtype)
        self._decay_powers = np.zeros((order, 0))  # [(F^0).T | (F^1).T | ...], as many as the last block had runs

    def process(self, block: np.ndarray) -> np.ndarray:
        """The filtered (channels, frames) block, of the filter's dtype, in a buffer the next call reuses (no fresh pages)."""
        channels, frames = block.shape
        full, rest = divmod(frames, RUN)
        if self._out.shape != block.shape:
            self._out = np.empty((channels, frames), dtype=self._dtype)
        out = self._out
        last = self._state
        if full:
            runs = block[:, : full * RUN].reshape(channels, full, RUN)
            last = self._runs(runs, out[:, : full * RUN].reshape(channels, full, RUN))
        if rest:
            tail = block[:, full * RUN :]
            out[:, full * RUN :] = tail @ self._through[:rest, :rest] + last @ self._from_state[:, :rest]
            last = last @ self._partial_decay[rest] + (tail @ self._to_state[RUN - rest :]).astype(np.float64)
        self._state = last
        return out

    def reset(self) -> None:
        """Forget the signal so far."""
        self._state[:] = 0.0

    def _runs(self, runs: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Filter (channels, full, RUN) whole runs into `out`; the state after the last one.

        Products go channel by channel (numpy's batched matmul), each small enough that OpenBLAS keeps it on this thread.
        """
        channels, full, _ = runs.shape
        order = self._order
        inputs = np.zeros((channels, full + order, order))  # u_n = x[run n] @ P, after `order` zeros
        inputs[:, order:] = runs @ self._to_state
        mixed = inputs[:, : full + 1] @ self._mix[0]  # w_n = sum over slots of u_(n-N+slot) @ M_(N-1-slot).T
        for slot in range(1, order):
            mixed += inputs[:, slot : slot + full + 1] @ self._mix[slot]
        from_rest = lfilter([1.0], self._chi, mixed.transpose(0, 2, 1), axis=2)  # each run's state from a zero start
        states = from_rest.transpose(0, 2, 1) + (self._state @ self._powers(full + 1)).reshape(channels, full + 1, order)
        np.matmul(runs, self._through, out=out)
        out += states[:, :full].astype(self._dtype) @ self._from_state
        return np.ascontiguousarray(states[:, full])

    def _powers(self, count: int) -> np.ndarray:
        if self._decay_powers.shape[1] != count * self._order:
            power, blocks = np.eye(self._order), []
            for _ in range(count):
                blocks.append(power.T)
                power = self._decay @ power
            self._decay_powers = np.concatenate(blocks, axis=1)
        return self._decay_powers
