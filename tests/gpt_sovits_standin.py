"""A stand-in for GPT-SoVITS' TTS_infer_pack/TTS.py as far as v3/v4 synthesis goes, at the oldest
(20250422v4) and the newest (48b1a01) revision with v3/v4 in TTS.py: they differ, for what is modelled
here, only in how `prompt_cache["refer_spec"]` holds the reference (the bare spectrogram at
20250422v4, (spectrogram, audio) since v2Pro; `refer_pair`). tests/test_gpt_sovits_real.py holds it
to each real tree.

Like TTS.py, this module holds the helpers synthesis calls (norm_spec, denorm_spec, mel_fn,
mel_fn_v4, resample) and the TTS class, whose attributes are the ones using_vocoder_synthesis
reads; `StandInTTS.using_vocoder_synthesis` follows upstream's steps (the non-streaming reference
in the tests). The models are stand-ins: decode_encp returns features that carry each frame's
position, and the CFM turns positions into a speech-like normalised mel, so the chunks it emits
are known pieces of one mel, cut the way upstream cuts them.

`StandInConfig` is TTS_Config as far as the drop-in reads it, in either of the two ways upstream
treats a top-level section of tts_infer.yaml that is not its own, such as `tensorrt:`: kept and
written back (since 2025-07-18, b921165: 48b1a01) or dropped from memory and, at the next
save_configs, from the file (20250228v3, 20250422v4, 20250606v2pro).
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vocoder_models.mels import MEL_SPECS, log_mel, sample_mel

spec_min, spec_max = -12, 2
FEATURES_PER_TOKEN = {"v3": 3.875, "v4": 4}
PROMPT, TODO = 0.0, 1.0  # feature channel 1: which mel a frame's position indexes


def norm_spec(x):
    return (x - spec_min) / (spec_max - spec_min) * 2 - 1


def denorm_spec(x):
    return (x + 1) / 2 * (spec_max - spec_min) + spec_min


def _log_mel(vocoder: str, audio: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(log_mel(audio.cpu().numpy(), MEL_SPECS[vocoder]))[None]


def mel_fn(audio):
    return _log_mel("v3", audio)


def mel_fn_v4(audio):
    return _log_mel("v4", audio)


def resample(audio, sr0, sr1, device):
    return F.interpolate(audio[None], scale_factor=sr1 / sr0, mode="linear", align_corners=False)[0].to(device)


class StandInCFM:
    """inference(fea, lengths, prompt, steps) -> (1, 100, T): zeros over the prompt's frames, then
    the normalised speech mel at the positions the features carry."""

    def __init__(self, speech: torch.Tensor):
        self.speech = norm_spec(speech)
        self.calls = 0

    def inference(self, mu, x_lens, prompt, n_timesteps, temperature=1.0, inference_cfg_rate=0):
        """mu (batch, frames, channels): one row per chunk, as upstream's batched path sends them;
        zero feature frames (its padding) give zero mel."""
        assert int(x_lens[0]) == mu.shape[1] and n_timesteps > 0 and inference_cfg_rate == 0
        self.calls += 1
        rows = []
        for row in mu:
            todo = row[prompt.shape[2]:]
            padding = torch.all(todo == 0, dim=1)
            assert torch.all(todo[~padding, 1] == TODO), "the prompt must cover exactly the carried frames"
            mel = self.speech[0][:, todo[:, 0].long()] * (~padding).float()
            rows.append(torch.cat([torch.zeros(self.speech.shape[1], prompt.shape[2]), mel], dim=1))
        return torch.stack(rows)


class StandInSynthesizer:
    """decode_encp as SynthesizerTrnV3's: frames = tokens x 3.875 (v3) or 4 (v4), / speed (+1)."""

    def __init__(self, version: str, speech: torch.Tensor):
        self.version = version
        self.cfm = StandInCFM(speech)

    def decode_encp(self, codes, text, refer, ge=None, speed=1):
        per_token = FEATURES_PER_TOKEN[self.version]
        frames = int(codes.size(2) * per_token) if speed == 1 else int(codes.size(2) * per_token / speed) + 1
        which = PROMPT if ge is None else TODO
        start = 0 if ge is None else 1  # the todo frames' positions from 1: zero features are padding only
        fea = torch.stack([torch.arange(start, start + frames, dtype=torch.float32), torch.full((frames,), which)])[None]
        return fea, (torch.ones(1, 4, 1) if ge is None else ge)


