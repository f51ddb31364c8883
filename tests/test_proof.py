"""The proof at start (serving/gpt_sovits/proof.py), through the drop-in's `DropIn.serve`.

Engines cannot execute here: `ComputingEngine` has the runtime Engine's interface and computes with a
float32 copy of GPT-SoVITS' module, as an engine built from the same weights does (up to its
precision); `damage` makes it compute something else. The fast tier runs for real on the CPU (its
graphs need CUDA, so it calls the module; v3's activations are fused in place, as on a GPU).
"""
from __future__ import annotations

import copy
import logging

import numpy as np
import pytest
import torch

from factories import write_plan
from pipeline.settings import load_settings
from serving.gpt_sovits.dropin import DropIn, EngineVocoder
from serving.torch_tier import fallback as tier_fallback
from serving.torch_tier.fallback import TierVocoder
from serving.torch_tier.fused import FusedAntiAliasedSnake
from vocoder_models.mels import sample_mel
from vocoder_models.vocoders import BigVGAN, BigVGANConfig, HiFiGAN, HiFiGANConfig


def small_v4() -> torch.nn.Module:
    """GPT-SoVITS' v4 architecture with its 100 bands, at a small width (milliseconds a call)."""
    torch.manual_seed(2)
    config = HiFiGANConfig(upsample_initial_channel=32, resblock_kernel_sizes=(3, 7), resblock_dilation_sizes=((1, 3, 5),) * 2)
    return HiFiGAN(config).eval()


def small_v3() -> torch.nn.Module:
    torch.manual_seed(3)
    return BigVGAN(BigVGANConfig(upsample_initial_channel=64)).eval()


class ComputingEngine:
    """The runtime Engine's interface (manifest, sampling_rate, hop, host float32 mel in and audio
    out) computing `module`'s function in float32; `damage(audio)` replaces what it returns."""

    def __init__(self, module, manifest: dict, damage=None):
        self.module, self.manifest, self.damage = copy.deepcopy(module).float(), manifest, damage
        self.sampling_rate, self.hop = manifest["sampling_rate"], manifest["hop"]
        self.calls, self.closed = 0, False

    def __call__(self, mel: np.ndarray) -> np.ndarray:
        assert isinstance(mel, np.ndarray) and mel.dtype == np.float32
        self.calls += 1
        with torch.no_grad():
            audio = self.module(torch.from_numpy(mel)).numpy()
        return audio if self.damage is None else self.damage(audio)

    def close(self) -> None:
        self.closed = True


def drop_in(tmp_path, module, damage=None, precisions=("fp32",), **options):
    """A DropIn whose plans (v4, each precision) load as a ComputingEngine of `module`."""
    import json
    settings = copy.deepcopy(load_settings())
    settings["paths"]["engines"] = str(tmp_path / "engines")
    for precision in precisions:
        write_plan(tmp_path / "engines", vocoder="v4", precision=precision)
    engines = []

    def load(plan, device=0):
        manifest = json.loads(plan.with_suffix(".json").read_text(encoding="utf-8"))
        engines.append(ComputingEngine(module, manifest, damage))
        return engines[-1]

    return DropIn({"use_tensorrt": True, **options}, settings, load), engines


def messages(caplog, level):
    return [r.getMessage() for r in caplog.records if r.levelno == level and r.name == "serving"]


def noise_at(snr_db: float):
    """Damage: white noise `snr_db` below the audio (a seeded draw)."""
    def damage(audio):
        noise = np.random.default_rng(0).standard_normal(audio.shape)
        scale = np.sqrt(np.mean(audio.astype(np.float64) ** 2) / np.mean(noise ** 2) / 10 ** (snr_db / 10))
        return (audio + scale * noise).astype(np.float32)
    return damage


def test_an_engine_that_computes_the_vocoder_serves_with_one_line(tmp_path, caplog):
    module = small_v4()
    dropin, engines = drop_in(tmp_path, module)
    with caplog.at_level(logging.INFO, logger="serving"):
        served = dropin.serve(module, "v4", torch.float32, "cpu")
        again = dropin.serve(module, "v4", torch.float32, "cpu")  # a model switch back: proven before
    assert isinstance(served, EngineVocoder) and isinstance(again, EngineVocoder)
    (proof,) = [m for m in messages(caplog, logging.INFO) if "mel" in m]
    print(proof)
    assert "tensorrt fp32 proven" in proof and "64-frame mel" in proof and "bar 60 dB, 0.99999) in " in proof
    assert engines[0].calls == 1 and engines[1].calls == 0  # one proof call, none the second time
    assert dropin.stats.snapshot()["calls"] == 0  # the proof is not a served call
    assert not messages(caplog, logging.WARNING)


