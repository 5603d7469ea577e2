"""Search sweeps (hydra/sweeper=search): the space, the study's budget and dead trials, and real small studies."""

import os
import platform
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from tests import postgres
from tests.conftest import REPO, compose_job, experiment_runs, run_cli
from vae_sweep import names
from vae_sweep.errors import ConfigError
from vae_sweep.jobs import trial as trial_hooks
from vae_sweep.search import study as studies
from vae_sweep.search.space import dimension, read_space

FAST = [
    "model.hidden=[16]", "eval.enabled=false", "tracking.image_every=0", "tracking.system_metrics_s=0",
    "tracking.figures=false",
]  # fmt: skip
SPACE = ["search.space.model.latent=int(interval(2, 6))", "search.space.optimizer.lr=tag(log, interval(1e-4, 3e-3))"]


def parsed(text: str):
    return OverridesParser.create().parse_override(text)


# ---- the space ------------------------------------------------------------------------------------------------------


def test_hydra_sweep_grammar_becomes_optuna_distributions():
    latent = dimension(parsed("model.latent=tag(log, int(interval(2, 256)))"), "model.latent")
    assert latent.distribution == IntDistribution(2, 256, log=True)
    assert latent.override(17) == "model.latent=17"
    lr = dimension(parsed("optimizer.lr=tag(log, interval(1e-4, 3e-3))"), "optimizer.lr")
    assert lr.distribution == FloatDistribution(1e-4, 3e-3, log=True)
    assert dimension(parsed("training.epochs=range(2, 10, 2)"), "training.epochs").distribution == IntDistribution(
        2, 8, step=2
    )
    hidden = dimension(parsed("model.hidden=choice([400],[512,256])"), "model.hidden")
    assert hidden.distribution == CategoricalDistribution(["[400]", "[512,256]"])
    assert hidden.override("[512,256]") == "model.hidden=[512,256]"
    activation = dimension(parsed("model.activation=relu,tanh"), "model.activation")
    assert activation.distribution.choices == ("relu", "tanh") and activation.grid_values() == ["relu", "tanh"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("optimizer.lr=interval(3e-3, 1e-4)", "empty or inverted"),
        ("optimizer.lr=interval(1e-3, 1e-3)", "empty or inverted"),
        ("optimizer.lr=tag(log, interval(0, 1e-3))", "log scale needs bounds > 0"),
        ("model.latent=range(5, 2)", "range is empty"),
        ("model.latent=8", "single value, not a dimension"),
    ],
)
def test_a_dimension_that_is_no_space_is_refused_naming_its_key(text, message):
    key = text.partition("=")[0]
    with pytest.raises(ConfigError, match=message) as error:
        dimension(parsed(text), key)
    assert f"search.space.{key}=" in str(error.value)


def test_the_space_comes_from_the_preset_and_the_command_line_which_wins():
    config = OmegaConf.create(
        {"model": {"latent": 2}, "optimizer": {"lr": 0.001}, "search": {"space": {"model": {"latent": "range(2,5)"}}}}
    )
    both = read_space(config, [parsed("search.space.optimizer.lr=interval(1e-4, 1e-2)")], OverridesParser.create())
    assert {d.key: d.text for d in both} == {"model.latent": "range(2,5)", "optimizer.lr": "interval(1e-4, 1e-2)"}
    won = read_space(config, [parsed("search.space.model.latent=choice(8,9)")], OverridesParser.create())
    assert [d.text for d in won] == ["choice(8,9)"]
    with pytest.raises(ConfigError, match="model.latnet is not a key of the config"):
        read_space(config, [parsed("search.space.model.latnet=range(2,5)")], OverridesParser.create())
    with pytest.raises(ConfigError, match="search.space is empty"):
        read_space(OmegaConf.create({"search": {"space": {}}}), [], OverridesParser.create())


def test_a_grid_sampler_needs_finite_dimensions():
    with pytest.raises(ConfigError, match="search.sampler=grid needs finite dimensions"):
        dimension(parsed("optimizer.lr=interval(1e-4, 1e-2)"), "optimizer.lr").grid_values()


# ---- the study: budget and dead workers -----------------------------------------------------------------------------


