"""BigVGAN's anti-aliased SnakeBeta (2x up-sample, SnakeBeta, 2x down-sample) as one Triton kernel.

Each program takes one row (one channel of one batch item) and a tile of it: it reads the input
once (seven shifted loads of the same cache lines), computes the even and odd up-sampled phases
and their SnakeBeta in registers, and writes the down-sampled output once; the signal at twice the
rate never reaches memory. The arithmetic is the polyphase form derived in polyphase.py, edges
included: clamped input indices are the up-sampler's replicate padding, and the down-sampler's
padding makes the odd phase read the even one left of the signal and the even phase read the odd
one right of it. fp32 and fp16 inputs are computed in fp32 and rounded once, on the store.
Filter taps, alpha and 1/beta are read from device tensors, so any BigVGAN v2 checkpoint works.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

TAPS = 12
HALO = 8  # phase values a tile computes beyond the outputs it writes: 3 before, 5 after
_HALO = tl.constexpr(HALO)


@triton.jit
def _antialiased_snake_kernel(x_ptr, out_ptr, up_ptr, down_ptr, alpha_ptr, inv_beta_ptr, valid_ptr, channels, frames,
                              scale, BLOCK: tl.constexpr, MASKED: tl.constexpr, ONE_GATHER: tl.constexpr):
    row = tl.program_id(0)
    first = tl.program_id(1) * (BLOCK - _HALO)  # first output frame of this tile
    lane = tl.arange(0, BLOCK)
    # the signal ends at `valid`: the row's length, or in a padded window the valid mel frames
    # (a device scalar, so one graph serves every length) times this layer's rate
    if MASKED:
        valid = tl.load(valid_ptr).to(tl.int32) * scale
    else:
        valid = frames
    q = first - 3 + lane                       # phase index this lane computes
    qc = tl.minimum(tl.maximum(q, 0), valid - 1)
    base = x_ptr + row.to(tl.int64) * frames

    # input x[qc + d], d = -3..3, with the index clamped: the up-sampler's replicate padding
    x_m3 = tl.load(base + tl.maximum(qc - 3, 0)).to(tl.float32)
    x_m2 = tl.load(base + tl.maximum(qc - 2, 0)).to(tl.float32)
    x_m1 = tl.load(base + tl.maximum(qc - 1, 0)).to(tl.float32)
    x_0 = tl.load(base + qc).to(tl.float32)
    x_p1 = tl.load(base + tl.minimum(qc + 1, valid - 1)).to(tl.float32)
    x_p2 = tl.load(base + tl.minimum(qc + 2, valid - 1)).to(tl.float32)
    x_p3 = tl.load(base + tl.minimum(qc + 3, valid - 1)).to(tl.float32)

    # u[2q] = 2 sum_r f[2r+1] x[q+2-r];  u[2q+1] = 2 sum_r f[2r] x[q+3-r]
    even = (tl.load(up_ptr + 1) * x_p2 + tl.load(up_ptr + 3) * x_p1 + tl.load(up_ptr + 5) * x_0
            + tl.load(up_ptr + 7) * x_m1 + tl.load(up_ptr + 9) * x_m2 + tl.load(up_ptr + 11) * x_m3) * 2.0
    odd = (tl.load(up_ptr + 0) * x_p3 + tl.load(up_ptr + 2) * x_p2 + tl.load(up_ptr + 4) * x_p1
           + tl.load(up_ptr + 6) * x_0 + tl.load(up_ptr + 8) * x_m1 + tl.load(up_ptr + 10) * x_m2) * 2.0

    channel = row % channels
    alpha = tl.load(alpha_ptr + channel)
    inv_beta = tl.load(inv_beta_ptr + channel)
    wave_even = tl.sin(even * alpha)
    wave_odd = tl.sin(odd * alpha)
    even = even + inv_beta * (wave_even * wave_even)
    odd = odd + inv_beta * (wave_odd * wave_odd)
    # the down-sampler's replicate padding: v[0] (even) left of the signal, v[2T-1] (odd) right of it
    even_padded = tl.where(q >= valid, odd, even)
    odd_padded = tl.where(q < 0, even, odd)

    if ONE_GATHER:
        # y[n] = sum_k g[k] v'[2n + k - 5], v' the down-sampler's padded input at twice the rate,
        # interleaved (v'[2q] = E'[q], v'[2q + 1] = O'[q]): lane j's taps are entries 2j + 1 ..
        # 2j + 12 of this tile's v'. One gather of a (16, BLOCK) index reads all twelve (four taps
        # weigh zero), so v' goes through shared memory once: one store, one barrier, the reads.
        rate2 = tl.reshape(tl.join(even_padded, odd_padded), (2 * BLOCK,))
        tap = tl.arange(0, 16)
        where = tl.minimum(2 * lane[None, :] + 1 + tap[:, None], 2 * BLOCK - 1)
        taps = tl.reshape(tl.gather(rate2, tl.reshape(where, (16 * BLOCK,)), 0), (16, BLOCK))
        weights = tl.load(down_ptr + tap, mask=tap < 12, other=0.0)
        out = tl.sum(taps * weights[:, None], axis=0)
    else:
        # y[n] = sum_s g[2s+1] E'[n+s-2] + g[2s] O'[n+s-3]; lane j holds q = first - 3 + j
        last = BLOCK - 1
        out = tl.load(down_ptr + 1) * tl.gather(even_padded, tl.minimum(lane + 1, last), 0)
        out += tl.load(down_ptr + 0) * tl.gather(odd_padded, lane, 0)
        out += tl.load(down_ptr + 3) * tl.gather(even_padded, tl.minimum(lane + 2, last), 0)
        out += tl.load(down_ptr + 2) * tl.gather(odd_padded, tl.minimum(lane + 1, last), 0)
        out += tl.load(down_ptr + 5) * tl.gather(even_padded, tl.minimum(lane + 3, last), 0)
        out += tl.load(down_ptr + 4) * tl.gather(odd_padded, tl.minimum(lane + 2, last), 0)
        out += tl.load(down_ptr + 7) * tl.gather(even_padded, tl.minimum(lane + 4, last), 0)
        out += tl.load(down_ptr + 6) * tl.gather(odd_padded, tl.minimum(lane + 3, last), 0)
        out += tl.load(down_ptr + 9) * tl.gather(even_padded, tl.minimum(lane + 5, last), 0)
        out += tl.load(down_ptr + 8) * tl.gather(odd_padded, tl.minimum(lane + 4, last), 0)
        out += tl.load(down_ptr + 11) * tl.gather(even_padded, tl.minimum(lane + 6, last), 0)
        out += tl.load(down_ptr + 10) * tl.gather(odd_padded, tl.minimum(lane + 5, last), 0)

    n = first + lane
    keep = (lane < BLOCK - _HALO) & (n < frames)
    out = tl.where(n < valid, out, 0.0)  # past the signal: zeros, what a convolution reading them must see
    tl.store(out_ptr + row.to(tl.int64) * frames + n, out.to(out_ptr.dtype.element_ty), mask=keep)


def block_for(frames: int) -> int:
    """Tile width: the next power of two holding the frames and the halo, 64 to 1024."""
    return max(64, min(1024, triton.next_power_of_2(frames + HALO)))


def antialiased_snake(x: torch.Tensor, up_filter: torch.Tensor, down_filter: torch.Tensor,
                      alpha: torch.Tensor, inv_beta: torch.Tensor, valid: torch.Tensor | None = None,
                      scale: int = 1, one_gather: bool = True) -> torch.Tensor:
    """(B, C, T) float32 or float16 -> the same shape and dtype. `up_filter`/`down_filter`: the 12
    taps (float32, any shape with 12 elements); `alpha` = exp(log alpha), `inv_beta` =
    1 / (exp(log beta) + 1e-9), float32 (C,). All on x's device. With `valid` (an integer device
    scalar), the signal is the first `valid * scale` frames of each row, as if the row ended there
    (its edge emulated), and the frames after it are written as zeros."""
    if x.dim() != 3 or x.dtype not in (torch.float32, torch.float16):
        raise ValueError(f"expected a (batch, channels, frames) float32 or float16 tensor, got {tuple(x.shape)} {x.dtype}")
    x = x.contiguous()
    batch, channels, frames = x.shape
    out = torch.empty_like(x)
    if x.numel() == 0:
        return out
    block = block_for(frames)
    grid = (batch * channels, triton.cdiv(frames, block - HALO))
    _antialiased_snake_kernel[grid](x, out, up_filter, down_filter, alpha, inv_beta,
                                    up_filter if valid is None else valid, channels, frames, scale,
                                    BLOCK=block, MASKED=valid is not None, ONE_GATHER=one_gather,
                                    num_warps=4 if block <= 256 else 8)
    return out


@triton.jit
def _zero_band_kernel(x_ptr, valid_ptr, rows, frames, scale, band, ROWS: tl.constexpr, BAND: tl.constexpr):
    row = tl.program_id(0) * ROWS + tl.arange(0, ROWS)[:, None]
    frame = tl.load(valid_ptr).to(tl.int32) * scale + tl.arange(0, BAND)[None, :]
    keep = (row < rows) & (frame < frames) & (tl.arange(0, BAND)[None, :] < band)
    zero = tl.zeros((ROWS, BAND), dtype=x_ptr.dtype.element_ty)
    tl.store(x_ptr + row.to(tl.int64) * frames + frame, zero, mask=keep)


def zero_band(x: torch.Tensor, valid: torch.Tensor, scale: int, band: int) -> None:
    """Zero x[..., e:e + band] in place, e = valid * scale read on the device (x contiguous, 3-D)."""
    rows, frames = x.shape[0] * x.shape[1], x.shape[2]
    width = triton.next_power_of_2(band)
    per_program = max(1, 1024 // width)
    _zero_band_kernel[(triton.cdiv(rows, per_program),)](x, valid, rows, frames, scale, band,
                                                           ROWS=per_program, BAND=width, num_warps=4)
