"""The drop-in and the launcher against GPT-SoVITS' real code (GSV_SOURCE: a checkout, 48b1a01).

Skipped with its reason when GSV_SOURCE is not set (CI: GPT-SoVITS' code is never part of this
repository). tests/gsv_real.py says what is GPT-SoVITS' own code here and what is stubbed. Engines
cannot execute here, so the drop-in loads `EngineDouble`: the runtime Engine's interface computing
with upstream's own vocoder class, loaded from the checkpoint its manifest names.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pytest
import torch

import gsv_real
from pipeline.settings import VOCODERS, load_settings

pytestmark = pytest.mark.skipif(gsv_real.gsv_root() is None, reason=gsv_real.SKIP_REASON)
TESTS = Path(__file__).resolve().parent
SEED = 1234


def snr_db(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.double().flatten(), expected.double().flatten()
    assert actual.shape == expected.shape
    noise = float(((actual - expected) ** 2).sum())
    return float("inf") if noise == 0 else 10 * np.log10(float((expected ** 2).sum()) / noise)


@pytest.fixture(scope="module")
def gsv(tmp_path_factory):
    """A GPT-SoVITS working folder with random weights in upstream's layouts (cwd: TTS.py reads its
    paths from the working directory at import) and fp32 plans naming those vocoder checkpoints."""
    root = gsv_real.gsv_root()
    work = tmp_path_factory.mktemp("gpt-sovits")
    previous = os.getcwd()
    os.chdir(work)
    gsv_real.install_stubs(root)
    gsv_real.write_vocoders(work)
    for seed, version in enumerate(VOCODERS):
        gsv_real.write_s2_checkpoint(work / gsv_real.S2_FILES[version], version, seed)
    gsv_real.write_t2s_checkpoint(work)
    engines = work / "engines"
    gsv_real.write_plans(engines, work)
    import TTS_infer_pack.TTS as upstream

    settings = load_settings()
    settings["paths"]["engines"] = str(engines)
    yield SimpleNamespace(root=root, work=work, engines=engines, upstream=upstream, settings=settings)
    os.chdir(previous)


def make_tts(gsv, version: str, tensorrt: dict | None = None):
    """upstream's TTS from a tts_infer.yaml for `version` on the CPU, with a reference prompt set as
    TTS.set_ref_audio leaves it (long enough that T_min = T_ref)."""
    yaml_path = gsv_real.write_yaml(gsv.work, version, tensorrt)
    tts = gsv.upstream.TTS(gsv.upstream.TTS_Config(str(yaml_path)))
    rate = 24000 if version == "v3" else 32000
    generator = torch.Generator().manual_seed(3)
    tts.prompt_cache.update(
        prompt_semantic=torch.randint(0, 1024, (130,), generator=generator),
        phones=torch.randint(1, 300, (30,), generator=generator).tolist(),
        refer_spec=[(torch.rand(1, 1025, 260, generator=generator), None)],
        raw_audio=torch.randn(1, int(rate * 5.2), generator=generator) * 0.1, raw_sr=rate)
    return tts


def tokens(count: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 1024, (1, 1, count), generator=generator), torch.randint(1, 300, (1, 25), generator=generator)


def install_double(gsv, tts):
    from serving.gpt_sovits import install

    return install(tts, settings=gsv.settings, load_engine=gsv_real.EngineDouble)


def synthesis(tts, semantic, phones, **kwargs) -> torch.Tensor:
    torch.manual_seed(SEED)  # the CFM starts from torch.randn
    return tts.using_vocoder_synthesis(semantic, phones, sample_steps=4, **kwargs)


def test_tensorrt_section_survives_gpt_sovits_save_configs(gsv):
    import yaml

    section = {"use_tensorrt": True, "tensorrt_precision": "fp32"}
    tts = make_tts(gsv, "v4", section)  # TTS_Config and init_*_weights call save_configs themselves
    tts.configs.save_configs()
    saved = yaml.safe_load((gsv.work / "GPT_SoVITS" / "configs" / "tts_infer.yaml").read_text(encoding="utf-8"))
    assert saved["tensorrt"] == section and saved["custom"]["version"] == "v4"
    from serving.gpt_sovits import yaml_options

    assert yaml_options(tts) == section


@pytest.mark.parametrize("version", VOCODERS)
def test_upstream_synthesis_through_the_drop_in_matches_upstream_alone(gsv, version):
    from serving.gpt_sovits import EngineVocoder

    tts = make_tts(gsv, version)
    semantic, phones = tokens(130, seed=4)
    batch = [torch.randint(0, 1024, (n,), generator=torch.Generator().manual_seed(n)) for n in (90, 120)]
    batch_phones = [torch.randint(1, 300, (20,)), torch.randint(1, 300, (24,))]
    alone = synthesis(tts, semantic, phones)
    torch.manual_seed(SEED)
    alone_batched = tts.using_vocoder_synthesis_batched_infer([90, 120], batch, batch_phones, sample_steps=4)
    assert install_double(gsv, tts) is tts.vocoder_stats
    assert isinstance(tts.vocoder, EngineVocoder) and tts.vocoder.plan.name == f"{version}.fp32.plan"
    served = synthesis(tts, semantic, phones)
    torch.manual_seed(SEED)
    served_batched = tts.using_vocoder_synthesis_batched_infer([90, 120], batch, batch_phones, sample_steps=4)
    chunk = tts.vocoder_configs["T_chunk"] - tts.vocoder_configs["T_ref"]
    calls = tts.vocoder.engine.calls
    print(f"{version}: using_vocoder_synthesis {snr_db(served, alone):.1f} dB, batched "
          f"{[round(snr_db(s, a), 1) for s, a in zip(served_batched, alone_batched, strict=True)]} dB; engine calls {calls}")
    assert served.shape == alone.shape and snr_db(served, alone) >= 100
    assert all(snr_db(s, a) >= 100 for s, a in zip(served_batched, alone_batched, strict=True))
    # what the vocoder gets: one mel for a fragment; the batched path's chunks joined in time, each
    # T_chunk - T_min frames (T_min = T_ref here), the first 12 zero-padded frames included
    assert calls[0] == (1, 100, 487 if version == "v3" else 520)  # v3: 130 tokens x 2 x 1.875
    assert calls[1][:2] == (1, 100) and calls[1][2] % chunk == 0 and calls[1][2] // chunk >= 2
    assert tts.vocoder_stats.snapshot()["tensorrt_calls"] == 2


@pytest.mark.parametrize("version", VOCODERS)
def test_streaming_matches_upstream_non_streaming_over_two_cfm_chunks(gsv, version):
    from serving.gpt_sovits import stream_vocoder_synthesis

    tts = make_tts(gsv, version)
    semantic, phones = tokens(130, seed=5)  # 487 (v3) / 520 (v4) feature frames: two CFM chunks
    expected = synthesis(tts, semantic, phones)
    for served_by in ("pytorch", "engine double"):
        if served_by == "engine double":
            install_double(gsv, tts)
        torch.manual_seed(SEED)
        with mock.patch.object(tts.vits_model.cfm, "inference", wraps=tts.vits_model.cfm.inference) as cfm:
            pieces = list(stream_vocoder_synthesis(tts, semantic, phones, sample_steps=4))
        score = snr_db(torch.cat(pieces), expected)
        print(f"{version} streamed on {served_by}: {len(pieces)} pieces over {cfm.call_count} CFM chunks, {score:.1f} dB")
        assert cfm.call_count >= 2 and len(pieces) >= 2 and score >= 100


def test_model_switch_with_upstream_init_vits_weights_reattaches(gsv):
    from serving.gpt_sovits import EngineVocoder

    tts = make_tts(gsv, "v4")
    install_double(gsv, tts)
    assert tts.vocoder.plan.name == "v4.fp32.plan"
    tts.init_vits_weights(gsv_real.S2_FILES["v3"])  # api_v2's /set_sovits_weights: upstream calls init_vocoder("v3")
    assert tts.configs.version == "v3" and isinstance(tts.vocoder, EngineVocoder)
    assert tts.vocoder.plan.name == "v3.fp32.plan" and type(tts.vocoder.pytorch).__name__ == "BigVGAN"
    tts.init_vocoder("v3")  # upstream's same-class check sees its own BigVGAN: returns early, engine kept
    assert tts.vocoder.plan.name == "v3.fp32.plan"
    tts.init_vits_weights(gsv_real.S2_FILES["v4"])
    assert tts.vocoder.plan.name == "v4.fp32.plan" and type(tts.vocoder.pytorch).__name__ == "Generator"


def test_use_tensorrt_false_gives_back_upstream_init_vocoder(gsv):
    from serving.gpt_sovits import install

    tts = make_tts(gsv, "v4")
    own_init, own_vocoder = tts.init_vocoder, tts.vocoder
    install_double(gsv, tts)
    assert install(tts, {"use_tensorrt": False}, settings=gsv.settings) is None
    assert tts.init_vocoder == own_init and tts.vocoder is own_vocoder


def test_run_streaming_modes_stream_each_fragment_with_upstreams_silence(gsv):
    """TTS.run itself (stub text front end and T2S) in fragment mode and, through the launcher's
    run-time switch, in streaming mode: same audio per fragment, upstream's silence after each."""
    from serving.gpt_sovits.fragments import streaming_run

    tts = make_tts(gsv, "v4")
    install_double(gsv, tts)
    fragments = {"one.": 110, "two.": 140, "three.": 95}
    stub_front_end(tts, fragments)
    inputs = {"text": "one. two. three.", "text_lang": "zh", "ref_audio_path": None, "prompt_text": "prompt.",
              "prompt_lang": "zh", "batch_size": 2, "fragment_interval": 0.3, "sample_steps": 4,
              "parallel_infer": False, "split_bucket": False, "seed": SEED}  # run seeds the CFM itself
    torch.manual_seed(SEED)
    fragment_mode = list(gsv.upstream.TTS.run(tts, dict(inputs, return_fragment=True)))
    stub_front_end(tts, fragments)  # the T2S stub hands out each fragment's tokens once per run
    torch.manual_seed(SEED)
    streamed = list(streaming_run(tts, dict(inputs, streaming_mode=True), gsv.upstream.TTS.run))
    silence = int(tts.configs.sampling_rate * 0.3)
    audio_pieces = [a for _, a in streamed if a.any()]
    silences = [a for _, a in streamed if not a.any()]
    whole = np.concatenate([a for _, a in fragment_mode])
    print(f"run: fragment mode {len(fragment_mode)} yields, streaming {len(streamed)} "
          f"({len(audio_pieces)} audio pieces, silences {[len(s) for s in silences]})")
    assert [len(s) for s in silences] == [silence] * len(fragments)  # after every fragment, not once per batch
    assert len(audio_pieces) > len(fragments)
    joined = np.concatenate([a for _, a in streamed])
    assert joined.shape == whole.shape
    assert snr_db(torch.from_numpy(joined.astype(np.float64)), torch.from_numpy(whole.astype(np.float64))) >= 60  # int16


