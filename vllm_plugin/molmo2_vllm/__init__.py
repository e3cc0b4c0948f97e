"""molmo2_ros's vLLM plugin: serve Molmo2 checkpoints the way the transformers reference runs them.

vLLM calls `register()` (entry point `vllm.general_plugins`) in every process it starts: API server, engine
core, workers. It
- registers `Molmo2ServingConfig` for model_type `molmo2` (config.py): the native transformers config of a
  transformers-format checkpoint (e.g. models/molmo2-tiny-synthetic, transformers >= 5.20), which also answers
  the Ai2 remote-code names vLLM's Molmo2 reads;
- re-registers the architecture `Molmo2ForConditionalGeneration` with a subclass of vLLM's own class
  (model.py) that adds visual features to the `<im_patch>` embedding, writes frame delimiters as
  `use_frame_special_tokens` says, keeps several images of one request apart and, on vLLM's CPU attention
  backend, gives visual tokens the reference's bidirectional block (attention.py).
What stays different (attention among visual tokens on GPU backends) is documented in the project README,
"Serving on vLLM".
"""

__version__ = "0.1.0"

ARCHITECTURE = "Molmo2ForConditionalGeneration"


def register() -> None:
    """vLLM's plugin hook; may run several times per process (registrations are idempotent)."""
    from vllm import ModelRegistry

    from .config import register_config

    register_config()
    # A string: vLLM imports the model lazily, in the processes that build it.
    ModelRegistry.register_model(ARCHITECTURE, "molmo2_vllm.model:Molmo2ReferenceForConditionalGeneration")
