"""Tiny Molmo2 models built offline from a `Molmo2Config`: same classes, processor and code path as the real ones.

Development tooling (tests, benchmarks, training), not the product: the folder written by `build_tiny_model` loads
back through the same `load_model` code a user's Hub model takes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

# Text tokens the LM can emit (ids 256..258 after the 256 byte tokens), then the vision-only tokens
# (the "additional vocabulary" that the LM embeds but never predicts).
TEXT_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
VISION_SPECIAL_TOKENS = [
    "<im_start>", "<im_end>", "<im_patch>", "<im_col>", "<low_res_im_start>",
    "<frame_start>", "<frame_end>", "<im_low>", "<|image|>", "<|video|>",
]

# Molmo2's prompt layout: media first, then the user turn, then the assistant turn.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- else -%}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'video' -%}{{ '<|video|>' }}{%- elif item['type'] == 'image' -%}{{ '<|image|>' }}"
    "{%- endif -%}{%- endfor -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- for item in message['content'] -%}{%- if item['type'] == 'text' -%}{{ item['text'] }}{%- endif -%}"
    "{%- endfor -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


@dataclass(frozen=True)
class TinySpec:
    """Sizes of a tiny Molmo2. The defaults give ~0.2 M parameters; `BENCH_SPEC` is big enough for benchmarks."""


    vit_hidden: int = 32
    vit_layers: int = 3
    vit_heads: int = 4
    vit_intermediate: int = 64
    adapter_intermediate: int = 64
    text_hidden: int = 64
    text_layers: int = 2
    text_heads: int = 4
    text_kv_heads: int = 2
    text_head_dim: int = 16
    text_intermediate: int = 128
    # A wide init makes random-weight answers depend on the input (std 0.02 decodes one token over and over),
    # which exactness tests need to be meaningful.
    init_std: float = 0.3
    seed: int = 0


BENCH_SPEC = TinySpec(
    vit_hidden=192, vit_layers=4, vit_heads=4, vit_intermediate=512, adapter_intermediate=512,
    text_hidden=384, text_layers=6, text_heads=6, text_kv_heads=2, text_head_dim=64, text_intermediate=1024,
)


def build_tokenizer():
    """A byte-level tokenizer (no merges) with the special tokens Molmo2's processor looks up."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(TEXT_SPECIAL_TOKENS + VISION_SPECIAL_TOKENS)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_end|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
    )


def build_processor(tokenizer=None):
    """Molmo2Processor with the released settings (video pooling 3x3, 2 fps, no frame special tokens)."""
    from transformers import Molmo2ImageProcessor, Molmo2Processor, Molmo2VideoProcessor

    norm = dict(do_rescale=True, do_normalize=True, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    return Molmo2Processor(
        image_processor=Molmo2ImageProcessor(max_crops=8, pooling_size=[2, 2], **norm),
        video_processor=Molmo2VideoProcessor(pooling_size=[3, 3], num_frames=384, max_fps=2, **norm),
        tokenizer=tokenizer if tokenizer is not None else build_tokenizer(),
        chat_template=CHAT_TEMPLATE,
        image_use_col_tokens=True,
        use_single_crop_col_tokens=False,
        video_use_col_tokens=False,
        use_frame_special_tokens=False,
    )


def build_config(spec: TinySpec, tokenizer):
    """A `Molmo2Config` whose special-token ids match `tokenizer`."""
    from transformers import Molmo2Config

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in TEXT_SPECIAL_TOKENS + VISION_SPECIAL_TOKENS}
    vocab_size = ids["<|im_end|>"] + 1
    vision = dict(
        hidden_size=spec.vit_hidden, intermediate_size=spec.vit_intermediate,
        num_hidden_layers=spec.vit_layers, num_attention_heads=spec.vit_heads,
        num_key_value_heads=spec.vit_heads, head_dim=spec.vit_hidden // spec.vit_heads,
        initializer_range=spec.init_std,
    )
    adapter = dict(
        vision_feature_layer=[-1, -2], hidden_size=spec.vit_hidden, num_attention_heads=spec.vit_heads,
        num_key_value_heads=spec.vit_heads, head_dim=spec.vit_hidden // spec.vit_heads,
        intermediate_size=spec.adapter_intermediate, text_hidden_size=spec.text_hidden,
        initializer_range=spec.init_std,
    )
    text = dict(
        hidden_size=spec.text_hidden, num_attention_heads=spec.text_heads,
        num_key_value_heads=spec.text_kv_heads, head_dim=spec.text_head_dim,
        vocab_size=vocab_size, additional_vocab_size=max(ids.values()) + 1 - vocab_size + 6,
        num_hidden_layers=spec.text_layers, intermediate_size=spec.text_intermediate,
        max_position_embeddings=16384, initializer_range=spec.init_std,
    )
    return Molmo2Config(
        vision_config=vision, adapter_config=adapter, text_config=text,
        image_start_token_id=ids["<im_start>"], low_res_image_start_token_id=ids["<low_res_im_start>"],
        image_end_token_id=ids["<im_end>"], image_patch_id=ids["<im_patch>"],
        frame_start_token_id=ids["<frame_start>"], frame_end_token_id=ids["<frame_end>"],
        bos_token_id=ids["<|im_end|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
        initializer_range=spec.init_std,
    )


def build_tiny_model(out_dir: str | Path, spec: TinySpec = TinySpec()) -> Path:
    """Build a random-weight Molmo2 (deterministic for `spec.seed`) and save model + processor to `out_dir`."""
    import torch
    from transformers import GenerationConfig, Molmo2ForConditionalGeneration

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    processor = build_processor()
    config = build_config(spec, processor.tokenizer)
    torch.manual_seed(spec.seed)
    model = Molmo2ForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id,
        do_sample=False, max_new_tokens=64,
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "molmo2_ros_tiny.json").write_text(json.dumps(asdict(spec), indent=2))
    return out
