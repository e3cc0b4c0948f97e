"""One configuration for both doors: the settings table, model presets, shipped-model lookup, the pipeline
configuration and the one query loader (core/settings.py, core/presets.py, core/queries.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from molmo2_ros.core import memory_plan
from molmo2_ros.core.engine_config import EngineConfig, VllmConfig
from molmo2_ros.core.engine_factory import make_engine
from molmo2_ros.core.presets import SHIPPED_MODEL, SOURCE_MODELS_DIR, load_preset, preset_names, resolve_model
from molmo2_ros.core.queries import load_queries, parse_queries, query_from_mapping, validate_query
from molmo2_ros.core.settings import (SPECS, defaults, memory_setting, pipeline_config, preset_settings, resolve,
                                      typed)
from molmo2_ros.core.types import Query, TaskKind

pytestmark = pytest.mark.ros_free
RELEASED_PRESETS = {"molmo2-4b": "allenai/Molmo2-4B", "molmo2-8b": "allenai/Molmo2-8B",
                    "molmo2-o-7b": "allenai/Molmo2-O-7B"}


def test_presets_are_files_for_the_shipped_and_the_released_models():
    assert set(preset_names()) == {"tiny", *RELEASED_PRESETS}
    for name in preset_names():
        values = resolve({"preset": name})  # typed and checked like explicit values
        assert load_preset(name).description
        assert values["window_s"] >= values["stride_s"] and values["sample_fps"] <= 2.0
    assert resolve({"preset": "tiny"})["model"] == SHIPPED_MODEL


@pytest.mark.parametrize("name", sorted(RELEASED_PRESETS))
def test_released_presets_state_their_planned_memory(name):
    """memory_gib in the file is what the planner predicts for the preset (one camera, four queries)."""
    values = resolve({"preset": name})
    assert values["model"] == RELEASED_PRESETS[name] and values["dtype"] == "bfloat16"
    peak = memory_plan.plan(values["model"], memory_setting(values, queries=4)).peak / memory_plan.GIB
    assert load_preset(name).memory_gib == pytest.approx(peak, abs=0.05)


def test_explicit_values_override_the_preset_which_overrides_the_defaults():
    assert defaults()["window_s"] == SPECS["window_s"].default == 8.0
    assert defaults("tiny")["window_s"] == 4.0
    values = resolve({"preset": "tiny", "window_s": 6, "device": "cpu"})
    assert (values["window_s"], values["stride_s"], values["max_new_tokens"], values["device"]) == (6.0, 1.0, 400,
                                                                                                   "cpu")
    with pytest.raises(ValueError, match="window_s .* must be >= stride_s"):
        resolve({"preset": "tiny", "stride_s": 5.0})
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        resolve({"preset": "huge"})
    with pytest.raises(ValueError, match="unknown preset"):
        preset_settings("../tiny")
    with pytest.raises(ValueError, match="max_new_tokens must be a int"):
        typed("max_new_tokens", 2.5)
    with pytest.raises(ValueError, match="unknown setting 'windows'"):
        resolve({"windows": 3.0})


def test_shipped_model_is_found_in_the_source_tree_and_in_a_sourced_prefix(tmp_path, monkeypatch):
    assert resolve_model(SHIPPED_MODEL) == str(SOURCE_MODELS_DIR / SHIPPED_MODEL)
    assert resolve_model("allenai/Molmo2-4B") == "allenai/Molmo2-4B"  # Hub ids and folders pass unchanged
    assert resolve_model(str(tmp_path)) == str(tmp_path)
    installed = tmp_path / "prefix" / "share" / "molmo2_ros" / "models" / "other-model"
    installed.mkdir(parents=True)
    (installed / "config.json").write_text("{}")
    monkeypatch.setenv("AMENT_PREFIX_PATH", f"/nonexistent:{tmp_path / 'prefix'}")
    monkeypatch.chdir(tmp_path)
    assert resolve_model("other-model") == str(installed)
    with pytest.raises(ValueError, match="'missing-model' is neither a folder nor a model shipped"):
        resolve_model("missing-model")


def test_pipeline_config_from_settings():
    values = resolve({"preset": "tiny", "queries": "- {id: ball, task: point, text: ball}",
                      "depth.enabled": False})
    config = pipeline_config(values, ["front", "wrist"], {"wrist": {"queries": "[]", "depth.enabled": True},
                                                          "front": {"queries": "  "}})
    assert isinstance(config.engine_config, EngineConfig)
    assert config.engine_config.model == str(SOURCE_MODELS_DIR / SHIPPED_MODEL)
    assert config.cameras == ["front", "wrist"]
    assert [q.id for q in config.queries["front"]] == ["ball"] and config.queries["wrist"] == []
    assert not config.streams["front"].depth.enabled and config.streams["wrist"].depth.enabled
    assert config.streams["front"].buffer.window_s == 4.0 and config.streams["front"].slowfast.enabled
    # a vLLM server pools every frame alike: SlowFast is off for engine vllm, whatever the preset says
    served = pipeline_config(resolve({"preset": "molmo2-4b", "engine": "vllm", "server_url": "http://127.0.0.1:1/v1"}))
    assert isinstance(served.engine_config, VllmConfig) and served.engine_config.model == "allenai/Molmo2-4B"
    assert not served.streams[""].slowfast.enabled
    with pytest.raises(ValueError, match=r"wrist.queries\[0\]: unknown task 'look'"):
        pipeline_config(values, ["wrist"], {"wrist": {"queries": "- {id: a, task: look, text: x}"}})
    with pytest.raises(ValueError, match="no model: set preset"):
        config = pipeline_config(resolve({}))
        make_engine(config.engine, config.engine_config)


def test_one_query_loader_says_the_same_thing_on_every_path(tmp_path):
    """A params text, a queries file, ManageQueries (a message's fields) and the Query action (validate_query) give
    the same reason for the same mistake."""
    bad = [({"id": "my ball", "task": "point", "text": "ball"}, "query id 'my ball' must be 1-64 letters"),
           ({"id": "ball", "task": "point", "text": ""}, "query 'ball': a point query needs a text"),
           ({"id": "ball", "task": "look", "text": "x"}, "unknown task 'look' (use point, count")]
    for item, reason in bad:
        file = tmp_path / "q.yaml"
        file.write_text(f"- {{id: '{item['id']}', task: {item['task']}, text: '{item['text']}'}}\n")
        for call in (lambda: parse_queries([item]), lambda: load_queries(file), lambda: query_from_mapping(item),
                     lambda: validate_query(Query(item["id"], item["task"], item["text"]))):
            with pytest.raises(ValueError, match=re.escape(reason)):
                call()
    assert parse_queries("") == [] and parse_queries("[]") == []
    keyed = tmp_path / "keyed.yaml"
    keyed.write_text("queries:\n  - {id: s, task: caption}\n")
    assert load_queries(keyed) == [Query("s", TaskKind.CAPTION, "")]
    with pytest.raises(ValueError, match="cannot read queries from"):
        load_queries(tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match="duplicate id 'a'"):
        parse_queries("- {id: a, task: caption}\n- {id: a, task: caption}")


def test_settings_and_engine_configs_import_no_torch():
    code = ("import sys; import molmo2_ros.core.settings, molmo2_ros.core.engine_config, "
            "molmo2_ros.core.engine_factory, molmo2_ros.core.vllm_engine; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr[-2000:]
