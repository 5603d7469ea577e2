"""Every name that crosses a file boundary: metric keys, job-folder and artifact names, run tags.

Jobs write these names and the report, reproduce and benchmarks read them back, so each is spelled here once.
"""

# ---- metrics ------------------------------------------------------------------------------------------------------
# The loss terms, in nats per image, as fit() returns them: recon + weight * kl = loss.
TERMS = ("recon", "kl", "loss")
SPLITS = ("train", "test")
# The validation split: data.validation training images held out, evaluated every epoch where there are any. A search
# selects and prunes on it, so that the test set only reports.
VAL = "val"
# The negative ELBO in nats, recon + kl, logged beside each evaluated split's loss (which weighs the KL by beta).
ELBO = "elbo"


LOSSES = "loss/"


def epoch_key(split: str, term: str) -> str:
    """The per-epoch metric of a loss term on a split: 'loss/test', 'loss/kl/test', 'loss/recon/train'.

    The MLflow UI puts charts in sections named by what comes before the last slash, sections in alphabetical
    order: so train and test share a section, and the loss and its terms come before the end-of-run `quality/`.
    """
    return f"{LOSSES}{split}" if term == "loss" else f"{LOSSES}{term}/{split}"


TRAIN_LOSS = epoch_key("train", "loss")
TEST_LOSS = epoch_key("test", "loss")
TEST_RECON = epoch_key("test", "recon")
TEST_KL = epoch_key("test", "kl")
# The negative ELBO on the test set, recon + kl: the test loss weighs the KL by training.beta, this by 1.
TEST_ELBO = epoch_key("test", ELBO)
VAL_LOSS = epoch_key(VAL, "loss")
# Latent dimensions whose posterior mean varies over the test set by more than 0.01 (Burda et al., 2015).
ACTIVE_UNITS = "active_units"
KL_WEIGHT = "kl_weight"
LR = "lr"
# Wall-clock figures and MLflow's samples of CPU, memory, disk and network differ between any two runs (and a run
# shorter than the sampling interval has no system/ metrics), so no comparison counts them.
TIMING = "time/"
SYSTEM = "system/"
EPOCH_TIME = TIMING + "epoch_s"
# Every metric logged once per epoch (step = epoch).
EPOCH_METRICS = (
    *(epoch_key(split, term) for term in TERMS for split in SPLITS),
    TEST_ELBO,
    *(epoch_key(VAL, term) for term in (*TERMS, ELBO)),
    ACTIVE_UNITS,
    KL_WEIGHT,
    LR,
    EPOCH_TIME,
)

# Logged once, at the end of a run (step = last epoch); the last epoch's values are the run's latest values.
TRAIN_TIME = TIMING + "train_s"
CLASSIFIER_TIME = TIMING + "classifier_train_s"  # the one run that trained the shared FID classifier

QUALITY = "quality/"
Q_TRAIN_LOSS = "quality/train_loss"
Q_TEST_LOSS = "quality/test_loss"
Q_GAP = "quality/train_test_gap"
Q_IWAE_BOUND = "quality/iwae_bound"  # L_k, logged on every run
# -L_k is a negative log-likelihood bound only on binarized pixels (data.binarize dynamic or fixed). On grey levels it
# is a Bernoulli cross-entropy bound: a perfect decoder still scores ~45.5 nats on MNIST, so it has its own name.
Q_IWAE_NLL = "quality/iwae_nll"
Q_IWAE_GREY = "quality/iwae_grey_bound_nats"
Q_IWAE_K = "quality/iwae_k"  # importance samples per image
Q_IWAE_IMAGES = "quality/iwae_images"  # test images the bound averages over
Q_ACTIVE_UNITS = "quality/active_units"
Q_KL_MAX_DIM = "quality/kl_max_dim"
# Latent dimensions whose test KL against the prior, averaged over images, is below PRIOR_KL_NATS: their posterior is
# the prior for every image. An inactive unit (constant mean) need not be one: its variance can still differ from the
# prior's. Runs before it was logged lack it; the report then says what active units alone say.
Q_PRIOR_DIMS = "quality/prior_dims"
PRIOR_KL_NATS = 0.01
Q_FID = "quality/fid"
Q_FID_REFERENCE = "quality/fid_reference"
Q_IS = "quality/inception_score"  # of the whole sample set
Q_IS_MEAN = "quality/inception_score_mean"  # mean and standard deviation over 10 splits (Salimans et al., 2016)
Q_IS_STD = "quality/inception_score_std"
Q_SAMPLES = "quality/samples"  # prior samples the FID and inception scores are of
Q_IS_REFERENCE = "quality/inception_score_reference"
Q_CLASSIFIER_ACCURACY = "quality/classifier_accuracy"

# Keys older runs logged under another name: old -> new, for grey-level runs (data.binarize = none) only. Binarized
# runs' quality/iwae_nll was and is a likelihood bound, so they keep it. The report reads old runs through it.
GREY_LEVEL_RENAMES = {Q_IWAE_NLL: Q_IWAE_GREY}


