"""LoRA training for the released FramePack models (`hunyuan-inverted`, `hunyuan-f1`).

- `adapters`: PEFT LoRA adapters on the packed transformer (attach, read out, load, detach, save
  in the kohya / musubi-tuner and diffusers namings);
- `config`: the frozen, validated run configuration;
- `samples`: training sections drawn from a latent cache (framepack.hunyuan.latent_cache) in the
  released inverted / F1 index layouts or with a general packing schedule;
- `loop`: set up, resume, loop (one or several processes, DDP or FSDP2);
- `memory`: GPU memory estimates per bucket and mode.

See docs/lora.md.
"""
