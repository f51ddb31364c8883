"""GPT-SoVITS' own `TTS` on a GPU, with and without the drop-in: v3 and v4, fp16.

Upstream's real code (TTS_infer_pack/TTS.py, SynthesizerTrnV3 with its CFM and DiT, BigVGAN, the v4
Generator) from a checkout named by --gsv, with random weights in upstream's layouts at upstream's
sizes; stubbed only what tests/gsv_real.py stubs (the text front end, BERT, cnhubert, the
speaker-verification model, the T2S model: semantic tokens are handed in). No TensorRT engine runs on
Hopper (TensorRT-RTX refuses it), so the drop-in serves its fast tier, after its proof at start.

Per version, for a few sentences of semantic tokens, upstream alone and then through the drop-in:
- `using_vocoder_synthesis` (one sentence a call: api_v2 with parallel_infer off, the default UI's
  path), twice (the first pass includes the first use of each shape);
- `using_vocoder_synthesis_batched_infer` over all sentences (api_v2's default, parallel_infer on);
- the streaming path (serving.gpt_sovits.synthesis.stream_vocoder_synthesis): time to first audio;
- the vocoder's time (its module's calls, synchronised) and share of each, the audio's SNR against
  upstream's (same seed), and the proof's line and the time `install` took.

    python3 tests/device/gpt_sovits_gpu.py --gsv GSV_CHECKOUT --output report.txt          # GPU
    python3 tests/device/gpt_sovits_gpu.py --gsv GSV_CHECKOUT --output report.txt --small  # CPU dry run

--small: the CPU dry run of this script (v3's BigVGAN and the DiT at the small sizes of
tests/gsv_real.py, 4 CFM steps, fp32, the fast tier forced on the CPU, where it calls the module).
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from pipeline.settings import VOCODERS  # noqa: E402

SEED = 1234
SENTENCES = {"full": (120, 200, 280), "small": (60, 90)}  # semantic tokens (25 a second)
STEPS = {"full": 32, "small": 4}  # CFM sample steps (api_v2's default: 32)
LINES: list[str] = []


def say(text: str = "") -> None:
    print(text, flush=True)
    LINES.append(text)


class LogLines(logging.Handler):
    """The drop-in's console lines (logger "serving"), as the launcher shows them."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(f"[gsv-vocoder-trt] {record.getMessage()}")


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


@contextlib.contextmanager
def vocoder_time(tts, device):
    """Seconds spent in `tts.vocoder`'s calls (synchronised on entry and exit of each call)."""
    spent, starts = [], []

    def before(module, args):
        sync(device)
        starts.append(time.perf_counter())

    def after(module, args, output):
        sync(device)
        spent.append(time.perf_counter() - starts.pop())

    handles = [tts.vocoder.register_forward_pre_hook(before), tts.vocoder.register_forward_hook(after)]
    try:
        yield spent
    finally:
        for handle in handles:
            handle.remove()


def snr_db(actual, expected) -> float:
    actual = np.asarray(actual, dtype=np.float64).reshape(-1)
    expected = np.asarray(expected, dtype=np.float64).reshape(-1)
    if actual.shape != expected.shape:
        return float("nan")
    noise = float(((actual - expected) ** 2).sum())
    return float("inf") if noise == 0 else 10 * np.log10(float((expected ** 2).sum()) / noise)


def host(audio) -> np.ndarray:
    return audio.detach().float().cpu().numpy()


# --- GPT-SoVITS at upstream's sizes --------------------------------------------------------------

def prepare(gsv: Path, work: Path, size: str, device: str, half: bool):
    """Upstream's modules importable (stubs as tests/gsv_real.py), checkpoints with random weights."""
    os.environ["GSV_SOURCE"] = str(gsv)
    os.chdir(work)
    import gsv_real

    gsv_real.install_stubs(gsv)
    if size == "full":
        full_dit()
    v3_config = {"upsample_initial_channel": 1536} if size == "full" else {}
    with mock.patch.dict(gsv_real.V3_CONFIG, v3_config):
        gsv_real.write_vocoders(work)
    for seed, version in enumerate(VOCODERS):
        gsv_real.write_s2_checkpoint(gsv, work / gsv_real.S2_FILES[version], version, seed)
    gsv_real.write_t2s_checkpoint(work)
    import TTS_infer_pack.TTS as upstream

    return gsv_real, upstream


