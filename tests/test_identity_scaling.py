"""The identity-scaling and training-length tables: paired differences over the same subjects, and the intervals."""

import math

from data_tools.identity_scaling import table
from data_tools.study import paired


def test_paired_difference_uses_common_subjects_and_a_t_interval():
    a = {"s1": 20.0, "s2": 18.0, "s3": 19.0, "only_a": 99.0}
    b = {"s1": 17.0, "s2": 17.0, "s3": 17.0}
    mean, half, n = paired(a, b)
    assert n == 3 and mean == 2.0
    # differences 3, 1, 2: sd 1, t(2) = 4.30 -> half-width 4.30 / sqrt(3)
    assert math.isclose(half, 4.30 / math.sqrt(3), rel_tol=1e-6)
    assert math.isnan(paired({"s1": 1.0}, {"s1": 0.5})[1])
    assert paired({"x": 1.0}, {"y": 1.0})[2] == 0


def test_table_has_one_row_per_run_with_the_means():
    psnr = {"no_prior": {"s1": 17.0, "s2": 18.0}, "prior_only": {"s1": 12.0, "s2": 13.0},
            "stage1_only": {"s1": 14.0, "s2": 15.0}, "full": {"s1": 19.0, "s2": 20.0}}
    row = {"identities": 38, "expressions": 16, "images": 608, "steps": 300, "psnr": psnr,
           "delta_prior_only": paired(psnr["prior_only"], psnr["no_prior"]),
           "delta_full": paired(psnr["full"], psnr["no_prior"])}
    text = table([row])
    line = next(x for x in text.splitlines() if x.startswith("| 38 "))
    assert "| 17.50 | 12.50 | 14.50 | 19.50 |" in line and "-5.00" in line and "+2.00" in line
    assert "2 validation subjects" in text


def _result(folder, subject, method, psnr_per_frame):
    import json

    path = folder / subject / method / "seed0" / "result.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"frames": {"psnr_full": psnr_per_frame}}))


def test_training_length_rows_per_step_against_one_baseline(tmp_path):
    import json

    import pytest

    from data_tools.training_length import collect, table
    from synshot.cli import UsageError

    run, base = tmp_path / "small", tmp_path / "noprior"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"name": "small", "encoder_input": {"tex": "unwrapped"}}))
    for s, v in (("s1", 16.0), ("s2", 17.0)):
        _result(base, s, "no_prior", [v - 1, v + 1])
        _result(run / "eval_steps" / "500", s, "prior_only", [v - 4])
        _result(run / "eval_steps" / "3000", s, "prior_only", [v - 1])
        _result(run / "eval_steps" / "3000", s, "full", [v + 2])
    rows = collect([run], base)
    assert [r["step"] for r in rows] == [500, 3000]          # numeric order, not text order
    assert rows[0]["delta_prior_only"][:1] == (-4.0,) and rows[1]["delta_full"][:1] == (2.0,)
    text = table(rows)
    assert "| small (E_id input: unwrapped) | 500 | 12.50 | – | – | 16.50 | -4.00" in text
    assert "| small (E_id input: unwrapped) | 3000 | 15.50 | – | 18.50 | 16.50 | -1.00" in text
    with pytest.raises(UsageError, match="no no_prior results"):
        collect([run], tmp_path / "missing")
    with pytest.raises(UsageError, match="not a training run"):
        collect([base], base)