class StandInConfig:
    """TTS_Config's attributes the drop-in reads, `configs_path` and `save_configs`. From the
    tts_infer.yaml at `configs_path` (None: built from nothing, no path) it keeps every top-level
    section in `default_configs` (`keeps_sections`, as since b921165) or only its own version
    sections (as before), and save_configs writes those back with `custom:` rewritten."""

    OWN_SECTIONS = ("v1", "v2", "v3", "v4")

    def __init__(self, version: str, configs_path: str | Path | None = None, keeps_sections: bool = True):
        import yaml

        self.version, self.device, self.is_half, self.use_vocoder, self.sampling_rate = (
            version, torch.device("cpu"), False, True, 32000)
        self.configs_path = None if configs_path is None else str(configs_path)
        loaded = {} if configs_path is None else yaml.load(Path(configs_path).read_text(encoding="utf-8"),
                                                           Loader=yaml.FullLoader) or {}
        own = {name: {"version": name, "device": "cpu", "is_half": False} for name in self.OWN_SECTIONS}
        self.default_configs = {**own, **loaded} if keeps_sections else {name: loaded.get(name, own[name]) for name in own}

    def save_configs(self) -> None:
        import yaml

        configs = {**copy.deepcopy(self.default_configs),
                   "custom": {"version": self.version, "device": str(self.device), "is_half": self.is_half}}
        Path(self.configs_path).write_text(yaml.safe_dump(configs), encoding="utf-8")


