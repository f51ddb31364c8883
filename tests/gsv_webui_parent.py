"""GPT-SoVITS' webui.py as go-webui.bat starts it (`python -I webui.py zh_CN`, with gradio stubbed:
no UI is served here), then its inference tab's switch, webui.py's own `change_tts_inference`, which
starts the inference UI as a new process with webui.py's command line (`"<python>" -s
GPT_SoVITS/inference_webui.py "zh_CN"`, or inference_webui_fast.py with parallel inference) through
its own Popen. Waits for that process and exits with its exit code.

python -I tests/gsv_webui_parent.py PARALLEL(0|1) SOVITS_PATH GPT_PATH   (cwd: the GPT-SoVITS folder)
"""
from __future__ import annotations

import importlib.util
import os
import runpy
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # -I leaves this file's folder off sys.path
from gsv_real import permissive  # noqa: E402

CHILD_TIMEOUT_S = 600


def main() -> int:
    parallel, sovits_path, gpt_path = sys.argv[1] == "1", sys.argv[2], sys.argv[3]
    sys.modules["gradio"] = permissive("gradio")
    if importlib.util.find_spec("pandas") is None:  # 20250228v3's tools/my_utils imports it (tests/gsv_real.py)
        sys.modules["pandas"] = permissive("pandas")
    sys.argv = ["webui.py", "zh_CN"]
    webui = runpy.run_path("webui.py", run_name="__main__")
    switch = webui["change_tts_inference"]
    for _ in switch("GPT_SoVITS/pretrained_models/bert", "GPT_SoVITS/pretrained_models/hubert", "0", gpt_path,
                    sovits_path, parallel):  # gradio's updates: it yields them before it starts the process
        pass
    return switch.__globals__["p_tts_inference"].wait(timeout=CHILD_TIMEOUT_S)


if __name__ == "__main__":
    sys.exit(main())
