"""The drop-in and the launcher against GPT-SoVITS' real code, at each revision GSV_SOURCE names.

GSV_SOURCE: a GPT-SoVITS git directory (with GSV_REVISIONS, default the supported four: 20250228v3,
20250422v4, 20250606v2pro, 48b1a01), or checkouts (tests/gsv_real.py). Parametrized by revision:
`-k 48b1a01` runs one. Skipped with its reason when GSV_SOURCE is not set (CI: GPT-SoVITS' code is
never part of this repository). tests/gsv_real.py says what is GPT-SoVITS' own code here and what
is stubbed. Engines cannot execute here, so the drop-in loads `EngineDouble`: the runtime Engine's
interface computing with upstream's own vocoder class, loaded from the checkpoint its manifest names.
"""
from __future__ import annotations

import ast
import importlib
import inspect
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pytest
import torch

import gsv_real
from pipeline.settings import VOCODERS, load_settings
from serving.gpt_sovits.revision import check

REVISIONS = list(gsv_real.sources())
pytestmark = pytest.mark.skipif(not REVISIONS, reason=gsv_real.SKIP_REASON)
TESTS = Path(__file__).resolve().parent
SEED = 1234
# where the launcher must start GPT-SoVITS unchanged: TTS.py has no v3/v4 vocoder at 20250228v3
UNCHANGED = {("20250228v3", "api"), ("20250228v3", "webui-parallel")}
# whether TTS_Config keeps a top-level section not its own (`tensorrt:`): since b921165 (2025-07-18)
KEEPS_SECTIONS = {"20250228v3": False, "20250422v4": False, "20250606v2pro": False, "48b1a01": True}


def snr_db(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.double().flatten(), expected.double().flatten()
    assert actual.shape == expected.shape
    noise = float(((actual - expected) ** 2).sum())
    return float("inf") if noise == 0 else 10 * np.log10(float((expected ** 2).sum()) / noise)


@pytest.fixture(scope="module", params=REVISIONS or ["none"])
def source(request, tmp_path_factory):
    """One revision's tree (extracted from git or copied from the checkout), and its variants as made."""
    label = request.param
    base = tmp_path_factory.mktemp(f"gsv-{label}")
    return SimpleNamespace(label=label, base=base, trees={"plain": gsv_real.materialise(label, base / "plain")})


@pytest.fixture(scope="module")
def gsv(source):
    """A GPT-SoVITS working folder for `source` with random weights in upstream's layouts (cwd: TTS.py
    reads its paths from the working directory at import) and fp32 plans naming those vocoder
    checkpoints. Its modules are dropped afterwards, so the next revision imports its own."""
    label, base, root = source.label, source.base, source.trees["plain"]
    versions = check(root, "webui").vocoders  # 20250228v3: v3 only
    tts = check(root, "api")
    work = base / "work"
    work.mkdir()
    previous = os.getcwd()
    os.chdir(work)
    gsv_real.install_stubs(root)
    gsv_real.write_vocoders(work, versions)
    for seed, version in enumerate(versions):
        gsv_real.write_s2_checkpoint(root, work / gsv_real.S2_FILES[version], version, seed)
    gsv_real.write_t2s_checkpoint(work)
    engines = work / "engines"
    gsv_real.write_plans(engines, work, versions)
    settings = load_settings()
    settings["paths"]["engines"] = str(engines)
    upstream = None if tts.missing else importlib.import_module("TTS_infer_pack.TTS")
    yield SimpleNamespace(label=label, root=root, base=base, work=work, engines=engines, upstream=upstream,
                          settings=settings, versions=versions, tts_missing=tts.missing, trees=source.trees)
    os.chdir(previous)
    gsv_real.forget(root)


def needs_tts(gsv, version: str = "v4"):
    """Skip, with the revision check's reason, where this revision's TTS has no v3/v4 vocoder."""
    if gsv.upstream is None:
        pytest.skip(f"{gsv.label}: TTS.py has no v3/v4 vocoder ({gsv.tts_missing[0]}, ...)")
    if version not in gsv.versions:
        pytest.skip(f"{gsv.label} has no {version}")


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
        refer_spec=[refer_spec_entry(gsv.upstream, torch.rand(1, 1025, 260, generator=generator))],
        raw_audio=torch.randn(1, int(rate * 5.2), generator=generator) * 0.1, raw_sr=rate)
    return tts


