"""Every name that crosses a file boundary: metric keys, job-folder and artifact names, run tags.

Jobs write these names and the report, reproduce and benchmarks read them back, so each is spelled here once.
"""

# ---- metrics ------------------------------------------------------------------------------------------------------
# The loss terms, in nats per image, as fit() returns them: recon + weight * kl = loss.
TERMS = ("recon", "kl", "loss")
SPLITS = ("train", "test")


def epoch_key(split: str, term: str) -> str:
    """The per-epoch metric of a loss term on a split: 'test/loss'."""
    return f"{split}/{term}"


TRAIN_LOSS = epoch_key("train", "loss")
TEST_LOSS = epoch_key("test", "loss")
TEST_RECON = epoch_key("test", "recon")
TEST_KL = epoch_key("test", "kl")
KL_WEIGHT = "kl_weight"
EPOCH_TIME = "epoch_time_s"
# Every metric logged once per epoch (step = epoch), in a history row's order.
EPOCH_METRICS = (*(epoch_key(split, term) for split in SPLITS for term in TERMS), KL_WEIGHT, EPOCH_TIME)

# The end of a run: `final/` copies of the last epoch, and the end-of-run evaluation under `quality/`.
FINAL = "final/"


def final(key: str) -> str:
    return FINAL + key


FINAL_TEST_LOSS = final(TEST_LOSS)
TRAIN_TIME = final("train_time_s")
# Suffix of every wall-clock figure: they differ between any two runs, so no comparison counts them.
TIMING_SUFFIX = "time_s"

QUALITY = "quality/"
Q_TRAIN_LOSS = "quality/train_loss"
Q_TEST_LOSS = "quality/test_loss"
Q_GAP = "quality/train_test_gap"
Q_IWAE_BOUND = "quality/iwae_bound"
Q_IWAE_NLL = "quality/iwae_nll"
Q_IWAE_K = "quality/iwae_k"
Q_ACTIVE_UNITS = "quality/active_units"
Q_KL_MAX_DIM = "quality/kl_max_dim"
Q_FID = "quality/fid"
Q_FID_REFERENCE = "quality/fid_reference"
Q_IS = "quality/inception_score"
Q_IS_REFERENCE = "quality/inception_score_reference"
Q_CLASSIFIER_ACCURACY = "quality/classifier_accuracy"

# ---- files in a job folder, and where they go on the run ------------------------------------------------------------
HYDRA_DIR = ".hydra"  # Hydra's own folder in a job folder: config.yaml, overrides.yaml, hydra.yaml
JOB_CONFIG = "config.yaml"  # in HYDRA_DIR: the composed config a job ran with
HISTORY = "history.csv"
CHECKPOINT = "checkpoint.pt"
CONFIG_RESOLVED = "config_resolved.yaml"
FINAL_METRICS = "final_metrics.json"
PROVENANCE = "provenance.json"
KL_PER_DIM = "kl_per_dim.json"
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

# ---- run tags -----------------------------------------------------------------------------------------------------
TAG_SWEEP_ID = "sweep.id"
TAG_SWEEP_JOB = "sweep.job"
TAG_OVERRIDES = "hydra.overrides"
TAG_THREADS = "torch.threads"
TAG_DEVICE = "torch.device"
TAG_PID = "pid"
TAG_HOST = "host"
TAG_HEARTBEAT = "heartbeat"
TAG_FINGERPRINT = "fingerprint"
TAG_ERROR = "error"
TAG_RESUMED = "resumed"
TAG_REPRODUCES = "reproduces"
TAG_NOTE = "mlflow.note.content"
TAG_DATA_MD5 = "data.md5."  # + raw file name
TAG_PYTHON = "python"
# Provenance that decides whether a rerun can be expected to match bit for bit: code and data (a difference is a
# warning), and the machine and libraries (a difference makes bitwise equality unexpected).
CODE_AND_DATA_PREFIXES = ("git.", TAG_DATA_MD5)
ENVIRONMENT_PREFIXES = ("version.", TAG_HOST, TAG_PYTHON)
# What a job's result depends on that its stored config may leave open (threads 0 = the launcher's share, device
# auto): the tag that records what the job ran with, and the config key a reproduction pins it with.
RUNTIME_SETTINGS = {TAG_THREADS: "training.threads", TAG_DEVICE: "training.device"}