def full_dit() -> None:
    """SynthesizerTrnV3's own DiT (dim 1024, depth 22), which gsv_real's stubs shrink for the CPU."""
    import f5_tts.model
    import GPT_SoVITS.module.models as by_package
    import module.models as by_folder

    for models in (by_package, by_folder):
        models.DiT = f5_tts.model.DiT


def write_yaml(gsv_real, work: Path, version: str, device: str, half: bool) -> Path:
    import yaml

    path = gsv_real.write_yaml(work, version, None)
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    document["custom"].update(device=device, is_half=half)
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def make_tts(gsv_real, upstream, work: Path, version: str, device: str, half: bool):
    """upstream's TTS for `version` with a reference prompt as TTS.set_ref_audio leaves it."""
    tts = upstream.TTS(upstream.TTS_Config(str(write_yaml(gsv_real, work, version, device, half))))
    rate = 24000 if version == "v3" else 32000
    generator = torch.Generator().manual_seed(3)
    tts.prompt_cache.update(
        prompt_semantic=torch.randint(0, 1024, (130,), generator=generator),
        phones=torch.randint(1, 300, (30,), generator=generator).tolist(),
        refer_spec=[(torch.rand(1, 1025, 260, generator=generator), None)],
        raw_audio=torch.randn(1, int(rate * 5.2), generator=generator) * 0.1, raw_sr=rate)
    return tts


def sentences(size: str, device: str):
    """(semantic tokens (1, 1, n), phones (1, 25)) per sentence, seeded by its length."""
    made = []
    for count in SENTENCES[size]:
        generator = torch.Generator().manual_seed(count)
        made.append((torch.randint(0, 1024, (1, 1, count), generator=generator).to(device),
                     torch.randint(1, 300, (1, 25), generator=generator).to(device)))
    return made


# --- the measurements ----------------------------------------------------------------------------

def one_by_one(tts, texts, steps: int, device: str) -> dict:
    """using_vocoder_synthesis per sentence: seconds, vocoder seconds, audio (host)."""
    rows = []
    for semantic, phones in texts:
        with vocoder_time(tts, device) as spent:
            torch.manual_seed(SEED)
            sync(device)
            start = time.perf_counter()
            audio = tts.using_vocoder_synthesis(semantic, phones, sample_steps=steps)
            sync(device)
            seconds = time.perf_counter() - start
        rows.append({"seconds": seconds, "vocoder": sum(spent), "audio": host(audio)})
    return {"rows": rows, "seconds": sum(r["seconds"] for r in rows), "vocoder": sum(r["vocoder"] for r in rows),
            "audio_seconds": sum(r["audio"].size for r in rows) / tts.configs.sampling_rate}


def batched(tts, texts, steps: int, device: str) -> dict:
    """using_vocoder_synthesis_batched_infer over all sentences (api_v2's parallel_infer)."""
    idx = [semantic.shape[-1] for semantic, _ in texts]
    tokens = [semantic[0, 0] for semantic, _ in texts]
    phones = [p[0] for _, p in texts]
    with vocoder_time(tts, device) as spent:
        torch.manual_seed(SEED)
        sync(device)
        start = time.perf_counter()
        audio = tts.using_vocoder_synthesis_batched_infer(idx, tokens, phones, sample_steps=steps)
        sync(device)
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "vocoder": sum(spent), "audio": [host(a) for a in audio], "calls": len(spent)}


