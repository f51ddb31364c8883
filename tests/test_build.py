"""Build stage, with the real TensorRT-RTX builder on small profiles (it builds on CPU; running a plan
needs a GPU, so plans are checked against the parsed network, the ONNX and their own bytes). Tests
that need TensorRT-RTX take the `trt` fixture; the rest (input checks, config, make, trtexec, the
order the files are written in) run without it."""
from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

import runtime
from build.__main__ import main as build_main
from build.config import build_config
from build.plan import build_plan
from pipeline.errors import UserError
from pipeline.files import sha256_of
from pipeline.settings import VOCODERS, load_settings
from runtime.errors import run_main
from runtime.targets import chosen_rtx_targets, rtx_supported

REPO = Path(__file__).resolve().parent.parent

SMALL_PROFILES = [{"name": "short", "min": [1, 1], "opt": [1, 32], "max": [2, 64]},
                  {"name": "long", "min": [1, 1], "opt": [1, 64], "max": [1, 128]}]


def small_settings(profiles=SMALL_PROFILES, **build) -> dict:
    """pipeline.toml with small profiles (fast builds) and optional [build] overrides."""
    settings = copy.deepcopy(load_settings())
    for vocoder in VOCODERS:
        settings["profiles"][vocoder] = copy.deepcopy(profiles)
    settings["build"].update(build)
    return settings


@pytest.fixture(scope="module")
def trt():
    """The TensorRT-RTX module, for the tests that build or parse (skipped where it is not installed)."""
    return pytest.importorskip("tensorrt_rtx")


def parsed_network(trt, onnx_path: Path):
    """The strongly typed network TensorRT-RTX parses from the ONNX, independently of build/."""
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    assert parser.parse_from_file(str(onnx_path))
    return builder, network, parser


def tensor_facts(trt, tensor) -> dict:
    return {"name": tensor.name, "dtype": np.dtype(trt.nptype(tensor.dtype)).name, "shape": list(tensor.shape)}


def assert_no_outputs(directory: Path) -> None:
    leftovers = [p.name for p in directory.iterdir() if p.suffix in (".plan", ".json", ".tmp")]
    assert leftovers == []


def check_plan_and_manifest(trt, plan: Path, onnx_path: Path, vocoder: str, precision: str, vocoder_module=None) -> dict:
    """The manifest agrees with the plan bytes, the ONNX, the parsed network and the profiles asked for."""
    manifest = json.loads(plan.with_suffix(".json").read_text(encoding="utf-8"))
    assert manifest["format"] == 1
    assert (manifest["vocoder"], manifest["precision"]) == (vocoder, precision)
    assert (manifest["backend"], manifest["backend_version"]) == ("tensorrt_rtx", trt.__version__)
    assert manifest["cuda_major"] == "cu13"  # the tensorrt-rtx metapackage installed here pins tensorrt_rtx_cu13
    assert manifest["plan"] == {"file": plan.name, "size": plan.stat().st_size, "sha256": sha256_of(plan)}
    assert manifest["onnx"] == {"path": str(onnx_path), "sha256": sha256_of(onnx_path)}
    _, network, _ = parsed_network(trt, onnx_path)
    assert (network.num_inputs, network.num_outputs) == (1, 1)
    assert manifest["input"] == tensor_facts(trt, network.get_input(0))
    assert manifest["output"] == tensor_facts(trt, network.get_output(0))
    n_mels = manifest["n_mels"]
    assert manifest["profiles"] == [{"name": p["name"], **{k: [p[k][0], n_mels, p[k][1]] for k in ("min", "opt", "max")}}
                                    for p in SMALL_PROFILES]
    assert manifest["compute_capabilities"] == [t for t in rtx_supported(trt) if t != "SM75"]  # "portable"
    assert manifest["rtx_kernel_specialization"] == "lazy"
    assert manifest["synthetic"] is True and manifest["checkpoint"]["sha256"] == "synthetic"
    if vocoder_module is not None:
        assert (manifest["sampling_rate"], manifest["hop"]) == (vocoder_module.sampling_rate, vocoder_module.hop)
    line = manifest["trtexec"]
    assert line.startswith(f"trtexec --onnx={onnx_path} --saveEngine={plan} --stronglyTyped")
    assert f"--profile=1 --minShapes=mel:1x{n_mels}x1 --optShapes=mel:1x{n_mels}x64 --maxShapes=mel:1x{n_mels}x128" in line
    # The header is a well-formed TensorRT-RTX plan of this version (checked without a GPU) ...
    trt_runtime = trt.Runtime(trt.Logger(trt.Logger.INTERNAL_ERROR))
    header = plan.read_bytes()[:trt_runtime.engine_header_size]
    broken = int(trt.EngineInvalidityDiagnostics.MALFORMED_ENGINE) | int(trt.EngineInvalidityDiagnostics.VERSION_MISMATCH)
    assert trt_runtime.get_engine_validity(header)[1] & broken == 0
    # ... and the same check rejects bytes that are not one.
    assert trt_runtime.get_engine_validity(b"\0" * len(header))[1] & broken != 0
    return manifest