# Names that runs before the UI-friendly names logged (and history.csv files held), and their names now. The
# `final/` copies of the last epoch are now simply the per-epoch metrics' latest values.
FORMER_METRICS = {
    **{f"{split}/{term}": epoch_key(split, term) for split in SPLITS for term in TERMS},
    **{f"final/{split}/{term}": epoch_key(split, term) for split in SPLITS for term in TERMS},
    "epoch_time_s": EPOCH_TIME,
    "final/kl_weight": KL_WEIGHT,
    "final/epoch_time_s": EPOCH_TIME,
    "final/train_time_s": TRAIN_TIME,
}


def current_metric(key: str) -> str:
    """A metric's name now, for a name read from any store or history.csv ('final/test/loss' -> 'loss/test').

    Also takes the `metrics.` columns of mlflow.search_runs: 'metrics.test/loss' -> 'metrics.loss/test'.
    """
    prefix = "metrics." if key.startswith("metrics.") else ""
    bare = key.removeprefix(prefix)
    return prefix + FORMER_METRICS.get(bare, bare)


def current_metrics(metrics):
    """A dict, or a DataFrame's columns, with every metric under its current name (see current_metric).

    Where a run holds both an old and a new name of one metric (`final/test/loss` beside `test/loss`), the values
    are the same; a DataFrame of old and new runs gets one column per metric, filled from whichever name a run has.
    """
    if not hasattr(metrics, "columns"):
        current = {current_metric(key): value for key, value in metrics.items()}
        return {**current, **{key: value for key, value in metrics.items() if key in current}}
    frame = metrics.copy()
    for old in [column for column in frame.columns if current_metric(column) != column]:
        new = current_metric(old)
        frame[new] = frame[new].combine_first(frame[old]) if new in frame.columns else frame[old]
        frame = frame.drop(columns=old)
    return frame


def every_name(key: str) -> tuple[str, ...]:
    """A metric's current name and the per-epoch names it had before: to fetch its history from runs of any version."""
    return (key, *(old for old, new in FORMER_METRICS.items() if new == key and not old.startswith("final/")))


def is_machine_reading(key: str) -> bool:
    return current_metric(key).removeprefix("metrics.").startswith((TIMING, SYSTEM))


# ---- files in a job folder, and where they go on the run ------------------------------------------------------------
HYDRA_DIR = ".hydra"  # Hydra's own folder in a job folder: config.yaml, overrides.yaml, hydra.yaml
JOB_CONFIG = "config.yaml"  # in HYDRA_DIR: the composed config a job ran with
HISTORY = "history.csv"
CHECKPOINT = "checkpoint.pt"
CONFIG_RESOLVED = "config_resolved.yaml"
FINAL_METRICS = "final_metrics.json"
PROVENANCE = "provenance.json"
KL_PER_DIM = "kl_per_dim.json"
KL_PER_DIM_HISTORY = "kl_per_dim_history.csv"  # the test set's KL per latent dimension, a row per epoch
ERROR_LOG = "error.log"
FIGURES = "figures"

# Artifact folders of a run (files not listed here sit at the artifact root under their job-folder name).
ARTIFACT_HYDRA = "hydra"
ARTIFACT_CHECKPOINT = "checkpoint"
ARTIFACT_FIGURES = FIGURES
ARTIFACT_CLASSIFIER = "classifier"

# Figure file names, as write_figures saves them and the report shows them.
FIG_LOSSES = "losses.png"
FIG_RECONSTRUCTIONS = "reconstructions.png"
FIG_SAMPLES = "samples.png"
FIG_LATENT_SCATTER = "latent_scatter.png"
FIG_MANIFOLD = "manifold.png"
FIG_KL_PER_DIM = "kl_per_dim.png"
FIG_KL_PER_DIM_HISTORY = "kl_per_dim_history.png"

# Image series logged every few epochs (MLflow's per-step images: a slider in the run's Model metrics tab).
IMAGE_RECONSTRUCTIONS = "reconstructions"
IMAGE_SAMPLES = "samples"