def streamed(tts, semantic, phones, steps: int, device: str) -> dict:
    """stream_vocoder_synthesis: time to the first piece, to the last, the joined audio."""
    from serving.gpt_sovits import stream_vocoder_synthesis

    torch.manual_seed(SEED)
    sync(device)
    start = time.perf_counter()
    pieces, first = [], None
    for piece in stream_vocoder_synthesis(tts, semantic, phones, sample_steps=steps):
        sync(device)
        first = time.perf_counter() - start if first is None else first
        pieces.append(host(piece))
    return {"first": first, "seconds": time.perf_counter() - start, "pieces": len(pieces),
            "audio": np.concatenate(pieces)}


def counting(tts, counted: dict, key: str, run, *args):
    """`run(*args)`, with the graphs the fast tier captured meanwhile put in `counted[key]`."""
    def captures() -> int:
        stats = getattr(tts.vocoder, "tier_stats", None)
        return stats().get("captures", 0) if stats is not None else 0
    before = captures()
    result = run(*args)
    counted[key] = captures() - before
    return result


def install_drop_in(tts, small: bool):
    """The drop-in as the launcher attaches it (no plans: the fast tier serves); its lines and time."""
    from pipeline.settings import load_settings
    from serving.gpt_sovits import install

    settings = load_settings()
    settings["paths"]["engines"] = str(Path.cwd() / "engines")  # none built: no engine on Hopper
    lines = LogLines()
    logger = logging.getLogger("serving")
    logger.addHandler(lines)
    logger.setLevel(logging.INFO)
    forced = contextlib.nullcontext()
    if small:  # the CPU dry run: the fast tier chosen where it only calls the module
        from serving.torch_tier import fallback
        forced = mock.patch.object(fallback, "choose_tier", lambda device, fallback: ("pytorch-fast", "forced (dry run)"))
    try:
        with forced:
            sync(tts.configs.device)
            start = time.perf_counter()
            install(tts, {"use_tensorrt": True}, settings=settings)
            sync(tts.configs.device)
            seconds = time.perf_counter() - start
    finally:
        logger.removeHandler(lines)
    return seconds, lines.lines


def measure(version: str, gsv_real, upstream, work: Path, size: str, device: str, half: bool) -> dict:
    steps = STEPS[size]
    tts = make_tts(gsv_real, upstream, work, version, device, half)
    texts = sentences(size, device)
    say(f"## {version}: vocoder {type(tts.vocoder).__name__} {next(tts.vocoder.parameters()).dtype}, "
        f"{sum(p.numel() for p in tts.vocoder.parameters()) / 1e6:.1f} M parameters; CFM {steps} steps; "
        f"sentences of {', '.join(str(s[0].shape[-1]) for s in texts)} tokens")
    result = {}
    for served_by in ("upstream", "drop-in"):
        if served_by == "drop-in":
            result["install_seconds"], result["lines"] = install_drop_in(tts, size == "small")
            for line in result["lines"]:
                say(line)
            say(f"install() took {result['install_seconds'] * 1000:.0f} ms (the proof included)")
        counted = {}
        passes = [counting(tts, counted, key, one_by_one, tts, texts, steps, device) for key in ("first", "warm")]
        result[served_by] = {"first": passes[0], "warm": passes[1],
                             "batched": counting(tts, counted, "batched", batched, tts, texts, steps, device)}
        streams = [counting(tts, counted, key, streamed, tts, *texts[-1], steps, device)
                   for key in ("stream_first", "stream")]
        result[served_by]["stream_first"], result[served_by]["stream"] = streams
        if served_by == "drop-in":
            say("graph captures by the fast tier in each path: " + ", ".join(f"{k} {v}" for k, v in counted.items()))
        say(f"{served_by}: {type(tts.vocoder).__name__} serves; done")
    del tts
    if device == "cuda":
        torch.cuda.empty_cache()
    return result


# --- the report ----------------------------------------------------------------------------------

def share(seconds: float, vocoder: float) -> str:
    return f"{vocoder * 1000:.0f} ms ({100 * vocoder / seconds:.0f} %)"


