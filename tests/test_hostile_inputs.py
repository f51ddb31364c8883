"""Every command and the runtime's Python API against every bad input a user or a broken disk can
produce. Each row names its expected outcome:

- error: one line on stderr, `error: ` plus the named problem and its fix, exit code 2, no
  traceback (an exception escaping `main` fails the row), and no new or half-written file beside
  the inputs (TensorRT-RTX's runtime cache of compiled kernels, kept beside the plan on purpose
  once a plan has run, is not an output); in Python the documented exception
  (runtime.RuntimeUserError or a subclass);
- accepted: the input is converted as stated and the output is right;
- interrupted: Ctrl-C in the middle of the work exits 130 and leaves no partial file.

The runtime rows run against the TensorRT-RTX contract double over the host CUDA double
(tests/trt_double.py): the plan is loaded and executed on CPU, so a mel reaches the engine.
"""
from __future__ import annotations

import copy
import errno
import json
import logging
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import pytest
import torch

import runtime
from build.__main__ import main as build_command
from build.plan import build_plan
from export.__main__ import main as export_main
from export.clean import main as clean_main
from pipeline.settings import VOCODERS, load_settings
from runtime.__main__ import main as runtime_main
from runtime.errors import run_main
from runtime.limits import MAX_FRAMES
from serving.triton_server import main as triton_main
from trt_double import install_on_cpu
from validate.__main__ import main as validate_main
from vocoder_models.layouts import save_v4_checkpoint

REPO = Path(__file__).resolve().parent.parent
PROFILES = [{"name": "short", "min": [1, 1], "opt": [1, 32], "max": [2, 64]},
            {"name": "long", "min": [1, 1], "opt": [1, 64], "max": [1, 128]}]
FULL = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@dataclass(frozen=True)
class Row:
    name: str
    main: Callable
    argv: Callable              # (inputs: Inputs) -> list of arguments
    expect: str                 # "error", "accepted" or "interrupted"
    says: str = ""              # for errors: a phrase the line must contain
    damage: Callable | None = None   # (inputs, monkeypatch) -> None: breaks a file or the machine first


class Inputs:
    """Good inputs in a fresh folder; rows damage copies of them."""

    def __init__(self, folder: Path, onnx_v4: Path, checkpoint: Path, plan: Path):
        self.folder, self.onnx, self.checkpoint, self.plan = folder, onnx_v4, checkpoint, plan
        self.out = folder / "out"

    def file(self, name: str, content: bytes) -> Path:
        path = self.folder / name
        path.write_bytes(content)
        return path

    def mel(self, array: np.ndarray, name: str = "mel.npy") -> Path:
        path = self.folder / name
        np.save(path, array)
        return path

    def manifest(self) -> Path:
        return self.plan.with_suffix(".json")

    def edit_manifest(self, change: Callable[[dict], None]) -> None:
        manifest = json.loads(self.manifest().read_text(encoding="utf-8"))
        change(manifest)
        self.manifest().write_text(json.dumps(manifest), encoding="utf-8")


def speech_mel(frames: int, batch: int = 1) -> np.ndarray:
    from vocoder_models.mels import sample_mel
    return sample_mel("v4", frames, batch=batch, seed=frames)


def truncated(path: Path) -> bytes:
    return path.read_bytes()[: path.stat().st_size // 2]


def interrupted_after(function):
    """`function`, then Ctrl-C: the work is half done and its temporary output exists."""
    def wrapper(*args, **kwargs):
        function(*args, **kwargs)
        raise KeyboardInterrupt
    return wrapper


def raising(error):
    def fail(*args, **kwargs):
        raise error
    return fail


def settings_with_small_profiles() -> dict:
    settings = copy.deepcopy(load_settings())
    for vocoder in VOCODERS:
        settings["profiles"][vocoder] = copy.deepcopy(PROFILES)
    return settings


def build_main(argv) -> int:
    """`python -m build` given the small profiles the double builds quickly, as the command would load them."""
    return build_command(argv, settings=settings_with_small_profiles())


# ---- rows -----------------------------------------------------------------------------------------

def run_cmd(*tail):
    return lambda i: [str(i.plan), *map(str, tail)]


def export_argv(checkpoint: Callable, output: Callable = lambda i: i.out / "v4.onnx") -> Callable:
    return lambda i: ["--vocoder", "v4", "--checkpoint", checkpoint(i), "--output", output(i)]


def bad_file(name: str, content: Callable) -> Callable:
    """(inputs) -> the path of a file `name` holding content(inputs)."""
    return lambda i: i.file(name, content(i))


def clean_argv(source: Callable, output: Callable = lambda i: i.out / "v4.fp32.onnx") -> Callable:
    return lambda i: [source(i), "--precision", "fp32", "--output", output(i)]


def build_argv(source: Callable, output: Callable = lambda i: i.out / "v4.fp32.plan") -> Callable:
    return lambda i: [source(i), "--vocoder", "v4", "--precision", "fp32", "--backend", "tensorrt_rtx", "--output", output(i)]


def blocked(name: str) -> Callable:
    """An output whose folder is a file."""
    return lambda i: i.file("blocker", b"x") / name


def same_copy(name: str, source: Callable) -> Callable:
    """(inputs) -> `name` in the input folder, a copy of source(inputs) made on the first call: a
    command given it as both input and output."""
    def path(i):
        target = i.folder / name
        if not target.exists():
            target.write_bytes(source(i).read_bytes())
        return target
    return path


def v3_folder(config_change: Callable[[dict], None]) -> Callable:
    """(inputs) -> a BigVGAN v2 folder whose config.json is the default one changed; its weights file
    is a readable but empty generator (the config is read and refused first)."""
    def folder(i):
        from vocoder_models.vocoders import BigVGANConfig
        target = i.folder / "bigvgan"
        target.mkdir(exist_ok=True)
        config = {k: v for k, v in BigVGANConfig().__dict__.items()}
        config_change(config)
        (target / "config.json").write_text(json.dumps(config), encoding="utf-8")
        torch.save({"generator": {}}, target / "bigvgan_generator.pt")
        return target
    return folder


def with_metadata(name: str, values: dict) -> Callable:
    """(inputs) -> a copy of the v4 ONNX whose metadata says otherwise."""
    def path(i):
        from pipeline.onnx_metadata import update_metadata
        model = onnx.load(str(i.onnx))
        update_metadata(model, values)
        onnx.save(model, str(i.folder / name))
        return i.folder / name
    return path


def linked_outside(i) -> Path:
    """The v4 ONNX with its weights as external data whose file is a symlink to a folder outside."""
    model = onnx.load(str(i.onnx))
    inside, outside = i.folder / "linked", i.folder / "elsewhere"
    inside.mkdir()
    outside.mkdir()
    onnx.save(model, str(inside / "v4.onnx"), save_as_external_data=True, location="v4.weights", size_threshold=0)
    (inside / "v4.weights").rename(outside / "v4.weights")
    (inside / "v4.weights").symlink_to(outside / "v4.weights")
    return inside / "v4.onnx"


def wav_file(channels: int = 1, rate: int = 32000, samples: bytes = b"\x10\x00" * 4000) -> Callable:
    """(inputs) -> a PCM WAV whose fmt chunk claims `channels` and `rate` (consistent otherwise)."""
    import struct

    def path(i):
        align = max(channels, 1) * 2
        fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * align, align, 16)
        body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(samples)) + samples
        return i.file("claims.wav", b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def recording(i, name: str = "speech.wav", nan: bool = False) -> Path:
    from vocoder_models.mels import speech_like_audio
    audio = speech_like_audio(0.5, 32000)
    if nan:
        audio[100:110] = np.nan
    return runtime.write_wav(i.folder / name, audio, 32000, float32=nan)


def npy_claiming(shape: tuple) -> bytes:
    """A .npy header claiming `shape` (float32) followed by a few bytes."""
    import struct
    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}"
    header += " " * (117 - len(header)) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + b"\0" * 400


EMPTY, TRUNCATED_ONNX, GARBAGE = (lambda i: b""), (lambda i: truncated(i.onnx)), (lambda i: os.urandom(2048))
CHECKPOINT, ONNX = (lambda i: i.checkpoint), (lambda i: i.onnx)
READ_PT, READ_ONNX = "not a readable PyTorch file", "not a readable ONNX model"
IS_INPUT, OUTSIDE = "is also an input of this command", "leads outside"

