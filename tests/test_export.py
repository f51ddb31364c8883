"""Export stage: upstream structure, checkpoint layouts, ONNX parity, and the error cases."""
from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from export.__main__ import main as export_main
from export.checkpoints import load_vocoder
from export.to_onnx import pytorch_audio, verify_export
from pipeline.errors import UserError
from pipeline.onnx_metadata import read_metadata
from pipeline.onnx_tools import cpu_session, run_audio
from pipeline.quality import max_error_over_peak
from pipeline.settings import load_settings
from runtime.errors import run_main
from vocoder_models.layouts import add_weight_norm, fold_weight_norm, save_v3_checkpoint, save_v4_checkpoint
from vocoder_models.mels import sample_mel
from vocoder_models.vocoders import BigVGAN, BigVGANConfig, HiFiGAN, HiFiGANConfig

REPO = Path(__file__).resolve().parent.parent


# --- structure pins: keys and shapes derived from the upstream constructor arguments ---------

def expected_v4_shapes() -> dict[str, tuple[int, ...]]:
    shapes = {"conv_pre.weight": (512, 100, 7), "conv_pre.bias": (512,)}
    for i, kernel in enumerate((20, 12, 4, 4, 4)):  # twice the upsampling rates 10, 6, 2, 2, 2
        c_in, c_out = 512 >> i, 512 >> (i + 1)
        shapes[f"ups.{i}.weight"] = (c_in, c_out, kernel)
        shapes[f"ups.{i}.bias"] = (c_out,)
        for j, k in enumerate((3, 7, 11)):
            for conv in ("convs1", "convs2"):
                for d in range(3):
                    shapes[f"resblocks.{3 * i + j}.{conv}.{d}.weight"] = (c_out, c_out, k)
                    shapes[f"resblocks.{3 * i + j}.{conv}.{d}.bias"] = (c_out,)
    shapes.update({"conv_post.weight": (1, 16, 7), "conv_post.bias": (1,)})
    return shapes


def expected_v3_shapes() -> dict[str, tuple[int, ...]]:
    def activation(prefix: str, channels: int) -> dict:
        return {f"{prefix}.act.alpha": (channels,), f"{prefix}.act.beta": (channels,),
                f"{prefix}.upsample.filter": (1, 1, 12), f"{prefix}.downsample.lowpass.filter": (1, 1, 12)}

    shapes = {"conv_pre.weight": (1536, 100, 7), "conv_pre.bias": (1536,)}
    for i, kernel in enumerate((8, 8, 4, 4, 4, 4)):
        c_in, c_out = 1536 >> i, 1536 >> (i + 1)
        shapes[f"ups.{i}.0.weight"] = (c_in, c_out, kernel)
        shapes[f"ups.{i}.0.bias"] = (c_out,)
        for j, k in enumerate((3, 7, 11)):
            block = f"resblocks.{3 * i + j}"
            for conv in ("convs1", "convs2"):
                for d in range(3):
                    shapes[f"{block}.{conv}.{d}.weight"] = (c_out, c_out, k)
                    shapes[f"{block}.{conv}.{d}.bias"] = (c_out,)
            for a in range(6):
                shapes.update(activation(f"{block}.activations.{a}", c_out))
    shapes.update(activation("activation_post", 24))
    shapes["conv_post.weight"] = (1, 24, 7)
    return shapes


@pytest.mark.parametrize("module_class, expected, parameters", [
    (HiFiGAN, expected_v4_shapes, 14_425_409),
    (BigVGAN, expected_v3_shapes, 112_414_512),
])
def test_state_dict_layout_and_parameter_count_match_upstream(module_class, expected, parameters):
    module = module_class()
    shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    assert shapes == expected()
    assert sum(p.numel() for p in module.parameters()) == parameters


def test_filters_are_the_kaiser_sinc_of_bigvgan():
    taps = BigVGAN().state_dict()["resblocks.0.activations.0.upsample.filter"].flatten().double()
    assert taps.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(taps, taps.flip(0))  # even-length, symmetric about the centre
    # the cutoff 0.25 (of the doubled rate) passes DC and stops near Nyquist
    response = np.abs(np.fft.rfft(taps.numpy(), 512))
    assert response[0] == pytest.approx(1.0, abs=1e-6) and response[-1] < 0.02


# --- checkpoints in the upstream layouts ------------------------------------------------------

