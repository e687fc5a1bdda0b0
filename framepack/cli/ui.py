"""`framepack ui`: the web page, with its job queue and a worker running the jobs.

    framepack ui                                  # the demo model, http://127.0.0.1:7860/
    framepack ui --model hunyuan-inverted --model-dir ~/models --outputs renders --port 7861

The page binds 127.0.0.1 unless `--host` says otherwise (from another machine, use an SSH
tunnel: docs/ui.md); there is no public share link. Jobs persist in `<outputs>/queue/`: stopping
the server (even kill -9) loses nothing, and the next start resumes the interrupted job.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import math
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from framepack.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="demo", help="demo (bundled), hunyuan-inverted, hunyuan-f1, or a PATH")
    p.add_argument("--model-dir", help="folder (or Hugging Face cache) holding the released model parts")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--dtype", choices=["auto", "fp32", "fp16", "bf16"], default="auto")
    p.add_argument(
        "--low-vram", action="store_true", help="stream the encoders' layers and the transformer's blocks"
    )
    p.add_argument("--vram-gb", type=float, metavar="G", help="GPU memory budget in GiB (low-VRAM mode)")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument(
        "--outputs", default="outputs", help="folder of the videos and the job queue (default outputs)"
    )
    p.add_argument("--threads", type=int, help="CPU threads (default: as framepack generate)")


def run(args: argparse.Namespace) -> int:
    from framepack.components import LoadOptions
    from framepack.queue import JobQueue, Pipelines, Worker
    from framepack.runtime import check_threads, use_threads

    if not 1 <= args.port <= 65535:
        raise UserError(f"--port must be between 1 and 65535, got {args.port}")
    threads = check_threads(args.threads)
    outputs = Path(args.outputs).resolve()
    if outputs.exists() and not outputs.is_dir():
        raise UserError(f"--outputs {args.outputs} is a file; give a folder")
    outputs.mkdir(parents=True, exist_ok=True)
    _quiet_gradio(outputs)
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UserError("the web UI needs Gradio: pip install 'framepack[ui]'") from None
    model_dir = str(Path(args.model_dir).resolve()) if args.model_dir else None
    if args.vram_gb is not None and not (math.isfinite(args.vram_gb) and 0 < args.vram_gb <= 4096):
        raise UserError(f"--vram-gb must be a number of GiB above 0, got {args.vram_gb}")
    load = LoadOptions(
        model_dir=model_dir,
        device=args.device,
        dtype=args.dtype,
        low_vram=args.low_vram,
        vram_gb=args.vram_gb,
    )
    use_threads(threads)
    from framepack.pipeline import FramePackPipeline

    pipe = FramePackPipeline.from_pretrained(args.model, load)  # bad models fail here, in one line
    queue = JobQueue(outputs)
    from framepack.ui.uploads import clean_uploads

    clean_uploads(queue, keep=0)  # no page holds an upload yet; jobs use their own copies
    model = str(Path(args.model).resolve()) if Path(args.model).exists() else args.model
    pipelines = Pipelines()
    pipelines.put(model, dataclasses.asdict(load), pipe)  # the key the page's jobs carry
    worker = Worker(queue, pipelines=pipelines)
    thread = threading.Thread(target=worker.run, name="framepack-worker", daemon=True)
    thread.start()
    try:
        _serve(queue, worker, pipe, model, load, args)
    finally:
        worker.shutdown.set()  # the running job stops after its step and resumes next time
        thread.join(timeout=60)
    return 0


def _serve(queue: Any, worker: Any, pipe: Any, model: str, load: Any, args: argparse.Namespace) -> None:
    from framepack.ui.app import CSS, create_demo

    demo = create_demo(queue, worker, pipe.components.spec, model, load)
    demo.queue(default_concurrency_limit=4)
    try:
        demo.launch(
            server_name=args.host,
            server_port=args.port,
            share=False,
            allowed_paths=[str(queue.outputs)],
            max_file_size="50mb",
            show_error=False,
            quiet=True,
            prevent_thread_lock=True,
            css=CSS,
        )
    except OSError as err:
        raise UserError(f"cannot serve on {args.host}:{args.port} ({err}); pick another --port") from None
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"FramePack UI: http://{host}:{args.port}/  (outputs and queue: {queue.outputs})", flush=True)
    if not _is_loopback(args.host):
        print(
            f"framepack ui: warning: bound to {args.host}: anyone who reaches this port can queue jobs and "
            "see the outputs; prefer --host 127.0.0.1 and an SSH tunnel (docs/ui.md)",
            file=sys.stderr,
        )
    signal.signal(signal.SIGTERM, lambda *_: _interrupt())
    try:
        demo.block_thread()
    finally:
        demo.close()


def _interrupt() -> None:
    raise KeyboardInterrupt


def _quiet_gradio(outputs: Path) -> None:
    """No network at run time (no analytics, no hub), and Gradio's file cache inside `outputs`,
    so every file the server hands out lies in the outputs folder."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from framepack.ui.uploads import upload_folder

    os.environ["GRADIO_TEMP_DIR"] = str(upload_folder(outputs))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