class StandInTTS:
    """The TTS attributes v3/v4 synthesis uses, scaled down: T_ref and T_chunk of a few dozen frames
    so a short utterance spans several CFM chunks; the reference at 16 kHz (resampled as upstream)."""

    def __init__(self, version: str, vocoder, todo_frames: int, t_ref: int = 24, t_chunk: int = 64,
                 refer_pair: bool = True, configs: StandInConfig | None = None):
        self.configs = StandInConfig(version) if configs is None else configs
        if self.configs.configs_path is not None:
            self.configs.save_configs()  # as TTS.__init__ does, through init_vits_weights
        self.precision = torch.float32
        self.vocoder = vocoder
        self.vocoder_configs = {"sr": vocoder.sampling_rate, "T_ref": t_ref, "T_chunk": t_chunk,
                                "upsample_rate": vocoder.hop, "overlapped_len": 12}
        reference = sample_mel(version, 1, seed=7)  # a spectrogram of the right kind for refer_spec
        raw = np.sin(np.linspace(0, 900, 8000, dtype=np.float32)) * 0.3  # 0.5 s at 16 kHz
        self.prompt_cache = {"prompt_semantic": torch.zeros(13, dtype=torch.long), "phones": [1, 2, 3],
                             "refer_spec": [(torch.from_numpy(reference), None) if refer_pair
                                            else torch.from_numpy(reference)],
                             "raw_audio": torch.from_numpy(raw)[None], "raw_sr": 16000}
        speech = torch.from_numpy(sample_mel(version, todo_frames + 1, seed=11))  # position 0: never used
        self.vits_model = StandInSynthesizer(version, speech)

    def init_vocoder(self, version: str) -> None:
        return None

    def reference_spec(self) -> torch.Tensor:
        """The first reference's spectrogram, in either form (as upstream reads it since v2Pro)."""
        entry = self.prompt_cache["refer_spec"][0]
        return entry[0] if isinstance(entry, tuple) else entry

    def using_vocoder_synthesis(self, semantic_tokens, phones, speed=1.0, sample_steps=32):
        """Upstream's steps: reference features and mel cut to T_min (at most T_ref), the CFM over
        chunks of T_chunk - T_min feature frames carrying the last T_min frames, one vocoder call."""
        device = self.configs.device
        prompt = self.prompt_cache["prompt_semantic"].unsqueeze(0).unsqueeze(0).to(device)
        prompt_phones = torch.LongTensor(self.prompt_cache["phones"]).unsqueeze(0).to(device)
        refer = self.reference_spec().to(dtype=self.precision, device=device)
        fea_ref, ge = self.vits_model.decode_encp(prompt, prompt_phones, refer)
        audio = self.prompt_cache["raw_audio"].to(device).float()
        target = 24000 if self.configs.version == "v3" else 32000
        audio = resample(audio, self.prompt_cache["raw_sr"], target, device)
        mel2 = norm_spec(mel_fn(audio) if self.configs.version == "v3" else mel_fn_v4(audio))
        t_min = min(mel2.shape[2], fea_ref.shape[2])
        mel2, fea_ref = mel2[:, :, :t_min], fea_ref[:, :, :t_min]
        if t_min > self.vocoder_configs["T_ref"]:
            t_min = self.vocoder_configs["T_ref"]
            mel2, fea_ref = mel2[:, :, -t_min:], fea_ref[:, :, -t_min:]
        chunk_len = self.vocoder_configs["T_chunk"] - t_min
        mel2 = mel2.to(self.precision)
        fea_todo, ge = self.vits_model.decode_encp(semantic_tokens, phones, refer, ge, speed)
        chunks, idx = [], 0
        while fea_todo[:, :, idx:idx + chunk_len].shape[-1]:
            chunk = fea_todo[:, :, idx:idx + chunk_len]
            idx += chunk_len
            fea = torch.cat([fea_ref, chunk], 2).transpose(2, 1)
            cfm = self.vits_model.cfm.inference(fea, torch.LongTensor([fea.size(1)]), mel2, sample_steps, inference_cfg_rate=0)
            cfm = cfm[:, :, mel2.shape[2]:]
            mel2, fea_ref = cfm[:, :, -t_min:], chunk[:, :, -t_min:]
            chunks.append(cfm)
        with torch.inference_mode():
            return self.vocoder(denorm_spec(torch.cat(chunks, 2)))[0][0]

    def using_vocoder_synthesis_batched_infer(self, idx_list, semantic_tokens_list, batch_phones, speed=1.0,
                                              sample_steps=32):
        """Upstream's batched path as the vocoder meets it (the real run at 48b1a01 showed it): every
        fragment's features joined, 12 zero frames in front, cut into chunks of T_chunk - T_min that
        overlap by 12, the last zero-padded; one CFM call over the batch of chunks; their mels joined in
        time, one vocoder call on (1, 100, chunks x chunk_len). The audio is cut back per fragment
        without upstream's SOLA search (a plain 12-frame cross-fade here)."""
        refer = self.reference_spec().to(dtype=self.precision)
        prompt = self.prompt_cache["prompt_semantic"].unsqueeze(0).unsqueeze(0)
        fea_ref, ge = self.vits_model.decode_encp(prompt, torch.LongTensor(self.prompt_cache["phones"])[None], refer)
        t_min = min(fea_ref.shape[2], self.vocoder_configs["T_ref"])
        fea_ref, chunk_len = fea_ref[:, :, -t_min:], self.vocoder_configs["T_chunk"] - t_min
        overlap, hop = self.vocoder_configs["overlapped_len"], self.vocoder_configs["upsample_rate"]
        feats = [self.vits_model.decode_encp(tokens[-idx:][None, None], phones[None], refer, ge, speed)[0]
                 for idx, tokens, phones in zip(idx_list, semantic_tokens_list, batch_phones, strict=True)]
        padded = F.pad(torch.cat(feats, 2), (overlap, 0))
        starts = range(0, padded.shape[2] - overlap, chunk_len - overlap)
        chunks = [F.pad(padded[:, :, a:a + chunk_len], (0, chunk_len - padded[:, :, a:a + chunk_len].shape[2]))
                  for a in starts]
        batch = torch.cat(chunks, 0)
        fea = torch.cat([fea_ref.repeat(len(chunks), 1, 1), batch], 2).transpose(2, 1)
        mel2 = torch.zeros(1, 100, t_min)
        mels = self.vits_model.cfm.inference(fea, torch.LongTensor([fea.size(1)]), mel2, sample_steps)[:, :, -chunk_len:]
        joined = mels.permute(1, 0, 2).reshape(100, -1)[None]
        with torch.no_grad():
            audio = self.vocoder(denorm_spec(joined))[0][0]
        pieces = list(audio.split(chunk_len * hop))
        fade = torch.linspace(0, 1, overlap * hop)
        out = pieces[0]
        for piece in pieces[1:]:
            mixed = out[-overlap * hop:] * (1 - fade) + piece[:overlap * hop] * fade
            out = torch.cat([out[:-overlap * hop], mixed, piece[overlap * hop:]])
        out = out[overlap * hop:]
        fragments = []
        for feat in feats:
            fragments.append(out[:feat.shape[2] * hop])
            out = out[feat.shape[2] * hop:]
        return fragments
