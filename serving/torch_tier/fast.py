"""The PyTorch fast tier: the fused activation plus CUDA graphs per mel-length bucket.

`FastVocoder(module, hop, ...)` is a callable mel -> audio with the module's own signature and
precision. Each call is cut into fixed-length windows (buckets.py); each distinct set of
window shapes is one CUDA graph, captured on first use and replayed after.

Where the module's layers allow it (masking.py: the v3 and v4 generators do), a call up to the
largest bucket runs one graph of the next bucket's length with the mel's end emulated inside it
(the valid length is a device scalar the graph reads): exactly the module on the unpadded mel, with
no second window. Otherwise a padded main window and a tail window that ends where the mel ends are
captured into one graph on two streams, and a mel shorter than the tail bucket runs without a graph.
Without masking, a length that comes back `exact_after` times gets a graph of exactly its length
(its tail window is the cost saved); with masking the padded bucket is within a few per cent of the
exact graph, so no length gets its own graph unless `exact_after` asks (each capture costs a few
calls' time: measured inside GPT-SoVITS, a second pass over the same sentences recaptured every
length and spent 7x upstream's vocoder time). A capture leaves torch's random state as it found it:
GPT-SoVITS seeds a request and draws the CFM's noise between vocoder calls. All graphs share
one memory pool; at most `max_graphs` are kept (least recently used dropped); `stats()` lists them
with the pool's size. Non-CUDA modules run the module directly unless `graphs=False` asks for the
windows to run without graphs (the CPU tests of the masked path).
"""
from __future__ import annotations

import contextlib
import threading
from collections import Counter, OrderedDict
from functools import partial
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from serving.torch_tier import buckets as bucketing
from serving.torch_tier import graphs as cuda_graphs
from serving.torch_tier.fused import fuse_activations
from serving.torch_tier.masking import EdgeMask, unsupported_layers

TIER_FAST, TIER_PLAIN = "pytorch-fast", "pytorch"
AUTO = -1  # exact_after's default: never with masked edges, else a length's second call


def choose_tier(device, fallback: str = "fast") -> Tuple[str, str]:
    """(tier, reason): `pytorch-fast` where CUDA graphs and Triton can run, else `pytorch` and why."""
    if fallback == "plain":
        return TIER_PLAIN, "tensorrt_fallback is 'plain'"
    device = torch.device(device)
    if device.type != "cuda":
        return TIER_PLAIN, f"the vocoder runs on {device.type}, and the fast tier needs a CUDA device"
    if not torch.cuda.is_available():
        return TIER_PLAIN, "torch has no usable CUDA device"
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception as exc:  # an import of a broken install may raise anything
        return TIER_PLAIN, (f"Triton cannot be imported ({type(exc).__name__}: {exc}); "
                            "pip install triton (Linux) or triton-windows")
    return TIER_FAST, "CUDA device and Triton present"


class _Graph:
    """One captured replay (graphs.py): static inputs (one per window) and their audio. With an edge
    mask, one window, and each call says how many of its frames are the mel's (the rest is never read)."""

    def __init__(self, captured: cuda_graphs.Captured, edge: Optional[EdgeMask]):
        self.captured, self.edge = captured, edge

    def __call__(self, windows: List[torch.Tensor], valid: Optional[int] = None) -> List[torch.Tensor]:
        for static, window in zip(self.captured.inputs, windows):
            static[:, :, :window.shape[2]].copy_(window)
        if self.edge is not None:
            self.edge.set_valid(valid)
        return [out.clone() for out in self.captured.replay()]


