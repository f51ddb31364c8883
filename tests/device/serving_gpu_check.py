"""GPU check of the GPT-SoVITS drop-in on the GPU machine: fp16 CUDA tensors in and out of the
wrapper, synchronized latency stats. No engine can run on the H100 (TensorRT-RTX refuses Hopper,
full TensorRT is not installable), so the float32 PyTorch vocoder on the GPU stands behind the
runtime Engine interface. Run from the repository root: python3 tests/device/serving_gpu_check.py"""
import copy, json, sys, time, logging
from pathlib import Path
from types import SimpleNamespace
import torch
sys.path[:0] = [".", "tests"]
from export.checkpoints import load_vocoder
from export.mels import sample_mel
from factories import write_plan
from pipeline.settings import load_settings
from serving.gpt_sovits import EngineVocoder, install
voc = load_vocoder("v4").cuda()
class TorchEngine:  # the float32 PyTorch vocoder on the GPU behind the runtime Engine interface
    def __init__(self, plan):
        self.manifest = json.loads(Path(plan).with_suffix(".json").read_text(encoding="utf-8"))
        self.sampling_rate, self.hop = 48000, 480
    def __call__(self, mel):
        assert mel.is_cuda and mel.dtype == torch.float32, (mel.device, mel.dtype)
        with torch.inference_mode():
            return voc(mel)
s = copy.deepcopy(load_settings()); e = Path("/tmp/e"); e.mkdir(exist_ok=True); s["paths"]["engines"] = str(e)
write_plan(e, vocoder="v4", precision="fp16")  # a manifest as the build writes it; TorchEngine never reads the plan
tts = SimpleNamespace(configs=SimpleNamespace(version="v4", is_half=True, device=torch.device("cuda")),
  precision=torch.float16, vocoder_configs={"sr": 48000, "upsample_rate": 480, "overlapped_len": 12},
  vocoder=copy.deepcopy(voc).half(), init_vocoder=lambda v: None)
stats = install(tts, {"use_tensorrt": True}, settings=s, load_engine=TorchEngine)
assert isinstance(tts.vocoder, EngineVocoder)
mel = torch.from_numpy(sample_mel("v4", 500)).cuda()
with torch.inference_mode():
    ref = voc(mel)
    for _ in range(5): out = tts.vocoder(mel.half())
    print("out", out.dtype, out.device, tuple(out.shape), "max err vs fp32 torch", float((out.float() - ref).abs().max() / ref.abs().max()))
    ts = []
    for _ in range(30):
        torch.cuda.synchronize(); t = time.perf_counter(); voc(mel); torch.cuda.synchronize(); ts.append(time.perf_counter() - t)
    ts.sort(); print("bare fp32 torch median ms", ts[15] * 1000)
    for _ in range(30): tts.vocoder(mel.half())
print(torch.cuda.get_device_name(), stats.snapshot())