def plan(tmp_path: Path, budget: int = 3, **changes) -> studies.Plan:
    settings = dict(
        storage=f"sqlite:///{tmp_path}/optuna.db", name="s", objective="loss/val", direction="minimize",
        sampler="random", pruner="none",
        seed=0, parallel=1, budget=budget, epochs=3, warmup_epochs=1, heartbeat_timeout_s=600.0,
        lock_file=str(tmp_path / "study.lock"),
    )  # fmt: skip
    return studies.Plan(**{**settings, **changes})


SPACE_X = {"x": FloatDistribution(0, 1)}
ONE_POINT = {"x": CategoricalDistribution([4])}


def a_dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True).stdout)


def test_workers_never_start_more_trials_than_the_budget(tmp_path):
    study = plan(tmp_path).study()
    claimed = [studies.claim(study, plan(tmp_path), SPACE_X) for _ in range(5)]
    assert [trial is not None for trial in claimed] == [True, True, True, False, False]
    assert studies.spent(study.get_trials()) == 3


def test_a_trial_whose_worker_died_is_queued_again_and_does_not_count_twice(tmp_path):
    study = plan(tmp_path).study()
    trial = studies.claim(study, plan(tmp_path), SPACE_X)
    trial.set_user_attr(studies.PID, a_dead_pid())
    assert studies.recover_dead(study, 600) == [trial.number]
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.FAIL, TrialState.WAITING] and studies.spent(study.get_trials()) == 1
    again = studies.claim(study, plan(tmp_path), SPACE_X)
    assert again.params == trial.params and again.number == 1
    assert study.get_trials()[1].user_attrs[studies.RETRY_OF] == 0


def test_a_trial_on_another_host_is_dead_once_silent_past_the_timeout():
    trial = create_trial(
        state=TrialState.RUNNING, user_attrs={studies.HOST: "elsewhere", studies.PID: 1, studies.HEARTBEAT: 1000.0}
    )
    assert not studies.is_dead(trial, timeout_s=600, now=1500.0)
    assert studies.is_dead(trial, timeout_s=600, now=1700.0)


@pytest.mark.slow
def test_two_commands_on_one_postgresql_study_share_its_budget_lock(tmp_path, postgres_storage):
    first, second = (plan(tmp_path / sweep, storage=postgres_storage, name="shared-lock") for sweep in ("a", "b"))
    assert first.lock_file != second.lock_file, "two sweep folders"
    entered = threading.Event()

    def claim_beside() -> None:
        with second.lock():
            entered.set()

    with first.lock():
        beside = threading.Thread(target=claim_beside)
        beside.start()
        assert not entered.wait(1.0), "the other command claimed a trial while this one held the budget's lock"
    assert entered.wait(30)
    beside.join()


def test_a_trial_waits_for_its_running_twin_and_ends_as_it_did(tmp_path):
    study = plan(tmp_path).study()
    first, second = (studies.claim(study, plan(tmp_path), ONE_POINT) for _ in range(2))
    assert studies.wait_for_twin(study, first, 600) is None, "the earlier twin waits for nothing"
    threading.Timer(0.3, lambda: study.tell(first, 1.5)).start()
    started = time.monotonic()
    twin = studies.wait_for_twin(study, second, 600, poll_s=0.05)
    assert time.monotonic() - started >= 0.3
    assert (twin.number, twin.state, twin.value) == (0, TrialState.COMPLETE, 1.5)
    assert study.get_trials()[1].user_attrs[studies.TWIN_OF] == 0


def test_a_dead_twin_is_not_waited_for(tmp_path):
    study = plan(tmp_path).study()
    first, second = (studies.claim(study, plan(tmp_path), ONE_POINT) for _ in range(2))
    first.set_user_attr(studies.PID, a_dead_pid())
    started = time.monotonic()
    assert studies.wait_for_twin(study, second, 600, poll_s=10) is None, "its job resumes the dead twin's run"
    assert time.monotonic() - started < 5


def test_the_twin_of_a_pruned_trial_is_pruned_where_it_was(tmp_path):
    study = plan(tmp_path).study()
    first, second = (studies.claim(study, plan(tmp_path), ONE_POINT) for _ in range(2))
    for epoch, value in ((1, 200.0), (2, 190.0)):
        first.report(value, epoch)
    first.set_user_attr(studies.RUN_ID, "run-of-0")
    study.tell(first, state=TrialState.PRUNED)
    studies.prune_like(study, second, study.get_trials()[0])
    again = study.get_trials()[1]
    assert again.state == TrialState.PRUNED and again.intermediate_values == {1: 200.0, 2: 190.0}
    assert again.user_attrs[studies.RUN_ID] == "run-of-0"