EXPORT = [
    Row("export: checkpoint missing", export_main, export_argv(lambda i: i.folder / "none.pth"), "error", "not found"),
    Row("export: checkpoint empty", export_main, export_argv(bad_file("e.pth", EMPTY)), "error", READ_PT),
    Row("export: checkpoint truncated", export_main, export_argv(bad_file("t.pth", lambda i: truncated(i.checkpoint))),
        "error", READ_PT),
    Row("export: checkpoint garbage", export_main, export_argv(bad_file("g.pth", GARBAGE)), "error", READ_PT),
    Row("export: checkpoint whose pickle reads a missing memo entry", export_main,
        export_argv(bad_file("m.pth", lambda i: b"h\x05.")), "error", READ_PT),  # KeyError in the unpickler
    Row("export: output folder is a file", export_main, export_argv(CHECKPOINT, blocked("v4.onnx")), "error", "cannot write"),
    Row("export: disk full while saving", export_main, export_argv(CHECKPOINT), "error", "free disk space",
        damage=lambda i, mp: mp.setattr(onnx, "save", raising(FULL))),
    Row("export: Ctrl-C after the graph is written", export_main, export_argv(CHECKPOINT), "interrupted",
        damage=lambda i, mp: mp.setattr(torch.onnx, "export", interrupted_after(torch.onnx.export))),
    Row("export: --output names the checkpoint it reads", export_main, export_argv(CHECKPOINT, CHECKPOINT), "error", IS_INPUT),
    Row("export: BigVGAN config with a negative size", export_main,
        lambda i: ["--vocoder", "v3", "--checkpoint", v3_folder(lambda c: c.update(upsample_initial_channel=-1536))(i),
                   "--output", i.out / "v3.onnx"], "error", "upsample_initial_channel must be a positive integer"),
    Row("export: BigVGAN config without its sizes", export_main,
        lambda i: ["--vocoder", "v3", "--checkpoint", v3_folder(lambda c: c.pop("num_mels"))(i),
                   "--output", i.out / "v3.onnx"], "error", "missing num_mels"),
    Row("export: a usage error (unknown vocoder)", export_main, lambda i: ["--vocoder", "v5", "--output", i.out / "x.onnx"],
        "error", "invalid choice"),
]

CLEAN = [
    Row("clean: ONNX empty", clean_main, clean_argv(bad_file("bad.onnx", EMPTY)), "error", "not a valid ONNX model"),
    Row("clean: ONNX truncated", clean_main, clean_argv(bad_file("bad.onnx", TRUNCATED_ONNX)), "error", "not a valid ONNX model"),
    Row("clean: ONNX garbage", clean_main, clean_argv(bad_file("bad.onnx", GARBAGE)), "error", "not a valid ONNX model"),
    Row("clean: ONNX missing", clean_main, clean_argv(lambda i: i.folder / "none.onnx"), "error", "not found"),
    Row("clean: output folder is a file", clean_main, clean_argv(ONNX, blocked("v4.fp32.onnx")), "error", "cannot write"),
    Row("clean: disk full while saving", clean_main, clean_argv(ONNX), "error", "free disk space",
        damage=lambda i, mp: mp.setattr(onnx, "save", raising(FULL))),
    Row("clean: Ctrl-C while saving", clean_main, clean_argv(ONNX), "interrupted",
        damage=lambda i, mp: mp.setattr(onnx, "save", interrupted_after(onnx.save))),
    Row("clean: --output names the ONNX it reads", clean_main, clean_argv(ONNX, ONNX), "error", IS_INPUT),
    Row("clean: an ONNX already cleaned for fp16, cleaned again as fp32", clean_main,
        clean_argv(with_metadata("v4.fp16.onnx", {"precision": "fp16"})), "error", "already cleaned for fp16"),
    Row("clean: external data linked from outside its folder", clean_main, clean_argv(linked_outside), "error", OUTSIDE),
]

BUILD = [
    Row("build: ONNX empty", build_main, build_argv(bad_file("bad.onnx", EMPTY)), "error", READ_ONNX),
    Row("build: ONNX truncated", build_main, build_argv(bad_file("bad.onnx", TRUNCATED_ONNX)), "error", READ_ONNX),
    Row("build: ONNX garbage", build_main, build_argv(bad_file("bad.onnx", GARBAGE)), "error", READ_ONNX),
    Row("build: ONNX missing", build_main, build_argv(lambda i: i.folder / "none.onnx"), "error", "not found"),
    Row("build: output folder is a file", build_main, build_argv(ONNX, blocked("v4.fp32.plan")), "error", "cannot write"),
    Row("build: disk full while writing the manifest", build_main, build_argv(ONNX), "error", "free disk space",
        damage=lambda i, mp: mp.setattr("build.plan.manifest_text", raising(FULL))),
    Row("build: Ctrl-C while building", build_main, build_argv(ONNX), "interrupted",
        damage=lambda i, mp: mp.setattr("build.plan.build_serialized", raising(KeyboardInterrupt()))),
    Row("build: --output names the ONNX it reads", build_main,
        build_argv(same_copy("model.plan", ONNX), same_copy("model.plan", ONNX)), "error", IS_INPUT),
    Row("build: external data linked from outside its folder", build_main, build_argv(linked_outside), "error", OUTSIDE),
    Row("build: a usage error (no --output)", build_main, lambda i: [i.onnx, "--vocoder", "v4", "--precision", "fp32"],
        "error", "the following arguments are required: --output"),
]

