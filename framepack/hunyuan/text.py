"""The HunyuanVideo prompt encoder: LLaMA hidden states + CLIP-L pooled vector.

As in the official demo (and diffusers' HunyuanVideoFramepackPipeline.encode_prompt):

- the prompt is wrapped in the HunyuanVideo chat template; the template's tokens (the first
  `crop_start` = 95 with the released tokenizer) are dropped after encoding;
- LLaMA runs on `max_length + crop_start` tokens (max_length 256, right padding), and the
  per-token states are `hidden_states[-3]` (the layer two before the last);
- CLIP-L (77 tokens) gives the pooled vector (`pooler_output`, 768-d).

Padding positions are zeroed (the official demo crops them and pads with zeros); the mask marks
valid tokens.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from framepack.errors import UserError
from framepack.hunyuan.paths import HUNYUAN_VIDEO, check_part, offline
from framepack.hunyuan.vae import default_device
from framepack.text.base import PromptEmbeds

PROMPT_TEMPLATE = (
    "<|start_header_id|>system<|end_header_id|>\n\nDescribe the video by detailing the following aspects: "
    "1. The main content and theme of the video."
    "2. The color, shape, size, texture, quantity, text, and spatial relationships of the objects."
    "3. Actions, events, behaviors temporal relationships, physical movement changes of the objects."
    "4. background environment, light, style and atmosphere."
    "5. camera angles, movements, and transitions used in the video:<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>"
)
CROP_START = 95  # tokens of the template before the prompt, with the released LLaMA tokenizer
MAX_LENGTH = 256
CLIP_MAX_LENGTH = 77
HIDDEN_LAYER = -3


def check_tokenizer(tokenizer: Any, where: Path) -> None:
    """Refuse a tokenizer that loaded empty (offline loaders can silently build one).

    Raises UserError when the vocabulary is tiny or "hello" encodes to no known token.
    """
    size = len(tokenizer)
    ids = tokenizer("hello", add_special_tokens=False).input_ids
    known = [i for i in ids if i != tokenizer.unk_token_id]
    if size <= 3 or not known:
        raise UserError(
            f"the tokenizer in {where} loaded empty (vocabulary size {size}, 'hello' -> {ids}); "
            f"its files are missing or unreadable: re-download that folder"
        )


def template_prefix_length(tokenizer: Any, template: str = PROMPT_TEMPLATE) -> int:
    """Tokens of `template` before its "{}" (BOS included): the crop_start the tokenizer implies."""
    prefix = template.split("{}")[0]
    return len(tokenizer(prefix).input_ids)


class HunyuanPromptEncoder:
    """`PromptEncoder` for the released models: states (B, 256, 4096), pooled (B, 768)."""

    def __init__(
        self,
        text_encoder: Any,
        text_encoder_2: Any,
        tokenizer: Any,
        tokenizer_2: Any,
        *,
        template: str = PROMPT_TEMPLATE,
        crop_start: int = CROP_START,
        max_length: int = MAX_LENGTH,
    ) -> None:
        self.text_encoder = text_encoder.eval().requires_grad_(False)
        self.text_encoder_2 = text_encoder_2.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "right"  # the crop below assumes the prompt comes first
        self.tokenizer_2 = tokenizer_2
        self.template = template
        self.crop_start = crop_start
        self.max_length = max_length
        self.execution_device: torch.device | None = None  # where it computes when streamed

    @classmethod
    def from_dir(
        cls,
        hunyuan_dir: str | Path,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float16,
        crop_start: int = CROP_START,
    ) -> HunyuanPromptEncoder:
        """Load text_encoder, text_encoder_2, tokenizer, tokenizer_2 from a HunyuanVideo folder.

        Released dtype fp16 (pass torch.float32 for full precision). Never touches the network.
        """
        from transformers import CLIPTextModel, CLIPTokenizer, LlamaModel, PreTrainedTokenizerFast

        root = Path(hunyuan_dir)
        parts = {p: check_part(root, HUNYUAN_VIDEO, p) for p in ("text_encoder", "text_encoder_2")}
        tok_dir, tok2_dir = root / "tokenizer", root / "tokenizer_2"
        for folder in (tok_dir, tok2_dir):
            if not (folder / "tokenizer_config.json").is_file():
                raise UserError(
                    f"{folder} holds no tokenizer_config.json; re-download {HUNYUAN_VIDEO.repo_id}"
                )
        if not (tok_dir / "tokenizer.json").is_file():
            raise UserError(f"{tok_dir} holds no tokenizer.json (the LLaMA tokenizer); re-download it")
        device = device or default_device()
        with offline():
            try:
                # tokenizer.json read verbatim: class-specific loaders may rebuild the tokenizer
                # from the vocabulary with different pre-tokenization.
                tokenizer = PreTrainedTokenizerFast.from_pretrained(tok_dir, local_files_only=True)
                tokenizer_2 = CLIPTokenizer.from_pretrained(tok2_dir, local_files_only=True)
                llama = LlamaModel.from_pretrained(
                    parts["text_encoder"], torch_dtype=dtype, local_files_only=True, use_safetensors=True
                )
                clip = CLIPTextModel.from_pretrained(
                    parts["text_encoder_2"], torch_dtype=dtype, local_files_only=True, use_safetensors=True
                )
            except (OSError, ValueError, KeyError) as err:
                raise UserError(f"could not load the HunyuanVideo text encoders from {root}: {err}") from err
        check_tokenizer(tokenizer, tok_dir)
        check_tokenizer(tokenizer_2, tok2_dir)
        if tokenizer.pad_token is None:
            raise UserError(f"the LLaMA tokenizer in {tok_dir} has no pad token; re-download it")
        implied = template_prefix_length(tokenizer)
        if implied != crop_start:
            warnings.warn(
                f"the template prefix is {implied} tokens with the tokenizer in {tok_dir}, but crop_start is "
                f"{crop_start}; text states will include template tokens or miss prompt tokens",
                stacklevel=2,
            )
        return cls(llama.to(device), clip.to(device), tokenizer, tokenizer_2, crop_start=crop_start)

    @property
    def device(self) -> torch.device:
        """Where inputs go: the execution device when streamed (low-VRAM), else the weights'."""
        return self.execution_device or next(self.text_encoder.parameters()).device

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> PromptEmbeds:
        """prompts -> states (B, max_length, D_llama), mask (B, max_length), pooled (B, D_clip)."""
        if isinstance(prompts, str):
            raise TypeError("encode takes a list of prompts")
        device = self.device
        llama_in = self.tokenizer(
            [self.template.format(p) for p in prompts],
            padding="max_length",
            max_length=self.max_length + self.crop_start,
            truncation=True,
            return_tensors="pt",
            return_attention_mask=True,
        )
        ids, attn = llama_in.input_ids.to(device), llama_in.attention_mask.to(device)
        hidden = self.text_encoder(input_ids=ids, attention_mask=attn, output_hidden_states=True)
        states = hidden.hidden_states[HIDDEN_LAYER][:, self.crop_start :]  # (B, L, D)
        mask = attn[:, self.crop_start :].bool()  # (B, L)
        states = states * mask[..., None].to(states.dtype)
        # The template's closing <|eot_id|> always follows the prompt, so every row keeps >= 1 token.

        clip_ids = self.tokenizer_2(
            list(prompts),
            padding="max_length",
            max_length=CLIP_MAX_LENGTH,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        pooled = self.text_encoder_2(clip_ids.to(device), output_hidden_states=False)
        return PromptEmbeds(states=states, mask=mask, pooled=pooled.pooler_output.to(device))

    def to(self, device: torch.device | str) -> HunyuanPromptEncoder:
        self.text_encoder.to(device)
        self.text_encoder_2.to(device)
        return self

    def modules(self) -> list[torch.nn.Module]:
        """The models, for offloading helpers (`framepack.hunyuan.offload.StreamedEncoder`)."""
        return [self.text_encoder, self.text_encoder_2]
