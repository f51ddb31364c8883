"""Start one of GPT-SoVITS' own entry points, unchanged, in this process, with the drop-in attached.

GPT-SoVITS has two ways of vocoding v3/v4: the `TTS` class of TTS_infer_pack/TTS.py (api_v2.py,
inference_webui_fast.py) and inference_webui.py's own module-level models (the default UI, which
never builds a `TTS`). Nothing in GPT-SoVITS' files is edited: the launcher
- hooks the import of TTS_infer_pack/TTS.py (under either of the two names the entry points use)
  so that every `TTS` built installs the drop-in and its `run` streams v3/v4 (fragments.py);
- runs inference_webui.py's top-level statements in two steps, so that between the definition of
  `init_bigvgan`/`init_hifigan` and their first call, both are wrapped: whatever they put in
  `bigvgan_model`/`hifigan_model` is served through the engine, at start and after every switch.
"""
from __future__ import annotations

import ast
import hashlib
import importlib.abc
import logging
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from pipeline.errors import UserError
from serving.gpt_sovits.dropin import DropIn, install
from serving.gpt_sovits.options import launcher_options
from serving.gpt_sovits.plans import load_runtime_engine

log = logging.getLogger("serving")

# The revisions this launcher was checked against (tests/test_gpt_sovits_real.py), each as the sha256
# (first 16 hex digits, line endings made LF: the Windows bundle ships CRLF files) of every file it
# relies on.
KNOWN_REVISIONS = {
    "48b1a01 (2026-08-18)": {
        "api_v2.py": "7a34a5bad6c06fb2",
        "GPT_SoVITS/TTS_infer_pack/TTS.py": "ceb222b48166e47c",
        "GPT_SoVITS/inference_webui.py": "5d3d58c81f0aadb9",
        "GPT_SoVITS/inference_webui_fast.py": "9ca55445fcd74a11",
    },
}
TTS_MODULES = ("TTS_infer_pack.TTS", "GPT_SoVITS.TTS_infer_pack.TTS")
WEBUI_VOCODERS = (("v3", "init_bigvgan", "bigvgan_model"), ("v4", "init_hifigan", "hifigan_model"))
TTS_INFER_YAML = "GPT_SoVITS/configs/tts_infer.yaml"


@dataclass(frozen=True)
class EntryPoint:
    script: str                  # relative to the GPT-SoVITS folder
    relies_on: tuple[str, ...]   # the files whose code the attachment depends on
    through_tts: bool            # True: the TTS class; False: inference_webui.py's module-level models


ENTRY_POINTS = {
    "api": EntryPoint("api_v2.py", ("api_v2.py", "GPT_SoVITS/TTS_infer_pack/TTS.py"), True),
    "webui-fast": EntryPoint("GPT_SoVITS/inference_webui_fast.py",
                             ("GPT_SoVITS/inference_webui_fast.py", "GPT_SoVITS/TTS_infer_pack/TTS.py"), True),
    "webui": EntryPoint("GPT_SoVITS/inference_webui.py", ("GPT_SoVITS/inference_webui.py",), False),
}


def fingerprint(path: Path) -> str:
    """sha256 (16 hex digits) of a text file with its line endings made LF."""
    return hashlib.sha256(path.read_bytes().replace(b"\r\n", b"\n")).hexdigest()[:16]


def known_revision(root: Path, entry: EntryPoint) -> str:
    """The known GPT-SoVITS revision whose files `entry` relies on are the ones in `root`."""
    missing = [name for name in entry.relies_on if not (root / name).is_file()]
    if missing:
        raise UserError(f"{root} is not a GPT-SoVITS folder ({missing[0]} not found); start the launcher "
                        "from the folder that holds api_v2.py and GPT_SoVITS\\")
    found = {name: fingerprint(root / name) for name in entry.relies_on}
    for revision, files in KNOWN_REVISIONS.items():
        if all(files.get(name) == digest for name, digest in found.items()):
            return revision
    described = ", ".join(f"{name} {digest}" for name, digest in found.items())
    raise UserError(f"this GPT-SoVITS is not a revision the launcher was checked against (found {described}); "
                    f"supported: {', '.join(KNOWN_REVISIONS)}; use that revision, or pass --any-revision "
                    "to start it unchecked")


