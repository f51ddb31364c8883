"""GPT-SoVITS drop-in: its v3/v4 vocoder call served by a TensorRT engine, the PyTorch fast tier
or GPT-SoVITS' own module where no engine can, and the launcher that attaches it to GPT-SoVITS'
own entry points. One concern a module:

- dropin.py: the mechanics (`install`, `DropIn.serve`, `EngineVocoder`, the TTS method hooks);
- options.py: the `tensorrt:` switches (GPT_SoVITS/configs/vocoder_tensorrt.yaml, else tts_infer.yaml's
  section) and `install()`'s keywords;
- plans.py: which plan on disk serves, and why not (with the command that builds one);
- stats.py: the running counts (`tts.vocoder_stats`);
- synthesis.py: the streaming CFM loop (`stream_vocoder_synthesis`);
- fragments.py: TTS.run's streaming modes; launcher.py: GPT-SoVITS' entry points;
  bundle_build.py: `python -m serving.gpt_sovits build`.

The public names are re-exported here.
"""
from __future__ import annotations

from serving.gpt_sovits.dropin import EngineVocoder, install, unwrapped
from serving.gpt_sovits.options import YAML_KEYS, YAML_SECTION, EngineRequest, engine_request, yaml_options
from serving.gpt_sovits.plans import checkpoint_sha256, load_runtime_engine, rebuild_reasons
from serving.gpt_sovits.stats import VocoderStats
from serving.gpt_sovits.synthesis import stream_vocoder_synthesis, upstream_module

__all__ = ["EngineRequest", "EngineVocoder", "VocoderStats", "YAML_KEYS", "YAML_SECTION", "checkpoint_sha256",
           "engine_request", "install", "load_runtime_engine", "rebuild_reasons", "stream_vocoder_synthesis",
           "unwrapped", "upstream_module", "yaml_options"]
