"""Running GPT-SoVITS' real code on this CPU machine, with random weights, at the revisions users run.

Where the code comes from (`sources`): GSV_SOURCE names either a GPT-SoVITS git directory, whose
revisions GSV_REVISIONS lists (comma-separated; default SUPPORTED), each extracted from git into a
temporary folder, or one or more checkouts (os.pathsep-separated), each named by its folder. Every
tree is also tried as the Windows bundle ships it (CRLF line ends) and with a local edit
(`variant`). Nothing of GPT-SoVITS is ever written into this repository.

What is GPT-SoVITS' own code here: TTS_infer_pack/TTS.py (TTS_Config, TTS, init_vits_weights,
init_vocoder, using_vocoder_synthesis, using_vocoder_synthesis_batched_infer, run, audio_postprocess),
module/models.py (SynthesizerTrnV3, CFM, DiT, Generator), BigVGAN/, process_ckpt.py, the three entry
scripts. What is stubbed (`install_stubs`), and why:
- the text front end (TTS_infer_pack.TextPreprocessor, text.LangSegmenter, text.cleaner, text.chinese),
  BERT and cnhubert (`transformers`), the speaker-verification model (`sv`): they need weights and
  language packages that cannot be had here; the vocoder path never reads them;
- the T2S model (AR.models.t2s_lightning_module: pytorch-lightning), `peft` (LoRA only; its merge is
  the identity here): heavy, and not on the vocoder path (the tests hand semantic tokens in);
- `torchaudio` (no wheel pinned to this torch 2.13; the references are given at the CFM's own rate, so
  TTS.py's resample is never called), `pandas` where it is not installed (20250228v3's tools/my_utils
  imports it for nothing on this path) and the UI/server packages (`gradio`, `fastapi`, `uvicorn`,
  `pydantic`: their objects are recorded, servers never started). `forget` takes them out of
  sys.modules again with the revision's own modules.
Installed for real, on PYTHONPATH for this run (pip install --target): einops, x-transformers 1.44.4
(later releases need einx and more), ffmpeg-python, psutil. One
shim: `bigvgan_on_new_hub` (this venv's huggingface_hub 1.x calls BigVGAN's loader without two
arguments it requires; GPT-SoVITS' own environment has huggingface_hub < 1.0).
One size is changed: SynthesizerTrnV3 hard-codes its CFM's DiT at dim 1024, depth 22 (about 300 M
parameters, minutes per CFM chunk on two cores); `small_dit` builds the same DiT class at dim 64,
depth 2. The vocoders keep their upstream sizes, except v3's BigVGAN, whose size comes from its own
config.json (upsample_initial_channel 64 here instead of 1536).
"""
from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path
from unittest import mock

import torch

GSV_SOURCE = os.environ.get("GSV_SOURCE")
SUPPORTED = ("20250228v3", "20250422v4", "20250606v2pro", "48b1a01")
VARIANTS = ("plain", "crlf", "edited")
SKIP_REASON = ("GSV_SOURCE names no GPT-SoVITS (set it to a GPT-SoVITS git directory, e.g. a fetch of "
               "github:RVC-Boss/GPT-SoVITS, with GSV_REVISIONS=20250228v3,48b1a01 or unset for all supported; "
               "or to checkouts outside this repository, separated by os.pathsep)")
V3_DIR = "GPT_SoVITS/pretrained_models/models--nvidia--bigvgan_v2_24khz_100band_256x"
V4_FILE = "GPT_SoVITS/pretrained_models/gsv-v4-pretrained/vocoder.pth"
S2_FILES = {"v2": "GPT_SoVITS/pretrained_models/gsv-v2final-pretrained/s2G2333k.pth",
            "v3": "GPT_SoVITS/pretrained_models/s2Gv3.pth", "v4": "GPT_SoVITS/pretrained_models/gsv-v4-pretrained/s2Gv4.pth"}