def refer_spec_entry(upstream, spec: torch.Tensor):
    """A reference spectrogram as this revision's set_ref_audio stores it: (spec, audio) where its
    _get_ref_spec returns a pair (since v2Pro), the bare spectrogram before (20250422v4)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(upstream.TTS._get_ref_spec)))
    pair = any(isinstance(node, ast.Return) and isinstance(node.value, ast.Tuple) for node in ast.walk(tree))
    return (spec, None) if pair else spec


def tokens(count: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 1024, (1, 1, count), generator=generator), torch.randint(1, 300, (1, 25), generator=generator)


def install_double(gsv, tts):
    from serving.gpt_sovits import install

    return install(tts, settings=gsv.settings, load_engine=gsv_real.EngineDouble)


def synthesis(tts, semantic, phones, **kwargs) -> torch.Tensor:
    torch.manual_seed(SEED)  # the CFM starts from torch.randn
    return tts.using_vocoder_synthesis(semantic, phones, sample_steps=4, **kwargs)


def tts_config_class(gsv):
    """This revision's TTS_Config (20250228v3 has one too, in a TTS.py without v3/v4)."""
    return (gsv.upstream or importlib.import_module("TTS_infer_pack.TTS")).TTS_Config


def test_standin_config_keeps_or_drops_a_tensorrt_section_as_upstream_does(gsv):
    """Upstream's TTS_Config from a tts_infer.yaml with a `tensorrt:` section: kept in default_configs
    and written back by save_configs since b921165 (48b1a01), dropped from both before; the stand-in's
    StandInConfig in this revision's mode does the same."""
    import yaml

    from gpt_sovits_standin import StandInConfig

    version = gsv.versions[-1]
    seen = {}
    for who in ("upstream", "stand-in"):
        path = gsv_real.write_yaml(gsv.work, version, {"use_tensorrt": True})
        if who == "upstream":
            config = tts_config_class(gsv)(str(path))
        else:  # a checkout GSV_SOURCE names by folder: the mode upstream showed
            config = StandInConfig(version, path, KEEPS_SECTIONS.get(gsv.label, seen["upstream"][0]))
        in_memory = "tensorrt" in config.default_configs
        config.save_configs()
        seen[who] = (in_memory, "tensorrt" in yaml.safe_load(path.read_text(encoding="utf-8")))
    print(f"{gsv.label}: a tensorrt: section in tts_infer.yaml kept (in memory, in the file after save_configs): "
          f"upstream {seen['upstream']}, stand-in {seen['stand-in']}")
    assert seen["upstream"] == seen["stand-in"]
    if gsv.label in KEEPS_SECTIONS:
        assert seen["upstream"] == (KEEPS_SECTIONS[gsv.label],) * 2


def test_tensorrt_switches_in_vocoder_tensorrt_yaml_reach_the_drop_in(gsv, caplog):
    """use_tensorrt: false in GPT_SoVITS/configs/vocoder_tensorrt.yaml, and a tts_infer.yaml section that
    says the opposite: through upstream's TTS_Config and its save_configs (at TTS's start and once more)
    the own file is untouched and serves; one line says tts_infer.yaml's section is ignored where this
    revision kept it."""
    import logging

    needs_tts(gsv)
    own = gsv.work / "GPT_SoVITS" / "configs" / "vocoder_tensorrt.yaml"
    own.parent.mkdir(parents=True, exist_ok=True)
    own.write_text("# the drop-in's switches\ntensorrt:\n  use_tensorrt: false\n", encoding="utf-8")
    try:
        tts = make_tts(gsv, "v4", {"use_tensorrt": True, "tensorrt_precision": "fp32"})
        tts.configs.save_configs()
        own_vocoder = tts.vocoder
        with caplog.at_level(logging.INFO, logger="serving"):
            assert install_double(gsv, tts) is None
        assert tts.vocoder is own_vocoder and type(own_vocoder).__name__ == "Generator"
        assert own.read_text(encoding="utf-8") == "# the drop-in's switches\ntensorrt:\n  use_tensorrt: false\n"
    finally:
        own.unlink()
    lines = [record.getMessage() for record in caplog.records]
    print(f"{gsv.label}:\n  " + "\n  ".join(lines))
    ignored = [line for line in lines if "is ignored" in line]
    kept = "tensorrt" in tts.configs.default_configs
    assert kept == KEEPS_SECTIONS.get(gsv.label, kept)
    assert len(ignored) == int(kept) and any("use_tensorrt is off" in line for line in lines)