def pruned_at(pruner, curves: list[list[float]]) -> list[int | None]:
    """Feed learning curves, one trial after the other, through a pruner: the epoch each trial stopped at."""
    study = optuna.create_study(pruner=pruner)
    stops = []
    for curve in curves:
        trial, stop = study.ask(), None
        for epoch, value in enumerate(curve, start=1):
            trial.report(value, epoch)
            if trial.should_prune():
                stop = epoch
                break
        study.tell(trial, None if stop else curve[-1], state=TrialState.PRUNED if stop else TrialState.COMPLETE)
        stops.append(stop)
    return stops


def test_successive_halving_keeps_the_best_third_at_the_warmup_epoch_and_three_and_nine_times_it():
    # Curves that keep their order: each trial is worse than all before it once three have reached a rung.
    curves = [[100.0 + trial - epoch for epoch in range(10)] for trial in range(6)]
    pruner = studies.Plan.pruner_for("successive_halving", warmup_epochs=1, epochs=10)
    assert pruned_at(pruner, curves) == [None, 1, 1, 1, 1, 1]
    later = studies.Plan.pruner_for("successive_halving", warmup_epochs=2, epochs=10)
    assert pruned_at(later, curves) == [None, 2, 2, 2, 2, 2]
    # A trial best at epoch 1 but worst by epoch 3 is stopped there, at the second rung.
    turning = [[100.0 - epoch for epoch in range(10)]] * 3 + [[90.0] + [200.0] * 9]
    assert pruned_at(pruner, turning)[-1] == 3


def kept_best(plan: studies.Plan, curves: list[list[float]]) -> int:
    """Replay curves through the plan's pruner as its workers consult it: the trial the search would call best."""
    study = optuna.create_study(pruner=plan.pruner_made())
    for curve in curves:
        trial = study.ask()
        stopped = any(
            studies.judged(trial, epoch, value, plan.warmup_epochs) and epoch < plan.epochs
            for epoch, value in enumerate(curve, start=1)
        )
        study.tell(trial, None if stopped else curve[-1], state=TrialState.PRUNED if stopped else TrialState.COMPLETE)
    return study.best_trial.number


def test_the_preset_keeps_a_large_latent_that_overtakes_after_epoch_1(workdir):
    # The shape of the 8 x 4 search on real MNIST: small latents lead after epoch 1, large ones are worst
    # there (161-196 nats) and best from epoch 2 on. A pruner judging at epoch 1 keeps the small latent.
    small = [[150.0 + k, 146.0 + k, 143.0 + k, 141.0 + k] for k in range(5)]
    large = [[175.0 + k, 135.0 + k, 118.0 + k, 110.0 + k] for k in range(3)]
    curves = [small[0], large[0], small[1], small[2], small[3], large[1], small[4], large[2]]
    config = compose_job(workdir, "search=latent_lr", "training.epochs=4")
    plan = studies.make_plan(config, read_space(config, [], OverridesParser.create()), workdir)
    assert kept_best(plan, curves) == curves.index(large[0])


def test_a_trial_that_trained_every_epoch_is_never_pruned():
    # The pruner's verdict after the last epoch saves nothing: the trial is complete and keeps its evaluation.
    hooks = trial_hooks.Trial("t", {}, "loss/test", report=lambda epoch, value: True, evaluate_pruned=False, epochs=3)
    assert hooks.stop_after(2, {"loss/test": 100.0}) and hooks.pruned_epoch == 2
    hooks.pruned_epoch = None
    assert not hooks.stop_after(3, {"loss/test": 100.0}) and hooks.pruned_epoch is None


def test_the_summary_says_when_the_pruner_left_fewer_than_two_complete_trials():
    one = studies.Standing(complete=1, pruned=7, failed=0, best=None)
    assert "Only 1 trial(s) trained to the end" in studies.few_complete(one, "successive_halving")
    assert studies.few_complete(studies.Standing(2, 6, 0, None), "successive_halving") == ""
    assert studies.few_complete(studies.Standing(1, 0, 0, None), "none") == ""