T2S_FILE = "GPT_SoVITS/pretrained_models/s1v3.ckpt"
V3_CONFIG = {"resblock": "1", "num_gpus": 0, "batch_size": 32, "learning_rate": 0.0001, "adam_b1": 0.8, "adam_b2": 0.99,
             "lr_decay": 0.9999996, "seed": 1234, "upsample_rates": [4, 4, 2, 2, 2, 2],
             "upsample_kernel_sizes": [8, 8, 4, 4, 4, 4], "upsample_initial_channel": 64,
             "resblock_kernel_sizes": [3, 7, 11], "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
             "use_tanh_at_final": False, "use_bias_at_final": False, "activation": "snakebeta", "snake_logscale": True,
             "use_cqtd_instead_of_mrd": True, "num_mels": 100, "num_freq": 1025, "n_fft": 1024, "hop_size": 256,
             "win_size": 1024, "sampling_rate": 24000, "fmin": 0, "fmax": None, "fmax_for_loss": None}


def is_git_dir(path: Path) -> bool:
    return (path / "HEAD").is_file() and (path / "objects").is_dir()


def sources() -> dict[str, tuple[Path, str | None]]:
    """label -> (git directory, revision) or (checkout, None), from GSV_SOURCE and GSV_REVISIONS."""
    if not GSV_SOURCE:
        return {}
    if is_git_dir(Path(GSV_SOURCE)):
        wanted = os.environ.get("GSV_REVISIONS") or ",".join(SUPPORTED)
        return {revision: (Path(GSV_SOURCE), revision) for revision in wanted.split(",") if revision}
    checkouts = [Path(part) for part in GSV_SOURCE.split(os.pathsep) if part]
    return {folder.name: (folder, None) for folder in checkouts
            if (folder / "GPT_SoVITS" / "TTS_infer_pack" / "TTS.py").is_file()}


def gsv_root() -> Path | None:
    """The first checkout GSV_SOURCE names (None for a git directory: use `sources`)."""
    found = [where for where, revision in sources().values() if revision is None]
    return found[0] if found else None


def materialise(label: str, target: Path) -> Path:
    """The tree of `label` in `target`: extracted from git (blobs the git directory lacks, such as
    large data files, are left out: the vocoder path reads none) or copied from the checkout."""
    where, revision = sources()[label]
    if revision is None:
        shutil.copytree(where, target, ignore=shutil.ignore_patterns(".git"))
        return target
    git = ["git", "--git-dir", str(where)]
    listing = subprocess.run([*git, "ls-tree", "-r", "-z", revision], check=True, capture_output=True).stdout
    blobs = []
    for line in filter(None, listing.decode("utf-8").split("\0")):
        meta, path = line.split("\t", 1)
        mode, kind, oid = meta.split()
        if kind == "blob" and mode != "120000":
            blobs.append((oid, path))
    with subprocess.Popen([*git, "cat-file", "--batch"], stdin=subprocess.PIPE, stdout=subprocess.PIPE) as batch:
        for oid, path in blobs:
            batch.stdin.write(oid.encode("ascii") + b"\n")
            batch.stdin.flush()
            header = batch.stdout.readline().split()
            if header[-1] == b"missing":
                continue
            data = batch.stdout.read(int(header[2]))
            batch.stdout.read(1)
            (target / path).parent.mkdir(parents=True, exist_ok=True)
            (target / path).write_bytes(data)
        batch.stdin.close()
    return target


# a local edit as users make them: (file, upstream's text, the edited text)
LOCAL_EDITS = (
    ("GPT_SoVITS/inference_webui.py", r"(def get_tts_wav\([\s\S]*?top_k=)20", r"\g<1>15"),
    ("GPT_SoVITS/TTS_infer_pack/TTS.py", r"\nclass TTS:\n", "\n# a local note\nclass TTS:  # edited here\n"),
    ("api_v2.py", r'("--port", type=int, default=)"9880"', r'\g<1>"9881"'),
)


