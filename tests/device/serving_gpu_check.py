"""GPU check of the GPT-SoVITS drop-in on the GPU machine: fp16 CUDA tensors in and out of the
wrapper, synchronized latency stats. No engine can run on the H100 (TensorRT-RTX refuses Hopper,
full TensorRT is not installable), so the float32 PyTorch vocoder on the GPU stands behind the
runtime Engine interface. Run from the repository root: python3 tests/device/serving_gpu_check.py"""
import copy
import json
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch


class TorchEngine:
    """The float32 PyTorch vocoder on the GPU behind the runtime Engine interface."""

    def __init__(self, plan, vocoder):
        self.manifest = json.loads(Path(plan).with_suffix(".json").read_text(encoding="utf-8"))
        self.sampling_rate, self.hop = 48000, 480
        self.vocoder = vocoder

    def __call__(self, mel):
        assert mel.is_cuda and mel.dtype == torch.float32, (mel.device, mel.dtype)
        with torch.inference_mode():
            return self.vocoder(mel)


def median_ms(run, repeats: int = 30) -> float:
    """Median wall time of `run` in ms, the GPU synchronized around each call."""
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        started = time.perf_counter()
        run()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return sorted(times)[repeats // 2] * 1000


def main() -> None:
    sys.path[:0] = [".", "tests"]  # the stages and tests/factories.py, when run as a script from the repository root
    from export.checkpoints import load_vocoder
    from factories import write_plan
    from pipeline.settings import load_settings
    from serving.gpt_sovits import EngineVocoder, install
    from vocoder_models.mels import sample_mel

    vocoder = load_vocoder("v4", settings=load_settings()).cuda()
    settings = copy.deepcopy(load_settings())
    with tempfile.TemporaryDirectory() as engines:
        settings["paths"]["engines"] = engines
        # a manifest as the build writes it, for this GPU (full TensorRT runs here); the plan is never read
        major, minor = torch.cuda.get_device_capability()
        write_plan(Path(engines), vocoder="v4", precision="fp16", backend="tensorrt", targets=[f"SM{major}{minor}"])
        tts = SimpleNamespace(configs=SimpleNamespace(version="v4", is_half=True, device=torch.device("cuda")),
                              precision=torch.float16, vocoder_configs={"sr": 48000, "upsample_rate": 480, "overlapped_len": 12},
                              vocoder=copy.deepcopy(vocoder).half(), init_vocoder=lambda version: None)
        stats = install(tts, {"use_tensorrt": True}, settings=settings,
                        load_engine=lambda plan, device: TorchEngine(plan, vocoder))
    assert isinstance(tts.vocoder, EngineVocoder)
    mel = torch.from_numpy(sample_mel("v4", 500)).cuda()
    with torch.inference_mode():
        reference = vocoder(mel)
        for _ in range(5):
            out = tts.vocoder(mel.half())
        error = float((out.float() - reference).abs().max() / reference.abs().max())
        print("out", out.dtype, out.device, tuple(out.shape), "max err vs fp32 torch", error)
        print("bare fp32 torch median ms", median_ms(lambda: vocoder(mel)))
        for _ in range(30):
            tts.vocoder(mel.half())
    print(torch.cuda.get_device_name(), stats.snapshot())


if __name__ == "__main__":
    main()
