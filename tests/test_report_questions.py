"""The study's two questions answered on synthetic runs whose answers are known."""

import pandas as pd

from vae_sweep import names
from vae_sweep.analysis.report import questions

LATENT, EPOCHS = "model.latent", "training.epochs"
KL, RECON, LOSS, UNITS = names.TEST_KL, names.TEST_RECON, names.TEST_LOSS, names.ACTIVE_UNITS


def long_history(run_id: str, **series: list[float]) -> pd.DataFrame:
    """A run's history in the report's long form from per-key lists of epoch values (epochs 1..n)."""
    rows = [
        (run_id, key, epoch, value) for key, values in series.items() for epoch, value in enumerate(values, start=1)
    ]
    return pd.DataFrame(rows, columns=["run_id", "key", "step", "value"])


def history(
    run_id: str, kl: list[float], recon: list[float], units: list[float] | None = None, beta: float = 1.0
) -> pd.DataFrame:
    series = {KL: kl, RECON: recon, LOSS: [beta * k + r for k, r in zip(kl, recon, strict=True)]}
    if units is not None:
        series[UNITS] = units
    return long_history(run_id, **series)


def test_a_kl_that_dips_then_rises_is_explained_by_the_run_numbers():
    runs = history("a", kl=[6.0, 4.0, 5.0, 6.5], recon=[150.0, 140.0, 130.0, 125.0], units=[2, 2, 3, 5])
    path = questions.kl_path(questions.wide(runs))
    assert (path.low_epoch, path.kl_low, path.kl_last, path.rise) == (2, 4.0, 6.5, 2.5)
    assert path.recon_change == -15.0 and path.loss_change == -12.5
    (line,) = questions.kl_rise_lines(runs, {"latent=5": ["a"]})
    assert line.startswith("latent=5: the test KL bottoms out at 4.00 nats in epoch 2 and rises by 2.50 to 6.50")
    trade = "reconstruction fell by 15.00 nats, more than the KL rose (2.50), so the negative ELBO (recon + KL) fell by"
    assert f"{trade} 12.50" in line and "training.beta" not in line
    assert "Active units went from 2 to 5" in line and "new latent dimensions" in line


def test_a_kl_that_only_falls_has_no_rise_to_explain():
    runs = history("b", kl=[9.0, 7.0, 6.0], recon=[150.0, 140.0, 135.0])
    (line,) = questions.kl_rise_lines(runs, {"latent=2": ["b"]})
    assert "never rose" in line and "9.00 nats in epoch 1, 6.00 in epoch 3" in line
    assert "bottoms out" not in line


def test_a_rise_that_is_not_paid_back_is_called_so():
    runs = history("c", kl=[5.0, 4.0, 6.0], recon=[140.0, 130.0, 129.0])
    (line,) = questions.kl_rise_lines(runs, {"x": ["c"]})
    assert "not paid back" in line and "changed by 1.00" in line


def test_with_beta_below_1_a_falling_loss_is_not_taken_for_a_paid_back_kl():
    """beta 0.5: the loss (recon + KL / 2) falls while recon falls by less than the KL rises, so the ELBO rises."""
    runs = history("f", kl=[5.0, 4.0, 7.0], recon=[140.0, 130.0, 128.0], beta=0.5)
    assert questions.kl_path(questions.wide(runs)).loss_change == -0.5
    (line,) = questions.kl_rise_lines(runs, {"beta=0.5": ["f"]})
    assert "more than the KL rose" not in line and "not paid back in the bound" in line
    assert "negative ELBO (recon + KL) changed by 1.00" in line
    assert "the training objective, which weighs the KL by training.beta, changed by -0.50" in line


def test_the_logged_elbo_is_read_where_the_run_has_it():
    runs = pd.concat([history("g", kl=[5.0, 4.0, 7.0], recon=[140.0, 130.0, 128.0]),
                      long_history("g", **{names.TEST_ELBO: [145.0, 134.0, 130.0]})])  # fmt: skip
    assert questions.kl_path(questions.wide(runs)).elbo_change == -4.0


def test_a_setting_with_seeds_is_answered_with_the_mean_and_std_over_them():
    runs = pd.concat([history("s0", kl=[6.0, 4.0, 6.0], recon=[150.0, 140.0, 130.0]),
                      history("s1", kl=[6.0, 4.0, 8.0], recon=[150.0, 140.0, 128.0])])  # fmt: skip
    (line,) = questions.kl_rise_lines(runs, {"latent=5": ["s0", "s1"]})
    assert line.startswith("latent=5 (mean ± std over 2 seeds): the test KL bottoms out at 4.00 ± 0.00 nats in "
                           "epoch 2 and rises by 3.00 ± 1.41 to 7.00 ± 1.41")  # fmt: skip
    assert "reconstruction fell by 11.00 ± 1.41 nats" in line


