"""The checkpoint the repository ships really points: held-out scenario, through the product's replay and eval."""

import pytest

from molmo2_ros.cli import SHIPPED_CLIP, SHIPPED_MODEL
from molmo2_ros.core.clip_buffer import BufferConfig
from molmo2_ros.core.engine import EngineConfig, Molmo2Engine
from molmo2_ros.core.pipeline import PipelineConfig
from molmo2_ros.core.types import Query, TaskKind
from molmo2_ros.offline.evaluate import evaluate, load_results
from molmo2_ros.offline.replay import replay
from molmo2_ros.offline.scenario import GroundTruth, generate_scenario


def test_shipped_model_loads_as_plain_molmo2_and_points(tmp_path):
    if not (SHIPPED_MODEL / "config.json").is_file():
        pytest.fail(f"{SHIPPED_MODEL} is missing")
    engine = Molmo2Engine(EngineConfig(model=str(SHIPPED_MODEL), device="cpu", max_new_tokens=32))
    engine.load()
    assert type(engine.model).__name__ == "Molmo2ForConditionalGeneration"
    bag = generate_scenario(tmp_path / "scn", seconds=8.0, fps=10.0, width=320, height=240, seed=7)
    window, stride = SHIPPED_CLIP
    summary = replay(bag, tmp_path / "out", engine, [Query("ball_point", TaskKind.POINT, "red ball")],
                     config=PipelineConfig(buffer=BufferConfig(window_s=window, stride_s=stride)), gif=False,
                     progress=False)
    report = evaluate(load_results(summary.results_path), GroundTruth.load(tmp_path / "scn" / "scenario.json"))
    assert report["overall"]["point_hit_rate"] >= 0.8, report["overall"]
