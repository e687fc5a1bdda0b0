"""Measure a model bundle (default: the bundled demo) on held-out procedural-world videos
against issue 20's targets (docs/eval.md), and write its model card.

Parts (`--parts`; the measures themselves live in framepack.eval):
- `sections`: one section predicted from true context per trained layout: PSNR on the pixels whose
  world position a context frame showed (target >= 28 dB), on-palette share.
- `captions`: every world caption from `--images` held-out start frames: following on pairs 4
  frames apart and on consecutive frames (>= 0.9 for every caption), the first 8 frames against
  the true clip of the caption on the pixels still in view (>= 26 dB), next to the true clips.
- `switches`: prompt timelines with a change at 2 s (following one section after the switch).
- `minute`: 60-s rollouts of scripts that pan throughout, window by window (6 s) against the true
  videos (within 0.15), following in the last 15% (>= 0.9), seams (<= 1.5).
- `speed`: the wall time of a 10-s video (<= 30 s), or `--bench` reads it from
  `benchmarks/bench_generate.py --json`.

    python scripts/eval_demo.py                       # bundled demo, all parts, JSON to stdout
    python scripts/eval_demo.py --bundle B --clips 8 --images 1 --parts sections,captions --probe
    python scripts/eval_demo.py --bundle B --bench bench.json --card RUN_DIR   # + model card

`--probe` adds a diagnostic: the clean-section estimate at sigma 0.9 with the true context, with
another sample's context, and the copy-the-last-frame baseline (does the model use its context?).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from framepack.data.world import PALETTE
from framepack.data.world_script import camera_path, format_timeline
from framepack.errors import UserError
from framepack.eval.camera import following, step_following
from framepack.eval.continuation import CONTINUATION_FRAMES, continuation_psnr, in_view_mask, pooled_psnr
from framepack.eval.metrics import motion, palette_share, psnr, read_report, report_json
from framepack.eval.windows import PALETTE_TOL, mean_stats, window_count, window_deviations, window_stats
from framepack.model_bundle import Bundle, demo_path, load_bundle
from framepack.packing import BASE_KERNEL, PackedContext, parse_schedule
from framepack.sampling import get_sigmas, sample_unipc, x0_to_velocity
from framepack.train.data import WorldSource, sample_window, section_caption
from framepack.train.layouts import LAYOUTS, build_context, draw_layout, stack_contexts
from framepack.video import to_uint8_frames

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
            size = (meta.height, meta.width)
            masks.append(in_view_mask(cameras, frames, context_frames(bundle, seen), *size))
            masks_1x.append(in_view_mask(cameras, frames, context_frames(bundle, seen_1x), *size))
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
    overall_psnr = pooled_psnr([r["psnr_visible_db"] for r in results.values()])
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
    bundle: Bundle, count: int, seed: int, seconds: float, script_options: dict | None = None
) -> tuple[WorldSource, list[np.ndarray]]:
    """Held-out world videos of `seconds` and their first frames (uint8 (H, W, 3))."""
    meta = bundle.meta
    source = WorldSource(
        seconds, meta.height, meta.fps, seed, count, split="eval", script_options=script_options
    )
    return source, [to_uint8_frames(source.frames(i, [0])[0][None])[0] for i in range(count)]


def caption_truth(
    source: WorldSource, index: int, caption: str, size: tuple[int, int], fps: float, frames: int
) -> tuple[np.ndarray, np.ndarray]:
    """The true clip of a world `caption` from held-out video `index`'s start frame (its world and
    start, the caption's action throughout): frames uint8 (F, H, W, 3), camera path (F, 2)."""
    from framepack.data.world import World, render_clip
    from framepack.data.world_script import Action, Script, caption_action

    action = caption_action(caption)
    script = Script((Action(action.direction, frames / fps + 1, action.speed),), source._script(index).start)
    world = World(source.dataset.clip_seed(index), source.dataset.config)
    clip = render_clip(world, script, size, fps, frames)
    return clip.frames, np.array([t["camera"] for t in clip.truth])


