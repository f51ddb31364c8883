"""The PyTorch fast tier on CPU: the fused anti-aliased SnakeBeta under Triton's interpreter against
float64 oracles (this project's module, NVIDIA's `bigvgan` package, the polyphase derivation), and
the bucketing that lets fixed-length CUDA graphs serve any mel length, with the plain module."""
from __future__ import annotations

import os
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "1"  # before Triton decorates the kernel: it then runs on CPU tensors

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from export.float64 import float64_evaluation  # noqa: E402
from pipeline.errors import UserError  # noqa: E402
from pipeline.quality import audio_errors, bar_for, failures, max_error_over_peak, snr_db  # noqa: E402
from pipeline.settings import VOCODERS, load_settings  # noqa: E402
from serving.torch_tier import buckets as bucketing  # noqa: E402
from serving.torch_tier import polyphase  # noqa: E402
from serving.torch_tier.fast import FastVocoder, choose_tier  # noqa: E402
from serving.torch_tier.fused import (  # noqa: E402
    FusedAntiAliasedSnake,
    fuse_activations,
    is_antialiased_snake,
    snake_terms,
)
from vocoder_models.vocoders import AntiAliasedSnake, BigVGAN, BigVGANConfig  # noqa: E402

pytest.importorskip("triton")
from serving.torch_tier.kernel import antialiased_snake  # noqa: E402

FRAMES = (1, 2, 3, 5, 8, 13, 40)  # both edges meet below 13 frames (reach 6 each side)
FP16_BAR = bar_for(load_settings(), "fp16")


def random_activation(family: str, channels: int, seed: int) -> torch.nn.Module:
    """An anti-aliased activation of either family with log alpha and log beta spread over [-1, 1]."""
    torch.manual_seed(seed)
    if family == "project":
        module = AntiAliasedSnake(channels, logscale=True)
    else:
        from bigvgan.activations import Snake, SnakeBeta
        from bigvgan.alias_free_activation.torch.act import Activation1d
        act = SnakeBeta(channels, alpha_logscale=True) if family == "bigvgan" else Snake(channels, alpha_logscale=True)
        module = Activation1d(act)
    with torch.no_grad():
        for p in module.act.parameters():
            p.uniform_(-1.0, 1.0)
    return module.eval()