def report(version: str, result: dict) -> None:
    up, dr = result["upstream"], result["drop-in"]
    rows = []
    for label, key in (("one sentence a call, first pass", "first"), ("one sentence a call, warm", "warm")):
        a, b = up[key], dr[key]
        snrs = [snr_db(d["audio"], u["audio"]) for u, d in zip(up[key]["rows"], dr[key]["rows"], strict=True)]
        rows.append((label, f"{a['seconds']:.3f}", share(a["seconds"], a["vocoder"]), f"{b['seconds']:.3f}",
                     share(b["seconds"], b["vocoder"]), f"{min(snrs):.1f}"))
    a, b = up["batched"], dr["batched"]
    snrs = [snr_db(d, u) for u, d in zip(a["audio"], b["audio"], strict=True)]
    rows.append((f"batched (parallel_infer), {a['calls']} vocoder call(s)", f"{a['seconds']:.3f}",
                 share(a["seconds"], a["vocoder"]), f"{b['seconds']:.3f}", share(b["seconds"], b["vocoder"]),
                 f"{min(snrs):.1f}"))
    reference = up["warm"]["rows"][-1]["audio"]
    for label, key in (("streamed, first stream", "stream_first"), ("streamed, warm", "stream")):
        a, b = up[key], dr[key]
        rows.append((f"{label}: time to first audio", f"{a['first']:.3f}", f"{a['pieces']} pieces, {a['seconds']:.3f} s",
                     f"{b['first']:.3f}", f"{b['pieces']} pieces, {b['seconds']:.3f} s",
                     f"{snr_db(b['audio'], reference):.1f} (upstream stream {snr_db(a['audio'], reference):.1f})"))
    audio_seconds = up["warm"]["audio_seconds"]
    say(f"\n### {version}: {audio_seconds:.1f} s of audio in {len(up['warm']['rows'])} sentences; seconds (vocoder share); "
        f"SNR of the drop-in's audio against upstream's (worst sentence)")
    say("| path | upstream s | upstream vocoder | drop-in s | drop-in vocoder | SNR dB |")
    say("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        say("| " + " | ".join(row) + " |")
    determinism = [snr_db(w["audio"], f["audio"]) for f, w in zip(up["first"]["rows"], up["warm"]["rows"], strict=True)]
    say(f"upstream against itself (same seed, second pass): {min(determinism):.1f} dB; warm one-sentence synthesis: "
        f"upstream vocoder {statistics.mean(r['vocoder'] for r in up['warm']['rows']) * 1000:.1f} ms a sentence, "
        f"drop-in {statistics.mean(r['vocoder'] for r in dr['warm']['rows']) * 1000:.1f} ms")
    say(f"time to first audio without streaming = the whole sentence: {up['warm']['rows'][-1]['seconds']:.3f} s upstream, "
        f"{dr['warm']['rows'][-1]['seconds']:.3f} s drop-in")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gsv", type=Path, required=True, help="a GPT-SoVITS checkout (48b1a01)")
    parser.add_argument("--output", type=Path, required=True, help="the report (text)")
    parser.add_argument("--small", action="store_true", help="the CPU dry run (small sizes, fp32)")
    parser.add_argument("--versions", nargs="+", choices=VOCODERS, default=list(VOCODERS),
                        help="the model versions to run, in this order (default: v3 v4)")
    args = parser.parse_args()
    size = "small" if args.small else "full"
    device = "cpu" if args.small else "cuda"
    half = not args.small
    args.output = args.output.resolve()
    gsv = args.gsv.resolve()
    say(f"# tests/device/gpt_sovits_gpu.py, {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}")
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU (dry run)"
    say(f"{name}; torch {torch.__version__}; GPT-SoVITS {gsv}; {'fp16' if half else 'fp32'} on {device}")
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        gsv_real, upstream = prepare(gsv, work, size, device, half)
        results = {}
        for version in args.versions:
            results[version] = measure(version, gsv_real, upstream, work, size, device, half)
            report(version, results[version])
            args.output.write_text("\n".join(LINES) + "\n", encoding="utf-8")
        os.chdir(REPO)
    return 0


if __name__ == "__main__":
    sys.exit(main())