def test_weight_norm_pairs_match_torchs_own_weight_norm():
    """Our writer's weight_g/weight_v are what torch.nn.utils.weight_norm saves, and fold back."""
    for layer in (torch.nn.Conv1d(6, 4, 3), torch.nn.ConvTranspose1d(6, 4, 4, 2)):
        plain = {"layer.weight": layer.weight.detach().clone()}
        torch.nn.utils.weight_norm(layer)
        reference = {f"layer.{k}": v for k, v in layer.state_dict().items() if k.startswith("weight")}
        ours = add_weight_norm(plain)
        assert ours.keys() == reference.keys()
        for key in ours:
            assert torch.allclose(ours[key], reference[key], atol=1e-6)
        assert torch.allclose(fold_weight_norm(reference)["layer.weight"], plain["layer.weight"], atol=1e-6)


def small_bigvgan(**overrides) -> BigVGAN:
    """A narrow BigVGAN v2 (same layout and code paths) for fast checkpoint round trips."""
    torch.manual_seed(0)
    module = BigVGAN(BigVGANConfig(upsample_initial_channel=128, **overrides)).eval()
    with torch.no_grad():
        for name, param in module.named_parameters():
            if name.endswith((".alpha", ".beta")):
                param.uniform_(-0.5, 0.5)
    return module


@pytest.mark.parametrize("weight_norm", [True, False])
def test_v3_folder_checkpoint_loads_strictly_and_gives_the_same_audio(tmp_path, weight_norm):
    original = small_bigvgan()
    save_v3_checkpoint(tmp_path / "bigvgan", original, weight_norm=weight_norm)
    payload = torch.load(tmp_path / "bigvgan" / "bigvgan_generator.pt", weights_only=True)
    assert set(payload) == {"generator"}
    assert any(k.endswith("weight_g") for k in payload["generator"]) == weight_norm
    for path in (tmp_path / "bigvgan", tmp_path / "bigvgan" / "bigvgan_generator.pt"):
        loaded = load_vocoder("v3", path, settings=load_settings())
        mel = torch.from_numpy(sample_mel("v3", 16, seed=3))
        with torch.no_grad():
            assert torch.allclose(loaded(mel), original(mel), atol=1e-5)
        assert loaded.source["sha256"] != "synthetic"


def test_v3_hyper_parameters_come_from_config_json(tmp_path):
    """Other BigVGAN v2 variants (here 22 kHz, 80 bands) export from their own config.json."""
    save_v3_checkpoint(tmp_path / "v22", small_bigvgan(num_mels=80, sampling_rate=22050))
    loaded = load_vocoder("v3", tmp_path / "v22", settings=load_settings())
    assert (loaded.num_mels, loaded.sampling_rate, loaded.hop) == (80, 22050, 256)
    assert loaded.conv_pre.out_channels == 128


def test_v4_state_dict_checkpoint_loads_strictly(tmp_path, vocoder_v4):
    path = save_v4_checkpoint(tmp_path / "vocoder.pth", vocoder_v4)
    loaded = load_vocoder("v4", path, settings=load_settings())
    mel = torch.from_numpy(sample_mel("v4", 16))
    with torch.no_grad():
        assert torch.equal(loaded(mel), vocoder_v4(mel))


# --- the synthetic default --------------------------------------------------------------------

@pytest.mark.parametrize("fixture", ["vocoder_v3", "vocoder_v4"])
def test_synthetic_default_is_audible_unclipped_and_follows_the_mel(request, fixture):
    module = request.getfixturevalue(fixture)
    vocoder = fixture[-2:]
    assert module.source["checkpoint"] == "synthetic-default"
    with torch.no_grad():
        speech = module(torch.from_numpy(sample_mel(vocoder, 40, seed=11)))
        other = module(torch.from_numpy(sample_mel(vocoder, 40, seed=12)))
    assert 0.02 < speech.std().item() and speech.abs().max().item() < 0.95
    assert (speech - other).abs().max().item() > 0.05


# --- ONNX parity ------------------------------------------------------------------------------

def onnx_vs_pytorch(module, session, mel) -> float:
    """ONNX Runtime's max error from PyTorch float32, relative to PyTorch's peak."""
    return max_error_over_peak(pytorch_audio(module, mel), run_audio(session, mel))


def test_v4_onnx_matches_pytorch_at_every_length(vocoder_v4, onnx_v4):
    tolerance = load_settings()["export"]["parity_rel_tol"]
    session = cpu_session(Path(onnx_v4))
    for batch, frames in ((1, 1), (1, 7), (1, 64), (1, 500), (3, 64), (1, 2000)):
        mel = sample_mel("v4", frames, batch=batch, seed=frames)
        assert onnx_vs_pytorch(vocoder_v4, session, mel) <= tolerance, (batch, frames)