def float64_truth(module: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    with float64_evaluation(module):
        return module(x.double()).numpy()


def test_the_polyphase_form_is_the_module_in_float64_edges_included():
    for family in ("project", "bigvgan"):
        module = random_activation(family, 3, seed=1)
        alpha, inv_beta = (t.numpy() for t in snake_terms(module.act))
        up, down = module.upsample.filter.double().numpy(), module.downsample.lowpass.filter.double().numpy()
        for frames in FRAMES:
            x = torch.randn(2, 3, frames, dtype=torch.float64) * 3
            derived = polyphase.antialiased_snake(x.numpy(), up, down, alpha, inv_beta)
            assert max_error_over_peak(float64_truth(module, x), derived) < 1e-13, (family, frames)


@pytest.mark.parametrize("family", ["project", "bigvgan", "bigvgan-snake"])
def test_kernel_is_exact_in_float32_against_float64(family):
    module = random_activation(family, 3, seed=2)
    fused = FusedAntiAliasedSnake(module)
    for frames in FRAMES + (1100,):  # 1100: three tiles, two tile seams
        x = torch.randn(2, 3, frames) * 3
        truth = float64_truth(module, x)
        out = antialiased_snake(x, *fused.constants("cpu")).double().numpy()
        torch_float32 = module.float()(x).detach().double().numpy()
        error, noise = max_error_over_peak(truth, out), max_error_over_peak(truth, torch_float32)
        assert snr_db(truth, out) >= 100.0, (family, frames)
        assert error <= max(4 * noise, 1e-6), (family, frames, error, noise)


def test_kernel_in_float16_rounds_once_within_the_fp16_bar():
    module = random_activation("project", 4, seed=3)
    fused = FusedAntiAliasedSnake(module)
    for frames in FRAMES:
        x = (torch.randn(2, 4, frames) * 3).half()
        out = antialiased_snake(x, *fused.constants("cpu"))
        assert out.dtype == torch.float16
        truth = float64_truth(module, x.float())
        errors = audio_errors(truth, out.double().numpy())
        assert not failures(errors, FP16_BAR), (frames, errors)
        # computed in float32 and rounded once: within one float16 rounding (2^-11) of the truth
        assert np.abs(out.double().numpy() - truth).max() <= 2.0 ** -10 * max(np.abs(truth).max(), 1.0), frames


def tiny_bigvgan() -> BigVGAN:
    torch.manual_seed(4)
    config = BigVGANConfig(num_mels=8, upsample_rates=(2, 2), upsample_kernel_sizes=(4, 4), upsample_initial_channel=16,
                           resblock_kernel_sizes=(3,), resblock_dilation_sizes=((1, 3),))
    model = BigVGAN(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("alpha", "beta")):
                p.uniform_(-1.0, 1.0)
    return model


def test_swapping_keeps_the_state_dict_and_the_function():
    model = tiny_bigvgan()
    keys = set(model.state_dict())
    mel = torch.randn(1, 8, 9) * 2 - 4
    truth = float64_truth(model, mel)
    expected = sum(is_antialiased_snake(m) for m in model.modules())
    assert fuse_activations(model) == expected == 2 * 4 + 1  # two stages x one block x four, plus the last
    assert fuse_activations(model) == 0  # already fused
    assert set(model.state_dict()) == keys
    with torch.inference_mode():
        out = model(mel).double().numpy()  # the interpreter runs the kernel on these CPU tensors
    assert snr_db(truth, out) >= 100.0


def test_upstream_bigvgan_modules_are_recognised_and_fused():
    bigvgan = pytest.importorskip("bigvgan")
    from bigvgan.env import AttrDict
    h = AttrDict(num_mels=8, upsample_rates=[2, 2], upsample_kernel_sizes=[4, 4], upsample_initial_channel=16,
                 resblock="1", resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]], activation="snakebeta",
                 snake_logscale=True, use_tanh_at_final=False, use_bias_at_final=False)
    torch.manual_seed(5)
    model = bigvgan.BigVGAN(h, use_cuda_kernel=False).eval()
    model.remove_weight_norm()
    mel = torch.randn(1, 8, 7) * 2 - 4
    truth = float64_truth(model, mel)
    assert fuse_activations(model) == 2 * 4 + 1
    with torch.inference_mode():
        out = model(mel).double().numpy()
    assert snr_db(truth, out) >= 100.0


# --- buckets ------------------------------------------------------------------------------------


def test_windows_cover_every_frame_once_and_hold_each_frames_reach():
    buckets, context, lookahead = (40, 64, 96), 12, 12
    for frames in range(1, 260):
        chosen = bucketing.windows_for(frames, buckets, context, lookahead)
        if frames < 40 and frames not in buckets:
            assert chosen.eager
            continue
        kept = [t for w in chosen.windows for t in range(w.keep_from, w.keep_to)]
        assert kept == list(range(frames)), frames
        for w in chosen.windows:
            assert w.frames in buckets
            edge_left, edge_right = w.start == 0, w.start + w.frames >= frames
            assert edge_left or w.keep_from - w.start >= context, (frames, w)
            assert (w.start + w.frames == frames) or w.keep_to + lookahead <= min(w.start + w.frames, frames), (frames, w)
            assert edge_right or w.keep_to + lookahead <= w.start + w.frames, (frames, w)


def tiny_hifigan(num_mels: int = 8) -> torch.nn.Module:
    """The v4 architecture at a small size (two 2x stages), so float64 passes take milliseconds;
    GPT-SoVITS' 100 bands where the drop-in's proof at start vocodes its mel through it."""
    from vocoder_models.vocoders import HiFiGAN, HiFiGANConfig
    torch.manual_seed(6)
    config = HiFiGANConfig(num_mels=num_mels, upsample_rates=(2, 2), upsample_kernel_sizes=(4, 4), upsample_initial_channel=16,
                           resblock_kernel_sizes=(3, 5), resblock_dilation_sizes=((1, 3), (1, 3)))
    return HiFiGAN(config).eval()