@pytest.fixture(scope="module")
def onnx_v4_fp16(onnx_v4, tmp_path_factory) -> Path:
    """The v4 export with float16 weights and float32 input/output, as the clean stage makes it."""
    from onnxconverter_common.float16 import convert_float_to_float16
    model = convert_float_to_float16(onnx.load(str(onnx_v4)), keep_io_types=True)
    path = tmp_path_factory.mktemp("fp16") / "v4.fp16.onnx"
    onnx.save(model, str(path))
    return path


def test_python_m_build_is_this_project_even_beside_pypa_build(tmp_path):
    """`build` is also PyPA's packaging tool. With another `build` package importable (a stand-in on
    PYTHONPATH, where an installed one would be found too), `python -m build` run from the repository
    root still runs this project's CLI."""
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "__init__.py").write_text("", encoding="utf-8")
    (tmp_path / "build" / "__main__.py").write_text("print('the other build package')\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "build", "--help"], cwd=REPO, capture_output=True, text=True, env=env,
                            encoding="utf-8")
    assert result.returncode == 0, result.stderr
    assert "--vocoder" in result.stdout and "python -m build doctor" in result.stdout


def test_v4_fp32_plan_matches_network(trt, onnx_v4, vocoder_v4, tmp_path):
    plan = build_plan(onnx_v4, "v4", "fp32", tmp_path / "v4.fp32.plan", backend="tensorrt_rtx", settings=small_settings())
    check_plan_and_manifest(trt, plan, onnx_v4, "v4", "fp32", vocoder_v4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v4.fp32.json", "v4.fp32.plan"]


def test_v4_fp16_plan_is_half_inside(trt, onnx_v4_fp16, tmp_path):
    plan = build_plan(onnx_v4_fp16, "v4", "fp16", tmp_path / "v4.fp16.plan", backend="tensorrt_rtx",
                      settings=small_settings())
    manifest = check_plan_and_manifest(trt, plan, onnx_v4_fp16, "v4", "fp16")
    assert manifest["input"]["dtype"] == manifest["output"]["dtype"] == "float32"
    _, network, _ = parsed_network(trt, onnx_v4_fp16)
    layer_types = {network.get_layer(i).get_output(0).dtype for i in range(network.num_layers)}
    assert trt.DataType.HALF in layer_types


def test_v3_fp32_plan_matches_network(trt, onnx_v3, vocoder_v3, tmp_path):
    plan = build_plan(onnx_v3, "v3", "fp32", tmp_path / "v3.fp32.plan", backend="tensorrt_rtx", settings=small_settings())
    check_plan_and_manifest(trt, plan, onnx_v3, "v3", "fp32", vocoder_v3)


def test_precision_must_match_onnx_weights(onnx_v4, onnx_v4_fp16, tmp_path):
    with pytest.raises(UserError, match="float16 weights"):
        build_plan(onnx_v4_fp16, "v4", "fp32", tmp_path / "a.plan", settings=small_settings())
    with pytest.raises(UserError, match="no float16 weights"):
        build_plan(onnx_v4, "v4", "fp16", tmp_path / "b.plan", settings=small_settings())
    assert_no_outputs(tmp_path)


# --- make: incremental builds through the real CLI (with a stand-in trtexec, no TensorRT needed) ------

def _tree_with_small_profiles(root: Path, onnx_v4: Path) -> dict:
    """A copy of the repository's make inputs with small profiles and an exported, 'cleaned' v4."""
    for folder in ("pipeline", "export", "build", "runtime"):
        (root / folder).mkdir()
        for source in (REPO / folder).glob("*.py"):
            shutil.copy2(source, root / folder / source.name)
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy2(REPO / name, root / name)
    kept, skipping = [], False
    for line in (REPO / "pipeline.toml").read_text(encoding="utf-8").splitlines():
        if line.startswith("["):
            skipping = line.startswith("[[profiles.")
        if not skipping:
            kept.append(line)
    profiles = "".join(f'\n[[profiles.{v}]]\nname = "{p["name"]}"\nmin = {p["min"]}\nopt = {p["opt"]}\nmax = {p["max"]}\n'
                       for v in VOCODERS for p in SMALL_PROFILES)
    (root / "pipeline.toml").write_text("\n".join(kept) + "\n" + profiles, encoding="utf-8")
    onnx_dir = root / "engines" / "onnx"
    onnx_dir.mkdir(parents=True)
    (root / "venv").mkdir()
    (root / "venv" / ".installed").touch()
    (onnx_dir / "v4.source").write_text("\n", encoding="utf-8")  # what the Makefile's stamp holds with no CHECKPOINT_V4
    shutil.copy(onnx_v4, onnx_dir / "v4.onnx")
    shutil.copy(onnx_v4, onnx_dir / "v4.fp32.onnx")
    variables = {"VOCODERS": "v4", "PRECISIONS": "fp32", "VENV": "venv", "PYTHON": sys.executable, "BUILDER": "trtexec"}
    # reading the Makefile writes each stage's closure stamp (engines/.stamps/): let it, then date them too
    subprocess.run(["make", "-n", "-C", str(root), "engines", *(f"{k}={v}" for k, v in variables.items())],
                   capture_output=True, check=True)
    stamps = sorted((root / "engines" / ".stamps").iterdir())
    past = time.time() - 1000  # sources and stamps, then venv, then ONNX, then cleaned ONNX: everything up to date
    ordered = [*(p for p in root.rglob("*") if p.is_file() and "engines" not in p.parts and p.parent.name != "venv"),
               *stamps, root / "venv" / ".installed", onnx_dir / "v4.source", onnx_dir / "v4.onnx", onnx_dir / "v4.fp32.onnx"]
    for step, path in enumerate(ordered):
        os.utime(path, (past + step, past + step))
    return variables


def _make(root: Path, variables: dict) -> subprocess.CompletedProcess:
    """`make engines` in `root`, with the stand-in trtexec of root/bin first on the PATH."""
    command = ["make", "-C", str(root), "engines", *(f"{k}={v}" for k, v in variables.items())]
    env = {**os.environ, "PATH": os.pathsep.join([str(root / "bin"), os.environ.get("PATH", "")])}
    return subprocess.run(command, capture_output=True, text=True, env=env, encoding="utf-8")


def test_make_engines_twice_does_no_work(onnx_v4, tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    variables = _tree_with_small_profiles(tmp_path, onnx_v4)
    _stand_in_trtexec(tmp_path / "bin", fail=False)
    first = _make(tmp_path, variables)
    assert first.returncode == 0, first.stderr
    commands = [line for line in first.stdout.splitlines() if "-m " in line]
    assert len(commands) == 1 and "-m build engines/onnx/v4.fp32.onnx" in commands[0], first.stdout
    plan = tmp_path / "engines" / "v4.fp32.plan"
    stamp = plan.stat().st_mtime_ns
    assert json.loads(plan.with_suffix(".json").read_text(encoding="utf-8"))["plan"]["sha256"] == sha256_of(plan)

    second = _make(tmp_path, variables)
    assert second.returncode == 0, second.stderr
    assert [line for line in second.stdout.splitlines() if "-m " in line] == []
    assert plan.stat().st_mtime_ns == stamp
    # A newer cleaned ONNX makes exactly the plan stale again. (Not checked with `make -n`/`-q`: the
    # Makefile's FORCE-d checkpoint stamp makes those list the whole chain even when nothing runs.)
    os.utime(tmp_path / "engines" / "onnx" / "v4.fp32.onnx")
    third = _make(tmp_path, variables)
    assert third.returncode == 0, third.stderr
    assert [line for line in third.stdout.splitlines() if "-m " in line] == commands
    assert plan.stat().st_mtime_ns > stamp
    # A build cut short after the new plan is in place leaves no manifest (see build_plan): make
    # rebuilds, since the manifest is its target.
    plan.with_suffix(".json").unlink()
    fourth = _make(tmp_path, variables)
    assert fourth.returncode == 0, fourth.stderr
    assert [line for line in fourth.stdout.splitlines() if "-m " in line] == commands
    assert json.loads(plan.with_suffix(".json").read_text(encoding="utf-8"))["plan"]["sha256"] == sha256_of(plan)


# --- bad input: one line, exit code 2, no plan and no manifest -------------------------------------

def _cli_error(capsys, argv) -> str:
    assert run_main(build_main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def _model_with(nodes, initializers, onnx_v4: Path, path: Path) -> Path:
    """A one-op model carrying the v4 export's metadata and tensor names."""
    source = onnx.load(str(onnx_v4), load_external_data=False)
    graph = onnx.helper.make_graph(nodes, "broken", [source.graph.input[0]], [source.graph.output[0]], initializers)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.metadata_props.extend(source.metadata_props)
    onnx.save(model, str(path))
    return path


def test_unsupported_op_names_the_node(trt, onnx_v4, tmp_path, capsys):
    model = _model_with([onnx.helper.make_node("GriffinLimSpell", ["mel"], ["audio"], name="spell_node")], [],
                        onnx_v4, tmp_path / "bad.onnx")
    line = _cli_error(capsys, [str(model), "--vocoder", "v4", "--precision", "fp32", "--backend", "tensorrt_rtx",
                               "--output", str(tmp_path / "v4.fp32.plan")])
    assert "spell_node" in line and "GriffinLimSpell" in line
    assert_no_outputs(tmp_path)


def test_wrong_type_names_the_node(trt, onnx_v4, tmp_path, capsys):
    """A float32 mel multiplied by a float16 constant: a strongly typed network refuses the mix."""
    half = onnx.numpy_helper.from_array(np.ones((1, 100, 1), np.float16), "half_gain")
    model = _model_with([onnx.helper.make_node("Mul", ["mel", "half_gain"], ["audio"], name="mixed_mul")], [half],
                        onnx_v4, tmp_path / "mixed.onnx")
    line = _cli_error(capsys, [str(model), "--vocoder", "v4", "--precision", "fp16", "--backend", "tensorrt_rtx",
                               "--output", str(tmp_path / "v4.fp16.plan")])
    assert "mixed_mul" in line
    assert_no_outputs(tmp_path)


def test_truncated_onnx(onnx_v4, tmp_path, capsys):
    truncated = tmp_path / "v4.onnx"
    truncated.write_bytes(onnx_v4.read_bytes()[: onnx_v4.stat().st_size // 2])
    line = _cli_error(capsys, [str(truncated), "--vocoder", "v4", "--precision", "fp32",
                               "--output", str(tmp_path / "v4.fp32.plan")])
    assert "truncated or corrupt" in line
    assert_no_outputs(tmp_path)


@pytest.mark.parametrize("argv_tail, expected", [
    (["--vocoder", "v4", "--precision", "int8"], "unknown precision 'int8'"),
    (["--vocoder", "v3", "--precision", "fp32"], "holds the v4 vocoder, not v3"),
    (["--vocoder", "v4", "--precision", "fp32", "--backend", "tensorrt"], "-m pip install tensorrt"),
    (["--vocoder", "v4", "--precision", "fp32", "--builder", "trtexec"], "trtexec not found on the PATH"),
])
def test_cli_one_line_errors(onnx_v4, tmp_path, capsys, monkeypatch, argv_tail, expected):
    if "tensorrt" in argv_tail and importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("full TensorRT is installed here")
    monkeypatch.setenv("PATH", str(tmp_path))  # no trtexec
    line = _cli_error(capsys, [str(onnx_v4), *argv_tail, "--output", str(tmp_path / "out.plan")])
    assert expected in line
    assert_no_outputs(tmp_path)


@pytest.mark.parametrize("profile, expected", [
    ({"name": "bad", "min": [1, 600], "opt": [1, 500], "max": [4, 1000]}, "frames must satisfy min <= opt <= max"),
    ({"name": "bad", "min": [1, 1], "opt": [8, 500], "max": [4, 1000]}, "batch must satisfy min <= opt <= max"),
    ({"name": "bad", "min": [1, 1], "opt": [1, 500]}, "needs min, opt and max"),
])
def test_bad_profiles(onnx_v4, tmp_path, profile, expected):
    with pytest.raises(UserError, match=expected) as error:
        build_plan(onnx_v4, "v4", "fp32", tmp_path / "v4.fp32.plan", settings=small_settings(profiles=[profile]))
    assert "\n" not in str(error.value)
    assert_no_outputs(tmp_path)


@pytest.mark.parametrize("key, value", [
    ("backend", "cuda"), ("workspace_gib", 0), ("optimization_level", 7),
    ("rtx_compute_capabilities", ["Hopper"]), ("rtx_compute_capabilities", "most"), ("hardware_compatibility", "everything"),
    ("version_compatible", "yes"), ("rtx_kernel_specialization", "sometimes"),
])
def test_bad_build_settings(key, value):
    with pytest.raises(UserError, match=rf"\[build\] {key}") as error:
        build_config(small_settings(**{key: value}))
    assert "\n" not in str(error.value)


def test_rtx_target_sets_leave_turing_out_unless_asked():
    """"portable" is this project's default (every supported target but Turing: it gets a plan of
    its own); "all" adds it."""
    from types import SimpleNamespace

    fake = SimpleNamespace(ComputeCapability=SimpleNamespace(__members__=dict.fromkeys(
        ["NONE", "CURRENT", "SM75", "SM80", "SM86", "SM89", "SM120", "SM121"])))
    supported = rtx_supported(fake)
    assert chosen_rtx_targets(supported, "portable") == ["SM80", "SM86", "SM89", "SM120", "SM121"]
    assert chosen_rtx_targets(supported, "all") == ["SM75", "SM80", "SM86", "SM89", "SM120", "SM121"]
    assert chosen_rtx_targets(supported, ("SM75",)) == ["SM75"]


def test_rtx_target_it_cannot_build(trt, onnx_v4, tmp_path):
    with pytest.raises(UserError, match="cannot target SM90"):
        build_plan(onnx_v4, "v4", "fp32", tmp_path / "v4.fp32.plan", backend="tensorrt_rtx",
                   settings=small_settings(rtx_compute_capabilities=["SM86", "SM90"]))
    assert_no_outputs(tmp_path)


# --- trtexec ----------------------------------------------------------------------------------------

STAND_IN_TRTEXEC = """#!{python}
# Stand-in for NVIDIA's trtexec (full TensorRT does not install on this machine): checks the arguments
# the build passes, then writes a plan file the way trtexec does, or fails like it.
import pathlib, sys
args = dict(a[2:].split("=", 1) if "=" in a else (a[2:], "") for a in sys.argv[1:])
print("&&&& RUNNING TensorRT.trtexec [TensorRT v101300] [b12] # trtexec " + " ".join(sys.argv[1:]))
if {fail} or "stronglyTyped" not in args or not pathlib.Path(args["onnx"]).is_file():
    print("[E] Error[4]: stand-in refused the arguments")
    sys.exit(1)
pathlib.Path(args["saveEngine"]).write_bytes({payload!r})
print("&&&& PASSED TensorRT.trtexec")
"""


def _stand_in_trtexec(folder: Path, fail: bool, payload: bytes = b"plan built by trtexec") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tool = folder / "trtexec"
    tool.write_text(STAND_IN_TRTEXEC.format(python=sys.executable, fail=fail, payload=payload), encoding="utf-8")
    tool.chmod(0o755)


def test_builder_trtexec_writes_the_same_manifest(onnx_v4, tmp_path, monkeypatch):
    from build.backend import full_tensorrt_targets
    bin_dir, out = tmp_path / "bin", tmp_path / "out"
    _stand_in_trtexec(bin_dir, fail=False)
    monkeypatch.setenv("PATH", str(bin_dir))
    plan = build_plan(onnx_v4, "v4", "fp32", out / "v4.fp32.plan", builder="trtexec", settings=small_settings())
    manifest = json.loads(plan.with_suffix(".json").read_text(encoding="utf-8"))
    assert plan.read_bytes() == b"plan built by trtexec"
    assert manifest["plan"]["sha256"] == sha256_of(plan)
    assert (manifest["builder"], manifest["backend"], manifest["backend_version"]) == ("trtexec", "tensorrt", "10.13.0.12")
    assert manifest["compute_capabilities"] == full_tensorrt_targets("none")  # this machine's GPU, or None without one
    assert manifest["trtexec"].startswith(f"trtexec --onnx={onnx_v4} --saveEngine={plan} ")
    # the full version, build number included, so the runtime's four-part comparison accepts the plan
    from runtime.runnable import BackendInfo, Gpu, why_not_runnable
    manifest["compute_capabilities"] = ["SM86"]  # as if built on this GPU
    assert why_not_runnable(manifest, Gpu("RTX A6000", (8, 6)), BackendInfo("tensorrt", "10.13.0.12")) is None


def test_trtexec_banner_gives_the_full_version():
    from build.trtexec import trtexec_version
    banner = "&&&& RUNNING TensorRT.trtexec [TensorRT v101600] [b72] # trtexec --onnx=a.onnx"
    assert trtexec_version(banner) == "10.16.0.72"
    assert trtexec_version("[TensorRT v100500] [b18]") == "10.5.0.18"
    assert trtexec_version("no banner") == "unknown"


def test_failing_trtexec_leaves_nothing(onnx_v4, tmp_path, monkeypatch):
    _stand_in_trtexec(tmp_path, fail=True)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UserError, match="trtexec failed: .*stand-in refused"):
        build_plan(onnx_v4, "v4", "fp32", tmp_path / "v4.fp32.plan", builder="trtexec", settings=small_settings())
    assert_no_outputs(tmp_path)


# --- the plan and its manifest: a manifest never describes another plan than the one beside it -------

class Crash(BaseException):
    """A power cut at one step: nothing after it runs (not an Exception, so no handler catches it)."""


def _rebuild_with(payload: bytes, tmp_path: Path, onnx_v4: Path, monkeypatch, output: Path) -> Path:
    """build_plan with a stand-in trtexec whose plan is `payload`."""
    bin_dir = tmp_path / f"bin-{payload.hex()}"
    _stand_in_trtexec(bin_dir, fail=False, payload=payload)
    monkeypatch.setenv("PATH", str(bin_dir))
    return build_plan(onnx_v4, "v4", "fp32", output, builder="trtexec", settings=small_settings())


def assert_whole_pair(plan: Path, payload: bytes) -> None:
    """What the runtime checks before it loads a plan: the manifest, then the plan's bytes against it."""
    manifest = runtime.read_manifest(plan)
    runtime.check_plan_bytes(manifest, plan.read_bytes(), plan)
    assert plan.read_bytes() == payload


@pytest.mark.parametrize("crash_before", ["plan", "manifest"])
def test_a_build_cut_short_between_the_renames_leaves_no_manifest(onnx_v4, tmp_path, monkeypatch, crash_before):
    """A crash before the new plan's rename or before the new manifest's: either way the old manifest is
    gone, so no reader takes a plan for the one its manifest describes; a rebuild then makes a whole pair."""
    plan = tmp_path / "out" / "v4.fp32.plan"
    _rebuild_with(b"old plan", tmp_path, onnx_v4, monkeypatch, plan)
    assert_whole_pair(plan, b"old plan")

    real_replace = os.replace
    crash_at = plan if crash_before == "plan" else plan.with_suffix(".json")

    def replace_or_crash(source, target):
        if Path(target) == crash_at:
            raise Crash
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace_or_crash)
    with pytest.raises(Crash):
        _rebuild_with(b"new plan", tmp_path, onnx_v4, monkeypatch, plan)
    monkeypatch.setattr(os, "replace", real_replace)

    assert plan.read_bytes() == (b"old plan" if crash_before == "plan" else b"new plan")
    assert not plan.with_suffix(".json").exists()
    with pytest.raises(runtime.RuntimeUserError, match="not found; it belongs beside the plan"):
        runtime.read_manifest(plan)
    _rebuild_with(b"new plan", tmp_path, onnx_v4, monkeypatch, plan)
    assert_whole_pair(plan, b"new plan")


def test_a_failed_rebuild_keeps_the_old_pair(onnx_v4, tmp_path, monkeypatch):
    plan = tmp_path / "out" / "v4.fp32.plan"
    _rebuild_with(b"old plan", tmp_path, onnx_v4, monkeypatch, plan)
    _stand_in_trtexec(tmp_path / "failing", fail=True)
    monkeypatch.setenv("PATH", str(tmp_path / "failing"))
    with pytest.raises(UserError, match="trtexec failed"):
        build_plan(onnx_v4, "v4", "fp32", plan, builder="trtexec", settings=small_settings())
    assert_whole_pair(plan, b"old plan")
    assert sorted(p.name for p in plan.parent.iterdir()) == ["v4.fp32.json", "v4.fp32.plan"]


def test_the_runtime_refuses_a_manifest_beside_another_plan_of_the_same_size(onnx_v4, tmp_path, monkeypatch):
    """The manifest carries the plan's sha256, so a pair put together by hand is refused before loading."""
    plan = tmp_path / "out" / "v4.fp32.plan"
    _rebuild_with(b"plan A", tmp_path, onnx_v4, monkeypatch, plan)
    plan.write_bytes(b"plan B")
    manifest = runtime.read_manifest(plan)  # name and size agree ...
    with pytest.raises(runtime.EngineError, match="sha256 differs"):
        runtime.check_plan_bytes(manifest, plan.read_bytes(), plan)  # ... the content does not


# --- doctor -----------------------------------------------------------------------------------------

def test_doctor_reports_this_machine(trt):
    from runtime.cuda import driver_state
    result = subprocess.run([sys.executable, "-m", "build", "doctor"], cwd=REPO, capture_output=True, text=True, encoding="utf-8")
    assert result.returncode == 0, result.stderr
    rows = dict(line.split("  ", 1) for line in result.stdout.splitlines())
    assert rows["tensorrt_rtx (TensorRT-RTX)"].strip() == trt.__version__
    state = driver_state()
    if not state.gpus:
        assert rows["GPU"].strip().startswith("none")
        assert rows["run plans here"].strip().startswith("no")
    else:
        assert f"compute capability {state.gpus[0].capability[0]}.{state.gpus[0].capability[1]}" in rows["GPU 0"]


def test_doctor_verdicts_come_from_the_runtime(trt):
    """The doctor asks the runtime's owner (runtime/runnable.py) about the plans this machine would build."""
    from build.backend import LoadedBackend
    from build.doctor import plan_verdict
    from runtime.cuda import DriverGpu as Gpu

    config = build_config(load_settings())
    rtx = LoadedBackend("tensorrt_rtx", trt)
    hopper = plan_verdict(rtx, config, Gpu(0, "NVIDIA H100 80GB HBM3", (9, 0)))
    assert hopper.startswith("NO: TensorRT-RTX plans do not run") and "full TensorRT" in hopper
    assert plan_verdict(rtx, config, Gpu(0, "NVIDIA GeForce RTX 3090", (8, 6))).startswith("yes")
    narrow = dataclasses.replace(config, rtx_compute_capabilities=("SM86",))
    ada = plan_verdict(rtx, narrow, Gpu(0, "NVIDIA GeForce RTX 4090", (8, 9)))
    assert ada.startswith("NO") and "rtx_compute_capabilities" in ada
    assert plan_verdict(None, config, Gpu(0, "NVIDIA H100 80GB HBM3", (9, 0))).startswith("NO backend installed")


def test_full_tensorrt_plans_run_only_on_the_gpu_model_they_were_built_on(monkeypatch):
    """The build records the build GPU's compute capability; the runtime then refuses any other GPU,
    unless the plan was built Ampere-plus."""
    from build.backend import full_tensorrt_targets
    from runtime import cuda
    from runtime.runnable import BackendInfo, Gpu, why_not_runnable

    monkeypatch.setattr(cuda, "driver_state", lambda: cuda.DriverState("13.0", [cuda.DriverGpu(0, "RTX A6000", (8, 6))], ""))
    manifest = {"backend": "tensorrt", "backend_version": "10.16.1.11", "version_compatible": False,
                "hardware_compatibility": "none", "compute_capabilities": full_tensorrt_targets("none")}
    assert manifest["compute_capabilities"] == ["SM86"]
    here = BackendInfo("tensorrt", "10.16.1.11")
    assert why_not_runnable(manifest, Gpu("RTX A6000", (8, 6)), here) is None
    assert "built on a GPU of SM86" in why_not_runnable(manifest, Gpu("NVIDIA L40S", (8, 9)), here)
    moving = dict(manifest, hardware_compatibility="ampere_plus",
                  compute_capabilities=full_tensorrt_targets("ampere_plus"))
    assert moving["compute_capabilities"] is None
    assert why_not_runnable(moving, Gpu("NVIDIA L40S", (8, 9)), here) is None
    assert "Ampere" in why_not_runnable(moving, Gpu("Tesla T4", (7, 5)), here)