@pytest.mark.parametrize("version", VOCODERS)
def test_upstream_synthesis_through_the_drop_in_matches_upstream_alone(gsv, version):
    from serving.gpt_sovits import EngineVocoder

    needs_tts(gsv, version)
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
    proof, *calls = tts.vocoder.engine.calls  # the first: the proof at start, on its own fixed mel
    assert proof == (1, 100, gsv.settings["serving"]["gpt_sovits"]["proof_frames"][version])
    print(f"{gsv.label} {version}: using_vocoder_synthesis {snr_db(served, alone):.1f} dB, batched "
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

    needs_tts(gsv, version)
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
        print(f"{gsv.label} {version} streamed on {served_by}: {len(pieces)} pieces over {cfm.call_count} CFM chunks, "
              f"{score:.1f} dB")
        assert cfm.call_count >= 2 and len(pieces) >= 2 and score >= 100


def test_model_switch_with_upstream_init_vits_weights_reattaches(gsv):
    from serving.gpt_sovits import EngineVocoder

    needs_tts(gsv)
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

    needs_tts(gsv)
    tts = make_tts(gsv, "v4")
    own_init, own_vocoder = tts.init_vocoder, tts.vocoder
    install_double(gsv, tts)
    assert install(tts, {"use_tensorrt": False}, settings=gsv.settings) is None
    assert tts.init_vocoder == own_init and tts.vocoder is own_vocoder


def streaming_request(gsv) -> dict:
    """A streaming request as this revision's api_v2 hands it to TTS.run: streaming_mode 2 since
    2025-11-28 (streaming_mode on, return_fragment off), streaming_mode=true before (both on)."""
    modes = check(gsv.root, "api").streaming == "modes"
    return {"streaming_mode": True, "return_fragment": not modes}


@pytest.mark.parametrize("parallel_infer", [True, False], ids=["parallel_infer", "no-parallel_infer"])
def test_a_streaming_request_gets_upstreams_audio(gsv, parallel_infer):
    """TTS.run itself (stub text front end and T2S) for a streaming request, upstream alone and through
    the launcher's run with the engine double serving: the same audio. parallel_infer on (api_v2's
    default): upstream's own run, untouched; off: streamed chunk by chunk, upstream's silence after
    each fragment."""
    from serving.gpt_sovits.fragments import streaming_run

    needs_tts(gsv)
    tts = make_tts(gsv, "v4")
    fragments = {"one.": 110, "two.": 140, "three.": 95}
    inputs = {"text": "one. two. three.", "text_lang": "zh", "ref_audio_path": None, "prompt_text": "prompt.",
              "prompt_lang": "zh", "batch_size": 2, "fragment_interval": 0.3, "sample_steps": 4,
              "parallel_infer": parallel_infer, "split_bucket": False, "seed": SEED,  # run seeds the CFM itself
              **streaming_request(gsv)}
    stub_front_end(tts, fragments)
    torch.manual_seed(SEED)
    alone = list(gsv.upstream.TTS.run(tts, dict(inputs)))
    install_double(gsv, tts)
    stub_front_end(tts, fragments)  # the T2S stub hands out each fragment's tokens once per run
    torch.manual_seed(SEED)
    served = list(streaming_run(tts, dict(inputs), gsv.upstream.TTS.run))
    whole, joined = (np.concatenate([a for _, a in run]) for run in (alone, served))
    silences = [len(a) for _, a in served if not a.any()]
    score = snr_db(torch.from_numpy(joined.astype(np.float64)), torch.from_numpy(whole.astype(np.float64)))
    print(f"{gsv.label} run, parallel_infer {parallel_infer}: upstream {len(alone)} yields, through the launcher "
          f"{len(served)} ({len(served) - len(silences)} audio pieces, silences {silences}); int16 audio "
          f"{'bit-identical' if np.array_equal(joined, whole) else f'{score:.1f} dB'}; "
          f"engine calls {len(tts.vocoder.engine.calls)}")
    assert joined.shape == whole.shape and [rate for rate, _ in served] == [alone[0][0]] * len(served)
    assert tts.vocoder.engine.calls  # the engine served
    if parallel_infer:
        assert len(served) == len(alone) and score >= 100
    else:
        assert silences == [int(tts.configs.sampling_rate * 0.3)] * len(fragments)  # after every fragment
        assert len(served) - len(silences) > len(fragments)  # streamed: several pieces a fragment
        assert score >= 60  # each piece made int16 on its own (upstream's audio_postprocess per piece)


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


def tree(source, variant: str) -> Path:
    """This revision's tree as it is, with CRLF line ends, or with a local edit (gsv_real.variant)."""
    if variant not in source.trees:
        source.trees[variant] = gsv_real.variant(gsv_real.materialise(source.label, source.base / variant), variant)
    return source.trees[variant]


def start(gsv, mode: str, entry: str, root: Path, version: str):
    """tests/gsv_launch.py in a fresh process from the work folder: (console lines of the drop-in,
    what served, the whole stderr)."""
    report = gsv.work / f"{mode}-{entry}.json"
    report.unlink(missing_ok=True)
    paths = [str(TESTS.parent), str(TESTS), os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, paths)), version=version, is_half="False",
               sovits_path=gsv_real.S2_FILES[version], gpt_path=gsv_real.T2S_FILE)
    done = subprocess.run([sys.executable, str(TESTS / "gsv_launch.py"), mode, entry, str(root), str(gsv.engines),
                           str(report)], cwd=gsv.work, env=env, capture_output=True, text=True, encoding="utf-8",
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    console = [line for line in done.stderr.splitlines() if line.startswith("[gsv-vocoder-trt]")]
    return console, json.loads(report.read_text(encoding="utf-8"))


def test_revision_check_is_the_same_with_crlf_and_a_local_edit(source):
    """What the launcher reads from this revision's code (ast only) is the same for the tree as it is,
    with CRLF line ends and with a local edit, for every entry point."""
    for entry in ("api", "webui-parallel", "webui"):
        found = {variant: check(tree(source, variant), entry) for variant in gsv_real.VARIANTS}
        print(f"{source.label} {entry}: missing {len(found['plain'].missing)}, vocoders {found['plain'].vocoders}, "
              f"streaming {found['plain'].streaming or '-'}")
        assert found["crlf"] == found["plain"] == found["edited"]
        if source.label in gsv_real.SUPPORTED:
            assert bool(found["plain"].missing) == ((source.label, entry) in UNCHANGED)


# every entry point as the tree is; CRLF and the local edit with api (api_v2.py and TTS.py edited) and
# webui (inference_webui.py edited, run in two steps by the launcher): webui-parallel reads the same
# TTS.py as api, and starting it again costs minutes on two cores
STARTS = [(entry, variant) for variant in gsv_real.VARIANTS for entry in ("api", "webui-parallel", "webui")
          if variant == "plain" or entry != "webui-parallel"]


@pytest.mark.parametrize(("entry", "variant"), STARTS)
def test_launcher_starts_each_entry_point_as_the_revision_allows(gsv, entry, variant):
    """`python -m serving.gpt_sovits ENTRY` in a fresh process from the GPT-SoVITS folder (the tree as
    it is, with CRLF line ends, with a local edit): the entry point runs to its server's start
    (stubbed: it returns) with the vocoder served by the engine; where this revision's code lacks
    what the drop-in relies on, exactly as it starts without the launcher, with one line saying why."""
    root = tree(gsv, variant)
    revision = check(root, entry)
    version = "v4" if "v4" in gsv.versions else "v3"
    if revision.missing and entry != "webui":  # a TTS.py without v3/v4 (20250228v3) loads a v2 model
        version = "v2"
        gsv_real.write_s2_checkpoint(gsv.root, gsv.work / gsv_real.S2_FILES[version], version, seed=9)
    gsv_real.write_yaml(gsv.work, version, None)  # no tensorrt: section: the defaults serve
    console, served = start(gsv, "launcher", entry, root, version)
    print(f"{gsv.label} {variant} {entry}:\n  " + "\n  ".join(console))
    if gsv.label in gsv_real.SUPPORTED:
        assert bool(revision.missing) == ((gsv.label, entry) in UNCHANGED), revision.missing
    assert served["server_started"]
    if revision.missing:
        _, alone = start(gsv, "plain", entry, root, version)
        assert served == alone and len(console) == 1, (served, alone, console)
        assert "unchanged" in console[0] and "PyTorch" in console[0] and revision.missing[0].split(" (")[0] in console[0]
        return
    assert served[version] == f"{version}.fp32.plan"
    assert any("starting GPT-SoVITS" in line and "drop-in" in line for line in console)
    assert any(f"{version} vocoder: TensorRT engine" in line and f"{version}.fp32.plan" in line for line in console)
    streaming = [line for line in console if "streaming_mode" in line]
    if entry == "api":
        modes = check(root, entry).streaming == "modes"
        wanted = "streaming_mode 2/3 with parallel_infer=false" if modes else "takes streaming_mode as true/false"
        assert len(streaming) == 1 and wanted in streaming[0], streaming
    else:
        assert not streaming
    if entry == "webui" and "v3" in revision.vocoders and version == "v4":
        # a switch to a v3 model: get_tts_wav loads BigVGAN through init_bigvgan
        assert served["v3_after_switch"] == "v3.fp32.plan" and served["get_tts_wav_calls_init_bigvgan"]
    if entry != "webui":
        assert served["run_is_the_launchers"]


def test_standin_is_no_looser_than_upstream(gsv):
    """tests/gpt_sovits_standin.py's TTS keeps upstream's attribute names, vocoder_configs keys and
    values, and this revision's form of the reference, and streams as upstream's does."""
    import gpt_sovits_standin
    from serving.gpt_sovits import stream_vocoder_synthesis

    needs_tts(gsv)
    tts = make_tts(gsv, "v4")
    pair = isinstance(tts.prompt_cache["refer_spec"][0], tuple)
    vocoder = SimpleNamespace(sampling_rate=tts.vocoder_configs["sr"], hop=tts.vocoder_configs["upsample_rate"])
    standin = gpt_sovits_standin.StandInTTS("v4", vocoder, todo_frames=200, refer_pair=pair)
    assert set(standin.vocoder_configs) == set(tts.vocoder_configs)
    for key in ("sr", "upsample_rate", "overlapped_len"):
        assert standin.vocoder_configs[key] == tts.vocoder_configs[key]
    assert (standin.configs.use_vocoder, standin.configs.sampling_rate) == (True, tts.configs.sampling_rate)
    assert set(standin.prompt_cache) <= set(tts.prompt_cache) | {"raw_audio", "raw_sr"}
    assert isinstance(standin.prompt_cache["refer_spec"][0], tuple) == pair
    for name in ("configs", "precision", "vocoder", "vocoder_configs", "prompt_cache", "vits_model"):
        assert hasattr(tts, name) and hasattr(standin, name)
    for name in ("using_vocoder_synthesis", "using_vocoder_synthesis_batched_infer", "init_vocoder"):
        assert list(inspect.signature(getattr(standin, name)).parameters) == \
            list(inspect.signature(getattr(tts, name)).parameters)
    standin.vocoder = lambda mel: torch.zeros(1, 1, mel.shape[2] * vocoder.hop)
    pieces = list(stream_vocoder_synthesis(standin, torch.zeros(1, 1, 30, dtype=torch.long), torch.zeros(1, 5)))
    assert sum(piece.shape[0] for piece in pieces) == int(30 * 4) * vocoder.hop
