"""The two GPT-SoVITS vocoders in PyTorch, key-for-key compatible with the upstream checkpoints.

v3 is BigVGAN v2 (anti-aliased SnakeBeta activations), v4 a HiFi-GAN generator. Both are written
for export: channel counts are fixed at construction, so filter expansions and Snake's exp terms
are functions of parameters only (the exporter leaves them as nodes; export.clean folds them into
constants with onnx-graphsurgeon); nothing reads the input's shape, so batch and frames stay dynamic.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from runtime.limits import MAX_DILATION, MAX_HOP, MAX_N_MELS, MAX_SAMPLING_RATE, MIN_SAMPLING_RATE

# --- hyper-parameters -------------------------------------------------------------------------


@dataclass(frozen=True)
class BigVGANConfig:
    """BigVGAN v2 hyper-parameters, named as in its config.json."""

    num_mels: int = 100
    upsample_rates: tuple[int, ...] = (4, 4, 2, 2, 2, 2)
    upsample_kernel_sizes: tuple[int, ...] = (8, 8, 4, 4, 4, 4)
    upsample_initial_channel: int = 1536
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    snake_logscale: bool = True
    use_tanh_at_final: bool = False
    use_bias_at_final: bool = False
    sampling_rate: int = 24000
    resblock: str = "1"
    activation: str = "snakebeta"

    @classmethod
    def from_json(cls, raw: dict) -> "BigVGANConfig":
        """Keep the keys this generator uses; config.json also carries training settings. The sizes
        must be there (a default would build another variant than the weights') and make sense;
        a ValueError names the first that does not."""
        if not isinstance(raw, dict):
            raise ValueError("the file is not a JSON object")
        missing = [name for name in REQUIRED_SIZES if name not in raw]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        values = {}
        for name in cls.__dataclass_fields__:
            if name in raw:
                value = raw[name]
                if isinstance(value, list):
                    value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
                values[name] = value
        config = cls(**values)
        config.check()
        return config

    def check(self) -> None:
        """Positive whole sizes, one kernel per upsampling and one dilation list per resblock kernel,
        and channels that halve at every upsampling."""
        def positive(value) -> bool:
            return isinstance(value, int) and not isinstance(value, bool) and value > 0

        for name in ("num_mels", "upsample_initial_channel", "sampling_rate"):
            if not positive(getattr(self, name)):
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("upsample_rates", "upsample_kernel_sizes", "resblock_kernel_sizes"):
            values = getattr(self, name)
            if not (isinstance(values, tuple) and values and all(positive(v) for v in values)):
                raise ValueError(f"{name} must be a non-empty list of positive integers, got {values!r}")
        dilations = self.resblock_dilation_sizes
        if not (isinstance(dilations, tuple) and all(isinstance(d, tuple) and d and all(positive(v) for v in d)
                                                     for d in dilations)):
            raise ValueError(f"resblock_dilation_sizes must be lists of positive integers, got {dilations!r}")
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes):
            raise ValueError(f"{len(self.upsample_rates)} upsample_rates but {len(self.upsample_kernel_sizes)} "
                             "upsample_kernel_sizes")
        if len(self.resblock_kernel_sizes) != len(dilations):
            raise ValueError(f"{len(self.resblock_kernel_sizes)} resblock_kernel_sizes but {len(dilations)} "
                             "resblock_dilation_sizes")
        if self.upsample_initial_channel % 2 ** len(self.upsample_rates):
            raise ValueError(f"upsample_initial_channel {self.upsample_initial_channel} does not halve "
                             f"{len(self.upsample_rates)} times")
        self.check_limits()

    def check_limits(self) -> None:
        """The sizes that leave the weights' shapes alone but set the work of every pass (the hop,
        the dilations, the bands and the rate) against runtime/limits.py: a plausible config.json
        with a hop of a million would pass the weight check and then ask gigabytes of each pass."""
        hop = math.prod(self.upsample_rates)
        largest_dilation = max(max(d) for d in self.resblock_dilation_sizes)
        for what, value, lowest, highest in (("hop (the product of upsample_rates)", hop, 1, MAX_HOP),
                                             ("the largest of resblock_dilation_sizes", largest_dilation, 1, MAX_DILATION),
                                             ("num_mels", self.num_mels, 1, MAX_N_MELS),
                                             ("sampling_rate", self.sampling_rate, MIN_SAMPLING_RATE, MAX_SAMPLING_RATE)):
            if not lowest <= value <= highest:
                raise ValueError(f"{what} is {value}, outside {lowest}..{highest} (runtime/limits.py)")


REQUIRED_SIZES = ("num_mels", "upsample_rates", "upsample_kernel_sizes", "upsample_initial_channel",
                  "resblock_kernel_sizes", "resblock_dilation_sizes", "sampling_rate")


@dataclass(frozen=True)
class HiFiGANConfig:
    """The v4 generator's constructor arguments in GPT-SoVITS."""

    num_mels: int = 100
    upsample_rates: tuple[int, ...] = (10, 6, 2, 2, 2)
    upsample_kernel_sizes: tuple[int, ...] = (20, 12, 4, 4, 4)
    upsample_initial_channel: int = 512
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = field(default=((1, 3, 5), (1, 3, 5), (1, 3, 5)))
    sampling_rate: int = 48000
    mel_frames_per_second: int = 100


