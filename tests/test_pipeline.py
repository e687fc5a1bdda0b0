import json

import numpy as np
import pytest
import torch

from framepack.errors import UserError
from framepack.options import GenerationOptions
from framepack.pipeline import FramePackPipeline
from framepack.resume import StopFlag, resume_path
from framepack.video import read_metadata, read_video

from .pipeline_fixtures import tiny_components, write_image


def make(tmp_path, **kw):
    base = {"image": write_image(tmp_path / "start.png"), "seconds": 2.0, "out": str(tmp_path / "v.mp4")}
    return GenerationOptions(**{**base, **kw})


@pytest.mark.parametrize("plan", ["forward", "inverted", "endpoints"])
def test_exact_frame_count_and_metadata(tmp_path, plan):
    pipe = FramePackPipeline(tiny_components())
    result = pipe.generate(make(tmp_path, plan=plan), progress=False)
    frames, fps = read_video(result.path)
    assert len(frames) == 16 == result.frames  # 2 s at 8 fps
    assert fps == 8
    meta = read_metadata(result.path)
    assert meta["plan"] == plan and meta["seed"] == 31337
    # where sections and latents start, for `framepack eval drift` seams
    t, window = meta["latent_frames"], meta["window"]
    assert meta["section_frames"] == t * window
    assert meta["latent_boundaries"] == list(range(1, 16, t))  # frame 1 starts the first latent
    starts = {1 + t * (s.start - 1) for s in result.plan.sections if s.start > 0}
    assert meta["section_boundaries"] == sorted(f for f in starts if 0 < f < 16)
    assert json.loads((tmp_path / "v.json").read_text())["complete"] is True
    assert not resume_path(result.path).exists()


def test_same_seed_same_video_and_start_frame_kept(tmp_path):
    pipe = FramePackPipeline(tiny_components())
    a = pipe.generate(make(tmp_path), progress=False).latents
    b = pipe.generate(make(tmp_path, overwrite=True), progress=False).latents
    c = pipe.generate(make(tmp_path, overwrite=True, seed=1), progress=False).latents
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(a[:, :, 0], c[:, :, 0])  # the start image latent is known, never generated


def test_refuses_to_overwrite(tmp_path):
    (tmp_path / "v.mp4").write_bytes(b"keep me")
    with pytest.raises(UserError, match="exists"):
        FramePackPipeline(tiny_components()).generate(make(tmp_path), progress=False)
    assert (tmp_path / "v.mp4").read_bytes() == b"keep me"


class StopAfter(StopFlag):
    """A stop flag raised after `n` model steps (as a Ctrl-C would be)."""

    def __init__(self, n):
        super().__init__()
        self.n = n
        self.calls = 0

    def tick(self, *args):
        self.calls += 1
        if self.calls == self.n:
            self.request()


@pytest.mark.parametrize("plan", ["inverted", "endpoints", "forward"])
def test_stop_then_resume_equals_uninterrupted(tmp_path, plan):
    pipe = FramePackPipeline(tiny_components())
    full = pipe.generate(make(tmp_path, plan=plan, out=str(tmp_path / "full.mp4")), progress=False)
    stop = StopAfter(4)  # 3 steps per section: stops inside the second section
    with stop:
        part = pipe.generate(make(tmp_path, plan=plan), progress=False, stop=stop, callback=stop.tick)
    assert part.stopped
    assert resume_path(part.path).exists()
    done = pipe.generate(make(tmp_path, plan=plan, resume=True), progress=False)
    assert not done.stopped
    assert torch.equal(done.latents, full.latents)
    assert not resume_path(done.path).exists()


def test_resume_with_other_settings_is_refused(tmp_path):
    pipe = FramePackPipeline(tiny_components())
    stop = StopAfter(4)
    with stop:
        pipe.generate(make(tmp_path), progress=False, stop=stop, callback=stop.tick)
    with pytest.raises(UserError, match="seed"):
        pipe.generate(make(tmp_path, resume=True, seed=5), progress=False)


