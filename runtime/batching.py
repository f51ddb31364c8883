"""Batch scheduling: which optimization profile of a plan serves a request, and how a batch larger
than that profile's maximum is cut. Pure functions of the manifest's profiles (runtime/manifest.py
reads them); no CUDA needed.
"""
from __future__ import annotations

from runtime.errors import RuntimeUserError
from runtime.manifest import PlanProfile


def choose_profile(profiles: list[PlanProfile], batch: int, frames: int) -> PlanProfile | None:
    """The profile to serve (batch, frames): among those whose frame range holds `frames`, the one
    needing the fewest batch splits, then the smallest maximum (kernels tuned nearest the request).
    None when `frames` exceeds every profile (the caller chunks the mel)."""
    fitting = [p for p in profiles if p.fits_frames(frames)]
    if not fitting:
        if frames > max(p.max_frames for p in profiles):
            return None
        raise RuntimeUserError(f"mel has {frames} frames, fewer than every profile's minimum "
                               f"({min(p.min_frames for p in profiles)}); pad the mel or rebuild with a smaller profile minimum")
    return min(fitting, key=lambda p: (-(-batch // p.max_batch), p.max_frames, p.index))


def batch_pieces(batch: int, max_batch: int) -> list[slice]:
    """Slices of the batch axis no larger than the profile's maximum batch."""
    return [slice(start, min(start + max_batch, batch)) for start in range(0, batch, max_batch)]
