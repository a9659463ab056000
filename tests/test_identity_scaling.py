"""The identity-scaling table: paired differences over the same subjects, and the intervals."""

import math

from data_tools.identity_scaling import paired, table


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
