"""The web UI in a real browser: headless Chromium (Debian's `chromium`, driven by Playwright,
which never downloads a browser here) against `framepack ui` on 127.0.0.1 with the demo model.

1. upload a start image, write a two-row prompt timeline in the row editor, queue a 1-s job,
   see the video and the gallery with its settings, load them back into the rows; bad input
   (a bad number, an upload that is not an image) gives the CLI's one line in the page. Then a
   fresh page, nothing typed: "Add to queue" queues the model's defaults; "Advanced" opened
   and left alone, "Generate now" runs a job and the panel shows its video.
2. "generate now" a job, kill -9 the server mid-job, start it again, and see the job finish
   (resumed).

Without Chromium or Playwright these tests fail (they are part of CI: `.ci/run` installs the
browser); they do not skip. `FRAMEPACK_UI_SCREENSHOTS=1` writes the page's screenshots to
docs/img/ui-*.png (docs/ui.md shows them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image

from framepack.queue import JobQueue

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "docs" / "img" if os.environ.get("FRAMEPACK_UI_SCREENSHOTS") == "1" else None
ROWS = [("0", "the camera pans left steadily"), ("0.5", "the camera holds still")]
TIMELINE = "0s: the camera pans left steadily\n0.5s: the camera holds still"  # what the rows ask
STEPS = "#fp-steps"
# The fields whose empty value means the model's default (text boxes: Gradio's number field
# shows and sends an empty value as 0); steps is on the form, the others under "Advanced".
ADVANCED = ("#fp-fps", "#fp-shift", "#fp-guidance", "#fp-cfg", "#fp-cfg-rescale")


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("no Chromium found: install Debian's package (apt-get install -y chromium); .ci/run does")


@pytest.fixture(scope="module")
def browser() -> Iterator:
    sync_api = _playwright()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        yield browser
        browser.close()


def _playwright():
    try:
        import playwright.sync_api as sync_api
    except ImportError:
        pytest.fail("Playwright is missing: pip install -e '.[dev]' installs it")
    return sync_api


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`framepack ui` in a subprocess, on a free port of 127.0.0.1."""

    def __init__(self, outputs: Path) -> None:
        self.outputs, self.port = outputs, free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = outputs.parent / f"ui-{self.port}.log"
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        command = [
            sys.executable,
            "-m",
            "framepack",
            "ui",
            "--outputs",
            str(outputs),
            "--port",
            str(self.port),
        ]
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 60
        while "FramePack UI: http://127.0.0.1" not in self.log.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"framepack ui did not start:\n{self.log.read_text()}")
            time.sleep(0.2)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def server(tmp_path) -> Iterator[Callable[[], Server]]:
    servers: list[Server] = []

    def start() -> Server:
        servers.append(Server(tmp_path / "outputs"))
        return servers[-1]

    yield start
    for s in servers:
        s.stop(signal.SIGKILL)


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1280, "height": 1500})
    page.goto(url)
    page.wait_for_selector("#fp-add", timeout=30_000)
    return page


def cell(page, row: int, column: int):
    return page.locator(f'#fp-prompts [data-testid="cell-{row}-{column}"]')


def fill_cell(page, row: int, column: int, text: str) -> None:
    """Type into a cell of the timeline editor (a double click opens its editor)."""
    cell(page, row, column).dblclick()
    editor = cell(page, row, column).locator("textarea, input")
    editor.fill(text)
    editor.press("Enter")
    wait_for_text(page, f'#fp-prompts [data-testid="cell-{row}-{column}"]', text, 15)


def write_timeline(page) -> None:
    """The two rows of ROWS: the first row is there; "add a row" makes the second."""
    page.click("#fp-add-row")
    cell(page, 1, 0).wait_for(timeout=15_000)
    for row, values in enumerate(ROWS):
        for column, text in enumerate(values):
            fill_cell(page, row, column, text)


