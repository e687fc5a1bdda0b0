"""Few-step students: distil a model so that a section samples in N <= 4 steps (docs/distill.md).

- `config`: `DistillConfig`, a `TrainConfig` with the teacher and the distillation settings;
  `make_config(teacher, ...)` reads the teacher's bundle;
- `targets`: the teacher's guided solution over one interval of the student's grid (pure);
- `rollout`: self-rollout history, generated as `framepack generate` does;
- `labels`: a step's micro-batches labelled with teacher targets (the training loop's hook);
- `loop`: `distill(config, run_dir)` for model bundles (the small models);
- `lora`: `distill_lora(...)` for the released 13B models, a LoRA student (framepack.lora_train).

    from framepack.distill import distill, make_config
    distill(make_config("framepack/assets/demo", student_steps=4), "runs/student")

Nothing is imported until used.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DistillConfig", "distill", "make_config"]


def __getattr__(name: str) -> Any:
    if name == "distill":
        from framepack.distill.loop import distill

        return distill
    if name in ("DistillConfig", "make_config"):
        from framepack.distill import config

        return getattr(config, name)
    raise AttributeError(f"module 'framepack.distill' has no attribute {name!r}")