def test_v3_onnx_matches_pytorch_at_every_length(vocoder_v3, onnx_v3):
    tolerance = load_settings()["export"]["parity_rel_tol"]
    session = cpu_session(Path(onnx_v3))  # one session for every length: 1.3 s to make for v3
    for batch, frames in ((1, 1), (1, 7), (1, 64), (1, 500), (3, 64)):
        mel = sample_mel("v3", frames, batch=batch, seed=frames)
        assert onnx_vs_pytorch(vocoder_v3, session, mel) <= tolerance, (batch, frames)


def test_oracle_measures_both_sides_against_float64(vocoder_v4, onnx_v4):
    """On the default weights both float32 evaluations sit inside the bar, each measured from float64."""
    config = load_settings()["export"]
    errors = verify_export(vocoder_v4, "v4", onnx_v4, load_settings())
    assert {f"{b}x{f}" for b, f in config["verify_cases"]} == set(errors)
    for error in errors.values():
        assert 0.0 < error["onnx_runtime"] <= config["parity_rel_tol"], error
        assert 0.0 < error["pytorch_float32"] <= config["parity_rel_tol"], error


def test_planted_wrong_weight_is_refused_in_one_line(vocoder_v4, onnx_v4):
    """A graph that computes something else than the module (here: one convolution's weight 1 % off
    in the module) is refused although float32 noise is allowed for: ONNX Runtime is far, PyTorch
    float32 is not."""
    planted = copy.deepcopy(vocoder_v4)
    with torch.no_grad():
        planted.resblocks[4].convs1[1].weight *= 1.01
    with pytest.raises(UserError) as refused:
        verify_export(planted, "v4", onnx_v4, load_settings())
    message = str(refused.value)
    print(f"\nplanted weight: error: {message}")
    assert "\n" not in message and "from float64 PyTorch" in message and "report this export" in message


def test_a_graph_of_another_shape_is_a_user_error_not_an_assertion(onnx_v4):
    """The module's output length differs from the graph's (another hop): one line, no AssertionError."""
    other = HiFiGAN(HiFiGANConfig(upsample_rates=(10, 6, 2, 2, 4), upsample_kernel_sizes=(20, 12, 4, 4, 8))).eval()
    with pytest.raises(UserError, match="ONNX output shape .* differs from PyTorch's"):
        verify_export(other, "v4", onnx_v4, load_settings())


def test_onnx_has_fixed_names_dynamic_axes_and_pipeline_metadata(onnx_v3, onnx_v4):
    for path, vocoder, rate, hop in ((onnx_v3, "v3", 24000, 256), (onnx_v4, "v4", 48000, 480)):
        model = onnx.load(str(path), load_external_data=False)
        (mel,), (audio,) = model.graph.input, model.graph.output
        assert mel.name == "mel" and audio.name == "audio"
        assert [d.dim_param or d.dim_value for d in mel.type.tensor_type.shape.dim] == ["batch", 100, "frames"]
        assert mel.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        assert model.opset_import[0].version >= 17
        meta = read_metadata(path)
        assert (meta["vocoder"], meta["sampling_rate"], meta["hop"]) == (vocoder, rate, hop)
        assert meta["checkpoint_sha256"] == "synthetic"


# --- the command line and its errors ----------------------------------------------------------

def run_export(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "export", *args], cwd=REPO, capture_output=True, text=True, encoding="utf-8")


def test_cli_exports_a_checkpoint_and_says_where_weights_came_from(tmp_path, vocoder_v4):
    checkpoint = save_v4_checkpoint(tmp_path / "vocoder.pth", vocoder_v4)
    result = run_export("--vocoder", "v4", "--checkpoint", str(checkpoint), "--output", str(tmp_path / "v4.onnx"))
    assert result.returncode == 0, result.stderr
    assert read_metadata(tmp_path / "v4.onnx")["checkpoint"] == str(checkpoint)
    synthetic = run_export("--vocoder", "v4", "--output", str(tmp_path / "synthetic.onnx"))
    assert "SYNTHETIC" in synthetic.stderr


def corrupt_file(tmp_path: Path) -> Path:
    path = tmp_path / "broken.pth"
    path.write_bytes(b"PK\x03\x04 definitely not a checkpoint")
    return path


def v4_missing_a_key(tmp_path: Path, vocoder_v4) -> Path:
    state = dict(vocoder_v4.state_dict())
    state.pop("conv_post.bias")
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "odd.pth")
    return tmp_path / "odd.pth"


