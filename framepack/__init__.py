"""FramePack: next-frame-section video diffusion with packed frame context.

Zhang & Agrawala, "Packing Input Frame Context in Next-Frame Prediction Models for Video
Generation" (arXiv 2504.12626). Nothing is loaded or computed at import time.
"""

__version__ = "0.1.0"
