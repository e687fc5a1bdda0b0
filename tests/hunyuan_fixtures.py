"""Tiny random stand-ins for the released components, saved in the released directory layouts.

`build_hunyuan_dir(root)` writes `root/vae`, `text_encoder` (LlamaModel), `text_encoder_2`
(CLIPTextModel), `tokenizer` (byte-level BPE trained on a few strings), `tokenizer_2` (CLIP BPE
over single characters); `build_redux_dir(root)` writes `image_encoder` (SiglipVisionModel) and
`feature_extractor` (SiglipImageProcessor). Everything is built offline from fixed seeds.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from framepack.hunyuan.text import PROMPT_TEMPLATE

LLAMA_SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
]
TRAIN_TEXTS = [
    PROMPT_TEMPLATE.replace("{}", ""),
    "a cat walks on the grass and then jumps over a red fence",
    "the girl dances gracefully with clear movements full of charm hello world",
]


def build_llama_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=LLAMA_SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(TRAIN_TEXTS, trainer)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A",
        pair="<|begin_of_text|> $A $B",
        special_tokens=[("<|begin_of_text|>", bos)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|begin_of_text|>",
        eos_token="<|end_of_text|>",
        pad_token="<|end_of_text|>",
    )


def build_clip_tokenizer():
    from transformers import CLIPTokenizer

    # GPT-2 byte-to-unicode table: printable bytes map to themselves, the rest to 256 + n.
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars, extra = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[])


def build_hunyuan_dir(root: Path, *, seed: int = 0) -> Path:
    """A tiny `hunyuanvideo-community/HunyuanVideo` folder (fp32 weights) at `root`."""
    from diffusers import AutoencoderKLHunyuanVideo
    from transformers import CLIPTextConfig, CLIPTextModel, LlamaConfig, LlamaModel

    root = Path(root)
    torch.manual_seed(seed)
    tok = build_llama_tokenizer()
    tok.save_pretrained(root / "tokenizer")
    llama = LlamaModel(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            pad_token_id=tok.pad_token_id,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
        )
    )
    llama.save_pretrained(root / "text_encoder", safe_serialization=True)

    tok2 = build_clip_tokenizer()
    tok2.save_pretrained(root / "tokenizer_2")
    clip = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tok2),
            hidden_size=32,
            intermediate_size=48,
            projection_dim=16,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=tok2.bos_token_id,
            eos_token_id=tok2.eos_token_id,
            pad_token_id=tok2.pad_token_id,
        )
    )
    clip.save_pretrained(root / "text_encoder_2", safe_serialization=True)

    vae = AutoencoderKLHunyuanVideo(
        latent_channels=4,
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        norm_num_groups=4,
        mid_block_add_attention=True,
    )
    vae.save_pretrained(root / "vae", safe_serialization=True)
    return root


def build_redux_dir(root: Path, *, seed: int = 0) -> Path:
    """A tiny `lllyasviel/flux_redux_bfl` folder at `root` (32x32 SigLIP, 16 patches)."""
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    root = Path(root)
    torch.manual_seed(seed)
    model = SiglipVisionModel(
        SiglipVisionConfig(
            hidden_size=24,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
        )
    )
    model.save_pretrained(root / "image_encoder", safe_serialization=True)
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(root / "feature_extractor")
    return root


def build_transformer_dir(root: Path, *, shards: int = 2) -> Path:
    """A released-style transformer folder: config.json, sharded safetensors and an index json.

    Uses `framepack.models` (tiny preset) when available, else writes placeholder tensors.
    """
    from safetensors.torch import save_file

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tensors = {f"block.{i}.weight": torch.zeros(2, 2) for i in range(shards)}
    weight_map = {}
    for i, (name, tensor) in enumerate(tensors.items()):
        shard = f"diffusion_pytorch_model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file({name: tensor}, root / shard)
        weight_map[name] = shard
    (root / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 16 * shards}, "weight_map": weight_map})
    )
    (root / "config.json").write_text(json.dumps({"_class_name": "HunyuanVideoTransformer3DModelPacked"}))
    return root


def as_hf_cache(cache_root: Path, repo_id: str, source: Path, revision: str = "0123abcd") -> Path:
    """Copy `source` into `cache_root/models--org--name/snapshots/<revision>/` with refs/main."""
    import shutil

    org, name = repo_id.split("/")
    repo = Path(cache_root) / f"models--{org}--{name}"
    snap = repo / "snapshots" / revision
    shutil.copytree(source, snap)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return snap
