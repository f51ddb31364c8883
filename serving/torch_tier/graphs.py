"""One CUDA graph captured the way torch asks for it: warm up on a side stream (lazy initialisation,
cuDNN's choices and the allocator's first blocks happen outside the capture), then capture into a
memory pool, keeping the static inputs the replays read and the outputs they write.

Used by the fast tier (fast.py: several windows on two streams, an emulated edge around the
capture, one pool for all its graphs) and by `validate bench`'s graph rows (one module call).
"""
from __future__ import annotations

import contextlib
from typing import Callable, ContextManager, List, Optional

import torch


class Captured:
    """A captured graph with its static `inputs` and `outputs`; `replay()` reruns it on whatever the
    inputs hold now and returns the outputs (the same tensors every time: copy what must outlive
    the next replay). `pool_bytes`: how much the capture grew the memory torch reserves."""

    def __init__(self, graph, inputs: List[torch.Tensor], outputs: List[torch.Tensor], pool_bytes: int):
        self.graph, self.inputs, self.outputs, self.pool_bytes = graph, inputs, outputs, pool_bytes

    def replay(self) -> List[torch.Tensor]:
        self.graph.replay()
        return self.outputs


def capture(forward: Callable[[], List[torch.Tensor]], inputs: List[torch.Tensor], *, device=None, warmup: int,
            pool=None, around: Callable[[], ContextManager] = contextlib.nullcontext,
            warm: Optional[Callable[[], object]] = None) -> Captured:
    """`forward()`, which reads `inputs` and returns its outputs, captured in one CUDA graph.

    First `warm()` (default: `forward`) runs `warmup` times on a side stream; the warm-up and the
    capture each run inside a fresh `around()` (torch.inference_mode, an emulated edge). `pool`: a
    handle from torch.cuda.graph_pool_handle() that several graphs share; None: the graph's own."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side), around():
        for _ in range(warmup):
            (warm or forward)()
    torch.cuda.current_stream(device).wait_stream(side)
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()  # torch.cuda.graph empties the cache on entry too: what grows below is the capture's
    before = torch.cuda.memory_reserved(device)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool), around():
        outputs = list(forward())
    torch.cuda.synchronize(device)
    return Captured(graph, inputs, outputs, torch.cuda.memory_reserved(device) - before)
