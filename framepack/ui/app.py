"""The Gradio page: a form that queues jobs, the running job, the queue, and a gallery.

`create_demo(queue, worker, spec, ...)` builds the page over an existing queue and worker
(`framepack ui` starts both); it loads no model and binds nothing. Every handler is wrapped so
a `UserError` becomes one line in the page and any other error a one-line notice (the
traceback goes to the server's log, never to the page). Only files inside the outputs folder
are ever handed to the page.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from framepack.components import LoadOptions, ModelSpec
from framepack.errors import UserError
from framepack.options import PLANS, SAMPLERS
from framepack.queue import JobQueue, Worker
from framepack.ui import views
from framepack.ui.requests import (
    FORM,
    KEYFRAME_SLOTS,
    MODEL_DEFAULT,
    TIMELINE_HEADERS,
    UPLOAD_FLAGS,
    add_timeline_row,
    check_upload,
    form_from_settings,
    options_from_form,
    remove_timeline_row,
)
from framepack.ui.uploads import UploadSweeper, touch_uploads

logger = logging.getLogger(__name__)
TICK_SECONDS = 1.0
CSS = """
#fp-progress progress { width: 100%; height: 14px; }
#fp-preview img, #fp-so-far video { image-rendering: pixelated; }
"""


def create_demo(queue: JobQueue, worker: Worker, spec: ModelSpec, model: str, load: LoadOptions) -> Any:
    """The page (a `gradio.Blocks`) over `queue`; jobs it adds use `model` loaded with `load`."""
    import gradio as gr

    outputs = queue.outputs
    with gr.Blocks(title="FramePack") as demo:
        gr.Markdown(
            f"## FramePack\nmodel **{spec.name}** · {_size(spec)} · {spec.fps} fps · "
            f"plan {spec.plan} · outputs `{outputs}`"
        )
        with gr.Tabs() as tabs:
            with gr.Tab("Generate", id="generate"):
                form = _form(gr, spec)
                with gr.Row():
                    add_button = gr.Button("Add to queue", variant="primary", elem_id="fp-add")
                    now_button = gr.Button("Generate now", elem_id="fp-now")
                message = gr.Markdown(elem_id="fp-message")
                running = _running(gr)
                jobs = _queue_panel(gr)
            with gr.Tab("Gallery", id="gallery"):
                gallery = _gallery(gr)
        state = gr.State({})
        timer = gr.Timer(TICK_SECONDS)

        fields = [form[name] for name in FORM]
        table, picker = jobs["table"], jobs["picker"]

        sweeper = UploadSweeper(queue)  # uploads no job uses go after a day unused

        def add(now: bool, *values: Any) -> dict:
            form_values = dict(zip(FORM, values))
            touch_uploads((form_values.get(name) for name in UPLOAD_FLAGS), outputs)  # in use
            options = options_from_form(form_values, outputs)
            job = queue.add(options, model=model, load=load, front=now)
            worker.wake()  # an idle worker starts it at once; a busy one after its job
            return {
                message: views.queued_message(queue, job, now=now, worker_state=worker.state),
                table: views.queue_rows(queue),
            }

        outs = [message, table]
        add_button.click(_guard(message, functools.partial(add, False)), fields, outs)
        now_button.click(_guard(message, functools.partial(add, True)), fields, outs)
        _wire_jobs(queue, jobs, running, message)
        _wire_gallery(queue, gallery, form, tabs, message, spec)
        form["clear_extend"].click(lambda: "", None, form["extend"])
        _wire_timeline(form)
        _wire_uploads(form, message)

        def tick(seen: dict) -> tuple:
            try:
                sweeper.maybe()
                return _tick(queue, worker, seen, running, jobs, gallery)
            except Exception:  # a refresh never shows a traceback; the next one tries again
                logger.exception("refreshing the page failed")
                return (seen, *(gr.skip() for _ in range(6)))

        timer.tick(
            tick,
            state,
            [state, running["html"], running["preview"], running["video"], table, picker, gallery["videos"]],
        )
        demo.load(
            tick,
            state,
            [state, running["html"], running["preview"], running["video"], table, picker, gallery["videos"]],
        )
    return demo


def _guard(message: Any, handler: Callable[..., dict]) -> Callable[..., dict]:
    """Run a handler; a UserError becomes its one line in `message`, anything else one notice."""

    @functools.wraps(handler)
    def run(*args: Any) -> dict:
        try:
            return handler(*args)
        except UserError as err:
            return {message: f"⚠ {err}"}
        except Exception as err:
            logger.exception("the page's request failed")
            return {message: f"⚠ internal error ({type(err).__name__}); the server's log has the details"}

    return run


def _size(spec: ModelSpec) -> str:
    return f"{spec.size[1]}x{spec.size[0]}" if spec.size else f"buckets around {spec.bucket}px"


# ---------------------------------------------------------------------- layout


def _form(gr: Any, spec: ModelSpec) -> dict[str, Any]:
    """The job's controls, by FORM name (plus the timeline's row buttons and extend's clear)."""
    c: dict[str, Any] = {}
    with gr.Row():
        with gr.Column():
            c["image"] = gr.Image(
                label="Start image (empty: the model's example image)",
                type="filepath",
                image_mode=None,  # the file as uploaded (converted as the CLI does)
                format="png",
                sources=["upload"],
                elem_id="fp-image",
            )
            c["no_image"] = gr.Checkbox(label="No start image (text to video)", elem_id="fp-no-image")
            c["end_image"] = gr.Image(
                label="End image (optional)",
                type="filepath",
                image_mode=None,  # the file as uploaded (converted as the CLI does)
                format="png",
                sources=["upload"],
                elem_id="fp-end",
            )
            with gr.Accordion("Keyframes: an image at a time (optional)", open=False):
                for i in range(KEYFRAME_SLOTS):
                    with gr.Row():
                        c[f"keyframe{i}_time"] = gr.Textbox(
                            label=f"keyframe {i + 1} at (s)", placeholder="seconds, e.g. 2.5"
                        )
                        c[f"keyframe{i}_image"] = gr.Image(
                            label=f"keyframe {i + 1} image",
                            type="filepath",
                            image_mode=None,
                            format="png",
                            sources=["upload"],
                        )
        with gr.Column():
            c["prompts"] = gr.Dataframe(
                value=[[0, spec.example_prompt]] if spec.example_prompt else [[None, ""]],
                headers=TIMELINE_HEADERS,
                datatype=["number", "str"],
                type="array",
                column_count=2,
                interactive=True,
                label="Prompt timeline: a prompt from each time on (one row without a time: the whole video)",
                elem_id="fp-prompts",
            )
            with gr.Row():
                c["add_row"] = gr.Button("add a row", size="sm", elem_id="fp-add-row")
                c["remove_row"] = gr.Button("remove the last row", size="sm", elem_id="fp-remove-row")
            c["negative_prompt"] = gr.Textbox(
                label="Negative prompt (used when CFG > 1)", elem_id="fp-negative"
            )
            with gr.Row():
                c["seconds"] = gr.Number(label="seconds", value=5, minimum=0, elem_id="fp-seconds")
                c["plan"] = gr.Dropdown([MODEL_DEFAULT, *PLANS], value=MODEL_DEFAULT, label="plan")
                c["sampler"] = gr.Dropdown([MODEL_DEFAULT, *SAMPLERS], value=MODEL_DEFAULT, label="sampler")
            with gr.Row():
                c["seed"] = gr.Number(label="seed", value=31337, precision=0, elem_id="fp-seed")
                c["random_seed"] = gr.Checkbox(label="random seed (the job records it)")
                c["steps"] = _default_box(gr, "steps", spec.steps, "fp-steps")
            with gr.Row():
                c["extend"] = gr.Textbox(
                    label="Extending (pick a video in the gallery)", interactive=False, elem_id="fp-extend"
                )
                c["clear_extend"] = gr.Button("don't extend", size="sm")
            with gr.Accordion("Advanced: the model's settings (empty: its defaults)", open=False):
                with gr.Row():
                    c["fps"] = _default_box(gr, "fps", spec.fps, "fp-fps")
                    c["shift"] = _default_box(gr, "shift", spec.shift or "from the size", "fp-shift")
                    c["guidance"] = _default_box(gr, "distilled guidance", spec.guidance, "fp-guidance")
                with gr.Row():
                    c["cfg"] = _default_box(gr, "CFG scale (1 = off)", spec.cfg, "fp-cfg")
                    c["cfg_rescale"] = _default_box(gr, "CFG rescale (0 to 1)", 0, "fp-cfg-rescale")
                    c["crf"] = gr.Number(label="H.264 CRF (0 best .. 51)", value=16, precision=0)
    return c