def codec_continuation(bundle: Bundle, truth: np.ndarray, cameras: np.ndarray) -> float:
    """The codec's own ceiling on the continuation PSNR: the true frames encoded and decoded."""
    codec = bundle.codec
    count = codec.num_frames(codec.num_latents(CONTINUATION_FRAMES + 1))
    pixels = torch.from_numpy(truth[:count]).permute(3, 0, 1, 2).float()[None] / 127.5 - 1  # (1, 3, F, H, W)
    with torch.no_grad():
        recon = to_uint8_frames(codec.decode(codec.encode(pixels)).clamp(-1, 1))
    return continuation_psnr(recon, truth, cameras)


def caption_row(
    gen: Generator, bundle: Bundle, source: WorldSource, starts: list, caption: str, seconds: float, seed: int
) -> dict:
    """One caption from every start frame: following (pairs, consecutive frames) of the generated
    and the true clips, continuation PSNR against the truth and the codec's ceiling on it."""
    from framepack.data.world_script import prompted_velocity

    fps, size = bundle.meta.fps, (bundle.meta.height, bundle.meta.width)
    got: dict[str, list[float]] = {
        k: [] for k in ("pairs", "steps", "true_pairs", "true_steps", "psnr", "codec")
    }
    for i, start in enumerate(starts):
        frames = gen(start, f"0s: {caption}", seconds, seed + i)
        n = max(len(frames), round(seconds * fps) + 1)
        velocity = prompted_velocity([(0.0, caption)], n, fps)
        truth, cameras = caption_truth(source, i, caption, size, fps, n)
        got["pairs"].append(following(frames, velocity[: len(frames)])["rate"])
        got["steps"].append(step_following(frames, velocity[: len(frames)])["rate"])
        got["true_pairs"].append(following(truth, velocity)["rate"])
        got["true_steps"].append(step_following(truth, velocity)["rate"])
        got["psnr"].append(continuation_psnr(frames, truth, cameras))
        got["codec"].append(codec_continuation(bundle, truth, cameras))
    return {
        "following_rate": round(float(np.mean(got["pairs"])), 3),
        "following_rate_consecutive": round(float(np.mean(got["steps"])), 3),
        "true_clip_rate": round(float(np.mean(got["true_pairs"])), 3),
        "true_clip_rate_consecutive": round(float(np.mean(got["true_steps"])), 3),
        "continuation_psnr_db": round(pooled_psnr(got["psnr"]), 2),
        "codec_continuation_psnr_db": round(pooled_psnr(got["codec"]), 2),
    }


