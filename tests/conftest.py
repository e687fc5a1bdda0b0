"""Test-wide settings: every tensor in the suite is tiny, so one intra-op thread is fastest.

With several threads on a small, shared machine, thread synchronisation dominates tiny ops and
a busy neighbour can slow a test by 100x; one thread makes the suite's time predictable.
"""

import torch

torch.set_num_threads(1)