@pytest.mark.parametrize("case, vocoder, message", [
    ("missing", "v4", "not found"),
    ("corrupt", "v4", "not a readable PyTorch file"),
    ("v3 given to v4", "v4", "use --vocoder v3"),
    ("v4 given to v3", "v3", "use --vocoder v4"),
    ("keys", "v4", "missing keys: conv_post.bias; unexpected keys: extra.weight"),
])
def test_bad_checkpoints_give_one_line_and_no_output(tmp_path, vocoder_v4, case, vocoder, message, capsys):
    """The command's main in this process (the real command line is the test above): an exception
    escaping it fails the test as a traceback would."""
    checkpoint = {
        "missing": lambda: tmp_path / "nowhere.pth",
        "corrupt": lambda: corrupt_file(tmp_path),
        "v3 given to v4": lambda: save_v3_checkpoint(tmp_path / "bigvgan", small_bigvgan()),
        "v4 given to v3": lambda: save_v4_checkpoint(tmp_path / "vocoder.pth", vocoder_v4),
        "keys": lambda: v4_missing_a_key(tmp_path, vocoder_v4),
    }[case]()
    output = tmp_path / "out.onnx"
    code = run_main(export_main, ["--vocoder", vocoder, "--checkpoint", str(checkpoint), "--output", str(output)])
    stderr = capsys.readouterr().err
    assert code == 2, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], stderr
    assert "Traceback" not in stderr
    assert not output.exists() and not list(tmp_path.glob(".out.onnx*"))


def test_unwritable_output_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be", encoding="utf-8")
    result = run_export("--vocoder", "v4", "--output", str(blocker / "v4.onnx"))
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("error: cannot write")


def test_strict_loading_reports_wrong_shapes(tmp_path):
    bad = {k: v for k, v in HiFiGAN().state_dict().items()}
    bad["conv_pre.weight"] = torch.zeros(512, 80, 7)
    torch.save(bad, tmp_path / "vocoder.pth")
    with pytest.raises(UserError, match=r"conv_pre.weight \(512, 80, 7\) != \(512, 100, 7\)"):
        load_vocoder("v4", tmp_path / "vocoder.pth", settings=load_settings())


def test_stage_folders_run_from_the_repository_not_site_packages():
    """`build` is also PyPA's tool: the project's own folder must be what `python -m build` runs,
    whether or not PyPA's package is installed (tests/test_build.py plants one to check)."""
    code = "import importlib.util as u; print(u.find_spec('build').origin); print(u.find_spec('export').origin)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, encoding="utf-8", check=True)
    for line in result.stdout.split():
        assert Path(line).resolve().is_relative_to(REPO) and "site-packages" not in line


# --- the other BigVGAN v2 variants: every one the export guide names exports and verifies ----------

# upstream's config.json sizes of each variant (nvidia/bigvgan_v2_*; 24 kHz 100-band is v3 itself, tested
# above at full size); channels and resblocks cut in
# the test (64 channels, one kernel of one dilation) so an export takes seconds, not minutes: the
# band count, the upsampling (256x or 512x) and the rate are the variant's
BIGVGAN_V2_VARIANTS = {
    "22khz_80band_256x": dict(num_mels=80, sampling_rate=22050),
    "44khz_128band_256x": dict(num_mels=128, sampling_rate=44100),
    "44khz_128band_512x": dict(num_mels=128, sampling_rate=44100, upsample_rates=(8, 4, 2, 2, 2, 2),
                               upsample_kernel_sizes=(16, 8, 4, 4, 4, 4)),
}


@pytest.mark.parametrize("variant", BIGVGAN_V2_VARIANTS)
def test_every_bigvgan_v2_variant_exports_and_verifies(variant, tmp_path):
    """The 22 kHz 80-band config used to fail in the exporter: it was fed GPT-SoVITS' 100 bands."""
    from export.to_onnx import onnx_from_module

    torch.manual_seed(0)
    config = BigVGANConfig(upsample_initial_channel=64, resblock_kernel_sizes=(3,), resblock_dilation_sizes=((1,),),
                           **BIGVGAN_V2_VARIANTS[variant])
    folder = tmp_path / f"bigvgan_v2_{variant}"
    save_v3_checkpoint(folder, BigVGAN(config))
    module = load_vocoder("v3", folder, settings=load_settings())
    # verify_export runs inside
    output = onnx_from_module(module, "v3", tmp_path / "v3.onnx", settings=load_settings(), measure_stream=False)
    metadata = read_metadata(output)
    hop = int(np.prod(config.upsample_rates))
    assert (metadata["n_mels"], metadata["hop"], metadata["sampling_rate"]) == (config.num_mels, hop, config.sampling_rate)
    mel = sample_mel("v3", 9, n_mels=config.num_mels)
    audio = run_audio(cpu_session(output), mel)
    assert audio.shape == (1, 1, 9 * hop)
    assert max_error_over_peak(pytorch_audio(module, mel), audio) < 1e-4
