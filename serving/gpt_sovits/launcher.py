"""Start one of GPT-SoVITS' own entry points, unchanged, in this process, with the drop-in attached.

GPT-SoVITS has two ways of vocoding v3/v4: the `TTS` class of TTS_infer_pack/TTS.py (api_v2.py,
inference_webui_fast.py) and inference_webui.py's own module-level models (the default UI, which
never builds a `TTS`). Nothing in GPT-SoVITS' files is edited: the launcher
- hooks the import of TTS_infer_pack/TTS.py (under either of the two names the entry points use)
  so that every `TTS` built installs the drop-in and its `run` streams v3/v4 (fragments.py);
- runs inference_webui.py's top-level statements in two steps, so that between the definition of
  `init_bigvgan`/`init_hifigan` and their first call, both are wrapped: whatever they put in
  `bigvgan_model`/`hifigan_model` is served through the engine, at start and after every switch.
Before that, revision.py reads from the revision's source whether it has all of this; where it
does not, the entry point starts as `python <script>` would start it, with one line saying why.
"""
from __future__ import annotations

import ast
import importlib.abc
import logging
import sys
import types
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from pipeline.errors import UserError
from pipeline.settings import VOCODERS
from serving.gpt_sovits.dropin import DropIn, install
from serving.gpt_sovits.options import launcher_options
from serving.gpt_sovits.plans import load_runtime_engine
from serving.gpt_sovits.revision import ENTRY_SCRIPTS, TTS_MODULES, WEBUI_VOCODERS, Revision, check

log = logging.getLogger("serving")

TTS_INFER_YAML = "GPT_SoVITS/configs/tts_infer.yaml"
THROUGH_TTS = ("api", "webui-parallel")  # these build a TTS; inference_webui.py keeps module-level models
STREAMING_LINES = {
    "modes": "api_v2: streaming_mode 2/3 with parallel_infer=false stream v3/v4 audio as the vocoder makes it; "
             "with parallel_infer on (its default) every mode gives GPT-SoVITS' own audio, a fragment at a time",
    "bool": "api_v2 of this GPT-SoVITS takes streaming_mode as true/false (modes 2/3 arrived 2025-11-28): "
            "streaming_mode=true with parallel_infer=false streams v3/v4 audio as the vocoder makes it; with "
            "parallel_infer on (its default) it gives GPT-SoVITS' own audio, a fragment at a time",
}


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
        log.info("attached to %s.TTS: its v3/v4 vocoders through the drop-in", module.__name__)

    for name in TTS_MODULES:
        if name in sys.modules:
            on_load(sys.modules[name])
    if not any(isinstance(finder, TTSImportHook) for finder in sys.meta_path):
        sys.meta_path.insert(0, TTSImportHook(on_load))


# --- inference_webui.py's module-level vocoders -----------------------------------------------------

def webui_options(root: Path) -> dict[str, Any]:
    """The `tensorrt:` switches (GPT_SoVITS/configs/vocoder_tensorrt.yaml, else tts_infer.yaml's
    section: the default UI reads no yaml itself), checked as install() checks them; refused ones read
    as use_tensorrt off (options.py)."""
    return launcher_options(root / TTS_INFER_YAML)


def wrap_webui_vocoders(namespace: dict, dropin: DropIn, vocoders: tuple[str, ...] = VOCODERS) -> None:
    """Wrap inference_webui.py's init_bigvgan/init_hifigan in `namespace` (its globals), those of
    `vocoders` (the ones this revision has): after each, the model it put in place is served through
    the engine (or stays, with the reason said once)."""
    for version, loader, model in WEBUI_VOCODERS:
        if version not in vocoders:
            continue
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
    raise UserError(f"inference_webui.py defines none or only some of {', '.join(names)} at its top level")


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


def launch(name: str, argv: list[str], *, root: Path | None = None, settings: dict[str, Any] | None = None,
           load_engine: Callable = load_runtime_engine) -> dict:
    """Start entry point `name` ("webui", "webui-parallel", "api") of the GPT-SoVITS in `root` (default:
    the working directory) with GPT-SoVITS' own arguments `argv`: with the drop-in where this
    revision has all it relies on (revision.py), else unchanged with one line saying what is missing.
    Returns the script's globals once it returns (a server's start blocks until it stops)."""
    root = Path.cwd() if root is None else Path(root)
    revision = check(root, name)
    script = root / ENTRY_SCRIPTS[name]
    console_handler()
    if revision.missing:
        log.info("%s", unchanged_line(revision))
        return run_script(script, argv)
    from pipeline.settings import load_settings

    settings = settings if settings is not None else load_settings()
    log.info("starting GPT-SoVITS %s with the TensorRT vocoder drop-in (%s)", revision.script,
             ", ".join(revision.vocoders))
    if revision.streaming:
        log.info("%s", STREAMING_LINES[revision.streaming])
    if name in THROUGH_TTS:
        hook_tts(settings, load_engine)
        return run_script(script, argv)
    options = webui_options(root)
    if options.get("use_tensorrt", True) is False:
        log.info("use_tensorrt is off; GPT-SoVITS keeps its PyTorch vocoder [tier: pytorch]")
        return run_script(script, argv)
    dropin = DropIn(options, settings, load_engine)
    names = tuple(loader for version, loader, _ in WEBUI_VOCODERS if version in revision.vocoders)
    return run_script(script, argv, (names, lambda namespace: wrap_webui_vocoders(namespace, dropin, revision.vocoders)))


def unchanged_line(revision: Revision) -> str:
    """The one line said when the drop-in cannot attach: what is missing, in which file."""
    by_file: dict[str, list[str]] = {}
    for item in revision.missing:
        what, _, where = item.rpartition(" (")
        by_file.setdefault(where.rstrip(")"), []).append(what)
    found = "; ".join(f"{where} has no {', '.join(whats)}" for where, whats in by_file.items())
    return (f"starting GPT-SoVITS {revision.script} unchanged, its vocoder GPT-SoVITS' own (PyTorch): "
            f"the drop-in relies on what this revision lacks ({found})")
