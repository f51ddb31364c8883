"""Start one GPT-SoVITS entry point in this fresh process, with tests/gsv_real.py's stubs and engine
double, either through the launcher (as `python -m serving.gpt_sovits ENTRY` does) or plainly (as
`python SCRIPT` does, no launcher at all); write what serves to REPORT.

python tests/gsv_launch.py launcher|plain api|webui-parallel|webui GSV_ROOT ENGINES REPORT   (cwd: the work folder)
"""
from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import gsv_real

WEBUI_MODELS = {"v3": ("init_bigvgan", "bigvgan_model"), "v4": ("init_hifigan", "hifigan_model")}


def plan_name(vocoder) -> str | None:
    from serving.gpt_sovits import EngineVocoder

    return vocoder.plan.name if isinstance(vocoder, EngineVocoder) else (None if vocoder is None else "pytorch")


def started(entry: str) -> bool:
    """Whether the entry point reached its server's start (the stubbed uvicorn.run or gradio launch)."""
    if entry == "api":
        return sys.modules["uvicorn"].run.called
    app = sys.modules["gradio"].Blocks.return_value.__enter__.return_value
    return app.queue.return_value.launch.called


def plain_start(root: Path, entry: str) -> dict:
    """`python SCRIPT` from the work folder: the script's folder first on sys.path, its own argv."""
    from serving.gpt_sovits.revision import ENTRY_SCRIPTS

    script = root / ENTRY_SCRIPTS[entry]
    sys.argv = [str(script)]
    sys.path.insert(0, str(script.parent))
    return runpy.run_path(str(script), run_name="__main__")


def webui_report(namespace: dict) -> dict:
    """What serves each vocoder at start, then after each loader not yet run is called (what
    get_tts_wav does after a switch to a model of that version)."""
    served = {version: plan_name(namespace.get(model)) for version, (_, model) in WEBUI_MODELS.items()}
    for version, (loader, model) in WEBUI_MODELS.items():
        if loader in namespace and namespace.get(model) is None:
            served["get_tts_wav_calls_" + loader] = loader in namespace["get_tts_wav"].__code__.co_names
            namespace[loader]()
            served[f"{version}_after_switch"] = plan_name(namespace.get(model))
            served["after_switch"] = {v: plan_name(namespace.get(m)) for v, (_, m) in WEBUI_MODELS.items()}
    return served


def tts_report(namespace: dict) -> dict:
    tts = namespace["tts_pipeline"]
    version = tts.configs.version
    return {version: plan_name(getattr(tts, "vocoder", None)),
            "run_is_the_launchers": getattr(type(tts), "_gsv_vocoder_trt", False)}


def main() -> int:
    mode, entry, root, engines, report = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4], Path(sys.argv[5])
    gsv_real.install_stubs(root)
    if mode == "plain":
        namespace = plain_start(root, entry)
    else:
        from pipeline.settings import load_settings
        from serving.gpt_sovits.launcher import launch

        settings = load_settings()
        settings["paths"]["engines"] = engines
        namespace = launch(entry, [], root=root, settings=settings, load_engine=gsv_real.EngineDouble)
    served = webui_report(namespace) if entry == "webui" else tts_report(namespace)
    served["server_started"] = bool(started(entry))
    report.write_text(json.dumps(served), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
