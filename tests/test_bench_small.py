"""`synshot bench --only small` runs end to end (a render and a short training at the shipped prior's scale)."""

import math

import pytest


@pytest.mark.slow
def test_small_bench_reports_its_figures():
    from synshot.bench import small

    figures = small.run(quick=True)
    assert set(figures) == {"small_data_images_per_s", "small_data_images_per_cpu_s", "small_train_samples_per_s",
                            "small_train_peak_rss_mb", "small_train_step_s"}
    assert all(math.isfinite(v) and v > 0 for v in figures.values()), figures
