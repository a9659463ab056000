"""The wheel: only the uniquely named ``synshot`` package (train/, data_tools/, slurm/ stay in the source
tree), the shipped prior, the licence, the ``synshot`` console script and the declared dependencies."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.slow]  # builds a wheel (~30-60 s on 2 busy cores)


def test_wheel_installs_only_synshot_with_licence_prior_and_script(tmp_path):
    src = tmp_path / "src"
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "whl")], cwd=src, check=True, timeout=600)
    (wheel,) = (tmp_path / "whl").glob("synshot-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"synshot"}, top
    assert "synshot/priors/small.safetensors" in names and "synshot/cli.py" in names
    info = next(t for t in top if t.endswith(".dist-info"))
    assert f"{info}/licenses/LICENSE" in names
    zf = zipfile.ZipFile(wheel)
    assert "synshot = synshot.cli:main" in zf.read(f"{info}/entry_points.txt").decode()
    meta = zf.read(f"{info}/METADATA").decode()
    assert "License-Expression: Apache-2.0" in meta
    for dep in ("torch", "deepspeed", "pydantic", "safetensors", "mitsuba"):
        assert f"Requires-Dist: {dep}" in meta, dep
