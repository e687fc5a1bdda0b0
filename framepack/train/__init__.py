"""Training: flow-matching loss, training-time context layouts, the loop, checkpoints, EMA.

See docs/training.md. Entry point: `framepack train` (framepack/cli/train.py) or
`framepack.train.loop.train(config, run_dir)`.
"""