def measured_reach(module, frames: int = 61) -> tuple[int, int]:
    """(context, lookahead): how far back and ahead one audio frame reads, by poking the middle mel
    frame in float64 and counting every audio frame that changes at all."""
    mel = torch.randn(1, 8, frames, dtype=torch.float64)
    poked = mel.clone()
    poked[:, :, frames // 2] += 1.0
    changed = (module(poked) - module(mel)).reshape(frames, -1).abs().amax(dim=1) > 0
    where = torch.nonzero(changed).reshape(-1)
    return int(where.max()) - frames // 2, frames // 2 - int(where.min())


def test_bucketed_windows_give_the_single_pass_exactly():
    """Padding to a bucket and cutting after is exact at the measured reach: every window shape (a
    bucket, main plus tail, chunks past the largest bucket) against one plain pass, float64."""
    model = tiny_hifigan()
    with float64_evaluation(model):
        context, lookahead = measured_reach(model)
        assert 3 <= context <= 20 and 3 <= lookahead <= 20  # the architecture's convolutions, at this size
        buckets = (2 * (context + lookahead), 3 * (context + lookahead), 4 * (context + lookahead))
        tail = bucketing.tail_bucket(buckets, context, lookahead)
        for frames in (tail, tail + 1, buckets[1] - 3, buckets[2], buckets[2] + 1, 3 * buckets[2] + 7):
            mel = torch.randn(2, 8, frames, dtype=torch.float64) * 2 - 5
            truth = model(mel).numpy()
            chosen = bucketing.windows_for(frames, buckets, context, lookahead)
            pieces = bucketing.run_windows(mel, chosen.windows, lambda xs: [model(x) for x in xs], model.hop,
                                        lambda m, n: torch.cat([m, torch.zeros(2, 8, n - m.shape[2], dtype=m.dtype)], 2))
            out = torch.cat(pieces, dim=2).numpy()
            assert out.shape == truth.shape
            assert max_error_over_peak(truth, out) < 1e-12, frames
        # half the measured lookahead, and the padding shows: the reach is what makes it exact
        frames = buckets[1] - 3
        mel = torch.randn(1, 8, frames, dtype=torch.float64)
        short = bucketing.windows_for(frames, buckets, context, lookahead // 2)
        pieces = bucketing.run_windows(mel, short.windows, lambda xs: [model(x) for x in xs], model.hop,
                                    lambda m, n: torch.cat([m, torch.zeros(1, 8, n - m.shape[2], dtype=m.dtype)], 2))
        assert max_error_over_peak(model(mel).numpy(), torch.cat(pieces, dim=2).numpy()) > 1e-9


def test_stream_windows_are_buckets():
    from runtime.streaming import architecture_window
    for vocoder in VOCODERS:
        w = architecture_window(vocoder)
        buckets = bucketing.default_buckets(w.context, w.lookahead)
        assert set(bucketing.stream_windows(w.context, w.lookahead)) <= set(buckets)
        assert bucketing.tail_bucket(buckets, w.context, w.lookahead) >= w.context + w.lookahead + 1


def test_fast_vocoder_without_cuda_runs_the_module_and_says_so():
    model = tiny_hifigan()
    fast = FastVocoder(model, model.hop, context=12, lookahead=12, fuse=False)
    mel = torch.randn(1, 8, 30) - 5
    with torch.inference_mode():
        assert torch.equal(fast(mel), model(mel))
    assert fast.stats()["eager"] == 1 and fast.stats()["graphs"] == []
    fast(mel).mul_(0.5)  # the host may scale the audio in place: not an inference tensor


def test_a_length_that_comes_back_gets_a_graph_of_its_own():
    model = tiny_hifigan()
    fast = FastVocoder(model, model.hop, context=12, lookahead=12, buckets=(40, 64), exact_after=1, fuse=False,
                       mask_edges=False)
    assert [w.frames for w in fast.windows_for(50).windows] == [64, 40]  # first time: the bucket and the tail
    assert [w.frames for w in fast.windows_for(50).windows] == [50]      # again: its own length, no padding
    assert [w.frames for w in fast.windows_for(51).windows] == [64, 40]
    assert len(fast.windows_for(500).windows) > 1 and len(fast.windows_for(500).windows) > 1  # past the largest bucket: chunks
    masked = FastVocoder(model, model.hop, context=12, lookahead=12, buckets=(40, 64), exact_after=1)
    assert [w.frames for w in masked.windows_for(5).windows] == [40]     # its edge inside the bucket: no tail
    assert [w.frames for w in masked.windows_for(50).windows] == [64]
    assert [w.frames for w in masked.windows_for(50).windows] == [50]
    default = FastVocoder(model, model.hop, context=12, lookahead=12, buckets=(40, 64))
    assert [w.frames for w in default.windows_for(50).windows] == [64]   # masked edges: the bucket serves every time,
    assert [w.frames for w in default.windows_for(50).windows] == [64]   # no capture for a length's second call
    unmasked = FastVocoder(model, model.hop, context=12, lookahead=12, buckets=(40, 64), fuse=False, mask_edges=False)
    assert [w.frames for w in unmasked.windows_for(50).windows] == [64, 40]
    assert [w.frames for w in unmasked.windows_for(50).windows] == [50]  # tail windows: the second call gets its own graph


def test_graph_inputs_leave_the_hosts_random_state_alone():
    """GPT-SoVITS seeds a request and draws the CFM's noise between vocoder calls: filling a graph's
    inputs at capture must not advance torch's global generator (it once did, and a stream's first
    pass differed from upstream's for the same seed)."""
    from serving.torch_tier.fast import capture_inputs

    torch.manual_seed(11)
    expected = torch.randn(4)
    torch.manual_seed(11)
    inputs = capture_inputs(1, 8, (16, 40), torch.device("cpu"), torch.float32)
    assert torch.equal(torch.randn(4), expected)
    assert [tuple(x.shape) for x in inputs] == [(1, 8, 16), (1, 8, 40)]
    assert all(bool((x != 0).all()) and -20 < float(x.mean()) < 0 for x in inputs)  # mel-like, never zeros


# --- edges emulated inside a padded window (masking.py) -------------------------------------------


def tiny_upstream_bigvgan() -> torch.nn.Module:
    """NVIDIA's own BigVGAN (the `bigvgan` package: the code GPT-SoVITS vendors), two 2x stages."""
    bigvgan = pytest.importorskip("bigvgan")
    from bigvgan.env import AttrDict
    h = AttrDict(num_mels=8, upsample_rates=[2, 2], upsample_kernel_sizes=[4, 4], upsample_initial_channel=16,
                 resblock="1", resblock_kernel_sizes=[3, 5], resblock_dilation_sizes=[[1, 3], [1, 3]],
                 activation="snakebeta", snake_logscale=True, use_tanh_at_final=False, use_bias_at_final=False)
    torch.manual_seed(7)
    model = bigvgan.BigVGAN(h, use_cuda_kernel=False).eval()
    model.remove_weight_norm()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("alpha", "beta")):
                p.uniform_(-1.0, 1.0)
    model.hop = 4
    return model


def edge_lengths(buckets) -> tuple:
    """1 and 2 frames, one below and one above each bucket, a bucket, and past the largest (chunks)."""
    around = {n for b in buckets[:-1] for n in (b - 1, b + 1)}
    return tuple(sorted({1, 2, buckets[-1] - 1, buckets[-1], buckets[-1] + 9} | around))


@pytest.mark.parametrize("family", ["v3", "v3-upstream", "v4"])
def test_masked_windows_give_the_unpadded_module_exactly(family):
    """A mel of any length in one window of the next bucket, its edge emulated by the masks, is the
    module on that mel alone, in float64: every layer's right edge lands where the mel ends."""
    model = {"v3": tiny_bigvgan, "v3-upstream": tiny_upstream_bigvgan, "v4": tiny_hifigan}[family]()
    fuse_activations(model)
    model = model.double()
    context, lookahead = measured_reach(model)
    buckets = (8, 24, context + lookahead + 8)
    fast = FastVocoder(model, model.hop, context=context, lookahead=lookahead, buckets=buckets, graphs=False,
                       exact_after=None)
    assert fast.stats()["edges"] == "masked"
    for frames in edge_lengths(buckets):
        mel = torch.randn(1, 8, frames, dtype=torch.float64) * 2 - 5
        with torch.no_grad():
            truth = model(mel).numpy()
            out = fast(mel).numpy()
        assert out.shape == truth.shape, frames
        assert max_error_over_peak(truth, out) < 1e-12, (family, frames, max_error_over_peak(truth, out))
    assert fast.stats()["windows"] == len(edge_lengths(buckets)) and fast.stats()["eager"] == 0
    # the same window with its edge left at the bucket's end: the padding shows
    mel = torch.randn(1, 8, 20, dtype=torch.float64)
    padded = torch.cat([mel, torch.zeros(1, 8, 12, dtype=torch.float64)], dim=2)
    with torch.no_grad():
        unmasked = model(padded)[:, :, :20 * model.hop].numpy()
        assert max_error_over_peak(model(mel).numpy(), unmasked) > 1e-6


def test_masked_model_in_float32_runs_both_kernels_within_float32_noise():
    """v3 with the fused activation and the zeroing kernel under the interpreter, in float32."""
    model = tiny_bigvgan()
    fuse_activations(model)
    fast = FastVocoder(model, model.hop, context=12, lookahead=12, buckets=(16, 32), graphs=False, exact_after=None)
    for frames in (1, 17):
        mel = torch.randn(1, 8, frames) * 2 - 5
        truth = float64_truth(model, mel)
        with torch.no_grad():
            out = fast(mel).double().numpy()
        assert snr_db(truth, out) >= 100.0, frames


@pytest.mark.parametrize("valid,frames", [(1, 16), (2, 16), (15, 16), (40, 41), (1050, 1100)])
def test_kernel_with_a_valid_length_is_the_module_on_the_valid_frames(valid, frames):
    module = random_activation("project", 3, seed=8)
    fused = FusedAntiAliasedSnake(module)
    x = torch.randn(2, 3, frames) * 3
    x[:, :, valid:] = float("nan")  # never read
    truth = float64_truth(module, x[:, :, :valid])
    out = antialiased_snake(x, *fused.constants("cpu"), valid=torch.tensor(valid, dtype=torch.int32), scale=1)
    assert snr_db(truth, out[:, :, :valid].double().numpy()) >= 100.0
    assert torch.equal(out[:, :, valid:], torch.zeros(2, 3, frames - valid))
    if valid >= 2:  # a layer at twice the mel's rate: the edge at valid * scale
        half = valid // 2
        twice = antialiased_snake(x, *fused.constants("cpu"), valid=torch.tensor(half, dtype=torch.int32), scale=2)
        assert snr_db(float64_truth(module, x[:, :, :2 * half]), twice[:, :, :2 * half].double().numpy()) >= 100.0


def test_zeroing_kernel_writes_the_band_past_the_edge_and_nothing_else():
    from serving.torch_tier.masking import zero_band
    for edge, scale, band, frames in ((3, 1, 3, 16), (5, 4, 1, 24), (7, 2, 5, 16), (4, 4, 3, 16)):
        x = torch.randn(2, 5, frames)
        expected = x.clone()
        expected[:, :, edge * scale:edge * scale + band] = 0
        zero_band(x, torch.tensor(edge, dtype=torch.int32), scale, band)  # the Triton kernel (interpreter)
        assert torch.equal(x, expected), (edge, scale, band)
        y = torch.randn(2, 5, frames, dtype=torch.float64)
        expected = y.clone()
        expected[:, :, edge * scale:edge * scale + band] = 0
        zero_band(y, torch.tensor(edge, dtype=torch.int32), scale, band)  # float64: the PyTorch path
        assert torch.equal(y, expected)


def test_layers_masking_cannot_make_exact_keep_the_tail_windows():
    from serving.torch_tier.masking import unsupported_layers
    model = tiny_bigvgan()
    assert len(unsupported_layers(model)) == 9  # anti-aliased activations not fused yet
    fuse_activations(model)
    assert unsupported_layers(model) == []
    model.conv_pre = torch.nn.Conv1d(8, 16, 7, stride=2, padding=3)
    assert unsupported_layers(model) == ["conv_pre (Conv1d)"]
    fast = FastVocoder(model, model.hop, context=12, lookahead=12, buckets=(40, 64))
    assert fast.stats()["edges"].startswith("tail windows (conv_pre")
    assert [w.frames for w in fast.windows_for(50).windows] == [64, 40]


def test_tier_choice_names_its_reason():
    assert choose_tier("cuda", fallback="plain") == ("pytorch", "tensorrt_fallback is 'plain'")
    tier, reason = choose_tier("cpu")
    assert tier == "pytorch" and "CUDA" in reason
    if not torch.cuda.is_available():
        tier, reason = choose_tier("cuda")
        assert tier == "pytorch" and "no usable CUDA" in reason


HOPPER_COMPILE = """
import re, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.runtime.jit import JITFunction
from serving.torch_tier import kernel
io = sys.argv[1]
source = JITFunction(getattr(kernel._antialiased_snake_kernel, "fn", kernel._antialiased_snake_kernel))
signature = {"x_ptr": io, "out_ptr": io, "up_ptr": "*fp32", "down_ptr": "*fp32", "alpha_ptr": "*fp32",
             "inv_beta_ptr": "*fp32", "valid_ptr": "*i32", "channels": "i32", "frames": "i32", "scale": "i32",
             "BLOCK": "constexpr", "MASKED": "constexpr", "ONE_GATHER": "constexpr"}
for masked in (False, True):
    constexprs = {"BLOCK": 1024, "MASKED": masked, "ONE_GATHER": True}
    compiled = triton.compile(ASTSource(fn=source, signature=signature, constexprs=constexprs),
                              target=GPUTarget("cuda", 90, 32), options={"num_warps": 8})
    ptx = compiled.asm["ptx"]
    print(len(compiled.asm["cubin"]), "sin.approx" in ptx, len(re.findall(r"st\\.shared", ptx)),
          len(re.findall(r"bar\\.sync", ptx)))
"""


@pytest.mark.parametrize("io", ["*fp32", "*fp16"])
def test_kernel_compiles_for_hopper_without_a_gpu(io):
    """The interpreter runs what the GPU compiler may refuse (a plain global, say): compile for sm_90
    here, ahead of time, to a cubin with Triton's own ptxas (in a process without the interpreter),
    plain and masked, and read the PTX: the accurate sine, and the down-sampler's input stored to
    shared memory once (a few vector stores, one barrier), not once per tap."""
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", HOPPER_COMPILE, io], capture_output=True, encoding="utf-8", env=env,
                          cwd=str(Path(__file__).resolve().parents[1]), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    for line in done.stdout.split("\n")[-3:-1]:
        cubin, approx, stores, barriers = line.split()
        assert int(cubin) > 0 and approx == "False"  # the accurate sine: fp32 must stay within float32 noise
        assert int(stores) <= 8 and int(barriers) <= 2, line


# --- the drop-in's fallback ---------------------------------------------------------------------


def test_fallback_without_cuda_keeps_the_module_and_says_why_in_one_line(caplog):
    import logging

    from serving.torch_tier.fallback import fallback_vocoder
    model = tiny_hifigan()
    calls = []
    with caplog.at_level(logging.WARNING, logger="serving"):
        served = fallback_vocoder(model, "v4", "fp32", "no plan found", {}, lambda *a: calls.append(a))
        again = fallback_vocoder(model, "v4", "fp32", None, {}, lambda *a: calls.append(a))  # already said: no line
    assert served is model and again is model
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "no plan found" in lines[0] and "[tier: pytorch:" in lines[0] and "CUDA" in lines[0]


def test_fallback_serves_the_fast_tier_where_it_can_and_counts_its_calls(monkeypatch):
    from serving.torch_tier import fallback as tier_fallback
    monkeypatch.setattr(tier_fallback, "choose_tier", lambda device, fallback: ("pytorch-fast", "stand-in: CUDA and Triton"))
    model = tiny_hifigan()
    calls = []
    served = tier_fallback.fallback_vocoder(model, "v4", "fp32", "no plan found", {}, lambda *a: calls.append(a))
    assert isinstance(served, tier_fallback.TierVocoder) and served.pytorch is model
    mel = torch.randn(1, 8, 30) - 5
    with torch.inference_mode():
        assert torch.equal(served(mel), model(mel))  # on the CPU the tier runs the module itself
    assert [c[0] for c in calls] == ["pytorch-fast"] and calls[0][2] == pytest.approx(30 * model.hop / model.sampling_rate)
    assert served.tier_stats()["eager"] == 1


def test_tensorrt_fallback_plain_turns_the_fast_tier_off_and_bad_values_are_refused():
    from pipeline.settings import load_settings
    from serving.gpt_sovits.options import checked_options
    from serving.torch_tier.fallback import fallback_setting
    assert fallback_setting({}) == "fast" and fallback_setting({"tensorrt_fallback": "plain"}) == "plain"
    with pytest.raises(UserError, match="tensorrt_fallback is the text 'fastest'; use one of fast, plain"):
        checked_options({"tensorrt_fallback": "fastest"}, "tts_infer.yaml", load_settings())


def test_a_stream_on_the_tier_runs_bucket_windows_only():
    """The step schedule's fixed windows are buckets: a stream replays the tier's graphs and never
    runs a padded main and tail, whatever the push sizes (the last window included)."""
    from runtime.streaming import Stream
    model = tiny_hifigan()
    fast = FastVocoder(model, model.hop, context=12, lookahead=12, fuse=False)
    asked = []
    windows_for = fast.windows_for
    fast.windows_for = lambda frames: asked.append(frames) or windows_for(frames)
    mel = torch.randn(1, 8, 1500) - 5
    with torch.inference_mode(), Stream(fast, hop=model.hop, context_frames=12, lookahead_frames=12, n_mels=8) as stream:
        for start in range(0, 1500, 97):
            stream.push(mel[:, :, start:start + 97])
        stream.finish()
    assert asked and set(asked) <= set(fast.buckets), sorted(set(asked) - set(fast.buckets))


# --- wiring into the GPT-SoVITS drop-in (serving/gpt_sovits.py's one fallback place) ----------------


class TinyTTS:
    """The TTS attributes the drop-in reads, around a small v4-architecture vocoder on the CPU."""

    def __init__(self, model):
        from types import SimpleNamespace
        self.configs = SimpleNamespace(version="v4", is_half=False, device=torch.device("cpu"), default_configs={})
        self.precision = torch.float32
        self.vocoder_configs = {"sr": model.sampling_rate, "upsample_rate": model.hop, "T_ref": None, "T_chunk": None}
        self.vocoder, self._model = model, model

    def init_vocoder(self, version: str) -> None:
        self.vocoder = self._model


def drop_in_settings(tmp_path):
    import copy
    settings = copy.deepcopy(load_settings())
    settings["paths"]["engines"] = str(tmp_path / "no-engines")  # no plan, no checkpoint: no engine loads
    return settings


def test_drop_in_serves_the_fast_tier_when_no_engine_loads(tmp_path, monkeypatch, caplog):
    import logging

    from serving import gpt_sovits
    from serving.torch_tier import fallback as tier_fallback
    monkeypatch.setattr(tier_fallback, "choose_tier", lambda device, fallback: ("pytorch-fast", "stand-in: CUDA and Triton")
                        if fallback == "fast" else ("pytorch", "tensorrt_fallback is 'plain'"))
    model = tiny_hifigan(num_mels=100)
    tts = TinyTTS(model)
    with caplog.at_level(logging.WARNING, logger="serving"):
        stats = gpt_sovits.install(tts, {"use_tensorrt": True}, settings=drop_in_settings(tmp_path))
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(lines) == 1 and "[tier: pytorch-fast: stand-in: CUDA and Triton]" in lines[0]
    assert isinstance(tts.vocoder, tier_fallback.TierVocoder) and tts.vocoder.pytorch is model
    with torch.inference_mode():
        tts.vocoder(torch.randn(1, 100, 30) - 5)
    assert stats.snapshot()["pytorch_fast_calls"] == 1 and stats.snapshot()["tensorrt_calls"] == 0
    tts.init_vocoder("v4")  # a model switch: GPT-SoVITS' own module again, the tier around it again
    assert isinstance(tts.vocoder, tier_fallback.TierVocoder) and tts.vocoder.pytorch is model

    for plain in ({"use_tensorrt": True, "tensorrt_fallback": "plain"}, {"use_tensorrt": True}):
        keyword = {} if "tensorrt_fallback" in plain else {"fallback": "plain"}
        gpt_sovits.install(tts, plain, settings=drop_in_settings(tmp_path), **keyword)
        assert tts.vocoder is model  # the switch (yaml key or install's keyword) turns the fast tier off


def test_drop_in_refuses_an_unknown_fallback_in_one_line(tmp_path):
    from pipeline.errors import UserError
    from serving import gpt_sovits
    with pytest.raises(UserError, match="tensorrt_fallback is the text 'turbo'; use one of fast, plain"):
        gpt_sovits.install(TinyTTS(tiny_hifigan()), {"use_tensorrt": True, "tensorrt_fallback": "turbo"},
                           settings=drop_in_settings(tmp_path))