def stub_front_end(tts, fragments: dict) -> None:
    """The text front end and T2S as TTS.run calls them: each text fragment becomes phones and
    BERT features, the T2S returns that many semantic tokens (seeded by the fragment)."""
    lengths = list(fragments.values())
    tts.text_preprocessor.pre_seg_text = lambda text, lang, method: list(fragments)
    tts.text_preprocessor.segment_and_extract_feature_for_text = lambda text, lang, version: (
        list(range(1, 21)), torch.zeros(1024, 20), text)

    def infer_panel(phones, phone_lens, prompt, bert, **kwargs):
        count = len(phones)  # one entry per fragment of the batch
        taken, lengths[:] = lengths[:count], lengths[count:]
        semantic = [torch.randint(0, 1024, (n,), generator=torch.Generator().manual_seed(n)) for n in taken]
        return semantic, taken

    for panel in ("infer_panel_batch_infer", "infer_panel_naive_batched", "infer_panel_naive"):
        setattr(tts.t2s_model.model, panel, infer_panel)
    tts.prompt_cache.update(prompt_text="prompt.", prompt_lang="zh", bert_features=torch.zeros(1024, 30),
                            ref_audio_path=None)


@pytest.mark.parametrize("entry", ["api", "webui-fast", "webui"])
def test_launcher_starts_each_entry_point_with_the_vocoder_served(gsv, entry):
    """`python -m serving.gpt_sovits ENTRY` in a fresh process from the GPT-SoVITS folder: the entry
    point runs to its server's start (stubbed: it returns) with the v4 vocoder served by the engine."""
    report = gsv.work / f"{entry}.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS.parent), str(TESTS)]), version="v4",
               is_half="False", sovits_path=gsv_real.S2_FILES["v4"], gpt_path=gsv_real.T2S_FILE)
    gsv_real.write_yaml(gsv.work, "v4", None)  # no tensorrt: section: the defaults serve
    done = subprocess.run([sys.executable, str(TESTS / "gsv_launch.py"), entry, str(gsv.root), str(gsv.engines),
                           str(report)], cwd=gsv.work, env=env, capture_output=True, text=True, encoding="utf-8",
                          timeout=600)
    console = [line for line in done.stderr.splitlines() if line.startswith("[gsv-vocoder-trt]")]
    print("\n".join(console))
    assert done.returncode == 0, done.stderr[-3000:]
    served = json.loads(report.read_text(encoding="utf-8"))
    assert served["v4"] == "v4.fp32.plan" and served["server_started"]
    assert any("starting GPT-SoVITS" in line and "48b1a01" in line for line in console)
    assert any("v4 vocoder: TensorRT engine" in line and "v4.fp32.plan" in line for line in console)
    if entry == "webui":  # a switch to a v3 model: get_tts_wav loads BigVGAN through init_bigvgan
        assert served["v3_after_switch"] == "v3.fp32.plan" and served["v4_after_switch"] is None
        assert served["get_tts_wav_calls_init_bigvgan"]
    else:
        assert served["run_is_the_launchers"]


def test_standin_is_no_looser_than_upstream(gsv):
    """tests/gpt_sovits_standin.py's TTS keeps upstream's attribute names and vocoder_configs keys."""
    import gpt_sovits_standin

    tts = make_tts(gsv, "v4")
    vocoder = SimpleNamespace(sampling_rate=tts.vocoder_configs["sr"], hop=tts.vocoder_configs["upsample_rate"])
    standin = gpt_sovits_standin.StandInTTS("v4", vocoder, todo_frames=100)
    assert set(standin.vocoder_configs) == set(tts.vocoder_configs)
    for key in ("sr", "upsample_rate", "overlapped_len"):
        assert standin.vocoder_configs[key] == tts.vocoder_configs[key]
    assert (standin.configs.use_vocoder, standin.configs.sampling_rate) == (True, tts.configs.sampling_rate)
    assert set(standin.prompt_cache) <= set(tts.prompt_cache) | {"raw_audio", "raw_sr"}
    for name in ("configs", "precision", "vocoder", "vocoder_configs", "prompt_cache", "vits_model"):
        assert hasattr(tts, name) and hasattr(standin, name)
    assert callable(standin.using_vocoder_synthesis_batched_infer)
