"""Shared pytest setup: GPU tests skip without CUDA; CPU-only defaults for DeepSpeed."""

import os

import pytest

os.environ.setdefault("DS_ACCELERATOR", "cpu")


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # pragma: no cover - torch missing means no GPU either
        has_cuda = False
    if has_cuda:
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA (run on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture
def in_ci() -> bool:
    return _in_ci()


@pytest.fixture(scope="session")
def cluster():
    """The local SLURM cluster (2 emulated nodes); under CI=true a failure to start fails the test."""
    import subprocess

    from slurm.cluster.local import ClusterError, cluster_up

    try:
        return cluster_up(nodes=2)
    except (ClusterError, OSError, subprocess.SubprocessError) as exc:
        if _in_ci():
            pytest.fail(f"local SLURM cluster could not start (CI=true, so this fails): {exc}")
        pytest.skip(f"local SLURM cluster could not start: {exc}")