def eval_captions(gen: Generator, bundle: Bundle, images: int, seed: int, seconds: float) -> dict:
    """Every world caption from `images` held-out start frames (issue 20, targets 4a and 4b):
    following on pairs 4 frames apart and on consecutive frames, and the first frames against the
    true clip on the pixels still in view, next to the same following on the true clips."""
    from framepack.data.world_script import all_captions

    source, starts = start_frames(bundle, images, seed, seconds)
    rows = {
        caption: caption_row(gen, bundle, source, starts, caption, seconds, seed)
        for caption in all_captions()
    }

    def worst(key: str) -> float:
        return min(r[key] for r in rows.values())

    return {
        "images": images,
        "seconds": seconds,
        "continuation_frames": CONTINUATION_FRAMES,
        "captions": rows,
        "following_rate_min": worst("following_rate"),
        "following_rate_consecutive_min": worst("following_rate_consecutive"),
        "true_clip_rate_min": worst("true_clip_rate"),
        "true_clip_rate_consecutive_min": worst("true_clip_rate_consecutive"),
        "following_rate_mean": round(float(np.mean([r["following_rate"] for r in rows.values()])), 3),
        "continuation_psnr_db": round(pooled_psnr([r["continuation_psnr_db"] for r in rows.values()]), 2),
        "continuation_psnr_min_db": worst("continuation_psnr_db"),
        "codec_continuation_psnr_db": round(
            pooled_psnr([r["codec_continuation_psnr_db"] for r in rows.values()]), 2
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
    velocity = prompted_velocity(timeline, len(frames), fps)
    result, steps = following(frames, velocity), step_following(frames, velocity)
    edge, step_edge = window_size(result["pairs"], EDGE_SHARE), window_size(steps["pairs"], EDGE_SHARE)
    change, settings = motion(frames), gen.last_settings
    return {
        "gen": window_stats(frames, windows, PALETTE),
        "true": window_stats(true, windows, PALETTE),
        "first": result["matched"][:edge].mean(),
        "last": result["matched"][-edge:].mean(),
        "last_consecutive": steps["matched"][-step_edge:].mean(),
        "latent": seam_ratio(change, settings["latent_boundaries"]),
        "section": seam_ratio(change, settings["section_boundaries"]),
        "plan": settings.get("plan"),
        "wall": gen.wall - wall,
    }


PANS_THROUGHOUT = {"p_hold": 0}  # random_script options of the minute: no holds (issue 20)


def eval_minute(
    gen: Generator, bundle: Bundle, seed: int, seconds: float, rollouts: int, workers: int = 1
) -> dict:
    """Rollouts of `seconds` from held-out start frames with the caption timelines of scripts that
    pan throughout (issue 20, targets 4c and 4d), compared window by window (6 s) with the true
    videos of the same scripts (pooled over rollouts); following in the first and last 15%; seams
    at latent and section boundaries. `workers` processes (forked, one thread each) share them."""
    import multiprocessing

    source, starts = start_frames(bundle, rollouts, seed, seconds, PANS_THROUGHOUT)
    windows = window_count(source.num_frames, bundle.meta.fps)
    _MINUTE.update(gen=gen, source=source, starts=starts, seed=seed, seconds=seconds, windows=windows)
    _MINUTE["fps"] = bundle.meta.fps
    if workers > 1:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            done = pool.map(_rollout, range(rollouts), chunksize=1)
    else:
        done = [_rollout(i) for i in range(rollouts)]
    gen.wall += sum(d["wall"] for d in done)
    gen.last_settings = {"plan": done[-1]["plan"]}
    pooled, truth = mean_stats([d["gen"] for d in done]), mean_stats([d["true"] for d in done])
    dev = window_deviations(pooled, truth)
    own = [window_deviations(d["gen"], d["true"]) for d in done]  # each rollout against its own truth
    mean = {k: round(float(np.mean([d[k] for d in done])), 3) for k in ("first", "last", "last_consecutive")}
    return {
        "plan": gen.last_settings.get("plan"),
        "seconds": seconds,
        "rollouts": rollouts,
        "windows": windows,
        "scripts": "random_script(..., p_hold=0): pans throughout",
        "palette_share": {"generated": _r(pooled["palette"]), "true": _r(truth["palette"])},
        "sharpness": {"generated": _r(pooled["sharpness"], 1), "true": _r(truth["sharpness"], 1)},
        "palette_deviation": _r(dev["palette"]),
        "sharpness_deviation": _r(dev["sharpness"]),
        "histogram_distance": _r(dev["histogram"]),
        "palette_deviation_max": round(float(dev["palette"].max()), 4),
        "sharpness_deviation_max": round(float(dev["sharpness"].max()), 4),
        "histogram_distance_max": round(float(dev["histogram"].max()), 4),
        "worst_rollout_window": {k: round(float(max(o[k].max() for o in own)), 4) for k in dev},
        "following_first_15": mean["first"],
        "following_last_15": mean["last"],
        "following_last_15_consecutive": mean["last_consecutive"],
        "seam_ratio_latent": round(float(np.mean([d["latent"] for d in done])), 3),
        "seam_ratio_section": round(float(np.mean([d["section"] for d in done])), 3),
    }


def _r(values: np.ndarray, digits: int = 4) -> list[float]:
    return [round(float(v), digits) for v in values]


BENCH_SECONDS = 10.0  # the speed target's video length


def read_bench(path: Path, seconds: float = BENCH_SECONDS) -> dict:
    """The wall time of a `seconds` video from `benchmarks/bench_generate.py --mode budget --json`."""
    key = f"{seconds:g}s"
    try:
        data = json.loads(path.read_text())
        entry = data[key]
        wall = float(entry["median_s"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(
            f"--bench {path}: not a report of `benchmarks/bench_generate.py --mode budget --seconds {seconds:g} "
            f"--json {path}` ({type(err).__name__}: {err}); run it, or leave --bench out to time one video here"
        ) from None
    return {
        "seconds": seconds,
        "wall_s": round(wall, 2),
        "runs_s": entry.get("wall_s"),
        "threads": data.get("threads"),
        "model": data.get("model"),
        "source": f"benchmarks/bench_generate.py (median of {len(entry.get('wall_s', []))} runs, {path})",
    }


def eval_speed(gen: Generator, bundle: Bundle, seed: int) -> dict:
    """Target 4e without a benchmark report (`read_bench`): the wall time of one 10-s `generate` run
    here (held-out start frame, the bundle's default prompt, this process's threads)."""
    _, starts = start_frames(bundle, 1, seed + 200, BENCH_SECONDS)
    before = gen.wall
    gen(starts[0], f"0s: {bundle.meta.default_prompt}", BENCH_SECONDS, seed)
    return {
        "seconds": BENCH_SECONDS,
        "wall_s": round(gen.wall - before, 2),
        "threads": torch.get_num_threads(),
        "source": "one generate run of this evaluation (pipeline wall time, writing included)",
    }


TARGETS = {  # (report path, comparison, target): issue 20's targets (deliverable 4)
    "4a. following, pairs 4 frames apart, worst caption (share)": (
        ("captions", "following_rate_min"),
        ">=",
        0.9,
    ),
    "4a. following, consecutive frames within 1 px/frame, worst caption (share)": (
        ("captions", "following_rate_consecutive_min"),
        ">=",
        0.9,
    ),
    "4b. first 8 frames vs the true clip, pixels still in view (dB)": (
        ("captions", "continuation_psnr_db"),
        ">=",
        26.0,
    ),
    "4b. section PSNR on visible pixels, true context (dB)": (("sections", "psnr_visible_db"), ">=", 28.0),
    "4c. minute panning throughout: on-palette share, worst 6-s window vs true (rel. dev.)": (
        ("minute", "palette_deviation_max"),
        "<=",
        0.15,
    ),
    "4c. minute: sharpness, worst 6-s window vs true (rel. dev.)": (
        ("minute", "sharpness_deviation_max"),
        "<=",
        0.15,
    ),
    "4c. minute: colour histogram, worst 6-s window vs true (TV dist.)": (
        ("minute", "histogram_distance_max"),
        "<=",
        0.15,
    ),
    "4c. minute: following in the last 15% (share of pairs)": (("minute", "following_last_15"), ">=", 0.9),
    "4d. seams: change at latent boundaries / inside": (("minute", "seam_ratio_latent"), "<=", 1.5),
    "4d. seams: change at section boundaries / inside": (("minute", "seam_ratio_section"), "<=", 1.5),
    "4e. frame size (pixels)": (("bundle_info", "size"), ">=", 64),
    "4e. a 10-s video, wall time (s)": (("speed", "wall_s"), "<=", 30.0),
    "earlier target: following one section after a timeline switch": (
        ("switches", "after_one_section_min"),
        ">=",
        0.9,
    ),
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

    bundle = load_bundle(bundle_path)
    meta = bundle.meta
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
        f"encoder; codec `{bundle.codec.config().get('kind', 'unknown')}`)",
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
    if report.get("speed"):
        lines += ["", f"10-s video wall time: {report['speed']['source']}."]
    lines += _caption_table(report.get("captions"))
    lines += _codec_lines(bundle.codec)
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
        f"Per caption ({captions['images']} held-out start frames, {captions['seconds']:g}-s videos). Following: "
        "share of frame pairs whose measured motion matches the prompt, on pairs 4 frames apart (3 at 5 px/frame) "
        "within 0.5 px/frame, and on consecutive frames within 1 px/frame; true clips: the same on the world's "
        "own video of the caption. First 8 frames: PSNR against that true clip on the pixels the start frame "
        "showed; codec: the true frames encoded and decoded (the codec's ceiling).",
        "",
        "| caption | following 4 apart | consecutive | true clips 4 apart | true consecutive | first 8 frames (dB) "
        "| codec (dB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for caption, r in captions["captions"].items():
        lines.append(
            f"| {caption} | {r['following_rate']} | {r['following_rate_consecutive']} | {r['true_clip_rate']} "
            f"| {r['true_clip_rate_consecutive']} | {r['continuation_psnr_db']} | {r['codec_continuation_psnr_db']} |"
        )
    return lines


def _codec_lines(codec) -> list[str]:
    """The codec's own held-out card (framepack.eval.codec), when the bundle's codec carries one."""
    card = getattr(codec, "card", None)
    if not card:
        return []
    return ["", "## Codec", "", "Held-out card of the bundle's codec (framepack.eval.codec):", "",
            "```json", json.dumps(card, indent=2), "```"]  # fmt: skip


def finish(report: dict, args: argparse.Namespace) -> int:
    """Judge the targets, print the report as JSON and write the card when asked."""
    report["targets"] = target_rows(report)
    sys.stdout.write(report_json(report, indent=2))
    print()
    if args.card is not None:
        write_card(args.bundle, args.card, report, args.command, args.limits)
    return 0


def merge_reports(args: argparse.Namespace) -> int:
    """One report from the parts of several (the commands are listed together)."""
    report: dict = {}
    commands = []
    for path in args.merge:
        part = read_report(path.read_text())
        commands.append(part.pop("command", ""))
        part.pop("targets", None)
        wall = part.pop("generation_wall_seconds", 0.0)
        report["generation_wall_seconds"] = round(report.get("generation_wall_seconds", 0.0) + wall, 1)
        report.update(part)
    report["command"] = " && ".join(c for c in commands if c)
    return finish(report, args)


PARTS = ("sections", "captions", "switches", "minute", "speed")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, default=demo_path(), help="model bundle folder (default: the demo)")
    p.add_argument("--clips", type=int, default=24, help="held-out windows per layout (section PSNR)")
    p.add_argument("--seed", type=int, default=7, help="which held-out videos (eval split) and noise")
    p.add_argument("--steps", type=int, help="sampling steps of the section test (default: the bundle's)")
    p.add_argument(
        "--shift", type=float, help="sampling time shift of the section test (default: the bundle's)"
    )
    p.add_argument("--images", type=int, default=2, help="held-out start frames per caption (targets 4a, 4b)")
    p.add_argument("--caption-seconds", type=float, default=4.0, help="video length per caption")
    p.add_argument("--seconds", type=float, default=60.0, help="rollout length (targets 4c, 4d)")
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
    p.add_argument("--parts", default=",".join(PARTS), help=f"which parts to run, of {','.join(PARTS)}")
    p.add_argument("--bench", type=Path, metavar="JSON",
                   help="speed target from `benchmarks/bench_generate.py --mode budget --seconds 10 --json JSON` "
                   "(default: time one 10-s video here)")  # fmt: skip
    p.add_argument("--probe", action="store_true", help="also probe the use of context at high noise")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--workers", type=int, default=1, help="processes sharing the minute's rollouts")
    p.add_argument("--card", type=Path, metavar="RUN_DIR", help="write the bundle's model card from this run")
    p.add_argument("--command", default="framepack train --preset demo --out RUN_DIR", help="for the card")
    p.add_argument("--limits", default="", help="for the card: what limits the missed targets")
    p.add_argument("--merge", type=Path, nargs="+", metavar="REPORT",
                   help="merge the parts of reports written by earlier runs (e.g. run in parallel) and stop")  # fmt: skip
    return p.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """Refuse, before any work, what would fail later (UserError, one line)."""
    unknown = set(args.parts.split(",")) - set(PARTS)
    if unknown:
        raise UserError(
            f"--parts: unknown part(s) {','.join(sorted(unknown))}; choose from {','.join(PARTS)}"
        )
    for name in ("clips", "images", "rollouts", "threads", "workers"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.caption_seconds < 0.5:
        raise UserError(
            f"--caption-seconds must be at least 0.5 (the first 9 frames are scored), got {args.caption_seconds}"
        )
    if args.seconds < 1:
        raise UserError(f"--seconds must be at least 1, got {args.seconds}")
    if args.card is not None and not (args.card / "log.jsonl").is_file():
        raise UserError(
            f"--card {args.card}: no log.jsonl there; give the training run's folder (framepack train --out)"
        )
    for path in args.merge or []:
        if not path.is_file():
            raise UserError(f"--merge {path}: no such report; give JSON files written by this script")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        check_args(args)
        if args.merge:
            return merge_reports(args)
        return evaluate(args, argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def evaluate(args: argparse.Namespace, argv: list[str] | None) -> int:
    """Run the asked parts on the bundle and finish the report."""
    torch.set_num_threads(args.threads)
    parts = set(args.parts.split(","))
    speed = read_bench(args.bench) if args.bench is not None and "speed" in parts else None
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
    if "speed" in parts:
        report["speed"] = speed or eval_speed(gen, bundle, args.seed)
    report["generation_wall_seconds"] = round(gen.wall, 1)
    return finish(report, args)


if __name__ == "__main__":
    raise SystemExit(main())
