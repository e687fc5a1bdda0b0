"""Measure a model bundle (default: the bundled demo) on held-out procedural-world videos.

1. One section predicted from true context, in each layout (forward, inverted, endpoints), on
   world videos from the "eval" seed range (never used in training): PSNR on the pixels whose
   world position was visible in the context frames (camera geometry; target >= 28 dB; also
   reported for the pixels shown by 1x-level context frames only, which keep every pixel), and
   the share of on-palette pixels relative to the true frames (target >= 0.95; tolerance 16
   8-bit levels per channel, at which the codec's own reconstructions score >= 0.99).
2. 60-second rollouts with the generation pipeline (framepack.pipeline) from the start frames
   of held-out videos (4 by default) with their scripts' caption timelines: on-palette share of
   the last 15% of frames relative to the first 15% (target >= 0.9) and the start-end contrast
   of sharpness (target <= 15%), each pooled over the rollouts (means of the window values),
   next to the same numbers for the true videos.

    python scripts/eval_demo.py                       # bundled demo, both parts, JSON to stdout
    python scripts/eval_demo.py --bundle RUN/bundle --clips 8 --no-rollout --probe
    python scripts/eval_demo.py --bundle framepack/assets/demo --probe --card RUN_DIR   # + model card

`--probe` adds a diagnostic: the clean-section estimate at sigma 0.9 with the true context, with
another sample's context, and the copy-the-last-frame baseline (does the model use its context?).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from framepack.data.world import PALETTE
from framepack.data.world_script import camera_path, format_timeline
from framepack.eval.camera import following
from framepack.eval.metrics import motion, palette_share, psnr
from framepack.model_bundle import Bundle, demo_path, load_bundle
from framepack.packing import BASE_KERNEL, PackedContext, parse_schedule
from framepack.sampling import get_sigmas, sample_unipc, x0_to_velocity
from framepack.train.data import WorldSource, sample_window, section_caption
from framepack.train.layouts import LAYOUTS, build_context, draw_layout, stack_contexts
from framepack.video import to_uint8_frames

PALETTE_TOL = 16
EDGE_SHARE = 0.15


def decode_section(bundle: Bundle, latents: torch.Tensor) -> torch.Tensor:
    """(B, C, w, h, w) latents of a section (not at the video start) -> (B, 3, t*w, H, W) pixels."""
    lead = torch.zeros_like(latents[:, :, :1])  # the causal first latent, decoded to 1 frame and dropped
    return bundle.codec.decode(torch.cat([lead, latents], dim=2))[:, :, 1:]


def section_frames(bundle: Bundle, first_latent: int, window: int) -> list[int]:
    codec = bundle.codec
    return list(range(codec.num_frames(first_latent), codec.num_frames(first_latent + window)))


def context_frames(bundle: Bundle, latent_indices: list[int]) -> list[int]:
    """Pixel frames covered by context latents (latent 0 is frame 0 alone)."""
    frames = []
    for k in latent_indices:
        frames += [0] if k == 0 else list(range(bundle.codec.num_frames(k), bundle.codec.num_frames(k + 1)))
    return frames


def visible_mask(cameras: np.ndarray, targets: list[int], seen: list[int], size: int) -> np.ndarray:
    """(len(targets), H, W) bool: target pixels whose world position a context frame showed."""
    half = size // 2
    offsets = np.arange(size) - half
    out = np.zeros((len(targets), size, size), dtype=bool)
    for i, f in enumerate(targets):
        wx = cameras[f, 0] + offsets  # (W,)
        wy = cameras[f, 1] + offsets  # (H,)
        for g in seen:
            cx, cy = cameras[g]
            in_x = (wx >= cx - half) & (wx < cx - half + size)
            in_y = (wy >= cy - half) & (wy < cy - half + size)
            out[i] |= in_y[:, None] & in_x[None, :]
    return out


def predict(
    bundle: Bundle, context, target_idx, captions, steps: int, shift: float, seed: int
) -> torch.Tensor:
    """Sample sections (B, C, w, h, w) from noise with UniPC, conditioned on true context."""
    b = target_idx.shape[0]
    h = bundle.meta.height // bundle.codec.space_factor
    c = bundle.codec.latent_channels
    embeds = bundle.text_encoder.encode(captions)
    x = torch.randn(b, c, target_idx.shape[1], h, h, generator=torch.Generator().manual_seed(seed))

    def velocity(x: torch.Tensor, sigma: float) -> torch.Tensor:
        t = torch.full((b,), sigma * 1000.0)
        out = bundle.transformer(x, t, embeds.states, embeds.mask, embeds.pooled, target_idx, context)
        return x0_to_velocity(x, out, sigma) if bundle.meta.prediction == "x0" else out

    with torch.no_grad():
        return sample_unipc(velocity, x, get_sigmas(steps, shift=shift))


def eval_sections(bundle: Bundle, clips: int, seed: int, steps: int, shift: float) -> dict:
    meta, codec = bundle.meta, bundle.codec
    config = meta.training.get("config", {})
    n = int(config.get("data", {}).get("clip_latents", 24))
    seconds = float(config.get("data", {}).get("seconds", 64.0))
    source = WorldSource(seconds, meta.height, meta.fps, seed, clips, split="eval")
    schedule = parse_schedule(meta.schedule)
    results: dict[str, dict] = {}
    codec_share = []
    for layout in meta.layouts or LAYOUTS:
        contexts, targets, indices, captions, masks, masks_1x, truths = [], [], [], [], [], [], []
        for i in range(clips):
            gen = torch.Generator().manual_seed(seed * 1000 + i)
            latents, idx, timeline = sample_window(source, codec, i, n, gen)
            lay = draw_layout((layout,), 1 + n, meta.window, gen)
            context, target, target_idx = build_context(latents[None], idx, lay, schedule)
            first = int(target_idx[0, 0])
            real = set(idx.tolist()) - set(target_idx[0].tolist())
            seen = sorted({int(k) for lv in context.levels for k in lv.indices[0].tolist()} & real)
            fine = {
                int(k) for lv in context.levels if lv.kernel == BASE_KERNEL for k in lv.indices[0].tolist()
            }
            seen_1x = sorted(fine & real)  # frames given at full detail (1x level, anchors included)
            script = source._script(i)
            cameras = camera_path(script, source.num_frames, meta.fps)
            frames = section_frames(bundle, first, meta.window)
            masks.append(visible_mask(cameras, frames, context_frames(bundle, seen), meta.height))
            masks_1x.append(visible_mask(cameras, frames, context_frames(bundle, seen_1x), meta.height))
            truths.append(source.frames(i, frames)[0])  # (3, F, H, W) rendered truth
            contexts.append(context)
            targets.append(target)
            indices.append(target_idx)
            captions.append(section_caption(timeline, first, meta.window, codec, meta.fps))
        target_idx = torch.cat(indices)
        pred = predict(bundle, stack_contexts(contexts), target_idx, captions, steps, shift, seed)
        pred_px = decode_section(bundle, pred).clamp(-1, 1)
        true_px = torch.stack(truths)
        recon_px = decode_section(bundle, torch.cat(targets))
        true_u8 = to_uint8_frames(true_px.permute(1, 0, 2, 3, 4).flatten(1, 2)[None])
        recon_u8 = to_uint8_frames(recon_px.permute(1, 0, 2, 3, 4).flatten(1, 2)[None])
        pred_u8 = to_uint8_frames(pred_px.permute(1, 0, 2, 3, 4).flatten(1, 2)[None])
        mask = np.concatenate(masks)[..., None]  # (B*F, H, W, 1)
        mask_1x = np.concatenate(masks_1x)[..., None]
        truth_share = palette_share(true_u8, PALETTE, PALETTE_TOL)
        codec_share.append(palette_share(recon_u8, PALETTE, PALETTE_TOL) / truth_share)
        results[layout] = {
            "samples": clips,
            "psnr_visible_db": round(psnr(true_u8, pred_u8, mask), 2),
            "psnr_all_db": round(psnr(true_u8, pred_u8), 2),
            "visible_share": round(float(mask.mean()), 3),
            "psnr_visible_1x_db": round(psnr(true_u8, pred_u8, mask_1x), 2) if mask_1x.any() else None,
            "visible_1x_share": round(float(mask_1x.mean()), 3),
            "palette_share_relative": round(palette_share(pred_u8, PALETTE, PALETTE_TOL) / truth_share, 4),
        }
    overall_psnr = -10 * math.log10(np.mean([10 ** (-r["psnr_visible_db"] / 10) for r in results.values()]))
    return {
        "layouts": results,
        "psnr_visible_db": round(overall_psnr, 2),
        "palette_share_relative": round(
            float(np.mean([r["palette_share_relative"] for r in results.values()])), 4
        ),
        "codec_palette_share_relative": round(float(np.mean(codec_share)), 4),
        "palette_tolerance": PALETTE_TOL,
        "eval_split": "eval",
        "clips": clips,
        "steps": steps,
        "shift": shift,
    }


def forward_sections(
    bundle: Bundle, clips: int, seed: int
) -> tuple[list[PackedContext], torch.Tensor, torch.Tensor, list[str]]:
    """One forward-layout section from each of `clips` held-out world windows, with its true
    context: the batch-1 contexts, the true sections (B, C, w, h, w), their frame indices
    (B, w) and their captions."""
    meta, codec = bundle.meta, bundle.codec
    n = int(meta.training.get("config", {}).get("data", {}).get("clip_latents", 24))
    source = WorldSource(64.0, meta.height, meta.fps, seed, clips, split="eval")
    schedule = parse_schedule(meta.schedule)
    contexts, targets, indices, captions = [], [], [], []
    for i in range(clips):
        gen = torch.Generator().manual_seed(seed * 1000 + i)
        latents, idx, timeline = sample_window(source, codec, i, n, gen)
        lay = draw_layout(("forward",), 1 + n, meta.window, gen)
        context, target, target_idx = build_context(latents[None], idx, lay, schedule)
        contexts.append(context)
        targets.append(target)
        indices.append(target_idx)
        captions.append(section_caption(timeline, int(target_idx[0, 0]), meta.window, codec, meta.fps))
    return contexts, torch.cat(targets), torch.cat(indices), captions


def probe_context(bundle: Bundle, clips: int, seed: int, sigma: float = 0.9) -> dict:
    """Does the model use its context? The clean-section estimate `x - sigma * v` at a high noise
    level, with the true context and with the context of another sample (forward layout), next
    to copying the most recent context latent. MSE in normalised latent units."""
    contexts, x0, target_idx, captions = forward_sections(bundle, clips, seed)
    context = stack_contexts(contexts)
    shuffled = stack_contexts(contexts[1:] + contexts[:1])
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    x = (1 - sigma) * x0 + sigma * noise
    embeds = bundle.text_encoder.encode(captions)
    t = torch.full((clips,), sigma * 1000.0)
    out = {"sigma": sigma, "target_variance": round(float(x0.var()), 4)}
    with torch.no_grad():
        for name, ctx in (("true_context", context), ("shuffled_context", shuffled)):
            v = bundle.transformer(x, t, embeds.states, embeds.mask, embeds.pooled, target_idx, ctx)
            if bundle.meta.prediction == "x0":
                v = x0_to_velocity(x, v, sigma)
            out[f"x0_mse_{name}"] = round(float(((x - sigma * v - x0) ** 2).mean()), 4)
    recent = context.levels[-1].latents[:, :, -1:]  # the most recent history latent (1x level)
    out["x0_mse_copy_recent"] = round(float(((recent - x0) ** 2).mean()), 4)
    return out


def probe_prompt(bundle: Bundle, clips: int, seed: int, sigma: float = 0.9) -> dict:
    """Does the prompt carry the camera motion? First sections after a lone held-out frame (the
    context shows no motion), each a pan in one of the 4 directions: the clean-section estimate at
    a high noise level with the true caption, the opposite direction's and "holds still".
    MSE in normalised latent units (lower with the true caption: the model hears the direction)."""
    from framepack.data.world import World, render_clip
    from framepack.data.world_script import SPEEDS, Action, Script
    from framepack.train.layouts import SectionLayout

    meta, codec, window = bundle.meta, bundle.codec, bundle.meta.window
    source = WorldSource(8.0, meta.height, meta.fps, seed, clips, split="eval")
    schedule = parse_schedule(meta.schedule)
    opposite = {"left": "right", "right": "left", "up": "down", "down": "up"}
    rows: dict[str, list] = {"true": [], "opposite": [], "still": []}
    contexts, targets, indices = [], [], []
    for i in range(clips):
        direction = ("left", "right", "up", "down")[i % 4]
        action = Action(direction, 2.0, list(SPEEDS.values())[i // 4 % 3])
        clip = render_clip(World(source.dataset.clip_seed(i)), Script((action,), source._script(i).start),
                           meta.height, meta.fps, codec.num_frames(1 + window))  # fmt: skip
        pixels = torch.from_numpy(clip.frames).permute(3, 0, 1, 2).float()[None] / 127.5 - 1
        latents = codec.encode(pixels)  # (1, C, 1 + window, h, w)
        lay = SectionLayout("forward", 1 + window, 1, window, ())
        context, target, target_idx = build_context(latents, torch.arange(1 + window), lay, schedule)
        contexts.append(context)
        targets.append(target)
        indices.append(target_idx)
        rows["true"].append(action.caption)
        rows["opposite"].append(Action(opposite[direction], 2.0, action.speed).caption)
        rows["still"].append("the camera holds still")
    context, x0, target_idx = stack_contexts(contexts), torch.cat(targets), torch.cat(indices)
    x = (1 - sigma) * x0 + sigma * torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    t = torch.full((clips,), sigma * 1000.0)
    out = {"sigma": sigma, "samples": clips}
    with torch.no_grad():
        for name, captions in rows.items():
            embeds = bundle.text_encoder.encode(captions)
            v = bundle.transformer(x, t, embeds.states, embeds.mask, embeds.pooled, target_idx, context)
            if bundle.meta.prediction == "x0":
                v = x0_to_velocity(x, v, sigma)
            out[f"x0_mse_{name}_caption"] = round(float(((x - sigma * v - x0) ** 2).mean()), 4)
    return out


class Generator:
    """`framepack generate` runs as a user makes them (the pipeline, the bundle's defaults),
    from held-out world frames; returns the frames the model made (decoded latents, uint8)."""

    def __init__(self, bundle_path: Path, bundle: Bundle, seed: int, plan: str | None, **settings) -> None:
        from framepack.pipeline import FramePackPipeline

        self.bundle, self.seed, self.plan = bundle, seed, plan
        self.settings = {k: v for k, v in settings.items() if v is not None}  # cfg, shift, steps
        self.pipe = FramePackPipeline.from_pretrained(str(bundle_path))
        self.wall = 0.0
        self.last_settings: dict = {}

    def __call__(self, start: np.ndarray, prompts: str, seconds: float, seed: int) -> np.ndarray:
        from PIL import Image

        with tempfile.TemporaryDirectory() as tmp:
            image = Path(tmp) / "start.png"
            Image.fromarray(start).save(image)
            t0 = time.perf_counter()
            result = self.pipe.generate(
                image=str(image), prompts=prompts, seconds=seconds, seed=seed,
                out=str(Path(tmp) / "video.mp4"), plan=self.plan, progress=False, **self.settings,
            )  # fmt: skip
            self.wall += time.perf_counter() - t0
            from framepack.video import read_metadata

            self.last_settings = read_metadata(Path(tmp) / "video.mp4")
        pixels = self.bundle.codec.decode(result.latents.float()).clamp(-1, 1)
        return to_uint8_frames(pixels)[: result.frames]


def start_frames(
    bundle: Bundle, count: int, seed: int, seconds: float
) -> tuple[WorldSource, list[np.ndarray]]:
    """Held-out world videos of `seconds` and their first frames (uint8 (H, W, 3))."""
    meta = bundle.meta
    source = WorldSource(seconds, meta.height, meta.fps, seed, count, split="eval")
    return source, [to_uint8_frames(source.frames(i, [0])[0][None])[0] for i in range(count)]


def shifted_view(image: np.ndarray, dx: int, dy: int) -> tuple[np.ndarray, np.ndarray]:
    """`image` moved by (dx, dy) pixels, and the (H, W) mask of pixels it still covers."""
    h, w = image.shape[:2]
    out, mask = np.zeros_like(image), np.zeros((h, w), dtype=bool)
    ys, xs = slice(max(dy, 0), h + min(dy, 0)), slice(max(dx, 0), w + min(dx, 0))
    src_y, src_x = slice(max(-dy, 0), h + min(-dy, 0)), slice(max(-dx, 0), w + min(-dx, 0))
    out[ys, xs] = image[src_y, src_x]
    mask[ys, xs] = True
    return out, mask


def continuation_psnr(frames: np.ndarray, velocity: tuple[float, float], count: int = 8) -> float:
    """PSNR of generated frames 1..count against the start frame moved by the prompted motion,
    on the pixels that motion keeps in view (target 2)."""
    refs, masks = zip(*(shifted_view(frames[0], round(velocity[0] * k), round(velocity[1] * k))
                        for k in range(1, count + 1)))  # fmt: skip
    mask = np.stack(masks)[..., None]
    return psnr(np.stack(refs), frames[1 : count + 1], np.broadcast_to(mask, (count, *frames.shape[1:])))


def eval_captions(gen: Generator, bundle: Bundle, images: int, seed: int, seconds: float) -> dict:
    """Every world caption from `images` held-out start frames: motion following (target 3) and
    the continuation of the start image (target 2), next to the same measure on true clips."""
    from framepack.data.world import World, render_clip
    from framepack.data.world_script import (
        Action,
        Script,
        all_captions,
        caption_action,
        content_velocity,
        prompted_velocity,
    )

    fps, n = gen.bundle.meta.fps, round(seconds * bundle.meta.fps) + 1
    source, starts = start_frames(bundle, images, seed, seconds)
    rows = {}
    for caption in all_captions():
        velocity = prompted_velocity([(0.0, caption)], n, fps)
        rates, psnrs, true_rates = [], [], []
        for i, start in enumerate(starts):
            frames = gen(start, f"0s: {caption}", seconds, seed + i)
            rates.append(following(frames, velocity[: len(frames)])["rate"])
            psnrs.append(continuation_psnr(frames, content_velocity(caption_action(caption), fps)))
            action = caption_action(caption)
            script = Script((Action(action.direction, seconds + 1, action.speed),), source._script(i).start)
            world = World(source.dataset.clip_seed(i), source.dataset.config)
            true = render_clip(world, script, bundle.meta.height, fps, n).frames
            true_rates.append(following(true, velocity)["rate"])
        rows[caption] = {
            "following_rate": round(float(np.mean(rates)), 3),
            "true_clip_rate": round(float(np.mean(true_rates)), 3),
            "continuation_psnr_db": round(float(np.mean(psnrs)), 2),
        }
    return {
        "images": images,
        "seconds": seconds,
        "captions": rows,
        "following_rate_min": min(r["following_rate"] for r in rows.values()),
        "following_rate_mean": round(float(np.mean([r["following_rate"] for r in rows.values()])), 3),
        "continuation_psnr_db": round(
            -10 * math.log10(np.mean([10 ** (-r["continuation_psnr_db"] / 10) for r in rows.values()])), 2
        ),
    }


SWITCHES = (
    "0s: the camera pans right steadily; 2s: the camera holds still",
    "0s: the camera holds still; 2s: the camera pans down slowly",
    "0s: the camera pans left quickly; 2s: the camera pans up steadily",
)


def eval_switches(gen: Generator, bundle: Bundle, seed: int, seconds: float = 4.0) -> dict:
    """Prompt timelines: does the motion change within one section of the switch (target 3)?
    Following rate of the pairs that start one section after the switch, and before it."""
    from framepack.data.world_script import prompted_velocity
    from framepack.timeline import parse_timeline

    fps, section = bundle.meta.fps, bundle.codec.time_factor * bundle.meta.window
    _, starts = start_frames(bundle, len(SWITCHES), seed + 100, seconds)
    rows = {}
    for i, text in enumerate(SWITCHES):
        timeline = parse_timeline(text).entries
        frames = gen(starts[i], text, seconds, seed + i)
        result = following(frames, prompted_velocity(list(timeline), len(frames), fps))
        switch = round(timeline[1][0] * fps)
        matched = result["matched"]
        rows[text] = {
            "before": round(float(matched[: switch - result["gap"]].mean()), 3),
            "after_one_section": round(float(matched[switch + section :].mean()), 3),
        }
    return {"timelines": rows, "after_one_section_min": min(r["after_one_section"] for r in rows.values())}


def window_stats(frames: np.ndarray, windows: int) -> dict[str, np.ndarray]:
    """Per-window on-palette share, mean sharpness and mean colour histogram of uint8 frames."""
    from framepack.eval.metrics import color_histograms, sharpness

    parts = np.array_split(np.arange(len(frames)), windows)
    sharp = sharpness(frames)
    return {
        "palette": np.array([palette_share(frames[p], PALETTE, PALETTE_TOL) for p in parts]),
        "sharpness": np.array([sharp[p].mean() for p in parts]),
        "histogram": np.stack([color_histograms(frames[p]).mean(axis=0) for p in parts]),
    }


_MINUTE: dict = {}  # what forked rollout workers read (set before the pool starts)


def _rollout(i: int) -> dict:
    """One 60-s rollout of the minute test (in a worker process when --workers > 1)."""
    from framepack.data.world_script import prompted_velocity
    from framepack.eval.drift import seam_ratio, window_size

    gen, source, start = _MINUTE["gen"], _MINUTE["source"], _MINUTE["starts"][i]
    seed, seconds, windows, fps = _MINUTE["seed"], _MINUTE["seconds"], _MINUTE["windows"], _MINUTE["fps"]
    _, timeline = source.frames(i, [0])
    wall = gen.wall
    frames = gen(start, format_timeline(timeline), seconds, seed + i)
    true = to_uint8_frames(source.frames(i, list(range(len(frames))))[0][None])
    result = following(frames, prompted_velocity(timeline, len(frames), fps))
    edge = window_size(result["pairs"], EDGE_SHARE)
    change, settings = motion(frames), gen.last_settings
    return {
        "gen": window_stats(frames, windows),
        "true": window_stats(true, windows),
        "first": result["matched"][:edge].mean(),
        "last": result["matched"][-edge:].mean(),
        "latent": seam_ratio(change, settings["latent_boundaries"]),
        "section": seam_ratio(change, settings["section_boundaries"]),
        "plan": settings.get("plan"),
        "wall": gen.wall - wall,
    }


def eval_minute(
    gen: Generator,
    bundle: Bundle,
    seed: int,
    seconds: float,
    rollouts: int,
    windows: int = 10,
    workers: int = 1,
) -> dict:
    """60-s rollouts from held-out start frames with their scripts' caption timelines (target 4),
    compared window by window with the true videos of the same scripts (pooled over rollouts);
    motion following in the first and last 15%; seams at latent and section boundaries (target 5).
    `workers` processes (forked, one thread each) share the rollouts."""
    import multiprocessing

    source, starts = start_frames(bundle, rollouts, seed, seconds)
    _MINUTE.update(gen=gen, source=source, starts=starts, seed=seed, seconds=seconds, windows=windows)
    _MINUTE["fps"] = bundle.meta.fps
    if workers > 1:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            done = pool.map(_rollout, range(rollouts), chunksize=1)
    else:
        done = [_rollout(i) for i in range(rollouts)]
    gen.wall += sum(d["wall"] for d in done)
    gen.last_settings = {"plan": done[-1]["plan"]}
    gen_stats, true_stats = [d["gen"] for d in done], [d["true"] for d in done]
    first, last = [d["first"] for d in done], [d["last"] for d in done]
    seams = {k: [d[k] for d in done] for k in ("latent", "section")}
    pooled = {k: np.mean([s[k] for s in gen_stats], axis=0) for k in gen_stats[0]}
    truth = {k: np.mean([s[k] for s in true_stats], axis=0) for k in true_stats[0]}
    palette_dev = np.abs(pooled["palette"] - truth["palette"]) / truth["palette"]
    sharp_dev = np.abs(pooled["sharpness"] - truth["sharpness"]) / truth["sharpness"]
    hist_dist = 0.5 * np.abs(pooled["histogram"] - truth["histogram"]).sum(axis=1)
    return {
        "plan": gen.last_settings.get("plan"),
        "seconds": seconds,
        "rollouts": rollouts,
        "windows": windows,
        "palette_share": {"generated": _r(pooled["palette"]), "true": _r(truth["palette"])},
        "sharpness": {"generated": _r(pooled["sharpness"], 1), "true": _r(truth["sharpness"], 1)},
        "palette_deviation_max": round(float(palette_dev.max()), 4),
        "sharpness_deviation_max": round(float(sharp_dev.max()), 4),
        "histogram_distance": _r(hist_dist),
        "histogram_distance_max": round(float(hist_dist.max()), 4),
        "following_first_15": round(float(np.mean(first)), 3),
        "following_last_15": round(float(np.mean(last)), 3),
        "seam_ratio_latent": round(float(np.mean(seams["latent"])), 3),
        "seam_ratio_section": round(float(np.mean(seams["section"])), 3),
    }


def _r(values: np.ndarray, digits: int = 4) -> list[float]:
    return [round(float(v), digits) for v in values]


TARGETS = {  # (report path, comparison, target): the targets 1-6
    "1. section PSNR on visible pixels, true context (dB)": (("sections", "psnr_visible_db"), ">=", 28.0),
    "2. first 8 frames vs the prompted shift of the image (dB)": (
        ("captions", "continuation_psnr_db"),
        ">=",
        24.0,
    ),
    "3. motion follows the caption, worst caption (share of pairs)": (
        ("captions", "following_rate_min"),
        ">=",
        0.9,
    ),
    "3. motion follows a timeline one section after the switch": (
        ("switches", "after_one_section_min"),
        ">=",
        0.9,
    ),
    "4. minute: on-palette share, worst window vs true (rel. dev.)": (
        ("minute", "palette_deviation_max"),
        "<=",
        0.1,
    ),
    "4. minute: sharpness, worst window vs true (rel. dev.)": (
        ("minute", "sharpness_deviation_max"),
        "<=",
        0.1,
    ),
    "4. minute: colour histogram, worst window vs true (TV dist.)": (
        ("minute", "histogram_distance_max"),
        "<=",
        0.1,
    ),
    "4. minute: motion following in the last 15%": (("minute", "following_last_15"), ">=", 0.9),
    "5. seams: change at latent boundaries / inside": (("minute", "seam_ratio_latent"), "<=", 1.5),
    "5. seams: change at section boundaries / inside": (("minute", "seam_ratio_section"), "<=", 1.5),
    "6. frame size (pixels)": (("bundle_info", "size"), ">=", 64),
}


def target_rows(report: dict) -> list[dict]:
    """Each target with the measured value, whether it is met and by how much it is missed."""
    rows = []
    for name, ((part, key), op, target) in TARGETS.items():
        value = report.get(part, {}).get(key)
        if value is None:
            rows.append({"metric": name, "target": f"{op} {target}", "measured": None, "met": None})
            continue
        met = value >= target if op == ">=" else value <= target
        rows.append({"metric": name, "target": f"{op} {target}", "measured": value, "met": met,
                     "missed_by": None if met else round(abs(value - target), 4)})  # fmt: skip
    return rows


def write_card(bundle_path: Path, run: Path, report: dict, command: str, limits: str = "") -> str:
    """The bundle's README.md (model card) and `model_card` in framepack.json, from a run and a
    report of this script."""
    from framepack.model_bundle import update_meta

    meta = load_bundle(bundle_path).meta
    config = meta.training.get("config", {})
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    wall_min = round(log[-1]["seconds"] / 60, 1) if log else None
    size_mb = round(sum(f.stat().st_size for f in bundle_path.rglob("*") if f.is_file()) / 1e6, 1)
    rows = target_rows(report)
    data = config.get("data", {})
    card = {
        "name": "framepack-demo",
        "command": command,
        "wall_minutes": wall_min,
        "steps": meta.training.get("steps"),
        "samples": meta.training.get("samples"),
        "data": f"procedural world, WorldClips split 'train' (seed {data.get('seed')}, {data.get('num_clips')} "
        f"clips of {data.get('seconds')} s); evaluation: split 'eval' (disjoint seeds)",
        "bundle_mb": size_mb,
        "targets": rows,
        "evaluation": report,
    }
    update_meta(bundle_path, model_card=card)
    lines = [
        "# framepack demo model",
        "",
        f"A small packed next-section model ({meta.height}x{meta.width} frames at {meta.fps:g} fps, window "
        f"{meta.window} latents, schedule `{meta.schedule}`, plan `{meta.default_plan}`, prediction "
        f"`{meta.prediction}`) trained here, on 2 CPU cores, on the procedural world (framepack/data). It exists so "
        "that `framepack generate` runs on a CPU out of the box; it is not a general video model.",
        "",
        f"- trained with: `{command}` ({card['steps']} steps, {card['samples']} samples, {wall_min} min of "
        "training wall time on the shared 2-core CPU machine, one thread per process)",
        f"- data: {card['data']}",
        f"- bundle: {size_mb} MB (transformer float16 EMA weights, diffusers format; vocabulary prompt "
        "encoder; pixel codec config)",
        "",
        "## Measured",
        "",
        f"`{report.get('command', 'python scripts/eval_demo.py')}` (held-out 'eval' seeds)",
        "",
        "| target | wanted | measured | met |",
        "|---|---|---|---|",
    ]
    for row in rows:
        miss = "" if row["met"] or row["measured"] is None else f" (missed by {row['missed_by']})"
        met = "n/a" if row["met"] is None else ("yes" if row["met"] else "no" + miss)
        lines.append(f"| {row['metric']} | {row['target']} | {row['measured']} | {met} |")
    lines += _caption_table(report.get("captions"))
    if limits:
        lines += ["", "## What limits it", "", limits]
    lines += ["", "## Full report", "", "```json", json.dumps(report, indent=2), "```", ""]
    text = "\n".join(lines)
    (bundle_path / "README.md").write_text(text)
    return text


def _caption_table(captions: dict | None) -> list[str]:
    if not captions:
        return []
    lines = [
        "",
        f"Per caption ({captions['images']} held-out start frames, {captions['seconds']:g}-s videos; "
        "following: share of frame pairs 4 apart (2 for quick pans) whose measured motion is within 0.5 px/frame of "
        "the prompted one; true clips: the same measure on the world's own video):",
        "",
        "| caption | following | true clips | first 8 frames vs shifted image (dB) |",
        "|---|---|---|---|",
    ]
    for caption, r in captions["captions"].items():
        lines.append(
            f"| {caption} | {r['following_rate']} | {r['true_clip_rate']} | {r['continuation_psnr_db']} |"
        )
    return lines


def finish(report: dict, args: argparse.Namespace) -> int:
    """Judge the targets, print the report as JSON and write the card when asked."""
    report["targets"] = target_rows(report)
    json.dump(report, sys.stdout, indent=2)
    print()
    if args.card is not None:
        write_card(args.bundle, args.card, report, args.command, args.limits)
    return 0


def merge_reports(args: argparse.Namespace) -> int:
    """One report from the parts of several (the commands are listed together)."""
    report: dict = {}
    commands = []
    for path in args.merge:
        part = json.loads(path.read_text())
        commands.append(part.pop("command", ""))
        part.pop("targets", None)
        wall = part.pop("generation_wall_seconds", 0.0)
        report["generation_wall_seconds"] = round(report.get("generation_wall_seconds", 0.0) + wall, 1)
        report.update(part)
    report["command"] = " && ".join(c for c in commands if c)
    return finish(report, args)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, default=demo_path(), help="model bundle folder (default: the demo)")
    p.add_argument("--clips", type=int, default=24, help="held-out windows per layout (target 1)")
    p.add_argument("--seed", type=int, default=7, help="which held-out videos (eval split) and noise")
    p.add_argument("--steps", type=int, help="sampling steps of the section test (default: the bundle's)")
    p.add_argument(
        "--shift", type=float, help="sampling time shift of the section test (default: the bundle's)"
    )
    p.add_argument("--images", type=int, default=2, help="held-out start frames per caption (targets 2, 3)")
    p.add_argument("--caption-seconds", type=float, default=4.0, help="video length per caption")
    p.add_argument("--seconds", type=float, default=60.0, help="rollout length (targets 4, 5)")
    p.add_argument("--rollouts", type=int, default=8, help="held-out videos rolled out")
    p.add_argument("--plan", help="plan of the generate runs (default: the bundle's)")
    p.add_argument(
        "--cfg", type=float, help="classifier-free guidance of the generate runs (default: the bundle's)"
    )
    p.add_argument(
        "--gen-shift", type=float, help="sampling shift of the generate runs (default: the bundle's)"
    )
    p.add_argument(
        "--gen-steps", type=int, help="sampling steps of the generate runs (default: the bundle's)"
    )
    p.add_argument("--parts", default="sections,captions,switches,minute", help="which parts to run")
    p.add_argument("--probe", action="store_true", help="also probe the use of context at high noise")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--workers", type=int, default=1, help="processes sharing the minute's rollouts")
    p.add_argument("--card", type=Path, metavar="RUN_DIR", help="write the bundle's model card from this run")
    p.add_argument("--command", default="framepack train --preset demo --out RUN_DIR", help="for the card")
    p.add_argument("--limits", default="", help="for the card: what limits the missed targets")
    p.add_argument("--merge", type=Path, nargs="+", metavar="REPORT",
                   help="merge the parts of reports written by earlier runs (e.g. run in parallel) and stop")  # fmt: skip
    args = p.parse_args(argv)
    if args.merge:
        return merge_reports(args)
    torch.set_num_threads(args.threads)
    parts = set(args.parts.split(","))
    bundle = load_bundle(args.bundle)
    steps = args.steps or bundle.meta.steps
    shift = args.shift if args.shift is not None else bundle.meta.shift
    report: dict = {
        "bundle": str(args.bundle),
        "command": "python scripts/eval_demo.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "bundle_info": {"size": min(bundle.meta.height, bundle.meta.width), "plan": bundle.meta.default_plan},
    }
    if "sections" in parts:
        report["sections"] = eval_sections(bundle, args.clips, args.seed, steps, shift)
    if args.probe:
        report["probe"] = probe_context(bundle, args.clips, args.seed)
        report["probe_prompt"] = probe_prompt(bundle, max(args.clips, 12), args.seed)
    gen = Generator(
        args.bundle, bundle, args.seed, args.plan, cfg=args.cfg, shift=args.gen_shift, steps=args.gen_steps
    )
    if "captions" in parts:
        report["captions"] = eval_captions(gen, bundle, args.images, args.seed, args.caption_seconds)
    if "switches" in parts:
        report["switches"] = eval_switches(gen, bundle, args.seed)
    if "minute" in parts:
        report["minute"] = eval_minute(
            gen, bundle, args.seed, args.seconds, args.rollouts, workers=args.workers
        )
    report["generation_wall_seconds"] = round(gen.wall, 1)
    return finish(report, args)


if __name__ == "__main__":
    raise SystemExit(main())
