"""Components of the released FramePack checkpoints (HunyuanVideo backbone).

The transformer itself lives in `framepack.models`; this package holds what surrounds it in the
official demo: locating the released files (`paths`), the LLaMA + CLIP-L prompt encoder (`text`),
the SigLIP image encoder (`image`), the HunyuanVideo VAE codec (`vae`), resolution buckets
(`buckets`), LoRA merging (`lora`), memory helpers (`memory`) and TeaCache (`teacache`).

Nothing is imported here: `transformers` and `diffusers` are optional dependencies
(`pip install framepack[hunyuan]`) and are imported only by the modules that need them.
"""