def variant(tree: Path, kind: str) -> Path:
    """`tree` as it is ("plain"), with every .py file's line ends CRLF ("crlf", as the Windows bundle
    ships them), or with LOCAL_EDITS made ("edited"). Each edit must take place."""
    if kind == "crlf":
        for path in tree.rglob("*.py"):
            path.write_bytes(path.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    elif kind == "edited":
        for name, pattern, replacement in LOCAL_EDITS:
            text = (tree / name).read_text(encoding="utf-8")
            edited, count = re.subn(pattern, replacement, text, count=1)
            assert count == 1, f"{name}: the local edit {pattern!r} found nothing to edit"
            (tree / name).write_text(edited, encoding="utf-8")
    return tree


STUBBED: dict[str, types.ModuleType] = {}  # what install_stubs put in sys.modules, until `forget`


def forget(root: Path) -> None:
    """Drop the modules imported from `root` (namespace packages too, such as
    GPT_SoVITS/f5_tts/model/backbones), the stubs install_stubs put in sys.modules and `root`'s
    folders on sys.path, so the next revision's code (or another test file's) starts afresh in this
    process."""
    for name, module in list(sys.modules.items()):
        if imported_from(module, str(root)) or STUBBED.get(name) is module:
            del sys.modules[name]
    STUBBED.clear()
    sys.path[:] = [path for path in sys.path if not path.startswith(str(root))]


def imported_from(module: types.ModuleType, root: str) -> bool:
    """Whether `module` is a file under `root`, or a namespace package (no __file__) with a folder there."""
    where = getattr(module, "__file__", None)
    if where:
        return where.startswith(root)
    try:
        return any(str(folder).startswith(root) for folder in getattr(module, "__path__", None) or ())
    except KeyError:  # a namespace package whose parent package is gone already (forgotten just before)
        return True


def permissive(name: str, **attributes) -> types.ModuleType:
    """A module whose every other attribute is a MagicMock (for UI/server packages and models)."""
    module = types.ModuleType(name)
    module.__dict__.update(attributes)

    def attribute_of(attribute: str):
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        return module.__dict__.setdefault(attribute, mock.MagicMock(name=f"{name}.{attribute}"))  # the same each time

    module.__getattr__ = attribute_of
    module.__path__ = []  # a package, so `from name.sub import x` finds the stubbed submodules
    return module


def identity_lora(model, config):
    """peft's get_peft_model as a no-op: a LoRA checkpoint loads its base weights, merges nothing."""
    model.merge_and_unload = lambda: model
    return model


class _BaseModel:  # pydantic.BaseModel for api_v2's request class: only subclassed here
    pass


class StubTextPreprocessor:
    def __init__(self, bert_model, tokenizer, device):
        self.device = device


class StubT2S(torch.nn.Module):
    def __init__(self, config, *args, **kwargs):
        super().__init__()
        self.config = config
        self.model = types.SimpleNamespace(ar_audio_embedding=torch.nn.Embedding(1025, 8))

    def load_state_dict(self, state_dict, strict=True):
        return None


def install_stubs(root: Path) -> None:
    """The stubs above in sys.modules, GPT-SoVITS' folders on sys.path as webui.py's users.pth puts
    them (20250228v3's BigVGAN imports its `activations` from GPT_SoVITS/BigVGAN through it)."""
    for path in (root, root / "GPT_SoVITS", root / "GPT_SoVITS" / "BigVGAN", root / "tools"):
        if str(path) not in sys.path:
            sys.path.append(str(path))
    stubs = {
        "transformers": permissive("transformers"),
        "peft": permissive("peft", get_peft_model=identity_lora),
        "torchaudio": permissive("torchaudio"), "torchaudio.functional": permissive("torchaudio.functional"),
        "torchaudio.transforms": permissive("torchaudio.transforms"),
        "AR.models.t2s_lightning_module": permissive("AR.models.t2s_lightning_module", Text2SemanticLightningModule=StubT2S),
        "feature_extractor.cnhubert": permissive("feature_extractor.cnhubert"),
        "TTS_infer_pack.TextPreprocessor": permissive("TTS_infer_pack.TextPreprocessor", TextPreprocessor=StubTextPreprocessor),
        "GPT_SoVITS.TTS_infer_pack.TextPreprocessor": permissive("GPT_SoVITS.TTS_infer_pack.TextPreprocessor",
                                                                 TextPreprocessor=StubTextPreprocessor),
        "text.LangSegmenter": permissive("text.LangSegmenter"), "text.cleaner": permissive("text.cleaner"),
        "text.chinese": permissive("text.chinese"),
        "sv": permissive("sv"),
        "gradio": permissive("gradio"), "fastapi": permissive("fastapi"), "fastapi.responses": permissive("fastapi.responses"),
        "uvicorn": permissive("uvicorn"), "pydantic": permissive("pydantic", BaseModel=_BaseModel),
    }
    if "pandas" not in sys.modules and importlib.util.find_spec("pandas") is None:  # 20250228v3's tools/my_utils
        stubs["pandas"] = permissive("pandas")  # imports it; never used here
    for name, module in stubs.items():
        if name not in sys.modules:
            sys.modules[name] = STUBBED[name] = module
    import feature_extractor  # the real package, with its cnhubert stubbed

    feature_extractor.cnhubert = sys.modules["feature_extractor.cnhubert"]
    shrink_dit()
    bigvgan_on_new_hub()


def bigvgan_on_new_hub() -> None:
    """huggingface_hub 1.x (this venv) no longer passes `proxies` and `resume_download` to
    `_from_pretrained`, which GPT-SoVITS' BigVGAN requires; GPT-SoVITS' own environment keeps
    huggingface_hub below 1.0 (transformers<5). Default the two, so upstream's from_pretrained runs."""
    import huggingface_hub
    from BigVGAN.bigvgan import BigVGAN

    if int(huggingface_hub.__version__.split(".")[0]) < 1 or getattr(BigVGAN, "_hub_shim", False):
        return
    original = BigVGAN._from_pretrained.__func__

    def _from_pretrained(cls, *, proxies=None, resume_download=False, **kwargs):
        return original(cls, proxies=proxies, resume_download=resume_download, **kwargs)

    BigVGAN._from_pretrained, BigVGAN._hub_shim = classmethod(_from_pretrained), True


def small_dit(**kwargs):
    """The real DiT class at dim 64, depth 2 (SynthesizerTrnV3 asks for 1024 x 22)."""
    from GPT_SoVITS.f5_tts.model.backbones.dit import DiT

    return DiT(dim=64, depth=2, heads=2, dim_head=32, ff_mult=2, text_dim=kwargs["text_dim"],
               conv_layers=kwargs["conv_layers"])


def shrink_dit() -> None:
    """SynthesizerTrnV3 builds `small_dit`, under both names its module is imported by."""
    import GPT_SoVITS.module.models as by_package
    import module.models as by_folder

    for models in (by_package, by_folder):
        models.DiT = small_dit


def s2_config(root: Path, version: str) -> dict:
    """GPT-SoVITS' own s2.json, as the s2 checkpoints of v3/v4 carry it."""
    config = json.loads((root / "GPT_SoVITS" / "configs" / "s2.json").read_text(encoding="utf-8"))
    config["model"]["version"] = version
    return config


def write_s2_checkpoint(root: Path, path: Path, version: str, seed: int) -> None:
    """A SoVITS checkpoint as GPT-SoVITS saves it: v3/v4 in process_ckpt.my_save2's format (torch.save
    bytes whose first two bytes name the model version); v2 (SynthesizerTrn) as a plain torch.save,
    which is all a revision without v3/v4 in TTS.py (20250228v3) loads."""
    from module.models import SynthesizerTrn, SynthesizerTrnV3

    hps = s2_config(root, version)
    torch.manual_seed(seed)
    synthesizer = SynthesizerTrn if version == "v2" else SynthesizerTrnV3
    model = synthesizer(hps["data"]["filter_length"] // 2 + 1, hps["train"]["segment_size"] // hps["data"]["hop_length"],
                        n_speakers=hps["data"]["n_speakers"], **hps["model"])
    buffer = io.BytesIO()
    torch.save({"weight": model.state_dict(), "config": hps, "info": "random weights", "lora_rank": 4}, buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    # v3: the head of a full v3 model; v4 has none (trained v4 models are LoRAs over the base s2Gv4.pth,
    # which upstream knows by its md5): a v4 LoRA whose base is this same file
    head = {"v2": buffer.getvalue()[:2], "v3": b"02", "v4": b"04"}[version]
    path.write_bytes(head + buffer.getvalue()[2:])


def write_vocoders(work: Path, versions: tuple[str, ...] | None = None, seed: int = 5) -> None:
    """v3: BigVGAN folder (config.json + bigvgan_generator.pt, weight norm kept, as NVIDIA's);
    v4: vocoder.pth, a plain state dict after weight-norm removal; both from upstream's own classes."""
    from BigVGAN.bigvgan import BigVGAN
    from BigVGAN.env import AttrDict
    from module.models import Generator

    from pipeline.settings import VOCODERS  # here: webui.py's children import this file without the project

    versions = VOCODERS if versions is None else versions
    torch.manual_seed(seed)
    folder = work / V3_DIR
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(V3_CONFIG), encoding="utf-8")
    torch.save({"generator": BigVGAN(AttrDict(V3_CONFIG)).state_dict()}, folder / "bigvgan_generator.pt")
    if "v4" not in versions:
        return
    v4 = Generator(initial_channel=100, resblock="1", resblock_kernel_sizes=[3, 7, 11],
                   resblock_dilation_sizes=[[1, 3, 5]] * 3, upsample_rates=[10, 6, 2, 2, 2], upsample_initial_channel=512,
                   upsample_kernel_sizes=[20, 12, 4, 4, 4], gin_channels=0, is_bias=True)
    v4.remove_weight_norm()
    (work / V4_FILE).parent.mkdir(parents=True, exist_ok=True)
    torch.save(v4.state_dict(), work / V4_FILE)


def write_t2s_checkpoint(work: Path) -> None:
    (work / T2S_FILE).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": {"data": {"max_sec": 54}}, "weight": {}}, work / T2S_FILE)


def write_yaml(work: Path, version: str, tensorrt: dict | None) -> Path:
    """GPT_SoVITS/configs/tts_infer.yaml with a `custom:` for `version` on the CPU and a `tensorrt:` section."""
    import yaml

    custom = {"device": "cpu", "is_half": False, "version": version, "t2s_weights_path": T2S_FILE,
              "vits_weights_path": S2_FILES[version], "bert_base_path": "GPT_SoVITS/pretrained_models/bert",
              "cnhuhbert_base_path": "GPT_SoVITS/pretrained_models/hubert"}
    path = work / "GPT_SoVITS" / "configs" / "tts_infer.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"custom": custom, **({"tensorrt": tensorrt} if tensorrt is not None else {})}
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


class EngineDouble:
    """The runtime Engine's interface (manifest, sampling_rate, hop, host float32 mel in and audio
    out) computing with upstream's own vocoder class loaded, in float32, from the checkpoint its
    manifest names: what a TensorRT engine built from those weights computes, up to its precision."""

    def __init__(self, plan: Path, device: int = 0):
        self.manifest = json.loads(Path(plan).with_suffix(".json").read_text(encoding="utf-8"))
        self.sampling_rate, self.hop = self.manifest["sampling_rate"], self.manifest["hop"]
        self.module = upstream_vocoder(self.manifest["vocoder"], Path(self.manifest["checkpoint"]["source"]))
        self.calls: list[tuple[int, ...]] = []

    def __call__(self, mel):
        import numpy as np

        if not (isinstance(mel, np.ndarray) and mel.dtype == np.float32):
            raise TypeError(f"the engine takes host float32 mels, got {type(mel).__name__}")
        self.calls.append(mel.shape)
        with torch.inference_mode():
            return self.module(torch.from_numpy(mel)).numpy()


def upstream_vocoder(vocoder: str, checkpoint: Path) -> torch.nn.Module:
    """The vocoder as upstream's init_vocoder loads it, from `checkpoint`, float32, eval."""
    if vocoder == "v3":
        from BigVGAN.bigvgan import BigVGAN

        module = BigVGAN.from_pretrained(str(checkpoint))
    else:
        from module.models import Generator

        module = Generator(initial_channel=100, resblock="1", resblock_kernel_sizes=[3, 7, 11],
                           resblock_dilation_sizes=[[1, 3, 5]] * 3, upsample_rates=[10, 6, 2, 2, 2],
                           upsample_initial_channel=512, upsample_kernel_sizes=[20, 12, 4, 4, 4], gin_channels=0,
                           is_bias=True)
    module.remove_weight_norm()
    if vocoder == "v4":
        module.load_state_dict(torch.load(checkpoint, map_location="cpu"))
    return module.eval().float()


def write_plans(engines: Path, work: Path, versions: tuple[str, ...] | None = None) -> None:
    """fp32 plans (placeholder bytes) whose manifests name the checkpoints in `work` (GPT-SoVITS' own)."""
    from factories import write_plan
    from pipeline.settings import VOCODERS
    from serving.gpt_sovits import checkpoint_sha256

    versions = VOCODERS if versions is None else versions

    for vocoder, checkpoint in (("v3", work / V3_DIR), ("v4", work / V4_FILE)):
        if vocoder not in versions:
            continue
        write_plan(engines, vocoder=vocoder, precision="fp32",
                   checkpoint={"source": str(checkpoint), "sha256": checkpoint_sha256(checkpoint)})