def _default_box(gr: Any, label: str, default: Any, elem_id: str) -> Any:
    """A number field whose empty value means the model's default, shown in the empty field.

    A text box, not `gr.Number`: Gradio's number field shows and sends an empty value as 0,
    which is no default (0 steps, 0 fps) and would be refused.
    """
    shown = "none" if default is None else f"{default:g}" if isinstance(default, float) else default
    return gr.Textbox(
        label=f"{label} (empty: the model's default, {shown})",
        placeholder=f"{shown} (the model's default)",
        elem_id=elem_id,
    )


def _running(gr: Any) -> dict[str, Any]:
    gr.Markdown("### Running")
    parts = {"html": gr.HTML(elem_id="fp-running")}
    with gr.Row():
        parts["preview"] = gr.Image(
            label="Latest preview (the section being sampled)",
            interactive=False,
            height=200,
            elem_id="fp-preview",
        )
        parts["video"] = gr.Video(
            label="The video so far",
            interactive=False,
            height=320,
            autoplay=True,
            loop=True,
            elem_id="fp-so-far",
        )
    parts["stop"] = gr.Button("Stop after this step (retry resumes it)", variant="stop", elem_id="fp-stop")
    return parts


def _queue_panel(gr: Any) -> dict[str, Any]:
    parts: dict[str, Any] = {}
    gr.Markdown("### Queue")
    parts["table"] = gr.Dataframe(headers=views.QUEUE_HEADERS, interactive=False, elem_id="fp-queue")
    with gr.Row():
        parts["picker"] = gr.Dropdown(
            label="job", choices=[], allow_custom_value=True, elem_id="fp-job", scale=3
        )
        for name in ("up", "down", "cancel", "retry"):
            parts[name] = gr.Button(name, size="sm", elem_id=f"fp-{name}")
    return parts