def test_resume_by_output_path_alone_takes_the_settings_from_the_state(tmp_path):
    """`generate(resume=True, out=...)`: every setting from the resume state; an argument that
    agrees is accepted, one that contradicts it (a keyword, even with the default's value, or
    a non-default field of the options) is refused in one line naming it."""
    pipe = FramePackPipeline(tiny_components())
    options = make(tmp_path, seconds=3.0, seed=7, steps=2, prompt="the camera holds still", plan="forward")
    full = pipe.generate(options, out=str(tmp_path / "full.mp4"), progress=False)
    stop = StopAfter(3)  # 2 steps per section: stops inside the second section
    with stop:
        assert pipe.generate(options, progress=False, stop=stop, callback=stop.tick).stopped
    out = str(tmp_path / "v.mp4")
    for bad, flag in [({"seconds": 5.0}, "--seconds 5"), ({"prompt": "the camera pans right"}, "--prompt")]:
        with pytest.raises(UserError, match=f"^{flag}.* contradicts the job being resumed") as err:
            pipe.generate(resume=True, out=out, progress=False, **bad)  # keywords count as given
        assert "\n" not in str(err.value)
    with pytest.raises(UserError, match=r"^--steps 3 contradicts"):
        pipe.generate(GenerationOptions(resume=True, out=out, steps=3), progress=False)
    done = pipe.generate(GenerationOptions(resume=True, out=out, seed=7), progress=False)  # agrees
    assert not done.stopped and torch.equal(done.latents, full.latents)
    assert read_metadata(done.path)["prompts"] == "0s: the camera holds still"


def test_text_to_video_keyframes_and_end_image(tmp_path):
    pipe = FramePackPipeline(tiny_components(plan="endpoints"))
    end = write_image(tmp_path / "end.png", seed=3)
    key = write_image(tmp_path / "key.png", seed=4)
    options = GenerationOptions(
        no_image=True,
        seconds=3.0,
        end_image=end,
        keyframes=[(1.5, key)],
        prompts="0s: the camera pans right; 1s: the camera holds still",
        out=str(tmp_path / "v.mp4"),
    )
    result = pipe.generate(options, progress=False)
    assert result.frames == 24
    known = set(result.plan.known)
    assert result.plan.total - 1 in known and len(known) == 2  # keyframe + end, no start image
    frames, _ = read_video(result.path)
    assert len(frames) == 24


def test_multi_endpoint_prompt_anchors(tmp_path):
    pipe = FramePackPipeline(tiny_components(plan="multi-endpoint"))
    options = make(tmp_path, seconds=4.0, prompts="0s: the camera pans right; 2s: the camera holds still")
    result = pipe.generate(options, progress=False)
    first = result.plan.sections[0]
    assert first.prompt == 1  # the anchor section of the second prompt is generated first


def moving_gradient(frames: int, size: int = 16) -> np.ndarray:
    """uint8 (F, size, size, 3): a smooth picture sliding one pixel per frame (H.264 keeps it)."""
    y, x = np.mgrid[0:size, 0:size]
    video = [np.stack([(x + t) * 9, y * 11, (x + y + 2 * t) * 5], axis=-1) % 256 for t in range(frames)]
    return np.stack(video).astype(np.uint8)


