"""Turn a job's inputs (prompts, images, a video to extend) into model-ready conditioning.

Everything here runs once per job, before the section loop: prompts are encoded once per
timeline entry, images once each. Shapes: latents `(1, C, T, h, w)`, pixels `(1, 3, F, H, W)`
in `[-1, 1]`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from framepack.components import Components
from framepack.errors import UserError
from framepack.options import GenerationOptions, keyframe_label
from framepack.text.base import PromptEmbeds
from framepack.timeline import PromptTimeline

MIN_IMAGE_SIDE = 32
MAX_ASPECT = 4.0
END_IMAGE_WEIGHT = 0.5  # weight of the end image's features in the mix (PR #167: plain average)


@dataclass
class Conditioning:
    """Encoded inputs of one job.

    prompts:      one PromptEmbeds (batch 1) per timeline entry; negative: for real CFG.
    start:        (1, C, 1, h, w) start-image latent, or None (text-to-video).
    end:          (1, C, 1, h, w) end-image latent, or None.
    keyframes:    latent time -> (1, C, 1, h, w).
    existing:     (1, C, T, h, w) latents of a video being extended, or None: its last
                  `existing_frames` frames (a causal codec's 1 + k * time_factor).
    source:       (1, 3, F, H, W) every frame of the video being extended, in [-1, 1]; the
                  output starts with them unchanged (the latents cover the last frames only).
    image_embeds: image-encoder tokens of the start image (and per keyframe), released models;
                  with an end image, the average of the start and end images' tokens.
    """

    timeline: PromptTimeline
    prompts: list[PromptEmbeds]
    negative: PromptEmbeds | None
    size: tuple[int, int]
    start: Tensor | None = None
    end: Tensor | None = None
    keyframes: dict[int, Tensor] = field(default_factory=dict)
    existing: Tensor | None = None
    existing_frames: int = 0
    source: Tensor | None = None
    image_embeds: Tensor | None = None
    keyframe_embeds: dict[int, Tensor] = field(default_factory=dict)


def check_image(image: np.ndarray, flag: str) -> None:
    """Refuse images far too small or of extreme aspect ratio."""
    h, w = image.shape[:2]
    if min(h, w) < MIN_IMAGE_SIDE:
        raise UserError(f"{flag}: image is {w}x{h}; it must be at least {MIN_IMAGE_SIDE} pixels on each side")
    if max(h, w) / min(h, w) > MAX_ASPECT:
        raise UserError(
            f"{flag}: image is {w}x{h}, an aspect ratio over {MAX_ASPECT:g}:1; crop it closer to the video's shape"
        )


def output_size(components: Components, image: np.ndarray | None) -> tuple[int, int]:
    """(H, W) of the video: the model's fixed size, or its choice for the start image's size
    (`Components.choose_size`; the released models: the nearest resolution bucket)."""
    spec = components.spec
    if spec.size is not None:
        return spec.size
    if components.choose_size is None:
        raise ValueError(f"model {spec.name} has no fixed size and no Components.choose_size")
    height, width = image.shape[:2] if image is not None else (spec.bucket, spec.bucket)
    return components.choose_size(height, width)


def to_pixels(image: np.ndarray, size: tuple[int, int]) -> Tensor:
    """uint8 (H, W, 3) -> (1, 3, 1, H', W') in [-1, 1], resized and centre-cropped."""
    from framepack.video import resize_center_crop

    image = resize_center_crop(image, *size)
    x = torch.from_numpy(np.array(image, copy=True)).float() / 127.5 - 1.0
    return x.permute(2, 0, 1)[None, :, None]


def encode_frames(components: Components, pixels: Tensor) -> Tensor:
    """(1, 3, F, H, W) -> (1, C, T, h, w) latents on the CPU, float32."""
    with torch.no_grad():
        latents = components.codec.encode(pixels.to(components.device))
    return latents.float().cpu()


def encode_prompts(components: Components, prompts: list[str]) -> list[PromptEmbeds]:
    report = getattr(components.prompt_encoder, "report_unknown", None)
    if report is not None:  # one line for the whole timeline's unknown words
        report(prompts)
    with torch.no_grad():
        return [components.prompt_encoder.encode([p]).to("cpu") for p in prompts]


def prepare(components: Components, options: GenerationOptions) -> Conditioning:
    """Read, check and encode the job's inputs. Raises UserError on bad input files."""
    from framepack.video import read_image, read_video

    spec = components.spec
    image_path = options.image
    if image_path is None and not options.no_image and options.extend is None:
        image_path = spec.example_image
    start_image = None
    if image_path is not None:
        start_image = read_image(image_path)
        check_image(start_image, "--image")
    size = output_size(components, start_image)

    timeline = options.timeline(default_prompt=spec.example_prompt if options.image is None else "")
    cond = Conditioning(
        timeline=timeline,
        prompts=encode_prompts(components, timeline.prompts),
        negative=encode_prompts(components, [options.negative_prompt])[0] if options.cfg > 1 else None,
        size=size,
    )
    if start_image is not None:
        pixels = to_pixels(start_image, size)
        cond.start = encode_frames(components, pixels)[:, :, :1]
        cond.image_embeds = _image_embeds(components, pixels)
    if options.end_image is not None:
        end = read_image(options.end_image)
        check_image(end, "--end-image")
        end_pixels = to_pixels(end, size)
        cond.end = encode_frames(components, end_pixels)[:, :, :1]
        end_embeds = _image_embeds(components, end_pixels)
        if cond.image_embeds is not None and end_embeds is not None:
            # End frame (FramePack PR #167, docs/hunyuan.md): every section sees the average of
            # the start and end images' features; the end latent fills the first inverted
            # section's "post" slot through the plan.
            cond.image_embeds = mix_image_embeds(cond.image_embeds, end_embeds, END_IMAGE_WEIGHT)
    fps = options.fps or spec.fps
    _check_keyframe_latents(components, options.keyframes, fps)
    for seconds, path in options.keyframes:
        image = read_image(path)
        check_image(image, keyframe_label(seconds, path))
        pixels = to_pixels(image, size)
        t = latent_time(components, seconds, fps)
        cond.keyframes[t] = encode_frames(components, pixels)[:, :, :1]
        if components.image_encoder is not None:
            cond.keyframe_embeds[t] = _image_embeds(components, pixels)
    if options.extend is not None:
        frames, _ = read_video(options.extend, fps=fps)
        if len(frames) < 1:
            raise UserError(f"--extend {options.extend}: the video has no frames")
        clip = np.stack([_fit(f, size) for f in frames])
        pixels = torch.from_numpy(clip).float().div(127.5).sub(1.0).permute(3, 0, 1, 2)[None]
        keep = components.codec.num_frames(components.codec.num_latents(pixels.shape[2]))
        if keep > pixels.shape[2]:  # causal codecs take 1 + k * time_factor frames: the history
            # starts after the oldest frames (the output keeps them, from `source`)
            keep = components.codec.num_frames(components.codec.num_latents(pixels.shape[2]) - 1)
        cond.source = pixels
        pixels = pixels[:, :, pixels.shape[2] - keep :]
        cond.existing = encode_frames(components, pixels)
        cond.existing_frames = keep
        if cond.image_embeds is None and components.image_encoder is not None:
            cond.image_embeds = _image_embeds(components, pixels[:, :, -1:])
    return cond


def extension_prompt(video: str) -> str | None:
    """The prompt a video ends with, from its FramePack sidecar (the last entry of its prompt
    timeline); None when it has no readable sidecar (another program's video)."""
    import json

    from framepack.timeline import parse_timeline
    from framepack.video import sidecar_path

    try:
        text = json.loads(sidecar_path(video).read_text()).get("prompts")
        return parse_timeline(text).entries[-1][1] if text else None
    except (OSError, ValueError, AttributeError, TypeError):
        return None


def _check_keyframe_latents(components: Components, keyframes: list[tuple[float, str]], fps: float) -> None:
    """Two keyframes on one latent frame would silently keep only one: refuse them."""
    seen: dict[int, float] = {}
    for seconds, _ in keyframes:
        t = latent_time(components, seconds, fps)
        if t in seen:
            step = components.codec.time_factor / fps
            raise UserError(
                f"--keyframe: {seen[t]:g}s and {seconds:g}s fall on the same latent frame "
                f"({components.codec.time_factor} frames = {step:.3g} s); space them further apart"
            )
        seen[t] = seconds


def latent_time(components: Components, seconds: float, fps: float) -> int:
    """The latent frame holding the pixel frame at `seconds` (causal: latent 0 = frame 0)."""
    frame = round(seconds * fps)
    return components.codec.num_latents(frame + 1) - 1


def _fit(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from framepack.video import resize_center_crop

    return resize_center_crop(frame, *size)


def _image_embeds(components: Components, pixels: Tensor) -> Tensor | None:
    if components.image_encoder is None:
        return None
    with torch.no_grad():
        return components.image_encoder(pixels[:, :, 0].to(components.device)).float().cpu()


def mix_image_embeds(start: Tensor, end: Tensor | None, end_weight: float = 0.5) -> Tensor:
    """Image features for a start + end frame job: (1 - end_weight) * start + end_weight * end.

    0.5 (the default) is the plain average used by FramePack PR #167 and its forks; 0 ignores the
    end image's features (what diffusers' pipeline ends up doing: it computes and drops them).
    """
    if end is None:
        return start
    if not 0.0 <= end_weight <= 1.0:
        raise ValueError(f"end_weight must be in [0, 1], got {end_weight}")
    if start.shape != end.shape:
        raise ValueError(
            f"start and end features differ in shape: {tuple(start.shape)} vs {tuple(end.shape)}"
        )
    return (1 - end_weight) * start + end_weight * end
