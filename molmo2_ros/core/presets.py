"""Model presets and the models this package ships.

A preset (`molmo2_ros/presets/<name>.yaml`, installed with the package) holds the settings that go with one model:
clip window and stride, sampling, SlowFast plan, generation limit, dtype and device, plus a description and the
planned GPU memory (`memory_gib`, what `molmo2-ros plan` predicts for it). The node's `preset` parameter and the
command line's `--preset` fill these in under explicit parameters and flags (core/settings.py).

A model setting that is a bare name (no '/') and not an existing folder names a model shipped with the package
(`models/<name>`): it is found in the source checkout (also a `pip install -e .`) or, with a colcon workspace
sourced, in `<prefix>/share/molmo2_ros/models/<name>` of a prefix on AMENT_PREFIX_PATH, from any folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PACKAGE = "molmo2_ros"
PRESETS_DIR = Path(__file__).resolve().parents[1] / "presets"
SOURCE_MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
SHIPPED_MODEL = "molmo2-tiny-synthetic"


@dataclass(frozen=True)
class Preset:
    """name: the file's stem; settings: setting name -> value (core/settings.py names); memory_gib: planned GPU
    memory of this preset for one camera and four standing queries (None where it is not planned, e.g. the tiny
    CPU model)."""

    name: str
    description: str
    settings: dict[str, Any]
    memory_gib: float | None = None


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def load_preset(name: str) -> Preset:
    """The preset called `name`; ValueError names the presets there are (settings are checked by settings.py)."""
    path = PRESETS_DIR / f"{name}.yaml"
    if not name or "/" in name or not path.is_file():
        raise ValueError(f"unknown preset '{name}' (presets: {', '.join(preset_names())})")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("settings"), dict):
        raise ValueError(f"preset file {path} must be a mapping with a 'settings' mapping")
    memory = data.get("memory_gib")
    return Preset(name=name, description=str(data.get("description", "")), settings=dict(data["settings"]),
                  memory_gib=float(memory) if memory is not None else None)


def model_dirs() -> list[Path]:
    """Where shipped models are looked for, in order: the source checkout, then every sourced ament prefix."""
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    return [SOURCE_MODELS_DIR, *(Path(p) / "share" / PACKAGE / "models" for p in prefixes)]


def resolve_model(model: str) -> str:
    """The folder of a shipped model named `model`, else `model` unchanged (a folder or a Hub id).
    ValueError when a bare name is neither a folder nor a shipped model found here."""
    if not model or "/" in model or os.sep in model or Path(model).is_dir():
        return model
    for folder in model_dirs():
        if (folder / model / "config.json").is_file():
            return str(folder / model)
    looked = ", ".join(str(d) for d in model_dirs())
    raise ValueError(f"model '{model}' is neither a folder nor a model shipped with {PACKAGE} (looked in {looked}): "
                     f"source the workspace the package was built in, or give a Hub id (e.g. allenai/Molmo2-4B) or "
                     f"a model folder")