def _gallery(gr: Any) -> dict[str, Any]:
    parts = {"videos": gr.Dropdown(label="Finished videos (newest first)", choices=[], elem_id="fp-videos")}
    with gr.Row():
        parts["player"] = gr.Video(
            label="Video", interactive=False, height=360, loop=True, elem_id="fp-player"
        )
        parts["settings"] = gr.JSON(label="Settings (from the video's sidecar)", elem_id="fp-settings")
    with gr.Row():
        parts["load"] = gr.Button("Load these settings", elem_id="fp-load")
        parts["extend"] = gr.Button("Extend this video", elem_id="fp-extend-this")
    return parts


# ---------------------------------------------------------------------- behaviour


def _wire_timeline(form: dict[str, Any]) -> None:
    """The timeline's row buttons: a row one second after the last, or the last row removed."""
    form["add_row"].click(add_timeline_row, form["prompts"], form["prompts"])
    form["remove_row"].click(remove_timeline_row, form["prompts"], form["prompts"])


def _wire_uploads(form: dict[str, Any], message: Any) -> None:
    """Check each image when it is uploaded (type, size, dimensions, as the queue will): a bad
    one is removed from the form and its one line shown. The check reads the uploaded file
    itself (`preprocess=False`), so a file Gradio cannot open still gets the CLI's message."""
    for name in UPLOAD_FLAGS:

        def check(payload: Any, name: str = name) -> dict:
            path = payload.get("path") if isinstance(payload, dict) else None
            try:
                check_upload(path, name)
            except UserError as err:
                return {form[name]: None, message: f"⚠ {err}"}
            return {message: ""}

        form[name].upload(_guard(message, check), form[name], [form[name], message], preprocess=False)