# ---- run tags -----------------------------------------------------------------------------------------------------
TAG_SWEEP_ID = "sweep.id"
TAG_SWEEP_JOB = "sweep.job"
TAG_OVERRIDES = "hydra.overrides"
TAG_THREADS = "torch.threads"
TAG_DEVICE = "torch.device"
# What resume needs to tell a live run from a dead one, under `sys.` so that it stays out of the way in the UI.
TAG_PID = "sys.pid"
TAG_HOST = "sys.host"
TAG_HEARTBEAT = "sys.heartbeat"  # Unix seconds of the run's last sign of life (an epoch, or a beat while busy)
# Their names on runs logged before they moved: resume still reads them.
FORMER_TAGS = {TAG_PID: "pid", TAG_HOST: "host", TAG_HEARTBEAT: "heartbeat"}
TAG_CLASSIFIER_TRAINED = "sys.trained_classifier"  # on the one run whose duration includes training it
TAG_FINGERPRINT = "fingerprint"
TAG_ERROR = "error"
TAG_RESUMED = "resumed"
TAG_REPRODUCES = "reproduces"
TAG_NOTE = "mlflow.note.content"  # the Description of a run or an experiment in the MLflow UI
# The MLflow UI shows an experiment as model training (runs, charts) rather than GenAI (traces) by this tag.
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
TAG_DATA_MD5 = "data.md5."  # + raw file name
TAG_PRESET = "preset"  # the experiment=... preset a job was launched with, if any
TAG_PYTHON = "python"
# Provenance that decides whether a rerun can be expected to match bit for bit: code and data (a difference is a
# warning), and the machine and libraries (a difference makes bitwise equality unexpected).
CODE_AND_DATA_PREFIXES = ("git.", TAG_DATA_MD5)
ENVIRONMENT_PREFIXES = ("version.", TAG_HOST, TAG_PYTHON)
# What a job's result depends on that its stored config may leave open (threads 0 = the launcher's share, device
# auto): the tag that records what the job ran with, and the config key a reproduction pins it with.
RUNTIME_SETTINGS = {TAG_THREADS: "training.threads", TAG_DEVICE: "training.device"}

# ---- sweeps and searches: one parent run per multirun, its jobs nested under it ------------------------------------
TAG_PARENT_RUN = "mlflow.parentRunId"  # MLflow's own nesting tag: the UI groups a sweep's runs under its parent
TAG_SWEEP_KEY = "sweep.key"  # the parent run of a sweep: the same command (or study) again finds the same parent
TAG_SWEEP_KIND = "sweep.kind"  # on the parent: SWEEP_GRID or SWEEP_SEARCH
SWEEP_GRID = "grid"
SWEEP_SEARCH = "search"
# On the parent: + job number -> the run id of a FINISHED run that the sweep point reused instead of training again
# (it stays nested under the sweep that trained it; the report counts it in this sweep too).
TAG_SWEEP_REUSED = "sweep.reused."
SWEEP_CONFIG = "multirun.yaml"  # the sweep's own config, in its folder and on its parent run
# The parent's counts, logged as the sweep goes (step = jobs ended so far).
SWEEP_JOBS = "sweep/jobs"
SWEEP_FAILED = "sweep/failed"
SWEEP_PRUNED = "sweep/pruned"
# A search (Optuna study): on the parent and on every trial's run.
TAG_STUDY = "search.study"
TAG_STORAGE = "search.storage"  # the study's Optuna storage URL, without a password
TAG_OBJECTIVE = "search.objective"  # the per-epoch metric the search optimises
TAG_DIRECTION = "search.direction"  # minimize | maximize
TAG_TRIAL = "search.trial"  # a trial's number in its study
TAG_TRIAL_STATE = "search.state"  # how the trial ended in the study: COMPLETE, PRUNED or FAIL
TAG_PRUNED_EPOCH = "search.pruned_at_epoch"  # the last epoch a pruned trial trained
# On the parent: the best trial so far (tags, since it changes as the search goes and MLflow params cannot).
TAG_BEST_RUN = "search.best_run"
TAG_BEST_TRIAL = "search.best_trial"
TAG_BEST_PARAM = "search.best."  # + config key: the best trial's value of a searched key
SEARCH_BEST_VALUE = "search/best_value"  # metric on the parent, step = trials ended so far
SEARCH_SPACE_PARAM = "space."  # + config key: the parent's params, each a dimension in Hydra's sweep grammar
STUDY_STATES = ("COMPLETE", "PRUNED", "FAIL")


# ---- the comparison report: the files of a report folder, which its run in the reports experiment holds too --------
REPORT_HTML = "report.html"
REPORT_MD = "report.md"
REPORT_RUNS = "runs.csv"
REPORT_PICTURES = "runs"  # the runs' own figures, a folder per run id
FIG_QUALITY_VS_X = "quality_vs_x.png"
FIG_ACTIVE_UNITS = "active_units.png"
FIG_LEARNING_CURVES = "learning_curves.png"
FIG_RATE_DISTORTION = "rate_distortion.png"
# A search's figures, in a folder per search: REPORT_SEARCH/<parent run id>/.
REPORT_SEARCH = "search"
FIG_SEARCH_HISTORY = "optimisation_history.png"
FIG_SEARCH_PARALLEL = "parallel_coordinates.png"
# Where a report of one sweep also goes: under this artifact path of the sweep's parent run.
ARTIFACT_REPORT = "report"


def reports_experiment(experiment: str) -> str:
    """The experiment that holds the reports on `experiment`'s runs, one run per report."""
    return f"{experiment}-reports"


# ---- the model registry ---------------------------------------------------------------------------------------------
MODELS_SCHEME = "models:/"
BEST_ALIAS = "best"  # the alias `python -m vae_sweep.registry register` moves to the version it registers


def model_uri(name: str, alias: str = BEST_ALIAS) -> str:
    """What vae_sweep.load_model takes for a registered model's aliased version: 'models:/NAME@best'."""
    return f"{MODELS_SCHEME}{name}@{alias}"