def dilated_padding(kernel_size: int, dilation: int) -> int:
    return (kernel_size * dilation - dilation) // 2


def dilated_conv_pairs(channels: int, kernel_size: int, dilations: tuple[int, ...]) -> tuple[nn.ModuleList, nn.ModuleList]:
    """The residual blocks' convolutions: one dilated and one plain 'same'-length conv per dilation."""
    convs1 = nn.ModuleList(
        nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=dilated_padding(kernel_size, d))
        for d in dilations)
    convs2 = nn.ModuleList(
        nn.Conv1d(channels, channels, kernel_size, padding=dilated_padding(kernel_size, 1)) for _ in dilations)
    return convs1, convs2


def mean_of_blocks(blocks: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
    """The multi-receptive-field fusion both generators share: the mean of parallel blocks."""
    total = blocks[0](x)
    for block in blocks[1:]:
        total = total + block(x)
    return total / len(blocks)


# --- v3: BigVGAN v2 ---------------------------------------------------------------------------


def kaiser_sinc_filter(cutoff: float, half_width: float, kernel_size: int) -> torch.Tensor:
    """BigVGAN's windowed-sinc low-pass filter, shape (1, 1, kernel_size), summing to one; computed on
    the CPU even where the module is laid out on torch's meta device (a few values, and meta's
    decompositions of these ops are slow)."""
    half_size = kernel_size // 2
    delta_f = 4 * half_width
    attenuation = 2.285 * (half_size - 1) * math.pi * delta_f + 7.95
    if attenuation > 50.0:
        beta = 0.1102 * (attenuation - 8.7)
    elif attenuation >= 21.0:
        beta = 0.5842 * (attenuation - 21) ** 0.4 + 0.07886 * (attenuation - 21.0)
    else:
        beta = 0.0
    window = torch.kaiser_window(kernel_size, beta=beta, periodic=False, device="cpu")
    if kernel_size % 2 == 0:
        time = torch.arange(-half_size, half_size, device="cpu") + 0.5
    else:
        time = torch.arange(kernel_size, device="cpu") - half_size
    taps = 2 * cutoff * window * torch.sinc(2 * cutoff * time)
    return (taps / taps.sum()).view(1, 1, kernel_size)


class SnakeBeta(nn.Module):
    """x + 1/(beta + 1e-9) * sin(alpha * x)^2, with alpha and beta stored as logs when logscale."""

    def __init__(self, channels: int, logscale: bool = True):
        super().__init__()
        initial = torch.zeros(channels) if logscale else torch.ones(channels)
        self.alpha = nn.Parameter(initial.clone())
        self.beta = nn.Parameter(initial.clone())
        self.logscale = logscale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha, beta = (torch.exp(self.alpha), torch.exp(self.beta)) if self.logscale else (self.alpha, self.beta)
        frequency = alpha.view(1, -1, 1)
        inverse_beta = (1.0 / (beta + 1e-9)).view(1, -1, 1)
        wave = torch.sin(x * frequency)
        return x + inverse_beta * (wave * wave)


class UpSample2x(nn.Module):
    """Replicate-pad, depthwise transposed convolution by the filter (times 2), crop to 2T."""

    def __init__(self, channels: int, kernel_size: int = 12):
        super().__init__()
        self.channels = channels
        self.pad = kernel_size // 2 - 1
        self.crop = self.pad * 2 + (kernel_size - 2) // 2
        self.register_buffer("filter", kaiser_sinc_filter(0.25, 0.3, kernel_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (self.pad, self.pad), mode="replicate")
        weight = 2.0 * self.filter.expand(self.channels, 1, -1)
        x = F.conv_transpose1d(x, weight, stride=2, groups=self.channels)
        return x[..., self.crop:-self.crop]


class LowPassFilter(nn.Module):
    """Holds the down-sampling filter under the upstream key `downsample.lowpass.filter`."""

    def __init__(self, kernel_size: int = 12):
        super().__init__()
        self.register_buffer("filter", kaiser_sinc_filter(0.25, 0.3, kernel_size))


class DownSample2x(nn.Module):
    """Replicate-pad (5 left, 6 right), depthwise convolution by the filter with stride 2."""

    def __init__(self, channels: int, kernel_size: int = 12):
        super().__init__()
        self.channels = channels
        self.pad_left = kernel_size // 2 - 1
        self.pad_right = kernel_size // 2
        self.lowpass = LowPassFilter(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (self.pad_left, self.pad_right), mode="replicate")
        weight = self.lowpass.filter.expand(self.channels, 1, -1)
        return F.conv1d(x, weight, stride=2, groups=self.channels)


class AntiAliasedSnake(nn.Module):
    """BigVGAN's Activation1d: SnakeBeta evaluated at twice the sample rate."""

    def __init__(self, channels: int, logscale: bool):
        super().__init__()
        self.act = SnakeBeta(channels, logscale)
        self.upsample = UpSample2x(channels)
        self.downsample = DownSample2x(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(self.act(self.upsample(x)))


class AMPBlock(nn.Module):
    """Three (activation, dilated conv, activation, conv) pairs, each added back to its input."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...], logscale: bool):
        super().__init__()
        self.convs1, self.convs2 = dilated_conv_pairs(channels, kernel_size, dilations)
        self.activations = nn.ModuleList(AntiAliasedSnake(channels, logscale) for _ in range(2 * len(dilations)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pairs = zip(self.convs1, self.convs2, self.activations[::2], self.activations[1::2])
        for conv1, conv2, act1, act2 in pairs:
            x = conv2(act2(conv1(act1(x)))) + x
        return x


class MelGenerator(nn.Module):
    """What both vocoders share: their config, hop and rate, and the first convolution over the mel."""

    def __init__(self, config: BigVGANConfig | HiFiGANConfig):
        super().__init__()
        self.config = config
        self.hop = math.prod(config.upsample_rates)
        self.sampling_rate = config.sampling_rate
        self.num_mels = config.num_mels
        self.conv_pre = nn.Conv1d(config.num_mels, config.upsample_initial_channel, 7, padding=3)


class BigVGAN(MelGenerator):
    """BigVGAN v2 generator: log-mel (B, num_mels, T) to audio (B, 1, T * hop) in [-1, 1]."""

    def __init__(self, config: BigVGANConfig = BigVGANConfig()):
        if config.resblock != "1" or config.activation != "snakebeta":
            raise ValueError("only BigVGAN v2 generators (resblock '1', activation 'snakebeta') are supported")
        super().__init__(config)
        base = config.upsample_initial_channel
        self.ups = nn.ModuleList(
            nn.ModuleList([nn.ConvTranspose1d(base // 2 ** i, base // 2 ** (i + 1), k, u, padding=(k - u) // 2)])
            for i, (u, k) in enumerate(zip(config.upsample_rates, config.upsample_kernel_sizes)))
        self.resblocks = nn.ModuleList(
            AMPBlock(base // 2 ** (i + 1), k, tuple(d), config.snake_logscale)
            for i in range(len(self.ups))
            for k, d in zip(config.resblock_kernel_sizes, config.resblock_dilation_sizes))
        final_channels = base // 2 ** len(self.ups)
        self.activation_post = AntiAliasedSnake(final_channels, config.snake_logscale)
        self.conv_post = nn.Conv1d(final_channels, 1, 7, padding=3, bias=config.use_bias_at_final)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.conv_pre(mel)
        kernels = len(self.config.resblock_kernel_sizes)
        for i, up in enumerate(self.ups):
            x = up[0](x)
            x = mean_of_blocks(self.resblocks[i * kernels:(i + 1) * kernels], x)
        x = self.conv_post(self.activation_post(x))
        return torch.tanh(x) if self.config.use_tanh_at_final else torch.clamp(x, -1.0, 1.0)


# --- v4: HiFi-GAN generator -------------------------------------------------------------------

LEAKY_SLOPE = 0.1


class ResBlock1(nn.Module):
    """HiFi-GAN ResBlock1: (leaky ReLU, dilated conv, leaky ReLU, conv) pairs with residuals."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...]):
        super().__init__()
        self.convs1, self.convs2 = dilated_conv_pairs(channels, kernel_size, dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv1, conv2 in zip(self.convs1, self.convs2):
            x = conv2(F.leaky_relu(conv1(F.leaky_relu(x, LEAKY_SLOPE)), LEAKY_SLOPE)) + x
        return x


class HiFiGAN(MelGenerator):
    """GPT-SoVITS v4 vocoder: log-mel (B, 100, T) at 100 frames/s to 48 kHz audio (B, 1, T * 480)."""

    def __init__(self, config: HiFiGANConfig = HiFiGANConfig()):
        super().__init__(config)
        base = config.upsample_initial_channel
        self.ups = nn.ModuleList(
            nn.ConvTranspose1d(base // 2 ** i, base // 2 ** (i + 1), k, u, padding=(k - u) // 2)
            for i, (u, k) in enumerate(zip(config.upsample_rates, config.upsample_kernel_sizes)))
        self.resblocks = nn.ModuleList(
            ResBlock1(base // 2 ** (i + 1), k, tuple(d))
            for i in range(len(self.ups))
            for k, d in zip(config.resblock_kernel_sizes, config.resblock_dilation_sizes))
        self.conv_post = nn.Conv1d(base // 2 ** len(self.ups), 1, 7, padding=3, bias=True)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.conv_pre(mel)
        kernels = len(self.config.resblock_kernel_sizes)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, LEAKY_SLOPE))
            x = mean_of_blocks(self.resblocks[i * kernels:(i + 1) * kernels], x)
        # upstream uses leaky_relu's default slope (0.01) here, not 0.1
        return torch.tanh(self.conv_post(F.leaky_relu(x)))
