"""Config adapter: the native transformers Molmo2 config plus the names vLLM's Molmo2 reads.

vLLM's Molmo2 was written against the Ai2 Hub (remote-code) config: `vit_config` with `image_default_input_size`,
`image_patch_size`, `image_num_pos`; `adapter_config.vit_layers` and `.pooling_attention_mask`;
`text_config.rope_theta` and `.use_qk_norm`. transformers' native `Molmo2Config` (>= 5.20) reads both layouts and
stores the native names, so this subclass adds the remote-code names as plain attributes computed from the
native ones (plain values and the existing sub-configs, so the config still serialises).
The two token ids missing from the native config (`image_col_id`, `image_low_res_id`) come from the tokenizer
and are filled in by the processor (model.py), which has it.
"""

from __future__ import annotations

from transformers import Molmo2Config


class Molmo2ServingConfig(Molmo2Config):
    """Molmo2Config that also answers vLLM's remote-code attribute names."""

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        add_remote_code_names(self)


def add_remote_code_names(config) -> None:
    """Set the remote-code names on a native Molmo2Config (idempotent; values already present win)."""
    vision, adapter, text = config.vision_config, config.adapter_config, config.text_config
    _default(vision, "image_default_input_size", list(vision.image_size))
    _default(vision, "image_patch_size", vision.patch_size)
    _default(vision, "image_num_pos", vision.num_position_embeddings)
    _default(config, "vit_config", vision)
    _default(adapter, "vit_layers", list(adapter.vision_feature_layer))
    # The reference pools with the mean over valid patches as query and masks padded slots
    # (Molmo2VisionAdapter: num_valid_patches, create_bidirectional_mask): vLLM's `pooling_attention_mask` path.
    _default(adapter, "pooling_attention_mask", True)
    rope = text.rope_parameters or {}
    _default(text, "rope_theta", float(rope.get("rope_theta", 10000.0)))
    # The reference always normalises q and k (per head for "qwen3", whole projection for "olmo").
    _default(text, "use_qk_norm", True)


def _default(obj, name: str, value) -> None:
    if getattr(obj, name, None) is None:
        setattr(obj, name, value)


def register_config() -> None:
    """Make vLLM (and through it AutoConfig) load model_type `molmo2` with Molmo2ServingConfig."""
    from vllm.transformers_utils import config as vllm_config

    vllm_config._CONFIG_REGISTRY["molmo2"] = Molmo2ServingConfig
