"""The training data of training/train_tiny.py: answers in the product's grammar, supervision on the right tokens."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))

import train_tiny as T  # noqa: E402
from molmo2_ros.core.molmo2_inputs import Molmo2InputBuilder  # noqa: E402
from molmo2_ros.core.parsing import parse_answer  # noqa: E402

pytestmark = pytest.mark.ros_free  # imports nothing from ROS: CI runs it once (conftest.py)


@pytest.fixture(scope="module")
def batcher() -> T.Batcher:
    processor = T.build_processor()
    return T.Batcher(processor, Molmo2InputBuilder(processor))


def clips(n: int = 12) -> list[T.Sample]:
    sampler = T.SceneSampler(5)
    return [sampler.track_clip(320, 240, 8, 3, 0.1, "all", slowfast=bool(i % 2)) for i in range(n)]


def test_track_answers_parse_to_the_visible_instances():
    for s in clips():
        parsed = parse_answer(s.answer)
        if not s.digits:
            assert parsed.kind == "none" and not any(s.targets)
            continue
        assert parsed.kind == "tracks" and not parsed.dropped
        for p in parsed.points:
            frame = round(p.key / T.FRAME_DT)
            x, y = p.x / 1000 * s.w, p.y / 1000 * s.h
            assert min(abs(x - tx) + abs(y - ty) for tx, ty in s.targets[frame]) <= 2.0
        assert len(parsed.points) == sum(len(t) for t in s.targets)
        assert all(s.answer[c].isdigit() for c, _, _ in s.digits)


def test_supervision_lands_on_visual_tokens_of_the_right_frame(batcher):
    samples = clips(4) + [T.point_sample(T.SceneSampler(1).scene(320, 240, 4, 0.0))]
    samples = [s for s in samples if s.digits]
    batch = batcher(samples, digit_weight=3.0)
    patch_id = batcher.patch_id
    n_visual = int((batch["input_ids"] == patch_id).sum())
    assert batch["tables"].shape[0] == n_visual == batch["present"].shape[0]
    rows, cols = batch["attn_pos"][:, 0], batch["attn_tgt"]
    assert bool((batch["input_ids"][rows, cols] == patch_id).all())
    # each digit's target token sits inside the frame its group names
    first = samples[0]
    ids = batch["input_ids"][0].tolist()
    patches = [i for i, t in enumerate(ids) if t == patch_id]
    per_frame = [T.tokens_per_frame((p, p)) for p in first.pools]
    for k, (_, frame, cell) in enumerate(first.digits):
        start = sum(per_frame[:frame])
        assert int(batch["attn_tgt"][k]) == patches[start + cell]
    # the positions predicting the digits are weighted up; the answer is labelled after the prompt
    weights = batch["weights"][0]
    assert bool((weights[batch["attn_pos"][: len(first.digits), 1] + 1] > 1.0).all())


# ---- v2: random-world video tasks ----------------------------------------------------------------------------
def video_samples(n_clips: int = 6, seed: int = 11) -> list[T.Sample]:
    sampler = T.VideoTaskSampler(seed)
    plans = ("key3_fast5", "key2_fast3", "uniform3", "random")
    return [s for i in range(n_clips)
            for s in sampler.samples(320, 240, 8, list(T.TASKS), plans[i % len(plans)], 0.2)]


def test_video_answers_parse_to_the_truth_of_each_task():
    seen = set()
    for s in video_samples(12):
        parsed = parse_answer(s.answer)
        truth = sum(len(t) for t in s.targets)
        assert not parsed.dropped, s.answer
        if truth == 0:
            assert parsed.kind == "none" and s.answer == T.NONE_ANSWER
            continue
        task = s.prompt.split()[0]
        seen.add(task)
        assert len(parsed.points) == truth
        for p in parsed.points:  # every point is an asked instance on the frame its time names
            f = round(p.key / T.FRAME_DT)
            x, y = p.x / 1000 * s.w, p.y / 1000 * s.h
            assert min(abs(x - tx) + abs(y - ty) for tx, ty in s.targets[f]) <= 2.0
        if task == "How":  # each object once, and the total says how many
            assert parsed.kind == "points" and parsed.count == truth
        if task == "Track":
            assert parsed.kind == "tracks"
        if s.prompt.startswith("Point to any"):  # event points sit on objects flagged with that event
            etype = next(t for t in ("falling", "touching", "leaving") if t in s.prompt)
            flag = T.EVENT_FLAGS.index({"falling": "fall", "touching": "touch", "leaving": "leave"}[etype])
            for f, frame in enumerate(s.targets):
                for tx, ty in frame:
                    assert any(abs(x - tx) + abs(y - ty) < 1e-6 and v[flag] for x, y, v in s.flags[f])
        assert all(s.answer[c].isdigit() for c, _, _ in s.digits)
        assert all(s.answer[c] in "0123456789." for c, _, _ in s.keys)
    assert seen == {"Point", "How", "Track"}  # (events with a span in the clip are drawn often, not always)


def test_fast_frame_patches_equal_the_video_processor(batcher):
    images = np.stack(video_samples(1)[0].frames)
    ref = batcher.builder.frame_patches(images)
    assert T.frame_patches(images).shape == ref.shape
    assert float((T.frame_patches(images) - ref).abs().max()) < 1e-6


def test_shared_prefix_losses_equal_full_rows_and_eager_attention(batcher):
    """forward_losses runs each clip's prompt prefix once and the rows' suffixes from its cache, and reads the
    supervised attention through AttentionProbe (SDPA): the same LM loss and attention loss as full rows through
    eager attention."""
    import torch
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    torch.manual_seed(0)
    model = T.build_model(batcher.processor).eval()
    aux, flags = T.AuxHead(T.SPEC.text_hidden), T.FlagHead(T.SPEC.text_hidden)
    samples = video_samples(2)
    batch = batcher(samples, digit_weight=3.0, key_weight=2.0)
    assert [len(rows) for rows, _ in batch["groups"]] == [4, 4]
    probe = T.AttentionProbe([(1, 0), (2, 0)])
    with torch.no_grad():
        losses = T.forward_losses(model, aux, batch, probe, 1.0, 1.0, flags, 1.0)
        feats = model.get_video_features(batch["patches"], batch["tables"], batch["grids"]).pooler_output[0]
        model.config.text_config._attn_implementation = "eager"
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    mm_token_type_ids=batch["mm_token_type_ids"], output_attentions=True,
                    mm_encoder_outputs={"video": BaseModelOutputWithPooling(pooler_output=(feats[batch["vis_index"]],))})
    logits, labels, weights = out.logits[:, :-1], batch["labels"][:, 1:], batch["weights"][:, 1:]
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                           ignore_index=-100, reduction="none").reshape(labels.shape)
    lm = (ce * weights).sum() / weights.sum()
    rows, pos, tgt = batch["attn_pos"][:, 0], batch["attn_pos"][:, 1], batch["attn_tgt"]
    attn = torch.stack([-torch.log(out.attentions[layer][rows, 0, pos, tgt]).mean() for layer in (1, 2)]).mean()
    assert abs(float(losses["lm"]) - float(lm)) < 1e-4
    assert abs(float(losses["attn"]) - float(attn)) < 1e-4
