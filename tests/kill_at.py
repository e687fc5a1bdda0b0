"""Run the `framepack` command and SIGKILL it at a chosen phase of its work (tests only).

    python tests/kill_at.py PHASE -- generate --out v.mp4 ...

PHASE names the moment the process dies, as a real `kill -9` would leave it:

- `part-before:N`  generate: the N-th section is sampled but its resume part not yet saved
- `part-after:N`   generate: right after the N-th section's part and resume state are saved
                   (`part-after:last`: after the last section's)
- `final-write`    generate: the final video is fully encoded in its temporary file, not moved
- `sidecar`        generate: the final video is in place, its complete sidecar not yet written
- `ckpt-json:N`    train: the N-th checkpoint's tensors are on disk, its JSON (which marks it
                   complete) not yet
- `bundle`         train: the last checkpoint is written, the run's bundle is half written

The functions are wrapped from outside the package, so the code under test is the shipped code.
"""

from __future__ import annotations

import os
import signal
import sys


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_around_parts(job_class, files_class, n: str, before: bool) -> None:
    """Die before (or after) the n-th `SectionFiles.save` call ("last": the plan's last section)."""
    real_run, real_save, calls, jobs = job_class.run, files_class.save, [0], []

    def run(job, *args, **kwargs):
        jobs.append(job)
        return real_run(job, *args, **kwargs)

    def save(files, *args, **kwargs):
        calls[0] += 1
        target = len(jobs[-1].plan.sections) if n == "last" else int(n)
        if before and calls[0] == target:
            _die()
        out = real_save(files, *args, **kwargs)
        if not before and calls[0] == target:
            _die()
        return out

    job_class.run, files_class.save = run, save


def _die_on_replace(match) -> None:
    """The next `os.replace` whose destination satisfies `match` never happens."""
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        if match(str(dst)):
            _die()
        return real(src, dst, *args, **kwargs)

    os.replace = replace


def arm(phase: str) -> None:
    import framepack.pipeline as pipeline
    import framepack.resume as resume
    import framepack.train.loop as loop
    import framepack.writer as writer

    name, _, count = phase.partition(":")
    if name in ("part-before", "part-after"):
        _kill_around_parts(pipeline.Job, resume.SectionFiles, count, before=name == "part-before")
    elif name == "final-write":
        real_write = writer.write_video

        def write_video(*args, deterministic: bool = True, **kwargs):
            if deterministic:  # the final video
                _die_on_replace(lambda dst: dst.endswith(".mp4"))
            return real_write(*args, deterministic=deterministic, **kwargs)

        writer.write_video = write_video
    elif name == "sidecar":
        real_sidecar = writer.write_sidecar

        def write_sidecar(path, data):
            if data.get("complete"):
                _die()
            return real_sidecar(path, data)

        writer.write_sidecar = write_sidecar
    elif name == "ckpt-json":
        real_save, calls = loop.save_checkpoint, [0]

        def save_checkpoint(directory, ckpt):
            calls[0] += 1
            if calls[0] == int(count):
                _die_on_replace(lambda dst: dst.endswith(".json") and "step-" in dst)
            return real_save(directory, ckpt)

        loop.save_checkpoint = save_checkpoint
    elif name == "bundle":
        real_export = loop.export_bundle

        def export_bundle(*args, **kwargs):
            _die_on_replace(lambda dst: True)  # the bundle's first file move
            return real_export(*args, **kwargs)

        loop.export_bundle = export_bundle
    else:
        raise SystemExit(f"kill_at.py: unknown phase {phase!r}")


if __name__ == "__main__":
    phase, sep, *argv = sys.argv[1:]
    assert sep == "--", "usage: kill_at.py PHASE -- framepack arguments"
    arm(phase)
    from framepack.cli import main

    sys.exit(main(argv))
