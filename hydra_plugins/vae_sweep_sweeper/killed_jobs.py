"""Jobs that submitit launched and that died without a result become failed jobs, not the end of the sweep.

Hydra's submitit launcher collects each job's result with `job.results()`, which raises for a job that left no
result (out of memory, `scancel`, node failure, kill -9): the first such job ends the sweep command with a traceback,
the results of the jobs after it are never read, and the killed job's MLflow run stays RUNNING.
"""

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)

OnKilled = Callable[[Sequence[str], int, Exception], JobReturn]


class _Outcome:
    """A submitit job whose `results()` hands a job that left no result to `on_killed` instead of raising."""

    def __init__(self, job: Any, on_killed: OnKilled, overrides: Sequence[str], job_num: int):
        self.job, self.on_killed, self.overrides, self.job_num = job, on_killed, overrides, job_num
        from submitit.local.local import LocalJob

        if isinstance(job, LocalJob):
            # submitit waits up to 15 s for a finished job's result file, which a network file system may show late;
            # a local job's process writes it to this machine's disk before it exits, so none then means none at all.
            job._results_timeout_s = 0

    def results(self) -> list:
        from submitit.core.utils import UncompletedJobError

        try:
            return self.job.results()
        except UncompletedJobError as error:
            return [self.on_killed(self.overrides, self.job_num, error)]


@contextmanager
def killed_jobs_as_failures(launcher: Any, on_killed: OnKilled) -> Iterator[None]:
    """While a submitit launcher launches, its jobs report being killed through `on_killed`; other launchers as is."""
    if not type(launcher).__module__.startswith("hydra_plugins.hydra_submitit_launcher"):
        yield
        return
    import submitit

    plain = submitit.AutoExecutor

    class Executor(plain):
        # The launcher maps its callable over (overrides, job dir key, job number, job id, Hydra's state).
        def map_array(self, fn, overrides, job_dir_keys, job_nums, *rest):
            jobs = super().map_array(fn, overrides, job_dir_keys, job_nums, *rest)
            return [
                _Outcome(job, on_killed, *point)
                for job, point in zip(jobs, zip(overrides, job_nums, strict=False), strict=False)
            ]

    # The launcher builds its executor inside launch(); swapping the class for that call is the one way in.
    submitit.AutoExecutor = Executor
    try:
        yield
    finally:
        submitit.AutoExecutor = plain


def killed_job(config: DictConfig, overrides: Sequence[str], job_num: int, error: Exception) -> JobReturn:
    """A FAILED job return for a job submitit lost, after marking its MLflow run FAILED (`config`: the job's)."""
    from vae_sweep.tracking.store import fail_orphaned_run

    reason = f"killed without a result (out of memory, scancel, node failure?): {str(error).strip().splitlines()[0]}"
    with open_dict(config.hydra.job):
        config.hydra.job.num = job_num
    try:
        run_id = fail_orphaned_run(config.tracking, str(Path(config.hydra.sweep.dir).resolve()), job_num, reason)
        if run_id:
            log.error(f"Job {job_num} was killed; its MLflow run {run_id} is marked FAILED.")
    except Exception as tracking_error:  # the job is reported failed either way
        log.warning(f"Job {job_num} was killed, and its MLflow run could not be marked FAILED: {tracking_error}")
    job = JobReturn(overrides=list(overrides), hydra_cfg=config, status=JobStatus.FAILED)
    job.return_value = RuntimeError(reason)
    return job
