"""The training data of training/train_tiny.py: answers in the product's grammar, supervision on the right tokens."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))

import train_tiny as T  # noqa: E402
from molmo2_ros.core.molmo2_inputs import Molmo2InputBuilder  # noqa: E402
from molmo2_ros.core.parsing import parse_answer  # noqa: E402


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