class FastVocoder:
    """mel (batch, n_mels, frames) -> audio (batch, 1, frames * hop), as `module(mel)` computes it."""

    def __init__(self, module: nn.Module, hop: int, *, context: int, lookahead: int,
                 buckets: Optional[Sequence[int]] = None, precision: Optional[torch.dtype] = None,
                 max_graphs: Optional[int] = None, exact_after: Optional[int] = AUTO, fuse: bool = True, warmup: int = 2,
                 mask_edges: bool = True, graphs: bool = True):
        self.fused_activations = fuse_activations(module) if fuse else 0
        if precision is not None:
            module = module.to(precision)
        self.module, self.hop = module.eval(), hop
        self.context, self.lookahead = context, lookahead
        parameter = next(module.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype
        self.unmaskable = unsupported_layers(module) if mask_edges else ["masking off"]
        self.edge = None if self.unmaskable else EdgeMask(module, self.device)
        default = bucketing.padded_buckets if self.edge is not None else bucketing.default_buckets
        self.buckets = tuple(sorted(buckets or default(context, lookahead)))
        self.tail = bucketing.tail_bucket(self.buckets, context, lookahead) if self.edge is None else None
        if self.buckets[-1] <= context + lookahead:
            raise ValueError(f"the largest bucket {self.buckets[-1]} must exceed context {context} + lookahead {lookahead}")
        self.max_graphs = max_graphs or len(self.buckets) + 4
        if exact_after == AUTO:
            exact_after = None if self.edge is not None else 1
        self.warmup, self.exact_after, self.use_graphs = warmup, exact_after, graphs
        self.seen: Counter = Counter()
        self.graphs: "OrderedDict[Tuple, _Graph]" = OrderedDict()
        self.pool = None
        self.calls: Dict[str, int] = {"graph": 0, "windows": 0, "eager": 0, "captures": 0, "dropped": 0}
        self.pool_bytes = 0
        self._lock = threading.Lock()

    # --- calls ---------------------------------------------------------------------------------

    @torch.no_grad()  # not inference_mode: GPT-SoVITS may change the audio in place afterwards
    def __call__(self, mel: torch.Tensor) -> torch.Tensor:
        mel = mel.to(self.device, self.dtype)
        chosen = self.windows_for(mel.shape[2])
        if chosen.eager or (self.device.type != "cuda" and self.use_graphs):
            self.calls["eager"] += 1
            return self.module(mel)
        lengths = tuple(w.frames for w in chosen.windows)
        with self._lock:
            if self.edge is not None:  # each window on its own, its edge where the mel ends
                run, pad = (lambda windows: self._masked(windows, chosen, mel.shape[2])), _unpadded
            elif len(set(lengths)) == len(lengths):  # one window, or a main and its tail: one graph
                run, pad = self._graph((mel.shape[0], mel.shape[1], lengths)), _pad_right
            else:                                  # largest-bucket chunks: one graph, replayed per chunk
                single = self._graph((mel.shape[0], mel.shape[1], lengths[:1]))
                run, pad = (lambda windows: [single([w])[0] for w in windows]), _pad_right
            pieces = bucketing.run_windows(mel, chosen.windows, run, self.hop, pad)
            self.calls["graph" if self.use_graphs else "windows"] += 1
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=2)

    def _masked(self, windows: List[torch.Tensor], chosen: bucketing.CallWindows, total: int) -> List[torch.Tensor]:
        """Each window (its mel frames only) in a graph of its bucket's length, its edge emulated."""
        audio = []
        for piece, window in zip(windows, chosen.windows):
            valid = bucketing.valid_frames(window, total)
            if self.use_graphs:
                audio.append(self._graph((piece.shape[0], piece.shape[1], (window.frames,)))([piece], valid)[0])
                continue
            padded = piece.new_zeros(piece.shape[0], piece.shape[1], window.frames)
            padded[:, :, :valid] = piece
            self.edge.set_valid(valid)
            with self.edge.window(window.frames):
                audio.append(self.module(padded))
        return audio

    def windows_for(self, frames: int) -> bucketing.CallWindows:
        """The windows for a call: a length seen `exact_after` times before gets a graph of its own
        (GPT-SoVITS' batched path repeats one chunk length; None: never), any other the buckets' windows."""
        if len(self.seen) >= 4096:  # bounded: a service sees endless distinct lengths
            self.seen.clear()
        self.seen[frames] += 1
        repeated = self.exact_after is not None and self.seen[frames] > self.exact_after
        if repeated and frames <= self.buckets[-1] and frames not in self.buckets:
            return bucketing.CallWindows((bucketing.Window(0, frames, 0, frames),))
        split = bucketing.padded_windows_for if self.edge is not None else bucketing.windows_for
        return split(frames, self.buckets, self.context, self.lookahead)

    def stats(self) -> dict:
        """Graphs held (batch, bands, window lengths), the pool they share, calls by path."""
        graphs = [{"batch": key[0], "windows": list(key[2])} for key in self.graphs]
        return {"tier": TIER_FAST, "buckets": list(self.buckets), "tail_bucket": self.tail,
                "edges": "masked" if self.edge is not None else f"tail windows ({'; '.join(self.unmaskable[:3])})",
                "fused_activations": self.fused_activations, "graphs": graphs,
                "max_graphs": self.max_graphs, "graph_pool_bytes": self.pool_bytes, **self.calls}

    # --- graphs --------------------------------------------------------------------------------

    def _graph(self, key: Tuple) -> _Graph:
        if key in self.graphs:
            self.graphs.move_to_end(key)
            return self.graphs[key]
        while len(self.graphs) >= self.max_graphs:
            self.graphs.popitem(last=False)
            self.calls["dropped"] += 1
        self.graphs[key] = self._capture(*key)
        self.calls["captures"] += 1
        return self.graphs[key]

    def _capture(self, batch: int, bands: int, lengths: Tuple[int, ...]) -> _Graph:
        """One forward per window in one graph (graphs.py), windows after the first on a side
        stream; warmed up one window after another, the edge emulated around both."""
        inputs = capture_inputs(batch, bands, lengths, self.device, self.dtype)
        module, side = self.module, torch.cuda.Stream(self.device)

        def forward() -> List[torch.Tensor]:
            main = torch.cuda.current_stream(self.device)
            outputs = [module(inputs[0])]
            for x in inputs[1:]:
                side.wait_stream(main)
                with torch.cuda.stream(side):
                    outputs.append(module(x))
                main.wait_stream(side)
            return outputs

        edge = contextlib.nullcontext
        if self.edge is not None:
            self.edge.set_valid(max(1, lengths[0] - 1))
            edge = partial(self.edge.window, lengths[0])
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        captured = cuda_graphs.capture(forward, inputs, device=self.device, warmup=self.warmup, pool=self.pool, around=edge,
                                  warm=lambda: [module(x) for x in inputs])
        self.pool_bytes += captured.pool_bytes
        return _Graph(captured, self.edge)


def capture_inputs(batch: int, bands: int, lengths: Sequence[int], device, dtype) -> List[torch.Tensor]:
    """The graph's static inputs, filled in a mel-like range (never zeros) from a generator of their
    own: torch's global random state is the host's (GPT-SoVITS draws seeded noise around our calls)."""
    generator = torch.Generator(device=device).manual_seed(0)
    return [torch.randn(batch, bands, n, generator=generator, device=device, dtype=dtype).mul_(2).sub_(5)
            for n in lengths]


def _unpadded(mel: torch.Tensor, frames: int) -> torch.Tensor:
    """The window's mel frames as they are: the graph's input keeps whatever follows them."""
    return mel


def _pad_right(mel: torch.Tensor, frames: int) -> torch.Tensor:
    """Pad with the last frame (replicate): any finite content does, the padding's audio is cut."""
    return torch.cat([mel, mel[:, :, -1:].expand(-1, -1, frames - mel.shape[2])], dim=2)
