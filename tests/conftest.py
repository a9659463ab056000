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
    """The local SLURM cluster (2 emulated nodes); under CI=true a failure to start fails the test.

    Stopped at the end of the test run unless it already ran before (slurm.cluster.local.cluster_lease):
    daemons left behind outlive a deleted checkout and block the next one's ports.
    """
    import contextlib
    import subprocess

    from slurm.cluster.local import ClusterError, cluster_lease

    with contextlib.ExitStack() as stack:
        try:
            cluster = stack.enter_context(cluster_lease(nodes=2))
        except (ClusterError, OSError, subprocess.SubprocessError) as exc:
            if _in_ci():
                pytest.fail(f"local SLURM cluster could not start (CI=true, so this fails): {exc}")
            pytest.skip(f"local SLURM cluster could not start: {exc}")
        yield cluster


@pytest.fixture(scope="session")
def subject_dir(tmp_path_factory):
    """A tiny ray-traced subject shared by the inversion tests (tests/tiny_fixtures.py)."""
    from tiny_fixtures import make_tiny_subject

    return make_tiny_subject(tmp_path_factory.mktemp("subj"))


@pytest.fixture(scope="session")
def prior_path(tmp_path_factory):
    """An untrained tiny prior shared by the inversion tests (tests/tiny_fixtures.py)."""
    from tiny_fixtures import make_tiny_prior

    return make_tiny_prior(tmp_path_factory.mktemp("prior"))


# ---- fault catalogue table (`make faults`: pytest -m faults --fault-table) ----

_FAULT_RESULTS: list[tuple[str, str, str]] = []


def pytest_addoption(parser):
    parser.addoption("--fault-table", action="store_true",
                     help="after the run, print the fault catalogue as a table: case -> result")


def pytest_runtest_logreport(report):
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        if "faults" in report.keywords:
            module, _, name = report.nodeid.partition("::")
            outcome = {"passed": "handled", "failed": "NOT HANDLED", "skipped": "skipped"}[report.outcome]
            _FAULT_RESULTS.append((module.rsplit("/", 1)[-1].removesuffix(".py"), name, outcome))


def pytest_terminal_summary(terminalreporter, config):
    if not config.getoption("--fault-table") or not _FAULT_RESULTS:
        return
    tr = terminalreporter
    tr.write_line("")
    tr.write_line("| area | case | result |")
    tr.write_line("|---|---|---|")
    for module, name, outcome in _FAULT_RESULTS:
        area = module.removeprefix("test_").removesuffix("_faults").replace("_", " ")
        case = name.removeprefix("test_").replace("_", " ")
        tr.write_line(f"| {area} | {case} | {outcome} |")
    handled = sum(1 for *_, o in _FAULT_RESULTS if o == "handled")
    tr.write_line(f"\n{handled} of {len(_FAULT_RESULTS)} fault cases handled")
