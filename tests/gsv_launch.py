"""Start one GPT-SoVITS entry point through the launcher, as `python -m serving.gpt_sovits ENTRY` does,
in this fresh process, with tests/gsv_real.py's stubs and engine double; write what serves to REPORT.

python tests/gsv_launch.py api|webui-fast|webui GSV_ROOT ENGINES REPORT   (cwd: the GPT-SoVITS work folder)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import gsv_real


def plan_name(vocoder):
    from serving.gpt_sovits import EngineVocoder

    return vocoder.plan.name if isinstance(vocoder, EngineVocoder) else (None if vocoder is None else "pytorch")


def main() -> int:
    entry, root, engines, report = sys.argv[1], Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
    gsv_real.install_stubs(root)
    from pipeline.settings import load_settings
    from serving.gpt_sovits.launcher import launch

    settings = load_settings()
    settings["paths"]["engines"] = engines
    namespace = launch(entry, [], root=root, settings=settings, load_engine=gsv_real.EngineDouble)
    served = {}
    if entry == "webui":
        gradio = sys.modules["gradio"]
        app = gradio.Blocks.return_value.__enter__.return_value
        served.update(v4=plan_name(namespace["hifigan_model"]), server_started=app.queue.return_value.launch.called,
                      get_tts_wav_calls_init_bigvgan="init_bigvgan" in namespace["get_tts_wav"].__code__.co_names)
        namespace["init_bigvgan"]()  # what get_tts_wav does for a v3 model once BigVGAN is not loaded
        served.update(v3_after_switch=plan_name(namespace["bigvgan_model"]),
                      v4_after_switch=plan_name(namespace["hifigan_model"]))
    else:
        tts = namespace["tts_pipeline"]
        started = sys.modules["uvicorn"].run.called if entry == "api" else \
            sys.modules["gradio"].Blocks.return_value.__enter__.return_value.queue.return_value.launch.called
        served.update(v4=plan_name(tts.vocoder), server_started=started,
                      run_is_the_launchers=hasattr(type(tts).run, "__wrapped__"))
    report.write_text(json.dumps(served), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
