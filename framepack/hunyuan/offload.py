"""Low-VRAM execution of the encoders: layers streamed to the GPU one at a time.

As the official demo's text encoder under `DynamicSwapInstaller`, an encoder's layers rest on
the host and each visits the GPU only for its own forward; unlike it, the token embedding
(LLaMA's is 1 GiB in fp16) never goes to the GPU: its rows are looked up on the host and only
the looked-up vectors are copied. The encoder's remaining weights (norms, position tables,
SigLIP's pooling head) visit the GPU for the call. So LLaMA + CLIP-L need about 0.4 GiB of
weights on the GPU at once instead of 14.2 GiB (`framepack.hunyuan.budget`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from framepack.hunyuan.budget import encoder_layers, host_lookup
from framepack.hunyuan.memory import BlockStreamer, Ledger


class StreamedEncoder:
    """Streams `model`'s layers to `device`; use the model inside `with streamed.visit(): ...`."""

    def __init__(self, model: nn.Module, device: torch.device, ledger: Ledger) -> None:
        self.model = model
        self.device = device
        self.ledger = ledger
        host = torch.device("cpu")
        model.to(host)
        layers = list(encoder_layers(model))
        self.lookup = host_lookup(model)
        self.streamer = BlockStreamer(layers, device, host, pin_limit=0, ledger=ledger)
        skip = {
            id(t) for m in [*layers, *([self.lookup] if self.lookup is not None else [])] for t in _tensors(m)
        }
        self.rest = [t for t in _tensors(model) if id(t) not in skip]
        if self.lookup is not None:
            self.lookup.forward = self._host_lookup(self.lookup.forward)

    def _host_lookup(self, lookup: Any) -> Any:
        def forward(ids: Tensor) -> Tensor:
            return lookup(ids.to("cpu")).to(self.device)

        return forward

    @contextlib.contextmanager
    def visit(self) -> Iterator[None]:
        """The non-layer weights on `device` for the block (copies, dropped afterwards)."""
        pairs = [(t, t.data) for t in self.rest]
        nbytes = sum(r.numel() * r.element_size() for _, r in pairs)
        for t, rest in pairs:
            t.data = rest.to(self.device, copy=True)
        self.ledger.add(nbytes)
        try:
            yield
        finally:
            for t, rest in pairs:
                t.data = rest
            self.ledger.remove(nbytes)

    def resting(self) -> list[Tensor]:
        """Host tensors that compute must never read (the token embedding is read on the host)."""
        return [*self.streamer.resting(), *(t.data for t in self.rest)]


def _tensors(module: nn.Module) -> list[Tensor]:
    return [*module.parameters(), *module.buffers()]
