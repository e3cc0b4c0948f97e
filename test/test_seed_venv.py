"""scripts/seed_venv.py: the distributions a pattern names are hard-linked (same inodes) from one venv into another,
pip then finds them installed and keeps them, or replaces them without touching the source venv; distributions the
target has, other names, and files outside site-packages are left alone."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from scripts.seed_venv import seed

pytestmark = pytest.mark.ros_free


def wheel(folder: Path, name: str, version: str) -> Path:
    """A minimal pure-Python wheel: one module `<name>_mod` whose VERSION is `version`, and a console script."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}_mod/__init__.py": f"VERSION = {version!r}\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist}/entry_points.txt": f"[console_scripts]\n{name}-cli = {name}_mod:VERSION\n",
    }
    files[f"{dist}/RECORD"] = "".join(f"{p},,\n" for p in files) + f"{dist}/RECORD,,\n"
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for p, text in files.items():
            z.writestr(p, text)
    return path


def venv(path: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    return path


def pip(target: Path, *args: str) -> str:
    """The venv's own pip, installing only the given wheels (no index, no cache)."""
    out = subprocess.run([str(target / "bin/python"), "-m", "pip", "install", "--no-index", "--no-cache-dir",
                          "--disable-pip-version-check", *args], capture_output=True, text=True, check=True)
    return out.stdout


def test_seeded_distributions_are_shared_and_pip_keeps_or_replaces_them(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    source, target = venv(tmp_path / "source"), venv(tmp_path / "target")
    pip(source, str(wheel(wheels, "nvidia_fake", "1.0")), str(wheel(wheels, "torch_fake", "2.0")),
        str(wheel(wheels, "other", "1.0")))
    pip(target, str(wheel(wheels, "torch_fake", "1.0")))  # the target has its own version: never overwritten

    done = seed(source, target, ("nvidia-*", "torch-fake"))

    assert done["distributions"] == 1 and done["outside_site_packages"] == 1  # nvidia-fake; its console script
    src_site, dst_site = (next(v.glob("lib/python3*/site-packages")) for v in (source, target))
    module = Path("nvidia_fake_mod/__init__.py")
    assert os.stat(src_site / module).st_ino == os.stat(dst_site / module).st_ino
    assert not (dst_site / "other_mod").exists()
    assert (dst_site / "torch_fake_mod/__init__.py").read_text() == "VERSION = '1.0'\n"
    assert not (target / "bin/nvidia_fake-cli").exists()

    # pip sees the seeded distribution installed at the pinned version ...
    assert "Requirement already satisfied: nvidia_fake==1.0" in pip(target, "--find-links", str(wheels),
                                                                     "nvidia_fake==1.0")
    # ... and replaces it at another version, leaving the source venv's file as it was
    pip(target, str(wheel(wheels, "nvidia_fake", "1.1")))
    assert (dst_site / module).read_text() == "VERSION = '1.1'\n"
    assert (src_site / module).read_text() == "VERSION = '1.0'\n"
    assert os.stat(src_site / module).st_nlink == 1


def test_nothing_is_seeded_between_python_versions(tmp_path):
    source, target = tmp_path / "a", tmp_path / "b"
    (source / "lib/python3.11/site-packages").mkdir(parents=True)
    (target / "lib/python3.12/site-packages").mkdir(parents=True)
    assert "Python versions" in seed(source, target)["skipped"]
