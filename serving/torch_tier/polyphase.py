"""BigVGAN's anti-aliased SnakeBeta in its polyphase form, in float64 numpy: the derivation the
Triton kernel follows, and an oracle that shares no code with the PyTorch modules.

The module computes, for one channel x[0..T-1] (12-tap filters f (up) and g (down)):
  up    u = crop15(conv_transpose(pad_replicate(x, 5, 5), 2 f, stride 2))      length 2T
  act   v = u + inv_beta * sin(alpha * u)^2
  down  y[n] = sum_k g[k] v[clamp(2n + k - 5, 0, 2T - 1)]                       length T
The transposed convolution puts input i at output 2i + k, so after the crop
  u[2q]     = 2 sum_{r=0..5} f[2r + 1] x[clamp(q + 2 - r)]   (even phase E)
  u[2q + 1] = 2 sum_{r=0..5} f[2r]     x[clamp(q + 3 - r)]   (odd phase O)
with clamp to [0, T-1]: the up-sampler's replicate padding (5 frames) covers every index these
reach (q + 3 <= T + 2, q - 3 >= -3), so clamping the index is the padding exactly. Splitting the
down-sampler's taps by parity (k = 2s + 1 lands on even, k = 2s on odd positions):
  y[n] = sum_{s=0..5} g[2s + 1] E'[n + s - 2] + g[2s] O'[n + s - 3]
where E', O' are the phases of v with the down-sampler's replicate padding: inside [0, T-1] they
are E and O; below 0 both are v[0] = E[0]; above T-1 both are v[2T-1] = O[T-1]. So at the left
edge the odd phase reads the even one, at the right edge the even phase reads the odd one: the
phase mixing. Output n reads x[n-6 .. n+6] (clamped): a reach of 6 input frames each side.
"""
from __future__ import annotations

import numpy as np

TAPS = 12
REACH = 6  # input frames on each side of an output frame


def phases(x: np.ndarray, up_filter: np.ndarray, alpha: np.ndarray, inv_beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SnakeBeta of the even and odd up-sampled phases, (..., C, T) each."""
    frames = x.shape[-1]
    q = np.arange(frames)
    even = sum(2 * up_filter[2 * r + 1] * x[..., np.clip(q + 2 - r, 0, frames - 1)] for r in range(6))
    odd = sum(2 * up_filter[2 * r] * x[..., np.clip(q + 3 - r, 0, frames - 1)] for r in range(6))
    alpha, inv_beta = alpha[:, None], inv_beta[:, None]
    return (even + inv_beta * np.sin(alpha * even) ** 2, odd + inv_beta * np.sin(alpha * odd) ** 2)


def padded_phase(even: np.ndarray, odd: np.ndarray, q: np.ndarray, phase: int) -> np.ndarray:
    """E'[q] (phase 0) or O'[q] (phase 1) for any integer q: the down-sampler's replicate padding."""
    frames = even.shape[-1]
    inside = np.clip(q, 0, frames - 1)
    own = (even if phase == 0 else odd)[..., inside]
    return np.where(q < 0, even[..., inside], np.where(q >= frames, odd[..., inside], own))


def antialiased_snake(x, up_filter, down_filter, alpha, inv_beta) -> np.ndarray:
    """(B, C, T) -> (B, C, T) in float64; alpha = exp(log alpha), inv_beta = 1 / (exp(log beta) + 1e-9)."""
    x = np.asarray(x, dtype=np.float64)
    f, g = (np.asarray(t, dtype=np.float64).reshape(TAPS) for t in (up_filter, down_filter))
    even, odd = phases(x, f, np.asarray(alpha, np.float64), np.asarray(inv_beta, np.float64))
    n = np.arange(x.shape[-1])
    return sum(g[2 * s + 1] * padded_phase(even, odd, n + s - 2, 0) + g[2 * s] * padded_phase(even, odd, n + s - 3, 1)
               for s in range(6))