def console_handler() -> None:
    """The drop-in's INFO lines on the console whatever GPT-SoVITS does with logging (nothing on
    its path configures it, and the root logger's level would hide them)."""
    logger = logging.getLogger("serving")
    if not any(getattr(handler, "gsv_console", False) for handler in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[gsv-vocoder-trt] %(message)s"))
        handler.gsv_console = True
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


# --- the TTS class (api_v2.py, inference_webui_fast.py) ----------------------------------------------

def attach_to_tts_class(tts_class, settings: dict[str, Any], load_engine: Callable = load_runtime_engine) -> None:
    """Every TTS built from now on installs the drop-in (tts_infer.yaml's `tensorrt:` section, or
    its defaults), and TTS.run streams v3/v4 in streaming mode. Idempotent."""
    from serving.gpt_sovits.fragments import streaming_run

    if getattr(tts_class, "_gsv_vocoder_trt", False):
        return
    original_init, original_run = tts_class.__init__, tts_class.run

    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        install(self, settings=settings, load_engine=load_engine)

    def run(self, inputs: dict):
        return streaming_run(self, inputs, original_run)

    for new, old in ((__init__, original_init), (run, original_run)):
        new.__name__, new.__qualname__, new.__doc__, new.__wrapped__ = old.__name__, old.__qualname__, old.__doc__, old
    tts_class.__init__, tts_class.run, tts_class._gsv_vocoder_trt = __init__, run, True


class TTSImportHook(importlib.abc.MetaPathFinder):
    """Patches the TTS class right after TTS_infer_pack/TTS.py is imported, under either name
    (api_v2.py imports GPT_SoVITS.TTS_infer_pack.TTS, inference_webui_fast.py TTS_infer_pack.TTS)."""

    def __init__(self, on_load: Callable[[types.ModuleType], None]):
        self.on_load = on_load

    def find_spec(self, fullname, path, target=None):
        if fullname not in TTS_MODULES:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        exec_module = spec.loader.exec_module

        def exec_then_attach(module):
            exec_module(module)
            self.on_load(module)

        spec.loader.exec_module = exec_then_attach
        return spec


def hook_tts(settings: dict[str, Any], load_engine: Callable = load_runtime_engine) -> None:
    """Attach to TTS now where TTS.py is already imported, and at import otherwise."""
    def on_load(module):
        attach_to_tts_class(module.TTS, settings, load_engine)
        log.info("attached to %s.TTS: v3/v4 vocoders through the engine, streaming_mode 2/3 stream them",
                 module.__name__)

    for name in TTS_MODULES:
        if name in sys.modules:
            on_load(sys.modules[name])
    if not any(isinstance(finder, TTSImportHook) for finder in sys.meta_path):
        sys.meta_path.insert(0, TTSImportHook(on_load))


# --- inference_webui.py's module-level vocoders -----------------------------------------------------

def webui_options(root: Path) -> dict[str, Any]:
    """The `tensorrt:` section of GPT-SoVITS' tts_infer.yaml (the default UI reads no yaml itself),
    checked as install() checks it; a refused one reads as use_tensorrt off (options.py)."""
    return launcher_options(root / TTS_INFER_YAML)


def wrap_webui_vocoders(namespace: dict, dropin: DropIn) -> None:
    """Wrap inference_webui.py's init_bigvgan/init_hifigan in `namespace` (its globals): after each,
    the model it put in place is served through the engine (or stays, with the reason said once)."""
    for version, loader, model in WEBUI_VOCODERS:
        original = namespace[loader]

        def load_and_serve(*args, _original=original, _version=version, _model=model, **kwargs):
            result = _original(*args, **kwargs)
            dtype = torch.float16 if namespace.get("is_half") else torch.float32
            namespace[_model] = dropin.serve(namespace[_model], _version, dtype, namespace["device"])
            return result

        load_and_serve.__name__ = load_and_serve.__qualname__ = loader
        load_and_serve.__wrapped__ = original
        namespace[loader] = load_and_serve


def split_after_definitions(tree: ast.Module, names: tuple[str, ...]) -> int:
    """The index of the first top-level statement after the last of `names` is defined."""
    seen: set[str] = set()
    for index, node in enumerate(tree.body):
        if isinstance(node, ast.FunctionDef) and node.name in names:
            seen.add(node.name)
            if seen == set(names):
                return index + 1
    raise UserError(f"inference_webui.py defines none or only some of {', '.join(names)}; "
                    f"this is not a GPT-SoVITS the launcher knows")


# --- running the entry point ------------------------------------------------------------------------

def run_script(path: Path, argv: list[str], between: Optional[tuple[tuple[str, ...], Callable[[dict], None]]] = None):
    """Run `path` as `python path argv...` would, as __main__ in this process: its folder first on
    sys.path, sys.argv its own. `between`: (function names, callback) to call with its globals once
    those functions are defined, before the statements that follow run."""
    source = path.read_bytes().decode("utf-8-sig")
    tree = ast.parse(source, filename=str(path))
    cut = split_after_definitions(tree, between[0]) if between else len(tree.body)
    module = types.ModuleType("__main__")
    module.__file__, module.__builtins__ = str(path), __builtins__
    namespace = module.__dict__
    sys.argv = [str(path), *argv]
    sys.path.insert(0, str(path.parent))
    sys.modules["__main__"] = module
    exec(compile(ast.Module(body=tree.body[:cut], type_ignores=[]), str(path), "exec"), namespace)
    if between:
        between[1](namespace)
    exec(compile(ast.Module(body=tree.body[cut:], type_ignores=[]), str(path), "exec"), namespace)
    return namespace


def launch(name: str, argv: list[str], *, root: Path | None = None, check_revision: bool = True,
           settings: dict[str, Any] | None = None, load_engine: Callable = load_runtime_engine) -> dict:
    """Start entry point `name` ("webui", "webui-fast", "api") of the GPT-SoVITS in `root` (default:
    the working directory) with GPT-SoVITS' own arguments `argv`. Returns the script's globals once it
    returns (a server's start blocks until it stops)."""
    from pipeline.settings import load_settings

    entry = ENTRY_POINTS[name]
    root = Path.cwd() if root is None else Path(root)
    revision = known_revision(root, entry) if check_revision else "unchecked"
    settings = settings if settings is not None else load_settings()
    console_handler()
    log.info("starting GPT-SoVITS %s (revision %s) with the TensorRT vocoder drop-in", entry.script, revision)
    if entry.through_tts:
        hook_tts(settings, load_engine)
        return run_script(root / entry.script, argv)
    options = webui_options(root)
    if options.get("use_tensorrt", True) is False:
        log.info("use_tensorrt is off in %s; GPT-SoVITS keeps its PyTorch vocoder [tier: pytorch]", TTS_INFER_YAML)
        return run_script(root / entry.script, argv)
    dropin = DropIn(options, settings, load_engine)
    names = tuple(loader for _, loader, _ in WEBUI_VOCODERS)
    return run_script(root / entry.script, argv, (names, lambda namespace: wrap_webui_vocoders(namespace, dropin)))