def test_the_study_is_named_by_what_its_results_depend_on(workdir):
    latent = [dimension(parsed("model.latent=range(2,5)"), "model.latent")]

    def name(*overrides: str) -> str:
        return studies.study_name(compose_job(workdir, *overrides), latent)

    assert name() == name("search.trials=50", "search.parallel=2", "model.latent=7", "training.threads=1")
    assert name().startswith("vae_sweep-latent-")
    assert name() != name("training.epochs=3")
    assert name() != name("search.objective=loss/elbo/test")
    assert name("tracking.experiment=other").startswith("other-latent-")
    # What proposes and judges the trials is the study's too: another seed, sampler or pruner is another study.
    for setting in ("search.seed=1", "search.sampler=random", "search.pruner=median", "search.warmup_epochs=3"):
        assert name() != name(setting), setting


def test_the_study_is_named_by_its_parsed_space_not_its_spelling(workdir):
    config = compose_job(workdir)

    def name(text: str) -> str:
        return studies.study_name(config, [dimension(parsed(f"model.latent={text}"), "model.latent")])

    assert name("range(2, 5)") == name("range(2,5)") == name("int(interval(2,4))")
    assert name("range(2,5)") != name("range(2,6)") and name("choice(2,3,4)") != name("range(2,5)")


def test_a_named_study_refuses_other_settings_than_it_was_made_with(tmp_path):
    plan(tmp_path, seed=0).study()
    with pytest.raises(ConfigError, match="search.study=s was made with search.seed=0; this command has search.se"):
        plan(tmp_path, seed=1).study()
    with pytest.raises(ConfigError, match="made with search.sampler=random; .*pass search.study=<a new name>"):
        plan(tmp_path, sampler="tpe").study()
    assert plan(tmp_path, budget=9, parallel=2).study().user_attrs[studies.SETTINGS]["search.seed"] == "0"


def test_the_study_names_its_objective_for_optuna_dashboard(tmp_path):
    assert plan(tmp_path).study().metric_names == ["loss/val"]


def test_a_validation_objective_without_a_validation_split_is_refused(workdir):
    with pytest.raises(ConfigError, match="search.objective=loss/val is measured on the validation split, and data"):
        studies.check_objective(compose_job(workdir))
    studies.check_objective(compose_job(workdir, "data.validation=100"))
    studies.check_objective(compose_job(workdir, "search.objective=loss/test"))


def test_the_pre_flight_checks_both_ends_and_every_choice():
    from hydra_plugins.vae_sweep_sweeper.search import SearchSweeper

    choice = dimension(parsed("model.latent=choice(2, 0, -3)"), "model.latent")
    assert SearchSweeper.extremes(choice) == [["model.latent=2"], ["model.latent=0"], ["model.latent=-3"]]
    momentum = dimension(parsed("optimizer.momentum=interval(0.5, 1.0)"), "optimizer.momentum")
    assert SearchSweeper.extremes(momentum) == [["optimizer.momentum=0.5"], ["optimizer.momentum=1.0"]]


# ---- real small studies ---------------------------------------------------------------------------------------------


def search_args(*overrides: str) -> list[str]:
    """A search on the tiny data, selecting on loss/val of 100 of its 600 training images unless told otherwise."""
    return ["-m", "hydra/sweeper=search", *FAST, "data.validation=100", *overrides]