def _wire_jobs(queue: JobQueue, jobs: dict[str, Any], running: dict[str, Any], message: Any) -> None:
    """Up, down, cancel, retry on the picked job; stop on the running one."""
    table = jobs["table"]
    actions: dict[str, Callable[[str], Any]] = {
        "up": lambda job_id: queue.move(job_id, -1),
        "down": lambda job_id: queue.move(job_id, +1),
        "cancel": queue.cancel,
        "retry": queue.retry,
    }
    for name, action in actions.items():

        def act(job_id: str | None, action: Callable[[str], Any] = action) -> dict:
            if not job_id:
                raise UserError("pick a job in the list first")
            job = action(job_id)
            return {message: f"**{job.id}**: {job.status}", table: views.queue_rows(queue)}

        jobs[name].click(_guard(message, act), jobs["picker"], [message, table])

    def stop() -> dict:
        job = queue.running()
        if job is None:
            raise UserError("no job is running")
        queue.stop(job.id)
        return {message: f"**{job.id}** stops after this step; retry resumes it"}

    running["stop"].click(_guard(message, stop), None, [message])


def _wire_gallery(
    queue: JobQueue, gallery: dict[str, Any], form: dict[str, Any], tabs: Any, message: Any, spec: ModelSpec
) -> None:
    """Show a finished video and its settings; load them into the form, or extend the video."""
    import gradio as gr

    outputs = queue.outputs

    def video(name: str | None) -> Path:
        path = (outputs / (name or "")).resolve()
        if not name or not path.is_relative_to(outputs) or path.suffix != ".mp4" or not path.is_file():
            raise UserError("pick a finished video in the gallery first")
        return path

    def show(name: str | None) -> dict:
        if not name:
            return {gallery["player"]: None, gallery["settings"]: None}
        path = video(name)
        return {gallery["player"]: str(path), gallery["settings"]: views.read_settings(path)}

    def load_settings(name: str | None) -> dict:
        values, notes = form_from_settings(views.read_settings(video(name)), outputs, spec.example_image)
        text = f"Loaded the settings of **{name}**." + "".join(f" ⚠ {note}." for note in notes)
        return {**{form[k]: v for k, v in values.items()}, tabs: gr.Tabs(selected="generate"), message: text}

    def extend(name: str | None) -> dict:
        path = video(name)
        return {
            form["extend"]: path.name,
            form["plan"]: "forward",
            tabs: gr.Tabs(selected="generate"),
            message: f"Extending **{path.name}**: set the seconds to add and queue the job.",
        }

    fields = [form[name] for name in FORM]
    gallery["videos"].change(
        _guard(message, show), gallery["videos"], [gallery["player"], gallery["settings"], message]
    )
    gallery["load"].click(_guard(message, load_settings), gallery["videos"], [*fields, tabs, message])
    gallery["extend"].click(
        _guard(message, extend), gallery["videos"], [form["extend"], form["plan"], tabs, message]
    )


def _tick(
    queue: JobQueue,
    worker: Worker,
    seen: dict,
    running: dict[str, Any],
    jobs: dict[str, Any],
    gallery: dict[str, Any],
) -> tuple:
    """The once-a-second refresh; parts that did not change are skipped (no re-render)."""
    import gradio as gr
    import numpy as np
    from PIL import Image

    seen = dict(seen or {})

    def changed(key: str, value: Any) -> bool:
        if seen.get(key) == value:
            return False
        seen[key] = value
        return True

    job = queue.running()
    html = views.progress_html(job, worker.state)
    preview: Any = gr.skip()
    so_far: Any = gr.skip()
    if job is not None:
        png = queue.preview_folder(job) / "latest.png"
        try:
            if changed("preview", (job.id, png.stat().st_mtime_ns)):
                with Image.open(png) as image:
                    preview = np.asarray(image.convert("RGB"))
        except OSError:
            pass  # no preview yet, or the job just ended
    path = queue.video(job) if job is not None else views.latest_video(queue)
    if path is not None and path.is_file() and changed("video", (path.name, path.stat().st_mtime_ns)):
        so_far = str(path)
    rows = views.queue_rows(queue)
    table = rows if changed("rows", rows) else gr.skip()
    choices = views.job_choices(queue)
    picker = gr.Dropdown(choices=choices) if changed("choices", choices) else gr.skip()
    videos = views.video_choices(queue.outputs)
    gallery_update = gr.Dropdown(choices=videos) if changed("videos", videos) else gr.skip()
    return seen, html, preview, so_far, table, picker, gallery_update
