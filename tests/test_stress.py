"""Stress checkpoints in the upstream layouts, written by the documented command: large gains and
Snake log-alpha/beta in [-1, 1] drive v3's activations into the thousands (PyTorch float32 itself then
strays past the export bar from float64) and v4's past float16's range. Each must export through the
float32-aware oracle, and its fp16 choice must meet the bar; v3 at one short length here (the full
lengths are `make engines` on the same checkpoint, see docs/guides/export-and-build.md)."""
from __future__ import annotations

import copy
import json
import logging

import pytest
import torch

from export import synthetic
from export.checkpoints import load_vocoder
from export.clean import clean
from export.to_onnx import onnx_from_module, pytorch_audio, verify_export
from half_checks import assert_meets_bar_against_pytorch, assert_precision_types_hold, fp16_bar
from pipeline.errors import UserError
from pipeline.onnx_tools import cpu_session, run_audio
from pipeline.quality import max_error_over_peak, meets_bar
from pipeline.settings import VOCODERS, load_settings
from vocoder_models.mels import sample_mel

FLOAT16_MAX = 65504.0


SHORT_LENGTHS = [7]  # frames the tests verify the precision choices at; the full lengths run in `make engines`


@pytest.fixture(scope="module")
def stress(tmp_path_factory) -> dict:
    """Per vocoder: the checkpoint written as upstream lays it out by what `python -m export.synthetic
    --kind stress` runs, the module loaded back from it, and its export."""
    folder = tmp_path_factory.mktemp("stress")
    made = {}
    for vocoder, target in (("v4", folder / "gsv-v4-pretrained" / "vocoder.pth"), ("v3", folder / "bigvgan")):
        written = synthetic.write_checkpoint("stress", vocoder, target, load_settings())
        module = load_vocoder(vocoder, written["path"], settings=load_settings())
        made[vocoder] = {**written, "module": module, "folder": folder,
                         "onnx": onnx_from_module(module, vocoder, folder / f"{vocoder}.onnx", settings=load_settings(),
                                                          measure_stream=False)}
    return made


def test_stress_checkpoints_load_from_the_upstream_layouts(stress):
    assert stress["v3"]["module"].source["checkpoint"].endswith("bigvgan/bigvgan_generator.pt")
    assert stress["v4"]["module"].source["checkpoint"].endswith("gsv-v4-pretrained/vocoder.pth")
    assert all(entry["module"].source["sha256"] != "synthetic" for entry in stress.values())


@pytest.mark.parametrize("vocoder, floor", [("v3", 1000.0), ("v4", FLOAT16_MAX)])
def test_stress_activations_are_large(stress, vocoder, floor):
    print(f"\n{vocoder} stress: activation peak {stress[vocoder]['activation_peak']:.0f} at {stress[vocoder]['layer']}")
    assert stress[vocoder]["activation_peak"] > floor


def test_v3_stress_exports_although_pytorch_float32_is_past_the_bar(stress):
    """The export the old gate refused: ONNX Runtime and PyTorch float32 differ by more than the
    bar, because both are that far from float64; the oracle lets it through."""
    entry = stress["v3"]
    mel = sample_mel("v3", 7, seed=load_settings()["export"]["mel_seed"])
    disagreement = max_error_over_peak(pytorch_audio(entry["module"], mel), run_audio(cpu_session(entry["onnx"]), mel))
    print(f"\nv3 stress: ONNX Runtime vs PyTorch float32 {disagreement:.2e} of peak at 7 frames")
    assert disagreement > load_settings()["export"]["parity_rel_tol"]
    assert entry["onnx"].is_file()


def test_v3_stress_export_still_refuses_a_planted_wrong_weight(stress):
    """The oracle allows for float32's large noise on this checkpoint, not for a graph of another
    function: the module with one convolution 1 % off is refused, in one line, against the export."""
    planted = copy.deepcopy(stress["v3"]["module"])
    with torch.no_grad():
        planted.resblocks[9].convs1[1].weight *= 1.01
    with pytest.raises(UserError) as refused:
        verify_export(planted, "v3", stress["v3"]["onnx"], load_settings())
    message = str(refused.value)
    print(f"\nv3 stress, planted weight: error: {message}")
    assert "\n" not in message and "from float64 PyTorch" in message and "report this export" in message


@pytest.mark.parametrize("vocoder", VOCODERS)
def test_stress_fp16_choice_meets_the_bar(stress, vocoder, caplog):
    """Plain half misses the bar; the chosen mixed model keeps it, at a short length, with its float32
    nodes really float32, and the command warns when little runs in half."""
    entry = stress[vocoder]
    output = entry["folder"] / f"{vocoder}.fp16.onnx"
    with caplog.at_level(logging.WARNING, logger="clean"):
        clean(entry["onnx"], "fp16", output, settings=load_settings(), verify_frames=SHORT_LENGTHS)
    record = json.loads(output.with_name(f"{vocoder}.fp16.precision.json").read_text(encoding="utf-8"))
    errors = assert_meets_bar_against_pytorch(entry["module"], output, vocoder, SHORT_LENGTHS)
    print(f"\n{vocoder} stress fp16: {100 * record['fp16_mac_share']:.1f}% of MACs in half, "
          f"{len(record['float32_nodes'])} nodes float32, against PyTorch float32: "
          + ", ".join(f"{f} frames {e['snr_db']:.1f} dB / {e['cosine']:.7f}" for f, e in errors.items()))
    assert not all(meets_bar(e, fp16_bar()) for e in record["errors_all_half"].values()), record["errors_all_half"]
    assert all(meets_bar(e, fp16_bar()) for e in record["errors_chosen"].values()), record["errors_chosen"]
    assert_precision_types_hold(output, record)
    warned = any("fp16 buys little" in r.getMessage() for r in caplog.records)
    assert warned == (record["fp16_mac_share"] < load_settings()["clean"]["min_fp16_mac_share"])