def queue_job(page, *, seconds: str, steps: str, image: Path | None = None, button: str = "#fp-add") -> None:
    if image is not None:
        page.set_input_files("#fp-image input[type=file]", str(image))
        page.wait_for_selector("#fp-image img", timeout=15_000)
    write_timeline(page)
    page.fill("#fp-seconds input", seconds)
    page.fill(f"{STEPS} textarea, {STEPS} input", steps)
    page.click(button)


def wait_for_text(page, selector: str, text: str, timeout: float) -> None:
    page.locator(selector, has_text=text).first.wait_for(timeout=timeout * 1000)


def shot(page, name: str) -> None:
    """A full-page screenshot, 900 px wide, for docs/ui.md (only with FRAMEPACK_UI_SCREENSHOTS=1)."""
    if SCREENSHOTS is None:
        return
    path = SCREENSHOTS / f"ui-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    with Image.open(path) as image:
        small = image.convert("RGB").resize((900, round(image.height * 900 / image.width)), Image.LANCZOS)
    small.quantize(colors=128).save(path, optimize=True)


def test_queue_a_job_see_the_video_and_the_gallery(browser, server, tmp_path):
    ui = server()
    requested: list[str] = []
    page = browser.new_page(viewport={"width": 1280, "height": 1500})
    page.on("request", lambda request: requested.append(request.url))
    page.goto(ui.url)
    page.wait_for_selector("#fp-add", timeout=30_000)
    page.fill("#fp-seconds input", "0")  # bad input: the CLI's one line, in the page
    page.click("#fp-add")
    wait_for_text(page, "#fp-message", "--seconds must be > 0, got 0", 15)
    notes = tmp_path / "notes.png"  # an upload that is not an image: refused when it lands
    notes.write_text("not an image")
    page.set_input_files("#fp-image input[type=file]", str(notes))
    wait_for_text(page, "#fp-message", "--image: cannot read notes.png as an image", 15)
    assert page.locator("#fp-image img").count() == 0  # removed from the form
    assert "Traceback" not in page.content()

    image = tmp_path / "start.png"  # the demo's example picture, upscaled (uploads are any size)
    with Image.open(ROOT / "framepack" / "assets" / "demo" / "example.png") as example:
        example.convert("RGB").resize((128, 128), Image.NEAREST).save(image)
    queue_job(page, seconds="1", steps="8", image=image)
    wait_for_text(page, "#fp-message", "Queued", 15)
    wait_for_text(page, "#fp-running", "section", 30)  # the bars of the running job
    page.wait_for_selector("#fp-so-far video", timeout=30_000)  # a section landed
    shot(page, "generate")
    wait_for_text(page, "#fp-queue", "done", 60)
    (job,) = JobQueue(ui.outputs).jobs()
    assert job.status == "done" and job.frames == 30 and job.options["prompts"] == TIMELINE
    page.wait_for_selector("#fp-so-far video", timeout=15_000)

    page.get_by_role("tab", name="Gallery").click()
    page.click("#fp-videos input")
    page.get_by_role("option", name=job.id).first.click()
    wait_for_text(page, "#fp-settings", "the camera holds still", 15)
    page.wait_for_selector("#fp-player video", timeout=15_000)
    settings = page.inner_text("#fp-settings")
    assert str(job.options["seed"]) in settings and "0.5s" in settings
    shot(page, "gallery")
    page.click("#fp-load")  # back to the form with the video's settings
    wait_for_text(page, "#fp-message", "Loaded the settings", 15)
    assert [[cell(page, r, c).inner_text().strip() for c in (0, 1)] for r in (0, 1)] == [
        list(row) for row in ROWS
    ]
    assert cell(page, 2, 0).count() == 0
    page.get_by_role("tab", name="Gallery").click()
    page.click("#fp-extend-this")  # "extend this video": the form continues it
    wait_for_text(page, "#fp-message", f"Extending {job.id}.mp4", 15)
    assert page.input_value("#fp-extend textarea, #fp-extend input") == f"{job.id}.mp4"
    page.close()
    untouched_page_queues_jobs_and_shows_the_newest_video(browser, ui, job.id)
    assert [url for url in requested if not url.startswith(ui.url)] == []  # nothing from elsewhere
    for outside in ("/etc/passwd", str(ROOT / "pyproject.toml")):  # files come from the outputs only
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{ui.url}gradio_api/file={outside}", timeout=10)
        assert err.value.code == 403


