"""python -m serving.triton_server [--force-rtx] [--engines DIR] [--output DIR]

Write a Triton Inference Server model repository from the engines: one model per manifest,
`<repository>/<vocoder>_<precision>/config.pbtxt` and `1/model.plan`. The configs are built with
Triton's own ModelConfig protobuf, so what is written is what Triton parses. Triton's TensorRT
backend loads plans of full TensorRT only, of the TensorRT version it ships with; TensorRT-RTX
plans are refused unless --force-rtx asks for the configs anyway.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Sequence

import runtime
from pipeline.errors import UserError
from pipeline.files import atomic_output
from pipeline.schema import check_part
from pipeline.settings import REPO_ROOT, load_settings
from runtime.errors import CommandParser, run_main
from runtime.files import SAFE_NAME, inside

log = logging.getLogger("serving")

PLATFORM = "tensorrt_plan"
DATA_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16"}


def _model_config_pb2():
    """Triton's ModelConfig protobuf module (from tritonclient, the `serving` or `test` extra)."""
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        raise UserError("tritonclient is not installed; run `.venv/bin/pip install 'tritonclient[grpc]'` "
                        "(or install the project's serving extra)") from None
    return model_config_pb2


def model_name(manifest: dict[str, Any]) -> str:
    """`<vocoder>_<precision>`, from manifest fields, so held to a plain name (runtime/files.py `inside`)."""
    name = f"{manifest['vocoder']}_{manifest['precision']}"
    if not SAFE_NAME.fullmatch(name):
        raise UserError(f"Triton model name {name!r} (from the manifest's vocoder and precision) is not a plain name "
                        "of letters, digits, _ . -; rebuild the plan with `make engines`")
    return name


