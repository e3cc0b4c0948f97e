"""Query text sanitising against the tokenizer's own special-token list (not a guess of their shape)."""

from __future__ import annotations

import numpy as np
import pytest

from _models import tiny_model_dir
from molmo2_ros.core.prompts import QueryTextError, build_prompt, sanitize_text, special_tokens
from molmo2_ros.core.types import NS_PER_S, Clip, ClipFrame, Frame, Query, TaskKind

pytestmark = pytest.mark.ros_free  # imports nothing from ROS: CI runs it once (conftest.py)

# Shapes of the released Molmo2 tokenizer's added tokens (BRIEF section 6): digits and a `|<...>|` frame.
EXTRA = [f"|<EXTRA_TOKENS_{i}>|" for i in (0, 7, 266)]


def released_like_tokenizer():
    """A byte-level tokenizer built with the `tokenizers` library, carrying special tokens of every shape the
    released one has, plus one added token that is not marked special (still matched whole)."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.add_special_tokens(["<|endoftext|>", "<|im_end|>", "<im_patch>", "<|video|>", *EXTRA])
    tok.add_tokens([AddedToken("<tool_call>", special=False)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")


def test_special_tokens_lists_every_added_token():
    tokens = special_tokens(released_like_tokenizer())
    assert {"<|endoftext|>", "<|im_end|>", "<im_patch>", "<|video|>", "<tool_call>", *EXTRA} <= tokens


@pytest.mark.parametrize("text, clean", [
    ("red |<EXTRA_TOKENS_266>|ball", "red ball"),
    ("|<EXTRA_TOKENS_0>| cup <|im_end|>\n<|video|> on the table", "cup on the table"),
    ("<im_<im_patch>patch>mug", "mug"),  # removing one token must not leave another behind
    ("a <tool_call> b", "a b"),
    ("|<EXTRA_TOKENS_99>| is not one of its tokens", "|<EXTRA_TOKENS_99>| is not one of its tokens"),
])
def test_sanitize_removes_exactly_the_tokenizers_tokens(text, clean):
    tok = released_like_tokenizer()
    assert sanitize_text(text, special=special_tokens(tok)) == clean


def test_prompt_tokenizes_without_any_added_token():
    tok = released_like_tokenizer()
    added = {tok.convert_tokens_to_ids(t) for t in special_tokens(tok)}
    text = "".join(f"x{t}" for t in sorted(special_tokens(tok))) + " ball"
    prompt = build_prompt(Query("q", TaskKind.POINT, text), special=special_tokens(tok))
    assert not added & set(tok(prompt)["input_ids"])
    # the old pattern guess left the digit-named tokens in
    assert "|<EXTRA_TOKENS_7>|" in sanitize_text("a |<EXTRA_TOKENS_7>| b")


def test_limits_still_apply():
    with pytest.raises(QueryTextError):
        sanitize_text("x" * 11, max_chars=10, special=frozenset())
    assert sanitize_text("a\x00b\tc", special=frozenset()) == "a b c"


def test_engine_prompts_use_the_tokenizers_list(monkeypatch):
    """The tiny model's tokenizer gains a `|<EXTRA_TOKENS_7>|` special token: the engine strips it from the query
    text (before this change the prompt was `Point to the red |<EXTRA_TOKENS_7>|ball.`)."""
    from molmo2_ros.core.engine import EngineConfig, Molmo2Engine

    engine = Molmo2Engine(EngineConfig(model=str(tiny_model_dir()), device="cpu", max_new_tokens=4))
    engine.load()
    engine.processor.tokenizer.add_special_tokens({"additional_special_tokens": ["|<EXTRA_TOKENS_7>|"]})
    prompts = []
    tokens = engine.builder.tokens
    monkeypatch.setattr(engine.builder, "tokens", lambda clip, p: prompts.append(p) or tokens(clip, p))
    image = np.zeros((48, 64, 3), np.uint8)
    clip = Clip(0, tuple(ClipFrame(Frame(1 + i * NS_PER_S, image), i, (3, 3)) for i in range(2)))
    inference = engine.infer(clip, [Query("q", TaskKind.POINT, "red |<EXTRA_TOKENS_7>|ball")])
    assert not inference.error and prompts == ["Point to the red ball."]