def test_a_run_without_history_is_left_out():
    runs = long_history("d", **{KL: [1.0]})
    assert questions.kl_rise_lines(runs, {"x": ["d"]}) == []


def points(rows: list[dict]) -> pd.DataFrame:
    """The report's per-setting frame: means, '<metric> std', seeds, run_ids."""
    frame = pd.DataFrame(rows)
    frame["run_ids"] = [[f"run{i}"] for i in range(len(frame))]
    return frame


def seed_grid(seeds: int = 1, std: float | None = None) -> pd.DataFrame:
    """experiment=seed's shape: latent 2 for 50 epochs, 100 and 200 for 100 epochs."""
    rows = [
        {LATENT: 2, EPOCHS: 50, names.TEST_LOSS: 140.0, names.Q_ACTIVE_UNITS: 2.0},
        {LATENT: 100, EPOCHS: 100, names.TEST_LOSS: 99.0, names.Q_ACTIVE_UNITS: 21.0},
        {LATENT: 200, EPOCHS: 100, names.TEST_LOSS: 98.8, names.Q_ACTIVE_UNITS: 22.0},
    ]
    for row in rows:
        row["seeds"] = seeds
        row[f"{names.TEST_LOSS} std"] = std
    return points(rows)


def test_a_confounded_grid_is_said_to_be_and_compared_only_at_equal_epochs():
    lines = questions.latent_lines(seed_grid(), LATENT, [EPOCHS])
    assert lines[0].startswith("Latent size and training.epochs change together in this selection")
    assert "2 → epochs=50; 100 → epochs=100; 200 → epochs=100" in lines[0]
    assert len(lines) == 2  # latent 2 has no partner at 50 epochs; 100 → 200 at 100 epochs
    assert lines[1].startswith("At epochs=100, latent 100 → 200: test loss 99.00 → 98.80 (-0.20 nats")
    assert (
        "active units 21.0 of 100 → 22.0 of 200: 178 of the larger model's dimensions have near-constant posterior "
        "means, so carry no information about the image (inferred from active units only" in lines[1]
    )
    assert "their posterior is the prior" not in lines[1]
    assert "one seed per setting" in lines[1]


def test_inactive_units_are_called_the_prior_only_where_their_kl_is_about_0_too():
    grid = seed_grid().assign(**{names.Q_PRIOR_DIMS: [0.0, 79.0, 178.0]})
    lines = questions.latent_lines(grid, LATENT, [EPOCHS])
    assert "178 of the larger model's dimensions carry no information (their posterior is the prior" in lines[1]


def test_inactive_units_with_kl_are_not_called_the_prior():
    # Constant means whose variance differs from the prior's: inactive, yet each costs KL.
    grid = seed_grid().assign(**{names.Q_PRIOR_DIMS: [0.0, 0.0, 0.0]})
    lines = questions.latent_lines(grid, LATENT, [EPOCHS])
    assert "posterior is the prior" not in lines[1]
    assert (
        "178 of the larger model's dimensions have near-constant posterior means, but only 0 a KL below 0.01 nats: "
        "the other 178 spend KL on a posterior that is not the prior" in lines[1]
    )


def test_equal_budgets_are_not_called_confounded():
    grid = seed_grid()
    grid[EPOCHS] = 100
    lines = questions.latent_lines(grid, LATENT, [EPOCHS])
    assert not any("change together" in line for line in lines)
    assert [line.split(":")[0] for line in lines] == [
        "At epochs=100, latent 2 → 100",
        "At epochs=100, latent 100 → 200",
    ]


def test_a_difference_is_weighed_against_the_seed_spread():
    small_spread = questions.latent_lines(seed_grid(seeds=3, std=0.05), LATENT, [EPOCHS])
    assert "larger than the seed-to-seed spread" in small_spread[1]
    wide_spread = questions.latent_lines(seed_grid(seeds=3, std=1.0), LATENT, [EPOCHS])
    assert (
        "within the seed-to-seed spread (seed std 1.00 nats; two standard errors of the difference 1.63)"
        in (wide_spread[1])
    )


def test_units_that_fall_out_of_use_are_called_so_but_not_the_prior():
    runs = history("e", kl=[6.0, 4.0, 5.0], recon=[150.0, 140.0, 130.0], units=[100, 60, 40])
    (line,) = questions.kl_rise_lines(runs, {"latent=100": ["e"]})
    assert "Active units went from 60 to 40" in line and "fewer dimensions stay in use" in line
    assert "prior" not in line  # active units alone do not say that a dimension's posterior is the prior


def test_without_end_of_run_evaluation_the_last_epochs_units_are_compared():
    grid = seed_grid()
    grid = grid.drop(columns=[names.Q_ACTIVE_UNITS]).assign(**{names.ACTIVE_UNITS: [2.0, 21.0, 22.0]})
    lines = questions.latent_lines(grid, LATENT, [EPOCHS])
    assert "active units 21.0 of 100 → 22.0 of 200" in lines[1]