def search(workdir: Path, *overrides: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return run_cli("vae_sweep", *search_args(*overrides), cwd=workdir, timeout=timeout)


def the_study(workdir: Path) -> optuna.Study:
    (summary,) = optuna.get_all_study_summaries(f"sqlite:///{workdir}/optuna.db")
    return optuna.load_study(study_name=summary.study_name, storage=f"sqlite:///{workdir}/optuna.db")


@pytest.mark.slow
def test_a_pruned_search_runs_its_budget_inside_the_space_nested_under_its_parent(workdir, cli_in_process):
    # One worker: the search runs its trials in this process.
    result = cli_in_process(
        *search_args(*SPACE, "search.trials=6", "search.pruner=successive_halving", "training.epochs=4"), cwd=workdir
    )
    assert result.returncode == 0, result.stderr
    study = the_study(workdir)
    trials = study.get_trials()
    assert len(trials) == 6 and {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    for trial in trials:
        assert 2 <= trial.params["model.latent"] <= 6 and 1e-4 <= trial.params["optimizer.lr"] <= 3e-3
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned, "successive halving with a reduction factor of 3 prunes some of 6 trials"

    client, runs = experiment_runs(f"sqlite:///{workdir}/mlflow.db")
    (parent,) = experiment_runs(f"sqlite:///{workdir}/mlflow.db", parents=True)[1]
    assert len(runs) == 6 and all(run.info.status == "FINISHED" for run in runs)
    assert {run.data.tags[names.TAG_PARENT_RUN] for run in runs} == {parent.info.run_id}
    by_trial = {int(run.data.tags[names.TAG_TRIAL]): run for run in runs}
    for trial in pruned:
        run = by_trial[trial.number]
        epoch = int(run.data.tags[names.TAG_PRUNED_EPOCH])
        assert run.data.tags[names.TAG_TRIAL_STATE] == "PRUNED" and epoch < 4
        assert [m.step for m in client.get_metric_history(run.info.run_id, names.TEST_LOSS)] == list(
            range(1, epoch + 1)
        )
    best = study.best_trial
    assert parent.data.tags[names.TAG_SWEEP_KIND] == names.SWEEP_SEARCH
    assert parent.data.tags[names.TAG_BEST_TRIAL] == str(best.number)
    assert parent.data.tags[names.TAG_BEST_RUN] == by_trial[best.number].info.run_id
    assert parent.data.metrics[names.SWEEP_PRUNED] == len(pruned) and parent.data.metrics[names.SWEEP_JOBS] == 6
    assert parent.data.metrics[names.SEARCH_BEST_VALUE] == pytest.approx(best.value)
    assert parent.data.params[names.SEARCH_SPACE_PARAM + "model.latent"] == "int(interval(2, 6))"

    again = cli_in_process(
        *search_args(*SPACE, "search.trials=6", "search.pruner=successive_halving", "training.epochs=4"), cwd=workdir
    )
    assert again.returncode == 0, again.stderr
    assert len(the_study(workdir).get_trials()) == 6, "the same command continues the finished study"
    assert len(experiment_runs(f"sqlite:///{workdir}/mlflow.db", parents=True)[1]) == 1


@pytest.mark.slow
def test_parallel_trials_do_not_wait_for_a_slow_one(workdir):
    storage = f"sqlite:///{workdir}/optuna.db"
    study = optuna.create_study(study_name="async", storage=storage)
    # One slow trial first, then three quick ones: with two workers, the quick ones run one after another beside it.
    for latent, epochs in ((2, 100), (3, 1), (4, 1), (5, 1)):
        study.enqueue_trial({"model.latent": latent, "training.epochs": epochs})
    result = search(
        workdir, "search.study=async", "search.trials=4", "search.parallel=2", "model.hidden=[256]",
        "search.space.model.latent=choice(2,3,4,5)", "search.space.training.epochs=choice(1,100)",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    slow, *quick = sorted(optuna.load_study(study_name="async", storage=storage).get_trials(), key=lambda t: t.number)
    assert slow.params["training.epochs"] == 100 and slow.state == TrialState.COMPLETE
    # Each quick trial started as the one before it ended, all while the slow one was still running: no batch barrier.
    assert all(a.datetime_complete <= b.datetime_start for a, b in zip(quick, quick[1:], strict=False))
    assert quick[-1].datetime_start < slow.datetime_complete


@pytest.mark.slow
def test_kill_9_of_a_worker_then_the_same_command_resumes_its_trial(workdir):
    # 30 epochs: the kill lands within a poll (0.2 s) of a trial's second epoch, long before its last; more epochs only
    # made both commands train longer.
    command = [
        sys.executable, "-m", "vae_sweep", "-m", "hydra/sweeper=search", *FAST, "search.trials=3", "search.parallel=2",
        "search.sampler=grid", "search.space.model.latent=choice(2,3,4)", "training.epochs=30", "model.hidden=[256]",
        "data.validation=100",
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(REPO))
    process = subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim = wait_for_a_trial_in_training(workdir, process)
    os.kill(victim.user_attrs[studies.PID], signal.SIGKILL)
    _, errors = process.communicate(timeout=300)
    assert process.returncode != 0
    assert "Traceback" not in errors, errors

    result = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    trials = the_study(workdir).get_trials()
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    finished = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(t.params["model.latent"] for t in finished) == [2, 3, 4], "each point once, none redone"
    retries = [t for t in trials if studies.RETRY_OF in t.user_attrs]
    assert victim.number in {t.user_attrs[studies.RETRY_OF] for t in retries}
    client, runs = experiment_runs(f"sqlite:///{workdir}/mlflow.db")
    statuses = [(run.data.tags.get(names.TAG_RESUMED), run.info.status) for run in runs]
    # One FINISHED run per point; the other worker, stopped with the pool, may have died before its first checkpoint:
    # its run is then KILLED and its trial trained afresh. None is left RUNNING.
    assert sorted(status for _, status in statuses if status != "KILLED") == ["FINISHED"] * 3, statuses
    assert len(runs) <= 4, statuses
    killed = [run for run in runs if run.info.status == "KILLED"]
    assert all("left no checkpoint to resume from" in run.data.tags[names.TAG_NOTE] for run in killed), statuses
    resumed = [run for run in runs if run.data.tags.get(names.TAG_RESUMED) == "true"]
    assert resumed, "the killed trial's run continued from its checkpoint"
    steps = [m.step for m in client.get_metric_history(resumed[0].info.run_id, names.TEST_LOSS)]
    assert sorted(set(steps)) == list(range(1, 31))


def wait_for_a_trial_in_training(workdir: Path, process: subprocess.Popen, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if list(workdir.glob("multirun/*/*/worker-*")):  # the workers have started: the study exists
            for trial in the_study(workdir).get_trials(states=(TrialState.RUNNING,)):
                if len(trial.intermediate_values) >= 2:
                    return trial
        time.sleep(0.2)
    process.kill()
    output, errors = process.communicate()
    pytest.fail(f"no trial reached its second epoch (exit {process.returncode}):\n{output}\n{errors}")


def test_a_trial_evaluating_past_the_heartbeat_timeout_is_not_declared_dead(workdir, cli_in_process, monkeypatch):
    from vae_sweep.jobs import task
    from vae_sweep.tracking import resume

    timeout_s, seen = 1.0, {}
    write_outputs = task.write_outputs

    def slow_evaluation(*args, **kwargs):
        time.sleep(3 * timeout_s)  # as L_5000 does for 25 minutes, with no epoch to beat on
        with monkeypatch.context() as elsewhere:  # seen from another host, where the worker's pid says nothing
            elsewhere.setattr(platform, "node", lambda: "another-host")
            (trial,) = the_study(workdir).get_trials(states=(TrialState.RUNNING,))
            (run,) = experiment_runs(f"sqlite:///{workdir}/mlflow.db")[1]
            seen.update(trial=studies.is_dead(trial, timeout_s), run=resume.is_dead(run, timeout_s))
        return write_outputs(*args, **kwargs)

    monkeypatch.setattr(task, "write_outputs", slow_evaluation)
    result = cli_in_process(
        *search_args("search.space.model.latent=choice(2)", "search.trials=1", "training.epochs=1",
                     f"training.heartbeat_timeout_s={timeout_s}"), cwd=workdir,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert seen == {"trial": False, "run": False}


# ---- bad input: one clear error before any trial starts -------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["search.space.model.latnet=range(2,5)"], "search.space.model.latnet: model.latnet is not a key"),
        (["search.space.optimizer.lr=interval(1e-2, 1e-4)"], "the interval is empty or inverted"),
        (["search.space.optimizer.lr=tag(log, interval(0, 1e-2))"], "a log scale needs bounds > 0"),
        ([*SPACE, "search.sampler=annealing"], "search.sampler"),
        ([*SPACE, "search.pruner=patience"], "search.pruner"),
        ([*SPACE, "search.objective=quality/fid"], "Invalid value for search.objective"),
        ([*SPACE, "search.storage=postgresql+psycopg://nobody@127.0.0.1:9/none"], "cannot open the Optuna storage"),
        (["search.space.model.latent=int(interval(0, 4))"], "Invalid value for model.latent: 0"),
        (["search.space.model.latent=choice(2, 0, -3)"], "Invalid value for model.latent: -3"),
        ([*SPACE, "data.validation=0"], "search.objective=loss/val is measured on the validation split"),
        (["model.latent=2,3"], "not from a grid"),
    ],
)
def test_bad_search_input_is_one_error_before_any_trial(workdir, cli_in_process, overrides, message):
    result = cli_in_process(*search_args(*overrides), cwd=workdir)
    assert result.returncode == 1, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("error:"), result.stderr
    if (workdir / "mlflow.db").exists():
        assert experiment_runs(f"sqlite:///{workdir}/mlflow.db")[1] == []


@pytest.mark.slow
def test_a_failed_trial_fails_the_search_once_and_counts_against_its_budget(workdir, cli_in_process):
    command = ["search.sampler=grid", "search.space.optimizer.lr=choice(1e-3,1e9)", "training.epochs=1"]
    first = cli_in_process(*search_args(*command), cwd=workdir)
    assert first.returncode == 1 and "1 trial(s) failed" in first.stderr and "Non-finite loss" in first.stderr
    assert "Traceback" not in first.stderr
    (parent,) = experiment_runs(f"sqlite:///{workdir}/mlflow.db", parents=True)[1]
    assert parent.info.status == "FAILED" and parent.data.metrics[names.SWEEP_FAILED] == 1
    again = cli_in_process(*search_args(*command), cwd=workdir)
    assert again.returncode == 0, again.stderr
    states = sorted(t.state.name for t in the_study(workdir).get_trials())
    assert states == ["COMPLETE", "FAIL"], "the budget of two was spent: nothing runs again"


@pytest.mark.slow
def test_a_search_on_postgresql_with_submitit_workers(workdir, postgres_storage):
    # A database of its own, so that its study is the only one, on the session's server rather than a server of its own.
    storage = postgres.create_database(postgres_storage, "submitit_search")
    result = search(
        workdir, *SPACE, "hydra/launcher=submitit_local", "search.trials=4", "search.parallel=2",
        f"search.storage={storage}", "training.epochs=2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (summary,) = optuna.get_all_study_summaries(storage)
    trials = optuna.load_study(study_name=summary.study_name, storage=storage).get_trials()
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    _, runs = experiment_runs(f"sqlite:///{workdir}/mlflow.db")
    assert sorted(int(run.data.tags[names.TAG_TRIAL]) for run in runs) == [0, 1, 2, 3]


def test_a_grid_sweep_has_a_parent_run_with_its_jobs_nested(workdir, cli_in_process):
    result = cli_in_process("-m", *FAST, "model.latent=2,3", "training.epochs=1", cwd=workdir)
    assert result.returncode == 0, result.stderr
    _, runs = experiment_runs(f"sqlite:///{workdir}/mlflow.db")
    (parent,) = experiment_runs(f"sqlite:///{workdir}/mlflow.db", parents=True)[1]
    assert parent.data.tags[names.TAG_SWEEP_KIND] == names.SWEEP_GRID and parent.info.status == "FINISHED"
    assert len(runs) == 2 and {run.data.tags[names.TAG_PARENT_RUN] for run in runs} == {parent.info.run_id}
    assert parent.data.metrics[names.SWEEP_JOBS] == 2 and parent.data.metrics[names.SWEEP_FAILED] == 0
    assert parent.data.tags[names.TAG_SWEEP_ID] == runs[0].data.tags[names.TAG_SWEEP_ID]


@pytest.mark.slow
def test_parallel_trials_of_one_point_train_it_once_and_the_search_goes_on(workdir):
    # Every trial of a one-point space is the same job: the second waits for the first and reuses its run.
    result = search(
        workdir, "search.space.model.latent=choice(4)", "search.trials=3", "search.parallel=2", "training.epochs=15",
        "model.hidden=[256]",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    trials = the_study(workdir).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert len({t.value for t in trials}) == 1
    twins = [t for t in trials if studies.TWIN_OF in t.user_attrs]
    assert twins, "the two workers' first trials ran at once: one waited for the other"
    _, runs = experiment_runs(f"sqlite:///{workdir}/mlflow.db")
    assert [run.info.status for run in runs] == ["FINISHED"], "the point trained once"