def frame_psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame PSNR in dB of uint8 videos (F, H, W, 3)."""
    mse = ((a.astype(float) - b.astype(float)) ** 2).mean(axis=(1, 2, 3))
    return 10 * np.log10(255.0**2 / np.maximum(mse, 1e-10))


@pytest.mark.parametrize("source_frames", [7, 8, 10])
def test_extend_keeps_every_frame_of_the_source_and_its_prompt(tmp_path, source_frames):
    """--extend: the output starts with every frame of the source (its first, the start image,
    included; >= 40 dB each, re-encoding aside), then exactly `seconds` more; with no prompt
    given, the source's own (the last entry of its sidecar's timeline) continues."""
    from dataclasses import replace

    from framepack.video import sidecar_path, write_sidecar, write_video

    comps = tiny_components(plan="forward")
    example = write_image(tmp_path / "example.png", seed=3)
    pipe = FramePackPipeline(replace(comps, spec=replace(comps.spec, example_image=example)))
    source = tmp_path / "a.mp4"
    write_video(source, moving_gradient(source_frames), 8, crf=0)
    write_sidecar(
        sidecar_path(source), {"prompts": "0s: the camera pans right; 0.5s: the camera holds still"}
    )
    result = pipe.generate(
        GenerationOptions(extend=str(source), seconds=1.0, out=str(tmp_path / "b.mp4")), progress=False
    )
    frames, _ = read_video(result.path)
    before, _ = read_video(source)
    assert len(before) == source_frames and len(frames) == result.frames == source_frames + 8
    assert frame_psnr(frames[:source_frames], before).min() >= 40
    meta = read_metadata(result.path)
    assert meta["prompts"] == "0s: the camera holds still" and meta["image"] is None
    existing = min(section.start for section in result.plan.sections)  # the source's latents
    history = pipe.components.codec.decode(result.latents[:, :, :existing])  # (1, 3, 1 + 4k, H, W)
    last = ((history[0, :, -1].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().numpy()
    assert frame_psnr(last[None], before[-1:])[0] >= 40  # the history ends on the source's last frame


def test_extend_a_video_without_a_sidecar_uses_the_models_prompt(tmp_path):
    from framepack.video import write_video

    pipe = FramePackPipeline(tiny_components(plan="forward"))
    source = tmp_path / "other.mp4"
    write_video(source, moving_gradient(9), 8, crf=0)
    result = pipe.generate(extend=str(source), seconds=0.5, out=str(tmp_path / "b.mp4"), progress=False)
    assert read_metadata(result.path)["prompts"] == "0s: the camera pans right"
    assert len(read_video(result.path)[0]) == 9 + 4


def test_released_mode_matches_official_layout(tmp_path):
    pipe = FramePackPipeline(tiny_components(mode="released", window=2))
    result = pipe.generate(make(tmp_path, seconds=2.0), progress=False)
    assert all(s.levels for s in result.plan.sections)
    frames, _ = read_video(result.path)
    assert len(frames) == result.frames == 16


def test_preview_keeps_one_png_per_section(tmp_path):
    """--preview: each section's newest estimate, replaced at every step (a long job does not
    fill the folder with one file per step)."""
    from PIL import Image

    pipe = FramePackPipeline(tiny_components())
    seen: list[list[str]] = []
    folder = tmp_path / "prev"

    def look(info):
        seen.append(sorted(p.name for p in folder.glob("*")))

    result = pipe.generate(make(tmp_path, seconds=2.0, preview=str(folder)), progress=False, callback=look)
    sections = len(result.plan.sections)
    assert sections >= 2 and len(seen) == 3 * sections  # 3 steps per section
    names = sorted(p.name for p in folder.iterdir())
    assert names == [f"section{i:04d}.png" for i in range(sections)]
    with Image.open(folder / "section0000.png") as image:
        assert image.size[1] == 16  # a strip of the section's 16x16 frames


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"seconds": 0}, "seconds"),
        ({"plan": "sideways"}, "unknown plan"),
        ({"prompts": "0s: a; 1x: b"}, "entry 2"),
        ({"keyframes": [(9.0, "x.png")]}, "outside the video"),
        ({"image": "/nonexistent.png"}, "no such file"),
    ],
)
def test_bad_options(tmp_path, kw, match):
    base = {"image": write_image(tmp_path / "s.png"), "seconds": 2.0, "out": str(tmp_path / "v.mp4")}
    with pytest.raises(UserError, match=match):
        FramePackPipeline(tiny_components()).generate(GenerationOptions(**{**base, **kw}), progress=False)
    assert not (tmp_path / "v.mp4").exists()


def test_x0_prediction_model_is_sampled_through_the_conversion(tmp_path):
    """Known answer: a model that always predicts the same x0 is integrated exactly to it."""
    from dataclasses import replace

    c = tiny_components(plan="forward")
    c.spec = replace(c.spec, prediction="x0")
    target = torch.linspace(-1, 1, c.codec.latent_channels).view(1, -1, 1, 1, 1)

    class ConstantX0(torch.nn.Module):
        def forward(self, latents, *args, **kwargs):
            return target.expand_as(latents)

    c.transformer = ConstantX0()
    result = FramePackPipeline(c).generate(make(tmp_path, sampler="euler"), progress=False)
    generated = result.latents[:, :, 1:]
    assert torch.allclose(generated, target.expand_as(generated), atol=1e-5)


@pytest.mark.parametrize("plan", ["forward", "inverted"])
def test_killed_in_the_finishing_window_resume_writes_the_whole_video(tmp_path, plan, monkeypatch):
    from framepack import writer as writer_module

    pipe = FramePackPipeline(tiny_components())
    full = pipe.generate(make(tmp_path, plan=plan, out=str(tmp_path / "full.mp4")), progress=False)

    class Killed(BaseException):
        pass

    real_write = writer_module.VideoWriter.write

    def dies_on_final_write(self, latents, done, *, final):
        if final:
            raise Killed  # the process dies after the last section's data is saved
        return real_write(self, latents, done, final=final)

    monkeypatch.setattr(writer_module.VideoWriter, "write", dies_on_final_write)
    with pytest.raises(Killed):
        pipe.generate(make(tmp_path, plan=plan), progress=False)
    monkeypatch.setattr(writer_module.VideoWriter, "write", real_write)
    assert resume_path(tmp_path / "v.mp4").exists()
    done = pipe.generate(make(tmp_path, plan=plan, resume=True), progress=False)
    assert done.frames == full.frames == 16 and not done.stopped
    assert torch.equal(done.latents, full.latents)
    assert np.array_equal(read_video(done.path)[0], read_video(full.path)[0])
    assert json.loads((tmp_path / "v.json").read_text())["complete"] is True
    assert not resume_path(done.path).exists()


def test_resume_before_any_section_was_saved_starts_the_job(tmp_path, monkeypatch):
    """A job saves its resume state (section 0) as it starts: killed before its first section,
    it resumes from the start; with nothing of the job saved at all, --resume is refused (as
    `framepack train --resume`)."""
    from framepack.resume import SectionFiles

    pipe = FramePackPipeline(tiny_components())
    full = pipe.generate(make(tmp_path, out=str(tmp_path / "full.mp4")), progress=False)
    with pytest.raises(UserError, match="nothing to resume"):
        pipe.generate(make(tmp_path, resume=True), progress=False)
    assert not (tmp_path / "v.mp4").exists()

    def killed(*args, **kwargs):  # the process dies before its first section is saved
        raise KeyboardInterrupt

    monkeypatch.setattr(SectionFiles, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        pipe.generate(make(tmp_path), progress=False)
    monkeypatch.undo()
    done = pipe.generate(make(tmp_path, resume=True), progress=False)
    assert torch.equal(done.latents, full.latents) and done.frames == 16


def test_a_job_removes_the_temporary_files_a_kill_left(tmp_path):
    out = tmp_path / "v.mp4"
    litter = [
        tmp_path / ".v.mp4.0a1b2c3d.tmp.mp4",
        tmp_path / ".v.json.deadbeef.tmp.json",
        tmp_path / ".v.resume.safetensors.12345678.tmp.safetensors",
    ]
    keep = [tmp_path / ".v.mp4.notes", tmp_path / ".w.mp4.0a1b2c3d.tmp.mp4", tmp_path / "other.txt"]
    for path in litter + keep:
        path.write_bytes(b"x")
    pipe = FramePackPipeline(tiny_components())
    pipe.generate(make(tmp_path, out=str(out)), progress=False)
    assert not any(p.exists() for p in litter)
    assert all(p.read_bytes() == b"x" for p in keep)


def _flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # inside the tensor data, after the header
    path.write_bytes(bytes(data))


def _wrong_shape(path):
    from safetensors.torch import save_file

    save_file({"latents": torch.zeros(1, 2, 3)}, str(path))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "damaged"),
        (lambda p: p.write_bytes(b"\x00" * 8 + p.read_bytes()[8:]), "damaged"),
        (_flip_last_byte, "checksum mismatch"),
        (_wrong_shape, "holds shape"),
        (lambda p: p.unlink(), "is missing"),
    ],
)
def test_damaged_resume_parts_are_refused_and_kept(tmp_path, damage, message):
    pipe = FramePackPipeline(tiny_components())
    stop = StopAfter(4)  # 3 steps per section: the first section saved
    with stop:
        pipe.generate(make(tmp_path), progress=False, stop=stop, callback=stop.tick)
    part = tmp_path / "v.resume.safetensors.parts" / "section_00000.safetensors"
    damage(part)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(UserError, match=message):
        pipe.generate(make(tmp_path, resume=True), progress=False)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_the_models_default_guidance_is_used_unless_asked_otherwise(tmp_path):
    from dataclasses import replace

    comps = tiny_components(plan="forward")
    guided = FramePackPipeline(replace(comps, spec=replace(comps.spec, cfg=2.0)))
    prompt = "the camera pans right"  # guidance against the empty negative prompt
    a = guided.generate(make(tmp_path, out=str(tmp_path / "a.mp4"), prompt=prompt), progress=False)
    b = guided.generate(make(tmp_path, out=str(tmp_path / "b.mp4"), prompt=prompt, cfg=1.0), progress=False)
    plain = FramePackPipeline(comps)
    c = plain.generate(make(tmp_path, out=str(tmp_path / "c.mp4"), prompt=prompt, cfg=2.0), progress=False)
    assert read_metadata(a.path)["cfg"] == 2.0 and read_metadata(b.path)["cfg"] == 1.0
    assert torch.equal(a.latents, c.latents)  # the model's default is the same as asking for it
    assert not torch.equal(a.latents, b.latents)  # and guidance changes the video


def test_generator_output_types_and_step_info(tmp_path):
    """A torch.Generator seeds the job like the seed it draws; frames come back without a file;
    the callback sees the section count, the step, its sigma and the x0 estimate."""
    pipe = FramePackPipeline(tiny_components())
    seen = []
    gen = pipe.generate(
        make(tmp_path, out=None),
        generator=torch.Generator().manual_seed(5),
        output_type="pt",
        progress=False,
        callback=seen.append,
    )
    assert gen.path is None and [p.name for p in tmp_path.iterdir()] == ["start.png"]  # no file written
    video = gen.video
    assert video.shape == (gen.frames, 3, 16, 16) and video.min() >= 0 and video.max() <= 1
    steps = seen[0].steps
    assert [i.step for i in seen[:steps]] == list(range(steps))
    assert seen[0].sigma == 1.0 and 0 < seen[-1].sigma < seen[0].sigma
    assert {i.sections for i in seen} == {len(gen.plan)} and seen[0].x0.ndim == 5
    seed = torch.randint(0, 2**62, (1,), generator=torch.Generator().manual_seed(5)).item()
    same = pipe.generate(make(tmp_path, out=None, seed=seed), output_type="np", progress=False)
    assert torch.equal(same.latents, gen.latents)
    np.testing.assert_allclose(same.video, video.permute(0, 2, 3, 1).numpy(), atol=1e-6)
    pil = pipe.generate(make(tmp_path, out=None, seed=seed), output_type="pil", progress=False).video
    assert len(pil) == gen.frames and pil[0].size == (16, 16)
    written = pipe.generate(make(tmp_path, seed=seed), progress=False)
    frames, _ = read_video(written.path)  # the same job, written to a file
    assert len(frames) == gen.frames and torch.equal(written.latents, gen.latents)
    with pytest.raises(ValueError, match="output_type"):
        pipe.generate(make(tmp_path, out=None), output_type="gif", progress=False)
    with pytest.raises(UserError, match="writes no file"):
        pipe.generate(make(tmp_path), output_type="np", progress=False)


def test_the_api_runs_on_the_clis_thread_default(monkeypatch):
    """`from_pretrained` applies the CLI's thread policy (framepack.runtime): the default when no
    entry point chose, `threads=` when given, and keeps what a worker's `--threads` chose."""
    import framepack.runtime as runtime

    before = torch.get_num_threads()
    monkeypatch.setattr(runtime, "_chosen", [])
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    try:
        FramePackPipeline.from_pretrained("demo")
        assert torch.get_num_threads() == 3 == runtime.default_threads()
        FramePackPipeline.from_pretrained("demo", threads=1)
        assert torch.get_num_threads() == 1
        FramePackPipeline.from_pretrained("demo")  # chosen before (as `queue run --threads 1`): kept
        assert torch.get_num_threads() == 1
        with pytest.raises(UserError, match="threads= must be between 1 and 256, got 0"):
            FramePackPipeline.from_pretrained("demo", threads=0)
    finally:
        torch.set_num_threads(before)