RUNTIME = [
    Row("runtime: plan missing", runtime_main, lambda i: [i.folder / "none.plan", "--mel", i.mel(speech_mel(20)), "--output",
                                                          i.out / "a.wav"], "error", "not found"),
    Row("runtime: manifest missing", runtime_main, run_cmd("--mel", "MEL", "--output", "OUT"), "error", "manifest",
        damage=lambda i, mp: i.manifest().unlink()),
    Row("runtime: manifest not JSON", runtime_main, run_cmd("--mel", "MEL", "--output", "OUT"), "error", "not valid JSON",
        damage=lambda i, mp: i.manifest().write_text("{\"format\": 1,", encoding="utf-8")),
    Row("runtime: manifest lacks a field", runtime_main, run_cmd("--mel", "MEL", "--output", "OUT"), "error", "hop",
        damage=lambda i, mp: i.edit_manifest(lambda m: m.pop("hop"))),
    Row("runtime: manifest field of the wrong type", runtime_main, run_cmd("--mel", "MEL", "--output", "OUT"), "error",
        "n_mels must be a positive integer", damage=lambda i, mp: i.edit_manifest(lambda m: m.update(n_mels="100"))),
    Row("runtime: manifest of another plan", runtime_main, run_cmd("--mel", "MEL", "--output", "OUT"), "error",
        "describes v3.fp16.plan", damage=lambda i, mp: i.edit_manifest(lambda m: m["plan"].update(file="v3.fp16.plan"))),
    Row("runtime: plan truncated", runtime_main, run_cmd("--mel", "MEL", "--output", "OUT"), "error",
        "does not match its manifest", damage=lambda i, mp: i.plan.write_bytes(truncated(i.plan))),
    Row("runtime: plan empty", runtime_main, run_cmd("--mel", "MEL", "--output", "OUT"), "error",
        "does not match its manifest", damage=lambda i, mp: i.plan.write_bytes(b"")),
    Row("runtime: plan garbage of the same size", runtime_main, run_cmd("--mel", "MEL", "--output", "OUT"), "error",
        "sha256 differs", damage=lambda i, mp: i.plan.write_bytes(os.urandom(i.plan.stat().st_size))),
    Row("runtime: garbage plan with a manifest that matches it", runtime_main, run_cmd("--mel", "MEL", "--output", "OUT"),
        "error", "could not load", damage=lambda i, mp: _garbage_with_matching_manifest(i)),
] + [
    Row(f"runtime: mel {kind}", runtime_main, run_cmd("--mel", "MEL:" + kind, "--output", "OUT"), "error", says)
    for kind, says in (("nan", "NaN or Inf"), ("inf", "NaN or Inf"), ("rank4", "(batch, n_mels, frames)"),
                       ("80bands", "80 bands"), ("zero-frames", "empty"), ("batch0", "empty"), ("int", "floating point"),
                       ("text", "not a numeric .npy"), ("missing", "not found"))
] + [
    Row("runtime: output folder is a file", runtime_main, run_cmd("--mel", "MEL", "--output", "BLOCKED"), "error",
        "cannot write"),
    Row("runtime: --output names the mel", runtime_main, run_cmd("--mel", "MEL", "--output", "MELFILE"), "error", IS_INPUT),
    Row("runtime: --output names the plan", runtime_main, lambda i: [i.plan, "--mel", "MEL", "--output", i.plan], "error",
        IS_INPUT),
    Row("runtime: --output names the manifest", runtime_main, lambda i: [i.plan, "--mel", "MEL", "--output", i.manifest()],
        "error", IS_INPUT),
    Row("runtime: mel header claiming a huge shape", runtime_main, run_cmd("--mel", "MEL:bomb", "--output", "OUT"), "error",
        "outside 0..2147483648"),
    Row("runtime: mel header claiming more than the file holds", runtime_main,
        run_cmd("--mel", "MEL:short", "--output", "OUT"), "error", "the file is truncated"),
    Row("runtime: manifest hop of 10**30", runtime_main, run_cmd("--mel", "MEL", "--output", "OUT"), "error",
        "hop 10000000000000000000000000000", damage=lambda i, mp: i.edit_manifest(lambda m: m.update(hop=10 ** 30))),
    Row("runtime: manifest nested 100,000 deep", runtime_main, run_cmd("--mel", "MEL", "--output", "OUT"), "error",
        "nests deeper", damage=lambda i, mp: i.manifest().write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")),
    Row("runtime: manifest without its onnx field", runtime_main, run_cmd("--mel", "MEL", "--output", "OUT"), "error",
        "onnx needs path and sha256", damage=lambda i, mp: i.edit_manifest(lambda m: m.pop("onnx"))),
    Row("runtime: a usage error (no arguments)", runtime_main, lambda i: [], "error",
        "the following arguments are required"),
    Row("runtime: stale temporaries of a killed writer (swept)", runtime_main, run_cmd("--mel", "MEL", "--output", "OUT"),
        "accepted", damage=lambda i, mp: _stale_temporaries(i)),
    Row("runtime: disk full while writing the WAV", runtime_main, run_cmd("--mel", "MEL", "--output", "OUT"), "error",
        "free disk space", damage=lambda i, mp: mp.setattr("runtime.wav._write_pcm16_wav", raising(FULL))),
    Row("runtime: float64 mel (converted to float32)", runtime_main, run_cmd("--mel", "MEL:float64", "--output", "OUT"),
        "accepted"),
    Row("runtime: Fortran-order mel (made contiguous)", runtime_main, run_cmd("--mel", "MEL:fortran", "--output", "OUT"),
        "accepted"),
    Row("runtime: mel longer than every profile (chunked)", runtime_main, run_cmd("--mel", "MEL:long", "--output", "OUT"),
        "accepted"),
]

VALIDATE = [
    Row("validate compare: reference garbage", validate_main, lambda i: ["compare", i.file("r.onnx", os.urandom(999)), i.onnx],
        "error", "ONNX"),
    Row("validate compare: candidate missing", validate_main, lambda i: ["compare", i.onnx, i.folder / "none.onnx"], "error",
        "not found"),
    Row("validate compare: plan whose manifest is broken", validate_main, lambda i: ["compare", i.onnx, i.plan], "error",
        "not valid JSON", damage=lambda i, mp: i.manifest().write_text("[", encoding="utf-8")),
    Row("validate mel: WAV garbage", validate_main, lambda i: ["mel", i.file("in.wav", os.urandom(500)), "--vocoder", "v4",
                                                               "--output", i.out / "m.npy"], "error", "WAV"),
    Row("validate mel: WAV missing", validate_main, lambda i: ["mel", i.folder / "none.wav", "--vocoder", "v4",
                                                               "--output", i.out / "m.npy"], "error", "not found"),
    Row("validate bench: zero frames", validate_main, lambda i: ["bench", "--frames", "0"], "error", "positive"),
    Row("triton: a manifest that is not JSON", triton_main, lambda i: ["--engines", i.folder, "--output", i.out / "triton"],
        "error", "not valid JSON", damage=lambda i, mp: i.manifest().write_text("{{", encoding="utf-8")),
    Row("validate mel: --output names the recording", validate_main,
        lambda i: ["mel", recording(i), "--vocoder", "v4", "--output", i.folder / "speech.wav"], "error", IS_INPUT),
    Row("validate mel: a recording with NaN samples", validate_main,
        lambda i: ["mel", recording(i, "nan.wav", nan=True), "--vocoder", "v4", "--output", i.out / "m.npy"], "error",
        "NaN or Inf samples"),
    Row("validate mel: WAV header with zero channels", validate_main,
        lambda i: ["mel", wav_file(channels=0)(i), "--vocoder", "v4", "--output", i.out / "m.npy"], "error", "channel count"),
    Row("validate mel: WAV header with a rate of 10**9 Hz", validate_main,
        lambda i: ["mel", wav_file(rate=10 ** 9)(i), "--vocoder", "v4", "--output", i.out / "m.npy"], "error", "sample rate"),
    Row("validate mel: a usage error (unknown subcommand)", validate_main, lambda i: ["mell"], "error", "invalid choice"),
    Row("validate compare: across vocoders", validate_main,
        lambda i: ["compare", i.onnx, with_metadata("v3.onnx", {"vocoder": "v3"})(i)], "error", "is the v3 vocoder"),
    Row("validate compare: external data linked from outside its folder", validate_main,
        lambda i: ["compare", i.onnx, linked_outside(i)], "error", OUTSIDE),
] + [
    Row(f"triton: manifest {field} {shown} (model name outside the repository)", triton_main,
        lambda i: ["--engines", i.folder, "--output", i.out / "triton", "--force-rtx"], "error", "not a plain name",
        damage=lambda i, mp, field=field, value=value: i.edit_manifest(lambda m: m.update({field: value(i)})))
    for field, shown, value in (("vocoder", "'../../escaped'", lambda i: "../../escaped"),
                                ("precision", "of an absolute path", lambda i: str(i.folder.parent.resolve() / "escaped")))
] + [
    Row("triton: two manifests for the same Triton model", triton_main,
        lambda i: ["--engines", i.folder, "--output", i.out / "triton", "--force-rtx"], "error", "both the Triton model v4_fp32",
        damage=lambda i, mp: _second_plan_of_the_same_model(i)),
    Row("triton: manifest shape that is an integer", triton_main,
        lambda i: ["--engines", i.folder, "--output", i.out / "triton", "--force-rtx"], "error", "shape must be",
        damage=lambda i, mp: i.edit_manifest(lambda m: m["input"].update(shape=5))),
]


# ---- rows by class: what is never written, what is never read, sizes and values checked before work ----

def special_output(kind: str, name: str = "audio.wav") -> Callable:
    """(inputs) -> an output path in the input folder that exists and is not a regular file (a FIFO, a
    socket, a link to the character device /dev/null, a folder), or `-`, or a legal name of 244 bytes."""
    def path(i):
        target = i.folder / name
        if kind == "fifo":
            os.mkfifo(target)
        elif kind == "socket":
            import socket
            target = i.folder / "s.sock"  # AF_UNIX paths are short: a name beside the inputs, not the full name
            listener = socket.socket(socket.AF_UNIX)
            listener.bind(str(target))
            listener.close()
        elif kind == "null":
            target.symlink_to(os.devnull)
        elif kind == "folder":
            target.mkdir()
        elif kind == "dash":
            target = Path("-")
        elif kind == "long":
            target = i.out / ("a" * 240 + ".wav")
        return target
    return path


def special_input(kind: str, name: str) -> Callable:
    """(inputs) -> an input path that is not a regular file: a FIFO (a reader would wait forever) or a
    folder; or, for "data-fifo", the v4 ONNX whose external-data file is a FIFO."""
    def path(i):
        target = i.folder / name
        if kind == "fifo":
            os.mkfifo(target)
        elif kind == "data-fifo":
            onnx.save(onnx.load(str(i.onnx)), str(target), save_as_external_data=True, location="f.weights",
                      size_threshold=0)
            (i.folder / "f.weights").unlink()
            os.mkfifo(i.folder / "f.weights")
        else:
            target.mkdir()
        return target
    return path


def damaged_checkpoint(kind: str) -> Callable:
    """(inputs) -> a checkpoint damaged as `kind` says: a v4 vocoder.pth with one NaN or Inf weight, a
    malicious pickle, a v3 BigVGAN folder (for --vocoder v4), a folder holding vocoder.pth."""
    def path(i):
        if kind in ("nan", "inf"):
            state = torch.load(i.checkpoint, weights_only=True)
            state["conv_pre.weight"].view(-1)[7] = float(kind)
            torch.save(state, i.folder / f"{kind}.pth")
            return i.folder / f"{kind}.pth"
        if kind == "pickle":
            return i.file("evil.pth", pickle.dumps(RunsACommand(), protocol=4))
        folder = i.folder / kind
        folder.mkdir()
        if kind == "v3-folder":
            (folder / "config.json").write_text("{}", encoding="utf-8")
            (folder / "bigvgan_generator.pt").write_bytes(b"")
        else:
            (folder / "vocoder.pth").write_bytes(i.checkpoint.read_bytes())
        return folder
    return path


class RunsACommand:
    """Pickled, a call of os.system: what a malicious checkpoint holds (torch's weights-only reader refuses it)."""

    def __reduce__(self):
        return (os.system, ("true",))


def bigvgan_built_only_on_meta(i, mp) -> None:
    """BigVGAN may be built from config.json's sizes on torch's meta device only, until the weights
    are known to match them: a real build of a config's plausible but huge sizes costs gigabytes."""
    from export import checkpoints
    real = checkpoints.BigVGAN

    def guarded(*args, **kwargs):
        assert torch.get_default_device().type == "meta", "BigVGAN built from config.json before its sizes were checked"
        return real(*args, **kwargs)
    mp.setattr(checkpoints, "BigVGAN", guarded)


def numpy_short_write(*args, **kwargs):
    """What numpy's tofile raises on a full disk: an OSError without errno."""
    raise OSError("400000 requested and 262112 written")


def cut_wav(length: int) -> Callable:
    """(inputs) -> a PCM WAV cut after `length` bytes (inside its header below 44)."""
    return lambda i: i.file("cut.wav", recording(i).read_bytes()[:length])


def mel_argv(wav: Callable, output: Callable = lambda i: i.out / "m.npy") -> Callable:
    return lambda i: ["mel", wav(i), "--vocoder", "v4", "--output", output(i)]


NOT_REGULAR = "not a regular file"
WRITING = [
    Row("writing: runtime --output a FIFO", runtime_main,
        lambda i: [i.plan, "--mel", "MEL", "--output", special_output("fifo")(i)], "error",
        "is a FIFO (named pipe), " + NOT_REGULAR),
    Row("writing: runtime --output a socket", runtime_main,
        lambda i: [i.plan, "--mel", "MEL", "--output", special_output("socket")(i)], "error", "is a socket"),
    Row("writing: runtime --output a link to /dev/null", runtime_main,
        lambda i: [i.plan, "--mel", "MEL", "--output", special_output("null")(i)], "error", "is a character device"),
    Row("writing: runtime --output a folder", runtime_main,
        lambda i: [i.plan, "--mel", "MEL", "--output", special_output("folder")(i)], "error", "is a folder"),
    Row("writing: runtime --output - (refused, not standard output)", runtime_main,
        lambda i: [i.plan, "--mel", "MEL", "--output", special_output("dash")(i)], "error", "is not standard output",
        damage=lambda i, mp: mp.chdir(i.folder)),
    Row("writing: runtime --output a legal 244-byte name", runtime_main,
        lambda i: [i.plan, "--mel", "MEL", "--output", special_output("long")(i)], "accepted"),
    Row("writing: build --output a link to /dev/null", build_main, build_argv(ONNX, special_output("null", "linked.fp32.plan")),
        "error", "is a character device"),
    Row("writing: clean --output a folder (no precision file left)", clean_main,
        clean_argv(ONNX, special_output("folder", "v4.fp32.onnx")), "error", "is a folder"),
    Row("writing: validate mel --output a FIFO", validate_main,
        mel_argv(recording, special_output("fifo", "m.npy")), "error", "is a FIFO"),
    Row("writing: validate mel on a full disk numpy reports without errno", validate_main, mel_argv(recording), "error",
        "is full", damage=lambda i, mp: mp.setattr(np, "save", numpy_short_write)),
    Row("writing: triton on a disk with room for the plan but not its config", triton_main,
        lambda i: ["--engines", i.folder, "--output", i.out / "triton", "--force-rtx"], "error", "is full",
        damage=lambda i, mp: mp.setattr("google.protobuf.text_format.MessageToString", raising(FULL))),
]

INPUTS = [
    Row("inputs: runtime --mel a FIFO", runtime_main,
        lambda i: [i.plan, "--mel", special_input("fifo", "mel.npy")(i), "--output", i.out / "a.wav"], "error",
        "is a FIFO (named pipe), " + NOT_REGULAR),
    Row("inputs: runtime plan a FIFO", runtime_main,
        lambda i: [special_input("fifo", "fifo.plan")(i), "--mel", "MEL", "--output", i.out / "a.wav"], "error", "is a FIFO"),
    Row("inputs: runtime manifest a FIFO", runtime_main, run_cmd("--mel", "MEL", "--output", "OUT"), "error", "is a FIFO",
        damage=lambda i, mp: (i.manifest().unlink(), os.mkfifo(i.manifest()))),
    Row("inputs: export --checkpoint a FIFO", export_main, export_argv(special_input("fifo", "v.pth")), "error", "is a FIFO"),
    Row("inputs: build ONNX a FIFO", build_main, build_argv(special_input("fifo", "f.onnx")), "error", "is a FIFO"),
    Row("inputs: build ONNX whose external data is a FIFO", build_main, build_argv(special_input("data-fifo", "f.onnx")),
        "error", "is a FIFO"),
    Row("inputs: clean ONNX a folder", clean_main, clean_argv(special_input("folder", "f.onnx")), "error", "is a folder"),
    Row("inputs: validate mel WAV a FIFO", validate_main, mel_argv(special_input("fifo", "in.wav")), "error", "is a FIFO"),
    Row("inputs: validate compare candidate a FIFO", validate_main,
        lambda i: ["compare", i.onnx, special_input("fifo", "c.plan")(i)], "error", "is a FIFO"),
    Row("inputs: export --vocoder v4 given a v3 BigVGAN folder", export_main, export_argv(damaged_checkpoint("v3-folder")),
        "error", "is a BigVGAN v2 folder (the v3 vocoder"),
    Row("inputs: export --vocoder v4 given the folder holding vocoder.pth", export_main,
        export_argv(damaged_checkpoint("v4-folder")), "error", "pass the v4 checkpoint file inside it"),
    Row("inputs: checkpoint a malicious pickle (no warning before the line)", export_main,
        export_argv(damaged_checkpoint("pickle")), "error", READ_PT),
] + [
    Row(f"inputs: WAV cut after {length} bytes, inside its header", validate_main, mel_argv(cut_wav(length)), "error",
        "ends inside its WAV header") for length in (6, 18, 30)
]

SIZES = [
    Row("sizes: v4 checkpoint with one NaN weight (the reach would double its mel forever)", export_main,
        export_argv(damaged_checkpoint("nan")), "error", "NaN or Inf weights in conv_pre.weight (1 of"),
    Row("sizes: v4 checkpoint with one Inf weight", export_main, export_argv(damaged_checkpoint("inf")), "error",
        "NaN or Inf weights"),
    Row("sizes: BigVGAN config of plausible but huge sizes (checked against the weights first)", export_main,
        lambda i: ["--vocoder", "v3", "--checkpoint", v3_folder(lambda c: c.update(upsample_initial_channel=1536 * 1024))(i),
                   "--output", i.out / "v3.onnx"], "error", "does not match the BigVGAN layout",
        damage=bigvgan_built_only_on_meta),
] + [
    Row(f"sizes: BigVGAN config whose {what} leaves the weights' shapes alone", export_main,
        lambda i, change=change: ["--vocoder", "v3", "--checkpoint", v3_folder(change)(i), "--output", i.out / "v3.onnx"],
        "error", says, damage=bigvgan_built_only_on_meta)
    for what, change, says in (("hop is 4 million", lambda c: c.update(upsample_rates=[1000, 1000, 2, 2, 2, 2]), "hop"),
                               ("dilation is 10**9", lambda c: c.update(resblock_dilation_sizes=[[1, 3, 10 ** 9]] * 3),
                                "resblock_dilation_sizes is 1000000000"))
]



# ---- configuration values: pipeline.toml, checked whole at load (pipeline/schema.py) -------------

def pipeline_toml(change: Callable[[str], str] | None = None, make: Callable[[Path], None] | None = None) -> Callable:
    """Damage for the configuration-values class: every command reads, in place of the repository's
    pipeline.toml, a copy changed by `change` (text -> text), or what `make` puts at its path."""
    def damage(i, monkeypatch):
        from pipeline.settings import CONFIG_PATH
        path = i.folder.parent / "pipeline.toml"
        if make is not None:
            make(path)
        else:
            path.write_text(change(CONFIG_PATH.read_text(encoding="utf-8")), encoding="utf-8")
        monkeypatch.setattr("pipeline.settings.CONFIG_PATH", path)
    return damage


def replaced(old: str, new: str, last: bool = False) -> Callable[[str], str]:
    def change(text: str) -> str:
        assert old in text, old
        head, _, tail = text.rpartition(old) if last else text.partition(old)
        return head + new + tail
    return change


TRITON = lambda i: ["--engines", i.folder, "--output", i.out / "triton", "--force-rtx"]  # noqa: E731
BUILD_V4 = build_argv(ONNX)

CONFIG_VALUES = [
    Row("config: workspace_gib = inf", build_command, BUILD_V4, "error", "[build] workspace_gib is inf",
        damage=pipeline_toml(replaced("workspace_gib = 4.0", "workspace_gib = inf"))),
    Row("config: workspace_gib = nan", build_command, BUILD_V4, "error", "[build] workspace_gib is nan",
        damage=pipeline_toml(replaced("workspace_gib = 4.0", "workspace_gib = nan"))),
    Row("config: a profile of 10**9 frames (runtime/limits.py)", build_command, BUILD_V4, "error",
        "max[1] is 1000000000; use an integer from 1 to 10000000",
        damage=pipeline_toml(replaced("max = [1, 4000]", "max = [1, 1000000000]", last=True))),
    Row("config: dynamic_batching = \"false\" (a string)", triton_main, TRITON, "error",
        "[serving] dynamic_batching is the text 'false'; use true or false",
        damage=pipeline_toml(replaced("dynamic_batching = true", 'dynamic_batching = "false"'))),
    Row("config: a misspelt key", export_main, export_argv(CHECKPOINT), "error", "unknown key 'workspace_gb'",
        damage=pipeline_toml(replaced("workspace_gib = 4.0", "workspace_gb = 4.0"))),
    Row("config: pipeline.toml is a folder", clean_main, clean_argv(ONNX), "error", "not a regular file",
        damage=pipeline_toml(make=Path.mkdir)),
    Row("config: an array nested 100,000 deep", validate_main, lambda i: ["bench", "--frames", "1"], "error",
        "nests arrays or tables deeper", damage=pipeline_toml(lambda text: text + "deep = " + "[" * 100_000 + "]" * 100_000)),
    Row("config: preferred_batch_sizes = [\"a\"]", triton_main, TRITON, "error", "preferred_batch_sizes[0] is the text 'a'",
        damage=pipeline_toml(replaced("preferred_batch_sizes = []", 'preferred_batch_sizes = ["a"]'))),
    Row("config: max_queue_delay_microseconds = 1e30", triton_main, TRITON, "error", "max_queue_delay_microseconds is 1e+30",
        damage=pipeline_toml(replaced("max_queue_delay_microseconds = 2000", "max_queue_delay_microseconds = 1e30"))),
    Row("config: instance_count = 10**12", triton_main, TRITON, "error", "instance_count is 1000000000000",
        damage=pipeline_toml(replaced("instance_count = 1 ", "instance_count = 1000000000000 "))),
    # tried again: values of my own in the same class
    Row("config: a precision named ../escaped (a path in every file name)", clean_main, clean_argv(ONNX), "error",
        "use a plain name", damage=pipeline_toml(lambda text: text + '\n[precisions."../escaped"]\nonnx_type = "float32"\n')),
    Row("config: an integer of 5,000 digits", build_command, BUILD_V4, "error", "a value Python cannot read",
        damage=pipeline_toml(replaced("optimization_level = 3 ", "optimization_level = 1" + "0" * 5000 + " "))),
    Row("config: opset = 17.0 (a float)", export_main, export_argv(CHECKPOINT), "error", "[export] opset is 17.0",
        damage=pipeline_toml(replaced("opset = 17 ", "opset = 17.0 "))),
    Row("config: report_precision naming no precision", validate_main, lambda i: ["report"], "error",
        "report_precision is the text 'int8', not a precision",
        damage=pipeline_toml(replaced('"fp16"\nreport_inputs', '"int8"\nreport_inputs'))),
    Row("config: a table of profiles for a vocoder v5", build_command, BUILD_V4, "error", "unknown key 'v5'",
        damage=pipeline_toml(lambda text: text + '\n[[profiles.v5]]\nname = "a"\nmin = [1, 1]\nopt = [1, 1]\nmax = [1, 1]\n')),
    Row("config: pipeline.toml is a FIFO (nothing ever written to it)", export_main, export_argv(CHECKPOINT), "error",
        "not a regular file", damage=pipeline_toml(make=lambda path: os.mkfifo(path))),
]

ROWS = EXPORT + CLEAN + BUILD + RUNTIME + VALIDATE + WRITING + INPUTS + SIZES + CONFIG_VALUES


def _stale_temporaries(inputs: Inputs) -> None:
    """What a SIGKILLed writer leaves: its temporary beside the output (and a lock file it held)."""
    inputs.out.mkdir(exist_ok=True)
    (inputs.out / ".audio.wav.k1ll3d.tmp").write_bytes(b"half a WAV")
    (inputs.out / ".audio.wav.lock").write_bytes(b"")


def _second_plan_of_the_same_model(inputs: Inputs) -> None:
    copy_ = inputs.folder / "v4-copy.fp32.plan"
    copy_.write_bytes(inputs.plan.read_bytes())
    manifest = json.loads(inputs.manifest().read_text(encoding="utf-8"))
    manifest["plan"]["file"] = copy_.name
    copy_.with_suffix(".json").write_text(json.dumps(manifest), encoding="utf-8")


def _garbage_with_matching_manifest(inputs: Inputs) -> None:
    import hashlib
    garbage = os.urandom(3000)
    inputs.plan.write_bytes(garbage)
    inputs.edit_manifest(lambda m: m["plan"].update(size=len(garbage), sha256=hashlib.sha256(garbage).hexdigest()))


MELS = {"nan": lambda: np.full((1, 100, 20), np.nan, np.float32), "inf": lambda: np.full((1, 100, 20), np.inf, np.float32),
        "rank4": lambda: np.zeros((1, 1, 100, 20), np.float32), "80bands": lambda: np.zeros((1, 80, 20), np.float32),
        "zero-frames": lambda: np.zeros((1, 100, 0), np.float32), "batch0": lambda: np.zeros((0, 100, 20), np.float32),
        "int": lambda: np.zeros((1, 100, 20), np.int16), "float64": lambda: speech_mel(30).astype(np.float64),
        "fortran": lambda: np.asfortranarray(speech_mel(30)), "long": lambda: speech_mel(300),
        # a broadcast view of 4 bytes claiming one frame past runtime/limits.py: 4 GB once converted
        "past-limit": lambda: np.broadcast_to(np.zeros((1, 1, 1), np.float32), (1, 100, MAX_FRAMES + 1))}
CRAFTED = {"bomb": npy_claiming((1, 100, 10 ** 10)), "short": npy_claiming((1, 100, 30)), "text": b"not numpy at all"}


def resolve(argv: list, inputs: Inputs) -> list[str]:
    """Placeholders in runtime rows: MEL[:kind], OUT, BLOCKED."""
    resolved = []
    for arg in argv:
        if not isinstance(arg, str):
            resolved.append(str(arg))
            continue
        if arg == "MEL":
            arg = inputs.mel(speech_mel(30))
        elif arg.startswith("MEL:"):
            kind = arg[4:]
            if kind in CRAFTED:
                arg = inputs.file("mel.npy", CRAFTED[kind])
            elif kind == "missing":
                arg = inputs.folder / "none.npy"
            else:
                arg = inputs.mel(MELS[kind]())
        elif arg == "MELFILE":
            arg = inputs.folder / "mel.npy"
        elif arg == "OUT":
            arg = inputs.out / "audio.wav"
        elif arg == "BLOCKED":
            arg = inputs.file("blocker", b"x") / "audio.wav"
        resolved.append(str(arg))
    return resolved


# ---- the table ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def v4_checkpoint(tmp_path_factory, vocoder_v4) -> Path:
    return save_v4_checkpoint(tmp_path_factory.mktemp("ckpt") / "vocoder.pth", vocoder_v4)


@pytest.fixture(scope="module")
def built(tmp_path_factory, onnx_v4, v4_checkpoint) -> Inputs:
    """The good inputs, made once for this file: the v4 export, its checkpoint, and a plan the
    TensorRT-RTX double built from that export. No row sees these files: `inputs` copies them."""
    folder = tmp_path_factory.mktemp("built")
    onnx_copy, checkpoint = folder / "v4.onnx", folder / "vocoder.pth"
    shutil.copyfile(onnx_v4, onnx_copy)
    shutil.copyfile(v4_checkpoint, checkpoint)
    with pytest.MonkeyPatch.context() as monkeypatch:
        install_on_cpu(monkeypatch, "tensorrt_rtx-1")
        plan = build_plan(onnx_copy, "v4", "fp32", folder / "v4.fp32.plan", backend="tensorrt_rtx",
                          settings=settings_with_small_profiles())
    return Inputs(folder, onnx_copy, checkpoint, plan)


@pytest.fixture()
def inputs(tmp_path, built, monkeypatch) -> Inputs:
    """The TensorRT-RTX double installed, and the good inputs in a fresh folder: copies of the plan the
    double built from the v4 export and of its manifest (rows damage those in place), and links to the
    58 MB export and checkpoint (rows read those, or damage copies). A plan holds its network: the
    double's runs the built export. The shared files must come out of every row as they went in."""
    install_on_cpu(monkeypatch, "tensorrt_rtx-1")
    folder = tmp_path / "in"
    folder.mkdir()
    for source in (built.plan, built.manifest()):
        shutil.copyfile(source, folder / source.name)
    for source in (built.onnx, built.checkpoint):
        try:
            os.link(source, folder / source.name)
        except OSError:  # a file system without hard links
            shutil.copyfile(source, folder / source.name)
    shared = files_under(built.folder)
    yield Inputs(folder, folder / built.onnx.name, folder / built.checkpoint.name, folder / built.plan.name)
    assert files_under(built.folder) == shared, "a row changed the inputs every row copies"


def files_under(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file's size and modification time: an input replaced by an output shows."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_hostile_input(row: Row, inputs: Inputs, monkeypatch, capsys):
    argv = resolve(row.argv(inputs), inputs)
    if row.damage is not None:
        row.damage(inputs, monkeypatch)
    before = files_under(inputs.folder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = run_main(row.main, argv)
    err = capsys.readouterr().err.strip().splitlines() + shown_warnings(caught)
    after = {name: stat for name, stat in files_under(inputs.folder).items() if not name.endswith(".runtime-cache")}
    added = {name for name in after if name not in before}
    if row.expect == "accepted":
        assert code == 0, err
        samples = _wav_samples(Path(argv[argv.index("--output") + 1]))
        mel = np.load(argv[argv.index("--mel") + 1])
        assert samples == mel.shape[-1] * 480
        assert not [name for name in added if name.endswith((".tmp", ".lock"))], sorted(added)
        assert not list(inputs.folder.rglob("*.tmp")) and not list(inputs.folder.rglob("*.lock")), "stale files not swept"
        return
    assert not added, f"files left behind: {sorted(added)}"
    changed = {name for name, stat in after.items() if name in before and before[name] != stat}
    assert not changed, f"inputs replaced or changed: {sorted(changed)}"
    if row.expect == "interrupted":
        assert code == 130 and len(err) == 1 and "interrupted" in err[0], err
        return
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert row.says in err[0], err[0]


def shown_warnings(caught) -> list[str]:
    """The warnings a user's console shows (Python's default filters hide the deprecation kinds)."""
    hidden = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)
    return [f"warning: {w.message}" for w in caught if not issubclass(w.category, hidden)]


def _wav_samples(path: Path) -> int:
    import wave
    with wave.open(str(path)) as wav:
        return wav.getnframes()


# ---- the same inputs through the runtime's Python API --------------------------------------------


@pytest.mark.parametrize("kind, says", [("nan", "NaN or Inf"), ("rank4", "(batch, n_mels, frames)"), ("80bands", "80 bands"),
                                        ("zero-frames", "empty"), ("batch0", "empty"), ("int", "floating point"),
                                        ("past-limit", "frame count")])
def test_python_api_refuses_bad_mels(kind, says, inputs):
    with runtime.load_engine(inputs.plan) as engine, pytest.raises(runtime.RuntimeUserError, match=says.replace("(", r"\(")
                                                                     .replace(")", r"\)")):
        engine(MELS[kind]())


@pytest.mark.parametrize("damage, exception", [
    (lambda i: i.manifest().write_text("{", encoding="utf-8"), runtime.RuntimeUserError),
    (lambda i: i.edit_manifest(lambda m: m.pop("profiles")), runtime.RuntimeUserError),
    (lambda i: i.plan.write_bytes(truncated(i.plan)), runtime.EngineError),
    (lambda i: _garbage_with_matching_manifest(i), runtime.EngineError),
], ids=["manifest-not-json", "manifest-without-profiles", "plan-truncated", "plan-garbage"])
def test_python_api_refuses_broken_plans(damage, exception, inputs):
    damage(inputs)
    with pytest.raises(exception) as excinfo:
        runtime.load_engine(inputs.plan)
    assert "\n" not in str(excinfo.value)


def test_python_api_accepts_float64_non_contiguous_and_long_mels(inputs):
    from pipeline.onnx_tools import cpu_session, run_audio
    session = cpu_session(inputs.onnx)
    with runtime.load_engine(inputs.plan) as engine:
        mel = speech_mel(30)
        np.testing.assert_array_equal(engine(mel.astype(np.float64)), run_audio(session, mel))
        wide = np.repeat(mel, 2, axis=2)[:, :, ::2]  # a strided view
        np.testing.assert_array_equal(engine(wide), run_audio(session, np.ascontiguousarray(wide)))
        assert engine(speech_mel(300)).shape == (1, 1, 300 * 480)


@pytest.mark.parametrize("contexts", [0, -1, 1.5])
def test_python_api_refuses_contexts_per_profile_below_one(contexts, inputs):
    """0 contexts used to load an engine without slots, whose first call waited forever."""
    with pytest.raises(runtime.RuntimeUserError, match="contexts_per_profile must be a whole number of at least 1"):
        runtime.load_engine(inputs.plan, contexts_per_profile=contexts)


@pytest.mark.parametrize("steps", [2.5, "16", 10 ** 9, [16, 10 ** 9]], ids=["float", "text", "1e9", "list-with-1e9"])
def test_python_api_refuses_stream_steps_before_allocating(steps):
    with pytest.raises(runtime.RuntimeUserError, match="step_frames"):
        runtime.Stream(lambda mel: mel, hop=480, context_frames=4, lookahead_frames=4, step_frames=steps)


def test_python_api_refuses_a_hop_of_10_to_the_30():
    with pytest.raises(runtime.RuntimeUserError, match="hop must be an integer of at least 1 and at most 4096"):
        runtime.Stream(lambda mel: mel, hop=10 ** 30, context_frames=4, lookahead_frames=4, step_frames=8)


def test_python_api_stream_takes_list_pushes_and_refuses_ragged_ones(inputs):
    """A push of nested lists is read as numpy, as engine(...) reads it; a ragged one is one line."""
    mel = speech_mel(40)
    with runtime.load_engine(inputs.plan) as engine:
        with engine.stream(step_frames=8) as stream:
            listed = np.concatenate([stream.push(mel[:, :, :20].tolist()), stream.push(mel[:, :, 20:]), stream.finish()], axis=2)
        with engine.stream(step_frames=8) as stream:
            whole = np.concatenate([stream.push(mel), stream.finish()], axis=2)
        np.testing.assert_array_equal(listed, whole)
        with engine.stream(step_frames=8) as stream, pytest.raises(runtime.RuntimeUserError, match="numpy cannot read"):
            stream.push([[[0.0, 1.0], [0.0]]])


def test_two_builds_of_one_output_take_turns(inputs, monkeypatch):
    """Two writers of one plan: each holds the output's lock from its first byte to the last rename,
    so their builds never overlap and the manifest left describes the plan beside it."""
    import threading

    import build.plan as plan_module
    real, inside, most = plan_module.build_serialized, [0], [0]
    lock = threading.Lock()

    def slow_build(*args, **kwargs):
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.5)  # both would be here at once without the lock
        try:
            return real(*args, **kwargs)
        finally:
            with lock:
                inside[0] -= 1

    monkeypatch.setattr(plan_module, "build_serialized", slow_build)
    output = inputs.out / "v4.fp32.plan"
    settings = [settings_with_small_profiles(), settings_with_small_profiles()]
    settings[1]["profiles"]["v4"] = settings[1]["profiles"]["v4"][:1]  # another plan: one profile, not two
    errors = []

    def build(index):
        try:
            build_plan(inputs.onnx, "v4", "fp32", output, backend="tensorrt_rtx", settings=settings[index])
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=build, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and most[0] == 1
    manifest = runtime.read_manifest(output)
    runtime.check_plan_bytes(manifest, output.read_bytes(), output)
    assert sorted(p.name for p in inputs.out.iterdir()) == ["v4.fp32.json", "v4.fp32.plan"]


def test_make_refuses_a_checkpoint_path_with_a_space():
    """make splits file names at spaces: CHECKPOINT_V4 with one is one line, exit 2, before anything runs."""
    if shutil.which("make") is None:
        pytest.skip("no make on this machine")
    result = subprocess.run(["make", "--no-print-directory", "-n", "engines", "CHECKPOINT_V4=my models/vocoder.pth"],
                            cwd=REPO, capture_output=True, text=True, encoding="utf-8", timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "has a space" in lines[0], lines


def test_non_ascii_path_without_utf8_file_names_is_one_line(tmp_path):
    """LC_ALL=C with PYTHONUTF8=0: Python decodes file names as ASCII, so a non-ASCII path would
    reach TensorRT, ONNX Runtime and torch as other bytes. One line naming PYTHONUTF8=1, exit 2."""
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONIOENCODING": "utf-8"}
    folder = tmp_path / "声码器"
    folder.mkdir()
    result = subprocess.run([sys.executable, "-m", "runtime", str(folder / "v4.plan"), "--mel", str(folder / "m.npy"),
                             "--output", str(folder / "a.wav")], cwd=REPO, env=env, capture_output=True, text=True,
                            encoding="utf-8", timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "PYTHONUTF8=1" in lines[0], result.stderr
    assert list(folder.iterdir()) == []


# Runs `python -m export` as a user would, except that the first step after torch's export (the reach
# measurement, export/reach.py) announces itself and waits: the signal then lands, every time, while the
# temporary ONNX file is written and not renamed (without the seconds of float64 passes before the hold).
HELD_EXPORT = """
import time
import export.to_onnx
def held_measurement(*args, **kwargs):
    print("holding", flush=True)
    time.sleep(300)
export.to_onnx.stream_metadata = held_measurement
from export.__main__ import main
from runtime.errors import run_main
raise SystemExit(run_main(main))
"""


def _as_in_a_terminal():
    """A shell starts a background job (`make test &`, nohup) with SIGINT ignored, and Python keeps an
    ignored SIGINT; the export must then ignore Ctrl-C, so the child gets a terminal's default here."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_real_signal_during_an_export_leaves_nothing(tmp_path, signum):
    """A real SIGINT (Ctrl-C) or SIGTERM (kill, a service manager) to the export while its temporary
    ONNX file is on disk: exit 130, no output and no temporary or lock file."""
    output = tmp_path / "v4.onnx"
    process = subprocess.Popen([sys.executable, "-c", HELD_EXPORT, "--vocoder", "v4", "--output", str(output)],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=_as_in_a_terminal)
    assert process.stdout.readline() == "holding\n", process.communicate(timeout=60)
    assert list(tmp_path.glob(".v4.onnx.*.tmp")), list(tmp_path.iterdir())
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, (process.returncode, stderr)
    assert stderr.strip().splitlines()[-1].startswith("error: interrupted")
    assert list(tmp_path.iterdir()) == []


# ---- sizes: every loop that grows is bounded ------------------------------------------------------


class EveryFrameEverywhere(torch.nn.Module):
    """A stand-in vocoder whose every audio sample depends on every mel frame (the mean over time),
    so no mel is long enough to show where one frame's reach stops."""
    hop, sampling_rate, num_mels = 4, 16000, 100

    def __init__(self):
        super().__init__()
        self.gain = torch.nn.Parameter(torch.ones(1))

    def forward(self, mel):
        level = self.gain * mel.mean(dim=(1, 2), keepdim=True)
        return level.expand(-1, 1, mel.shape[-1] * self.hop)


def test_the_reach_measurement_stops_growing_its_mel():
    from export.reach import stream_metadata
    from pipeline.errors import UserError
    with pytest.raises(UserError, match="far beyond the architecture's reach"):
        stream_metadata(EveryFrameEverywhere(), "v4", 60.0)


# ---- work thrown away: every argument is checked before the first stage --------------------------


@pytest.mark.parametrize("precisions, says", [(["fp8"], "unknown precision 'fp8'"), (["fp16", "fp16"], "fp16 twice")])
def test_bundle_build_checks_every_argument_before_the_first_stage(precisions, says, tmp_path, monkeypatch):
    """In a GPT-SoVITS folder that has both checkpoints, a bad --precisions used to cost the whole
    export (and replace the ONNX file) before the clean stage refused it."""
    from serving.gpt_sovits import bundle_build
    for relative in load_settings()["serving"]["gpt_sovits"]["checkpoints"].values():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"checkpoint")
    monkeypatch.chdir(tmp_path)
    stages = []
    monkeypatch.setattr(bundle_build, "run_step", stages.append)
    with pytest.raises(runtime.RuntimeUserError, match=says):
        bundle_build.main(["--precisions", *precisions])
    assert stages == []


# ---- signals: TensorRT swallows what its callbacks raise ------------------------------------------

# `python -m build` with small profiles, whose first TensorRT log message sends the process a signal:
# the signal then lands inside TensorRT's logger callback, where TensorRT prints a KeyboardInterrupt
# and carries on unless the build holds the signal.
SIGNAL_IN_CALLBACK = """
import copy, logging, os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
from pipeline.settings import VOCODERS, load_settings
settings = copy.deepcopy(load_settings())
for vocoder in VOCODERS:
    settings["profiles"][vocoder] = [{"name": "short", "min": [1, 1], "opt": [1, 32], "max": [1, 64]}]
build_log, signum, sent = logging.getLogger("build"), int(sys.argv.pop(1)), []
real = build_log.log
def signalling_log(level, message, *args, **kwargs):  # TensorRT's logger only: the stage itself uses info/warning
    if not sent:
        sent.append(1)
        os.kill(os.getpid(), signum)
    real(level, message, *args, **kwargs)
build_log.log = signalling_log
from build.__main__ import main
from runtime.errors import run_main
raise SystemExit(run_main(lambda argv: main(argv, settings=settings)))
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_inside_tensorrts_callback_stops_the_build(signum, onnx_v4, tmp_path):
    """The real TensorRT-RTX builder: exit 130 and no plan, not a finished build with exit 0."""
    pytest.importorskip("tensorrt_rtx")
    output = tmp_path / "out" / "v4.fp32.plan"
    result = subprocess.run([sys.executable, "-c", SIGNAL_IN_CALLBACK, str(int(signum)), str(onnx_v4), "--vocoder", "v4",
                             "--precision", "fp32", "--backend", "tensorrt_rtx", "--output", str(output)],
                            cwd=REPO, capture_output=True, text=True, encoding="utf-8", timeout=300)
    assert result.returncode == 130, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith("error: interrupted"), result.stderr[-2000:]
    assert not output.parent.exists() or list(output.parent.iterdir()) == []


# ---- writing: the atomic writer itself -----------------------------------------------------------


def test_an_output_that_is_a_link_is_written_through(tmp_path):
    """Renaming over a symbolic link replaced the link itself (run as root against /dev/stdout, that
    broke the system's link): the target is written, the link stays."""
    target, link = tmp_path / "real.wav", tmp_path / "link.wav"
    target.write_bytes(b"old")
    link.symlink_to(target)
    with runtime.files.atomic_output(link) as tmp:
        tmp.write_bytes(b"new")
    assert link.is_symlink() and target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.wav", "real.wav"]


@pytest.mark.parametrize("name", ["a" * 251 + ".wav", "é" * 125 + ".wav"], ids=["255-ascii", "254-utf8"])
def test_the_longest_legal_output_names_are_written_and_swept(name, tmp_path):
    """The temporary and lock names beside an output of 255 bytes fit too, and a killed writer's
    temporary of such a name is swept by the next writer."""
    output = tmp_path / name
    with runtime.files.atomic_output(output) as tmp:
        assert len(os.fsencode(tmp.name)) <= 255
        stale = tmp.with_name(tmp.name.replace(".tmp", "").rsplit(".", 1)[0] + ".k1ll3d00.tmp")
        stale.write_bytes(b"left by a killed writer")
        tmp.write_bytes(b"whole")
    with runtime.files.atomic_output(output) as tmp:
        tmp.write_bytes(b"again")
    assert [p.name for p in tmp_path.iterdir()] == [name] and output.read_bytes() == b"again"


# ---- the drop-in's call path: one caller's bad mel costs that call only (serving/timed.py) --------

BAD_CALL_MELS = {
    "one NaN value": (lambda: _with(speech_mel(20), np.nan), "NaN or Inf"),
    "one -Inf value (a log of zero)": (lambda: _with(speech_mel(20), -np.inf), "NaN or Inf"),
    "no frames": (lambda: np.zeros((1, 100, 0), np.float32), "empty"),
    "no batch items": (lambda: np.zeros((0, 100, 20), np.float32), "empty"),
    "no batch axis": (lambda: speech_mel(20)[0], "(batch, n_mels, frames)"),
    "80 bands": (lambda: np.zeros((1, 80, 20), np.float32), "80 bands"),
    "integers": (lambda: np.zeros((1, 100, 20), np.int64), "floating point"),
}


def _with(mel: np.ndarray, value: float) -> np.ndarray:
    mel[0, 50, 10] = value
    return mel


def drop_in_vocoders(inputs: Inputs, module, monkeypatch) -> dict:
    """The drop-in's call-path class: both vocoders GPT-SoVITS is given, around its PyTorch v4 module and
    recording into one VocoderStats: the engine (the runtime over the TensorRT-RTX double, the plan of
    `inputs`) and the fast tier (as where CUDA and Triton are present; on this CPU it runs the module)."""
    from serving.gpt_sovits.dropin import EngineVocoder
    from serving.gpt_sovits.plans import load_runtime_engine
    from serving.gpt_sovits.stats import VocoderStats
    from serving.torch_tier import fallback

    stats = VocoderStats(16)
    monkeypatch.setattr(fallback, "choose_tier", lambda device, setting: ("pytorch-fast", "as on a CUDA machine"))
    tier = fallback.fallback_vocoder(module, "v4", "fp32", None, {}, stats.record)
    engine = EngineVocoder(module, load_runtime_engine(inputs.plan), inputs.plan, stats)
    return {"tensorrt": engine, "pytorch-fast": tier, "stats": stats}


@pytest.mark.parametrize("kind", BAD_CALL_MELS, ids=[f"drop-in call: mel with {kind}" for kind in BAD_CALL_MELS])
def test_a_bad_mel_is_refused_for_its_call_only(kind, inputs, vocoder_v4, monkeypatch, caplog):
    import logging

    from pipeline.errors import UserError
    make, says = BAD_CALL_MELS[kind]
    vocoders = drop_in_vocoders(inputs, vocoder_v4, monkeypatch)
    good = torch.from_numpy(speech_mel(20))
    for backend in ("tensorrt", "pytorch-fast"):
        vocoder = vocoders[backend]
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="serving"), torch.inference_mode():
            with pytest.raises(UserError) as refused:
                vocoder(torch.from_numpy(make()))
            audio = vocoder(good)
        assert "\n" not in str(refused.value) and says in str(refused.value), str(refused.value)
        assert [r.getMessage() for r in caplog.records if "refused" not in r.getMessage()] == []  # no hand-over line
        assert len(caplog.records) == 1
        assert audio.shape == (1, 1, 20 * 480) and bool(torch.isfinite(audio).all())
    snapshot = vocoders["stats"].snapshot()
    assert snapshot["tensorrt_calls"] == 1 and snapshot["pytorch_fast_calls"] == 1 and snapshot["pytorch_calls"] == 0
    assert vocoders["tensorrt"].engine is not None  # the engine still serves the process


# ---- configuration values: the `tensorrt:` section of tts_infer.yaml, and install()'s keywords ------

def _alias_bomb(levels: int = 9) -> str:
    """A few hundred bytes of YAML whose last list, expanded, holds 9**levels strings."""
    lines, previous = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]'], "a0"
    for level in range(1, levels):
        lines.append(f"a{level}: &a{level} [{', '.join([f'*{previous}'] * 9)}]")
        previous = f"a{level}"
    return "\n".join(lines) + "\n"


SECTION = "custom:\n  version: v4\ntensorrt:\n"
TTS_INFER = {  # name: (tts_infer.yaml's bytes, what the line says, whether GPT-SoVITS' own loader reads it)
    "use_tensorrt: \"false\" (quoted)": (SECTION + '  use_tensorrt: "false"\n', "use_tensorrt is the text 'false'", True),
    "tensorrt_workspace_size: .inf": (SECTION + "  tensorrt_workspace_size: .inf\n", "tensorrt_workspace_size is inf", True),
    "tensorrt_max_batch_size: 10**12": (SECTION + "  tensorrt_max_batch_size: 1000000000000\n",
                                        "tensorrt_max_batch_size is 1000000000000", True),
    "a list where the precision belongs": (SECTION + "  tensorrt_precision: [fp16, fp32]\n",
                                           "tensorrt_precision is a list of 2 items", True),
    "an alias bomb as a value": (_alias_bomb() + SECTION + "  use_tensorrt: *a8\n", "use_tensorrt is a list of 9 items", True),
    "an alias bomb as the section": (_alias_bomb() + "tensorrt: *a8\n", "`tensorrt:` is a list of 9 items", True),
    "GBK bytes": ((SECTION + "  use_tensorrt: true\n# 显卡\n").encode("gbk"), "not UTF-8", False),
    "a YAML syntax error": (SECTION + "  use_tensorrt: [true\n", "cannot be read as YAML", False),
    # tried again: values of my own in the same class
    "a misspelt key": (SECTION + "  tensorrt_max_batch: 4\n", "unknown key 'tensorrt_max_batch'", True),
    "a precision pipeline.toml lacks": (SECTION + "  tensorrt_precision: int8\n", "not a precision of pipeline.toml", True),
    "a section that is a sentence": ("tensorrt: use it please\n", "`tensorrt:` is the text 'use it please'", True),
    "a table where a switch belongs": (SECTION + "  use_tensorrt: {on: true}\n", "use_tensorrt is a table of 1 key", True),
    "a python tag": (SECTION + "  tensorrt_precision: !!python/name:os.system\n", "cannot be read as YAML", False),
}
KEEPS_OWN_VOCODER = "GPT-SoVITS keeps its own vocoder"


def gpt_sovits_with_tts_infer(folder: Path, content) -> Path:
    """The configuration-values class on the GPT-SoVITS side: a GPT-SoVITS folder whose
    GPT_SoVITS/configs/tts_infer.yaml holds `content` (text or bytes); returns the folder."""
    path = folder / "GPT_SoVITS" / "configs" / "tts_infer.yaml"
    path.parent.mkdir(parents=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return folder


def _refusal_lines(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= 30]


@pytest.mark.parametrize("kind", TTS_INFER, ids=[f"tts_infer.yaml at the launcher: {kind}" for kind in TTS_INFER])
def test_launcher_refuses_a_bad_tensorrt_section_and_gpt_sovits_starts(kind, tmp_path, caplog):
    from serving.gpt_sovits.launcher import webui_options
    content, says, _ = TTS_INFER[kind]
    root = gpt_sovits_with_tts_infer(tmp_path, content)
    with caplog.at_level(logging.WARNING, logger="serving"):
        started = time.perf_counter()
        options = webui_options(root)
        seconds = time.perf_counter() - started
    lines = _refusal_lines(caplog)
    assert options == {"use_tensorrt": False} and len(lines) == 1, lines
    assert says in lines[0] and KEEPS_OWN_VOCODER in lines[0] and len(lines[0]) < 600, lines[0]
    assert seconds < 5, f"{seconds:.1f} s to refuse a few hundred bytes"


@pytest.mark.parametrize("kind", [k for k, (_, _, readable) in TTS_INFER.items() if readable],
                         ids=[f"tts_infer.yaml through install(): {k}" for k, (_, _, r) in TTS_INFER.items() if r])
def test_install_refuses_a_bad_tensorrt_section_and_keeps_the_vocoder(kind, tmp_path, vocoder_v4, caplog):
    """The section as GPT-SoVITS' TTS_Config reads it (yaml.FullLoader: aliases shared, never expanded)."""
    import yaml

    from gpt_sovits_standin import StandInTTS
    from serving.gpt_sovits import install
    content, says, _ = TTS_INFER[kind]
    tts = StandInTTS("v4", vocoder_v4, todo_frames=20)
    tts.configs.default_configs = yaml.load(content, Loader=yaml.FullLoader)
    with caplog.at_level(logging.WARNING, logger="serving"):
        assert install(tts, settings=load_settings()) is None
    lines = _refusal_lines(caplog)
    assert len(lines) == 1 and says in lines[0] and KEEPS_OWN_VOCODER in lines[0] and len(lines[0]) < 600, lines
    assert tts.vocoder is vocoder_v4 and not hasattr(tts, "vocoder_stats")


# this project's own settings file beside tts_infer.yaml (GPT-SoVITS never reads it): a few of the same kinds
OWN_FILE_KINDS = {kind: TTS_INFER[kind][:2] for kind in (
    "use_tensorrt: \"false\" (quoted)", "an alias bomb as the section", "GBK bytes", "a YAML syntax error", "a python tag")}
OWN_FILE_KINDS["a folder"] = (None, "is not a regular file (a folder or a device); make vocoder_tensorrt.yaml a small")


@pytest.mark.parametrize("kind", OWN_FILE_KINDS, ids=[f"vocoder_tensorrt.yaml: {kind}" for kind in OWN_FILE_KINDS])
def test_a_bad_vocoder_tensorrt_yaml_keeps_gpt_sovits_vocoder_at_launcher_and_install(kind, tmp_path, vocoder_v4,
                                                                                     caplog):
    """The own file is read before tts_infer.yaml (whose good section it would override): a bad one is
    one warning naming it, at the launcher and through install(), and GPT-SoVITS keeps its vocoder."""
    from gpt_sovits_standin import StandInConfig, StandInTTS
    from serving.gpt_sovits import install
    from serving.gpt_sovits.launcher import webui_options
    content, says = OWN_FILE_KINDS[kind]
    root = gpt_sovits_with_tts_infer(tmp_path, SECTION + "  use_tensorrt: true\n")
    own = root / "GPT_SoVITS" / "configs" / "vocoder_tensorrt.yaml"
    if content is None:
        own.mkdir()
    else:
        own.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    tts = StandInTTS("v4", vocoder_v4, todo_frames=20, configs=StandInConfig("v4", own.with_name("tts_infer.yaml")))
    with caplog.at_level(logging.WARNING, logger="serving"):
        assert webui_options(root) == {"use_tensorrt": False}
        assert install(tts, settings=load_settings()) is None
    lines = _refusal_lines(caplog)
    assert len(lines) == 2 and all(says in line and KEEPS_OWN_VOCODER in line and len(line) < 600 for line in lines), lines
    assert all("vocoder_tensorrt.yaml" in line for line in lines) and tts.vocoder is vocoder_v4


def test_vocoder_tensorrt_yaml_serves_where_tts_infer_yaml_is_unreadable(tmp_path, caplog):
    from serving.gpt_sovits.launcher import webui_options
    root = gpt_sovits_with_tts_infer(tmp_path, TTS_INFER["GBK bytes"][0])
    (root / "GPT_SoVITS" / "configs" / "vocoder_tensorrt.yaml").write_text("tensorrt:\n  use_tensorrt: false\n",
                                                                         encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="serving"):
        assert webui_options(root) == {"use_tensorrt": False}
    assert not caplog.records


@pytest.mark.parametrize("keywords, says", [
    ({"use_tensorrt": "false"}, "install(): `tensorrt:` use_tensorrt is the text 'false'"),
    ({"tensorrt_workspace_size": float("inf")}, "tensorrt_workspace_size is inf"),
    ({"tensorrt_max_batch_size": 10 ** 12}, "tensorrt_max_batch_size is 1000000000000"),
    ({"tensorrt_precision": ["fp16"] * 10 ** 6}, "tensorrt_precision is a list of 1000000 items"),
    ({"tensorrt_precision": "fp16" * 10 ** 6}, "tensorrt_precision is the text 'fp16fp16"),
    ({"fallback": "turbo"}, "tensorrt_fallback is the text 'turbo'"),
], ids=["quoted false", "inf", "10**12", "a long list", "a long string", "a fallback keyword"])
def test_install_refuses_bad_keywords_in_one_short_line(keywords, says, vocoder_v4):
    from gpt_sovits_standin import StandInTTS
    from pipeline.errors import UserError
    from serving.gpt_sovits import install
    tts = StandInTTS("v4", vocoder_v4, todo_frames=20)
    fallback = keywords.pop("fallback", None)
    with pytest.raises(UserError) as refused:
        install(tts, keywords, settings=load_settings(), fallback=fallback)
    message = str(refused.value)
    assert says in message and "\n" not in message and len(message) < 600, message
    assert tts.vocoder is vocoder_v4


@pytest.mark.parametrize("thing", [None, "tts", {"configs": {}}, torch.nn.Identity()], ids=["None", "a string", "a dict",
                                                                                            "a module"])
def test_install_on_something_that_is_not_a_tts_is_one_line(thing):
    from pipeline.errors import UserError
    from serving.gpt_sovits import install
    with pytest.raises(UserError, match=r"install\(\) takes GPT-SoVITS' TTS object .* without configs; pass the TTS"):
        install(thing, settings=load_settings())


@pytest.mark.parametrize("ending", ["\r\n", "\n"], ids=["CRLF with a byte-order mark (Windows Notepad)", "LF"])
def test_launcher_reads_the_section_whatever_the_line_endings(ending, tmp_path, caplog):
    from serving.gpt_sovits.launcher import webui_options
    text = _alias_bomb() + SECTION + "  use_tensorrt: false\n  tensorrt_precision: fp16\n"
    root = gpt_sovits_with_tts_infer(tmp_path, ("\ufeff" if ending == "\r\n" else "") + text.replace("\n", ending))
    with caplog.at_level(logging.WARNING, logger="serving"):
        assert webui_options(root) == {"use_tensorrt": False, "tensorrt_precision": "fp16"}
    assert _refusal_lines(caplog) == []
