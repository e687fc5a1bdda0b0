"""Patchify kernels: the one spelling of a kernel, the power sequence and the released layout.

A kernel `(t, h, w)` patchifies `t` latent frames of `h x w` latent pixels into one token
(Sec. 2: older frames are compressed by larger kernels). Torch-free, so that configs, plans and
the CLI can use it without loading torch.
"""

from __future__ import annotations

Kernel = tuple[int, int, int]

#: The base patchify kernel (the noisy input and the uncompressed "1x" context level).
BASE_KERNEL: Kernel = (1, 2, 2)


def power_kernel(j: int) -> Kernel:
    """Level j of the power sequence (1,2,2), (2,4,4), (4,8,8), (8,16,16)...: 8**j times fewer
    tokens per frame than the base kernel (Sec. 2: compression by the patchify kernel)."""
    if j < 0:
        raise ValueError(f"power level must be >= 0, got {j}")
    return (2**j, 2 ** (j + 1), 2 ** (j + 1))


def kernel_name(kernel: Kernel) -> str:
    """Projection-style name: (1,2,2) -> '1x', (k,2k,2k) -> 'kx', others -> 't_h_w'."""
    t, h, w = kernel
    if h == w == 2 * t:
        return f"{t}x"
    return f"{t}_{h}_{w}"


#: The released models' history (SPEC sec. 5), finest level first: 1x 1 frame (beside the start
#: anchor), 2x 2 frames, 4x 16 frames; 19 frames in all, the rest dropped.
RELEASED_FRAMES: dict[Kernel, int] = {power_kernel(0): 1, power_kernel(1): 2, power_kernel(2): 16}