def field(page, selector: str):
    return page.locator(f"{selector} textarea, {selector} input").first


def untouched_page_queues_jobs_and_shows_the_newest_video(browser, ui, older: str) -> None:
    """A fresh page, nothing typed: "Add to queue" queues a job with the model's defaults; with
    "Advanced" opened and left alone, "Generate now" (0.5 s, to keep the test short) runs one,
    and "the video so far" shows that job's video, not the older one made before."""
    queue = JobQueue(ui.outputs)
    page = open_page(browser, ui.url)
    assert field(page, STEPS).input_value() == ""
    assert "25 (the model's default)" in (field(page, STEPS).get_attribute("placeholder") or "")
    page.click("#fp-add")
    wait_for_text(page, "#fp-message", "Queued", 15)
    untouched = queue.jobs()[-1]
    assert untouched.id != older and untouched.options["seconds"] == 5
    defaults = [untouched.options[k] for k in ("steps", "fps", "shift", "guidance", "cfg", "cfg_rescale")]
    assert defaults == [None, None, None, None, None, 0.0]
    queue.cancel(untouched.id)  # a 5-s job: not run to its end here, the test stays short
    page.get_by_text("Advanced: the model's settings").click()
    for selector in ADVANCED:
        field(page, selector).wait_for(state="visible", timeout=15_000)
        assert field(page, selector).input_value() == "", selector
        assert "(the model's default)" in (field(page, selector).get_attribute("placeholder") or "")
    page.fill("#fp-seconds input", "0.5")
    page.click("#fp-now")
    message = page.locator("#fp-message", has_text=re.compile("starts now|first in the queue"))
    message.first.wait_for(timeout=15_000)  # "starts now" once the cancelled job has ended
    now = next(j for j in queue.jobs() if j.id not in (older, untouched.id))
    assert [now.options[k] for k in ("steps", "fps", "shift", "guidance", "cfg", "cfg_rescale")] == defaults
    deadline = time.monotonic() + 120
    while queue.get(now.id).status != "done":
        assert time.monotonic() < deadline and queue.get(now.id).status in ("queued", "running"), (
            ui.log.read_text()
        )
        time.sleep(0.5)
    assert queue.get(untouched.id).status == "cancelled" and queue.get(now.id).frames == 15
    time.sleep(3)  # three refreshes of the page after the job ended
    video = page.locator("#fp-so-far video")
    deadline = time.monotonic() + 15
    while now.id not in (video.get_attribute("src") or "") if video.count() else True:
        assert time.monotonic() < deadline, video.get_attribute("src") if video.count() else "no video"
        time.sleep(0.2)
    page.close()


def test_a_killed_server_resumes_its_job(browser, server):
    ui = server()
    page = open_page(browser, ui.url)
    queue_job(page, seconds="2", steps="10", button="#fp-now")
    wait_for_text(page, "#fp-message", "starts now", 15)  # the worker is idle: it starts at once
    queue = JobQueue(ui.outputs)
    deadline = time.monotonic() + 60
    while not list(ui.outputs.glob("*.resume.safetensors")):  # a section is saved
        assert time.monotonic() < deadline, ui.log.read_text()
        time.sleep(0.1)
    ui.stop(signal.SIGKILL)
    (job,) = queue.jobs()
    assert job.status == "running"  # as the kill left it
    page.close()

    ui = server()  # a restart on the same outputs folder
    page = open_page(browser, ui.url)
    wait_for_text(page, "#fp-queue", "done", 60)
    job = queue.get(job.id)
    assert (job.status, job.attempts, job.frames) == ("done", 2, 60)
    data = json.loads((ui.outputs / f"{job.id}.json").read_text())
    assert data["complete"] and data["frames"] == 60
    page.close()