def read_manifests(engines: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every plan in `engines` with its manifest, checked by the runtime (schema, plan size and
    sha256) and for what Triton needs: a dynamic batch axis on both tensors."""
    plans = sorted(Path(engines).glob("*.plan"))
    if not plans:
        raise UserError(f"no .plan files in {engines}; build them first with `make engines`")
    manifests = []
    for plan in plans:
        try:
            manifest = runtime.read_manifest(plan)
            runtime.check_plan_bytes(manifest, plan.read_bytes(), plan)
        except runtime.RuntimeUserError as error:
            raise UserError(str(error)) from None
        for tensor in ("input", "output"):
            if manifest[tensor].get("shape", [None])[0] != -1:
                raise UserError(f"{plan}: the {tensor} has no dynamic batch axis ({manifest[tensor]}); "
                                "rebuild it with `make engines`")
        manifests.append((plan, manifest))
    _refuse_shared_names(manifests)
    return manifests


def _refuse_shared_names(manifests: list[tuple[Path, dict[str, Any]]]) -> None:
    """One model folder per name: two plans of the same vocoder and precision would overwrite each other."""
    seen: dict[str, Path] = {}
    for plan, manifest in manifests:
        name = model_name(manifest)
        if name in seen:
            raise UserError(f"{seen[name].name} and {plan.name} are both the Triton model {name}; keep one of them "
                            "in the engines folder (or pass --engines a folder holding one plan per vocoder and precision)")
        seen[name] = plan


def refuse_rtx(manifests: list[tuple[Path, dict[str, Any]]]) -> None:
    """One line naming the TensorRT-RTX plans and why Triton cannot load them."""
    rtx = [f"{plan.name} (TensorRT-RTX {manifest.get('backend_version', '?')})"
           for plan, manifest in manifests if manifest["backend"] == "tensorrt_rtx"]
    if rtx:
        raise UserError(f"Triton's TensorRT backend loads plans of full TensorRT only, of its own version; "
                        f"{', '.join(rtx)} cannot be served: rebuild with full TensorRT "
                        "(build.backend = \"tensorrt\" on the serving GPU) or pass --force-rtx to write the configs anyway")


def max_batch_size(manifest: dict[str, Any]) -> int:
    """The largest batch every profile accepts, so each request fits whichever profile its frames need."""
    return min(int(profile["max"][0]) for profile in manifest["profiles"])


def triton_config(manifest: dict[str, Any], serving: dict[str, Any]):
    """The model's ModelConfig: dynamic frames (-1), batch from the profiles, batching and instances
    from the [serving] settings (checked by pipeline/schema.py), every optimization profile open to
    every instance."""
    check_part({"serving": serving}, "serving")
    pb = _model_config_pb2()
    batch = max_batch_size(manifest)
    config = pb.ModelConfig(name=model_name(manifest), platform=PLATFORM, max_batch_size=batch)
    for spec, tensors in ((manifest["input"], config.input), (manifest["output"], config.output)):
        tensor = tensors.add(name=spec["name"], data_type=pb.DataType.Value(DATA_TYPES[spec["dtype"]]))
        tensor.dims.extend(int(d) for d in spec["shape"][1:])  # Triton's dims leave the batch axis out
    if serving["dynamic_batching"]:
        preferred = [int(size) for size in serving["preferred_batch_sizes"]]
        if any(not 1 <= size <= batch for size in preferred):
            raise UserError(f"[serving] preferred_batch_sizes {preferred} must lie in 1..{batch}, the max batch "
                            f"of {model_name(manifest)}'s profiles; fix pipeline.toml")
        config.dynamic_batching.SetInParent()
        config.dynamic_batching.preferred_batch_size.extend(preferred)
        config.dynamic_batching.max_queue_delay_microseconds = int(serving["max_queue_delay_microseconds"])
    config.instance_group.add(count=serving["instance_count"], kind=pb.ModelInstanceGroup.Kind.Value(serving["instance_kind"]),
                              profile=[str(index) for index in range(len(manifest["profiles"]))])
    return config


def write_model(plan: Path, config, repository: Path) -> Path:
    """`<repository>/<name>/1/model.plan` and `config.pbtxt`, both or neither: both are written to
    temporaries first (a disk with room for the plan but not the config fails before either lands),
    then the plan is renamed into place and the config last, the mark of a complete model."""
    from google.protobuf import text_format

    folder = inside(repository, config.name, "Triton model")
    with atomic_output(folder / "config.pbtxt", (plan,)) as tmp_config, \
            atomic_output(folder / "1" / "model.plan", (plan,)) as tmp_plan:
        shutil.copyfile(plan, tmp_plan)
        tmp_config.write_text(text_format.MessageToString(config), encoding="utf-8")
        # leaving the block renames the plan, then the config (context managers exit in reverse order)
    return folder


def write_repository(engines: Path, repository: Path, serving: dict[str, Any], force_rtx: bool = False) -> list[Path]:
    """One Triton model per manifest in `engines`. Nothing is written when a plan or a [serving]
    setting is refused: every model's config is made (and checked) before the first is written."""
    manifests = read_manifests(engines)
    if not force_rtx:
        refuse_rtx(manifests)
    configs = [triton_config(manifest, serving) for _, manifest in manifests]
    folders = []
    for (plan, manifest), config in zip(manifests, configs, strict=True):
        folder = write_model(plan, config, repository)
        folders.append(folder)
        if manifest["backend"] == "tensorrt_rtx":
            log.warning("%s: TensorRT-RTX plan written on request (--force-rtx); Triton's TensorRT backend "
                        "will not load it", folder)
        else:
            log.info("%s: max batch %d, %d profiles; serve it with the Triton release that ships TensorRT %s",
                     folder, max_batch_size(manifest), len(manifest["profiles"]), manifest.get("backend_version", "?"))
    return folders


def main(argv: Sequence[str] | None = None) -> int:
    settings = load_settings()
    parser = CommandParser(prog="python -m serving.triton_server", description=__doc__.split("\n\n")[1])
    parser.add_argument("--engines", type=Path, default=REPO_ROOT / settings["paths"]["engines"],
                        help="folder of .plan files and their manifests (default: paths.engines)")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / settings["serving"]["triton_repository"],
                        help="model repository to write (default: serving.triton_repository)")
    parser.add_argument("--force-rtx", action="store_true",
                        help="write configs for TensorRT-RTX plans too, though Triton cannot load them")
    args = parser.parse_args(argv)
    write_repository(args.engines, args.output, settings["serving"], args.force_rtx)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