def test_an_engine_that_computes_something_else_leaves_gpt_sovits_its_vocoder(tmp_path, caplog):
    module = small_v4()
    dropin, engines = drop_in(tmp_path, module, damage=lambda audio: np.zeros_like(audio))
    with caplog.at_level(logging.INFO, logger="serving"):
        served = dropin.serve(module, "v4", torch.float32, "cpu")
        again = dropin.serve(module, "v4", torch.float32, "cpu")
    assert served is module and again is module
    (line,) = messages(caplog, logging.WARNING)
    print(line)
    assert "\n" not in line and "differs" in line and "(SNR 0.0 dB, cosine 0.000000; bar 60 dB, 0.99999)" in line
    assert "GPT-SoVITS keeps its own vocoder [tier: pytorch]" in line
    assert not [m for m in messages(caplog, logging.INFO) if "TensorRT engine" in m]
    assert engines[0].closed and engines[1].calls == 0  # refused once, for good; its memory given back


def test_the_bar_is_the_precisions(tmp_path, caplog):
    """Audio 50 dB from the vocoder's: within fp16's bar (40 dB), beyond fp32's (60 dB)."""
    module = small_v4()
    dropin, _ = drop_in(tmp_path, module, damage=noise_at(50.0), precisions=("fp16", "fp32"))
    with caplog.at_level(logging.INFO, logger="serving"):
        assert isinstance(dropin.serve(module, "v4", torch.float16, "cpu"), EngineVocoder)
        assert dropin.serve(module, "v4", torch.float32, "cpu") is module
    (line,) = messages(caplog, logging.WARNING)
    assert "tensorrt fp32 differs" in line and "(SNR 50.0 dB, cosine 0.99999" in line and "bar 60 dB" in line


def test_an_engine_that_fails_on_the_proof_mel_is_not_served(tmp_path, caplog):
    module = small_v4()

    def damage(audio):
        raise RuntimeError("execution context lost")
    dropin, _ = drop_in(tmp_path, module, damage=damage)
    with caplog.at_level(logging.WARNING, logger="serving"):
        assert dropin.serve(module, "v4", torch.float32, "cpu") is module
    (line,) = messages(caplog, logging.WARNING)
    assert "could not vocode" in line and "execution context lost" in line and "keeps its own vocoder" in line


@pytest.fixture()
def fast_tier_here(monkeypatch):
    """The fast tier chosen on this CPU (it then calls the module; v3's activations fused in place)."""
    monkeypatch.setattr(tier_fallback, "choose_tier", lambda device, fallback: ("pytorch-fast", "CUDA and Triton (here: CPU)"))


def test_the_fast_tier_serves_once_proven(tmp_path, caplog, fast_tier_here):
    module = small_v3()
    dropin, _ = drop_in(tmp_path, module)  # no v3 plan: the fast tier serves
    with caplog.at_level(logging.INFO, logger="serving"):
        served = dropin.serve(module, "v3", torch.float32, "cpu")
    assert isinstance(served, TierVocoder) and served.pytorch is module
    assert any(isinstance(m, FusedAntiAliasedSnake) for m in module.modules())
    (proof,) = [m for m in messages(caplog, logging.INFO) if "mel" in m]
    print(proof)
    assert "v3 vocoder: pytorch-fast fp32 proven" in proof and "100-frame mel" in proof and "[tier: pytorch-fast]" in proof


def test_a_fast_tier_that_computes_something_else_gives_back_the_module_as_it_was(tmp_path, caplog, fast_tier_here,
                                                                                   monkeypatch):
    module = small_v3()
    before = copy.deepcopy(module)
    monkeypatch.setattr(FusedAntiAliasedSnake, "forward", lambda self, x: x)  # a broken kernel
    dropin, _ = drop_in(tmp_path, module)
    with caplog.at_level(logging.INFO, logger="serving"):
        served = dropin.serve(module, "v3", torch.float32, "cpu")
    assert served is module and not any(isinstance(m, FusedAntiAliasedSnake) for m in module.modules())
    (line,) = [m for m in messages(caplog, logging.WARNING) if "mel" in m]
    assert "pytorch-fast fp32 differs" in line and "keeps its own vocoder" in line
    mel = torch.from_numpy(sample_mel("v3", frames=20))
    with torch.no_grad():
        assert torch.equal(module(mel), before(mel))  # upstream's activations back in their places


def test_the_plain_module_needs_no_proof(tmp_path, caplog):
    module = small_v4()
    dropin, _ = drop_in(tmp_path, module, tensorrt_fallback="plain")
    with caplog.at_level(logging.INFO, logger="serving"):
        assert dropin.serve(module, "v3", torch.float32, "cpu") is module  # no v3 plan, the plain fallback
    assert not [m for m in messages(caplog, logging.INFO) + messages(caplog, logging.WARNING) if "-frame mel" in m]
