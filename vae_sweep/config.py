"""Typed schema of the Hydra config, and the range checks Hydra's type system cannot express."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Dict, Optional

from omegaconf import MISSING, DictConfig, OmegaConf

from vae_sweep import names, schedule
from vae_sweep.errors import ConfigError


class Dataset(Enum):
    mnist = "mnist"
    fashion_mnist = "fashion_mnist"
    images = "images"  # a folder of image files (core/sources/folder.py)
    arrays = "arrays"  # an .npz of image arrays (core/sources/arrays.py)


# The datasets a user brings, at data.path; the others are MNIST-style IDX files under data.root.
OWN_DATA = (Dataset.images, Dataset.arrays)


class Binarize(Enum):
    none = "none"
    dynamic = "dynamic"
    fixed = "fixed"


class Resume(Enum):
    auto = "auto"
    never = "never"


class Schedule(Enum):
    constant = "constant"
    burda = "burda"


class Sampler(Enum):
    tpe = "tpe"
    random = "random"
    cmaes = "cmaes"
    grid = "grid"


class Pruner(Enum):
    none = "none"
    median = "median"
    successive_halving = "successive_halving"
    hyperband = "hyperband"


class Direction(Enum):
    minimize = "minimize"
    maximize = "maximize"


class OptimizerName(Enum):
    adam = "adam"
    sgd = "sgd"
    adagrad = "adagrad"


@dataclass
class DataConfig:
    name: Dataset = Dataset.mnist
    root: str = MISSING
    binarize: Binarize = Binarize.none
    download: bool = True
    # Training images held out as the validation split a search selects on; None or 0: none, training uses all.
    validation: Optional[int] = None
    # data=images and data=arrays only; None (unset) leaves a run's fingerprint as it was before these keys existed.
    path: Optional[str] = None
    size: Optional[int] = None  # resize every image to size x size
    channels: Optional[int] = None  # 1 (grey) or 3 (RGB): convert every image
    test_fraction: Optional[float] = None  # of a single folder's images, drawn once as the test split


@dataclass
class OptimizerConfig:
    name: OptimizerName = OptimizerName.adam
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.0
    eps: float = 1e-8  # Adam's; torch's default
    fused: bool = True
    schedule: Schedule = Schedule.constant
    schedule_pass_scale: float = 1.0


@dataclass
class TrainingConfig:
    epochs: int = 50
    batch_size: int = 128
    eval_batch_size: int = 2000
    seed: int = 0
    eval_seed: int = 1234
    device: str = "auto"
    threads: int = 0
    progress: bool = True
    beta: float = 1.0
    kl_warmup_epochs: int = 0
    grad_clip: float = 0.0
    checkpoint_every: int = 1
    resume: Resume = Resume.auto
    heartbeat_timeout_s: float = 600.0


@dataclass
class EvalConfig:
    enabled: bool = True
    iwae_k: int = 100
    iwae_batch_size: int = 100
    iwae_images: Optional[int] = None  # the first this many test images; None: all
    sample_quality: bool = True
    samples: int = 10000
    seed: int = 0
    classifier_dir: str = MISSING


@dataclass
class TrackingConfig:
    enabled: bool = True
    uri: str = MISSING
    experiment: str = "vae_sweep"
    # Where a new experiment keeps its artifacts; None lets a tracking server decide.
    artifact_root: Optional[str] = None
    # Extra run tags, e.g. +tracking.tags.purpose=ablation; reproduction sets `reproduces`.
    tags: Dict[str, str] = field(default_factory=dict)
    # Reconstructions and prior samples as per-epoch images every this many epochs (and at the first and last); 0: none.
    image_every: int = 5
    # The study's figures at the end of each run, in its job folder and on the run; false skips their ~1.5 s a run
    # (matplotlib and seven PNGs) where nobody looks at runs one by one, such as a search's trials.
    figures: bool = True
    # Seconds between samples of CPU, memory, disk and network (MLflow's system/ metrics); 0: none.
    system_metrics_s: float = 10.0
    # The sweep's parent run, which a sweeper passes to its jobs so that the MLflow UI nests them under it.
    parent_run_id: Optional[str] = None


@dataclass
class SearchConfig:
    """`hydra/sweeper=search`: an Optuna study over `space`, `trials` jobs in all, `parallel` at a time."""

    trials: int = 20
    parallel: int = 1
    sampler: Sampler = Sampler.tpe
    pruner: Pruner = Pruner.none
    seed: int = 0
    # Selected and pruned on the validation split, so that the test set only reports (needs data.validation > 0).
    objective: str = names.VAL_LOSS
    direction: Direction = Direction.minimize
    storage: str = MISSING
    study: Optional[str] = None
    # Pruners judge a trial only from this epoch on: after epoch 1 small models lead that larger ones overtake later.
    warmup_epochs: int = 2
    evaluate_pruned: bool = False
    # config key -> a dimension in Hydra's sweep grammar: interval(...), int(interval(...)), range(...), choice(...)
    space: Dict[str, Any] = field(default_factory=dict)


@dataclass
class PathsConfig:
    root_dir: str = MISSING
    data_dir: str = MISSING
    output_dir: str = MISSING
    checkpoint_dir: str = MISSING


@dataclass
class Config:
    # One option of the `model` group, typed by its family's schema (register_configs); the default is mlp.
    model: Any = MISSING
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)


# The conf/ folder of the repository, shipped inside the package (pyproject.toml maps it), as Hydra finds it.
CONFIG_PACKAGE = "pkg://vae_sweep.conf"


MODEL_SCHEMA_GROUP = "model_schema"


def register_configs(model_schemas: dict[str, type]) -> None:
    """The typed root node that conf/config.yaml lists first, and each model family's schema, which its
    conf/model/<family>.yaml lists first (as `/model_schema/<family>@_here_`, a group of its own so that `model=`
    offers only the families); the group files merge onto them, type-checked.

    The families come from the caller (vae_sweep.core.models.schemas()): this foundation module knows none of them.
    """
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    store.store(name="schema", node=Config)
    for family, schema in model_schemas.items():
        store.store(group=MODEL_SCHEMA_GROUP, name=family, node=schema)


def _is_device(value: str) -> bool:
    if value in ("auto", "cpu", "cuda", "mps"):
        return True
    prefix, _, index = value.partition(":")
    return prefix == "cuda" and index.isdigit()


# key -> (test, what is allowed); each test takes the value the config holds after type conversion.
_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "data.validation": (lambda v: v >= 0, "a number of training images >= 0 (0: no validation split)"),
    "data.size": (lambda v: v >= 1, "an integer >= 1 (pixels per side)"),
    "data.channels": (lambda v: v in (1, 3), "1 (grey) or 3 (RGB)"),
    "data.test_fraction": (lambda v: 0 < v < 1, "a number in (0, 1)"),
    "training.epochs": (lambda v: v >= 1, "an integer >= 1"),
    "training.batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "training.eval_batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "training.threads": (lambda v: v >= 0, "an integer >= 0 (0 lets each job choose)"),
    "training.beta": (lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0"),
    "training.kl_warmup_epochs": (lambda v: v >= 0, "an integer >= 0"),
    "training.grad_clip": (lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0 (0 turns clipping off)"),
    "training.checkpoint_every": (lambda v: v >= 1, "an integer >= 1"),
    "training.heartbeat_timeout_s": (lambda v: v > 0, "a number of seconds > 0"),
    "training.device": (_is_device, "auto, cpu, cuda, cuda:N or mps"),
    "optimizer.lr": (lambda v: math.isfinite(v) and v > 0, "a finite number > 0"),
    "optimizer.weight_decay": (lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0"),
    "optimizer.momentum": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "eval.iwae_images": (lambda v: v is None or v >= 1, "null (every test image) or an integer >= 1"),
    "optimizer.eps": (lambda v: math.isfinite(v) and v > 0, "a finite number > 0 (torch's default 1e-8)"),
    "optimizer.schedule_pass_scale": (
        lambda v: math.isfinite(v) and v > 0,
        "a finite number > 0 (1 is the paper's 3^i passes per stage)",
    ),
    "eval.iwae_k": (lambda v: v >= 1, "an integer >= 1 (5000 is the literature's setting)"),
    "eval.iwae_batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "eval.samples": (lambda v: v >= 2, "an integer >= 2"),
    "tracking.experiment": (lambda v: len(v.strip()) > 0, "a non-empty name"),
    "tracking.image_every": (lambda v: v >= 0, "a number of epochs >= 0 (0: no images)"),
    "tracking.system_metrics_s": (lambda v: v >= 0, "a number of seconds >= 0 (0: no system metrics)"),
    "search.trials": (lambda v: v >= 1, "an integer >= 1"),
    "search.parallel": (lambda v: v >= 1, "an integer >= 1 (trials running at once)"),
    "search.warmup_epochs": (lambda v: v >= 0, "an integer >= 0"),
    "search.objective": (
        lambda v: v in names.EPOCH_METRICS,
        "a metric logged every epoch: " + ", ".join(names.EPOCH_METRICS),
    ),
}


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first key whose value is out of range."""
    for key, (test, allowed) in {**_RULES, **_model_rules(cfg)}.items():
        value = OmegaConf.select(cfg, key)
        if value is None:
            continue
        if not test(value):
            shown = list(value) if OmegaConf.is_list(value) else value
            raise ConfigError(f"Invalid value for {key}: {shown!r}; allowed: {allowed}.")
    _check_schedule_length(cfg)
    _check_data_source(cfg)


# Keys that only a user's own images read: set for MNIST they would be silently ignored.
OWN_DATA_KEYS = ("path", "size", "channels", "test_fraction")


def _check_data_source(cfg: DictConfig) -> None:
    """data.path is where data=images and data=arrays read from; the MNIST datasets take none of their keys."""
    name = OmegaConf.select(cfg, "data.name")
    if name is None:
        return
    if name in OWN_DATA and OmegaConf.select(cfg, "data.path") is None:
        raise ConfigError(
            f"Missing data.path for data={name.value}; allowed: "
            + ("a folder of images." if name == Dataset.images else "an .npz file with x_train and x_test.")
        )
    if name not in OWN_DATA:
        for key in OWN_DATA_KEYS:
            if OmegaConf.select(cfg, f"data.{key}") is not None:
                raise ConfigError(
                    f"data.{key} applies to data=images and data=arrays, not data={name.value}; allowed: unset."
                )


def _model_rules(cfg: DictConfig) -> dict[str, tuple[Callable[[Any], bool], str]]:
    """The range rules of the chosen family's schema (its RULES), and model.name held to the family chosen."""
    model = OmegaConf.select(cfg, "model")
    schema = OmegaConf.get_type(model) if isinstance(model, DictConfig) else None
    if schema is None or not hasattr(schema, "RULES"):
        return {}
    family = schema.name
    rules = {f"model.{key}": rule for key, rule in schema.RULES.items()}
    rules["model.name"] = (
        lambda v: v == family,
        f"{family!r}, the family of the model group chosen; choose another family with model=<family>",
    )
    return rules


def _check_schedule_length(cfg: DictConfig) -> None:
    """A stage schedule fixes the number of passes: training.epochs must be that number, not cut or extended."""
    name = OmegaConf.select(cfg, "optimizer.schedule")
    epochs = OmegaConf.select(cfg, "training.epochs")
    if name is None or epochs is None:
        return
    needed = schedule.epochs(name.value, cfg.optimizer.schedule_pass_scale)
    if needed is not None and epochs != needed:
        raise ConfigError(
            f"Invalid value for training.epochs: {epochs}; allowed: {needed}, the passes of "
            f"optimizer.schedule={name.value} with optimizer.schedule_pass_scale="
            f"{cfg.optimizer.schedule_pass_scale:g}."
        )


def to_container(cfg: DictConfig) -> dict:
    """The resolved config as plain Python values (enums as their names), without Hydra's own node."""
    return {key: OmegaConf.to_container(cfg[key], resolve=True, enum_to_str=True) for key in cfg if key != "hydra"}


# Settings that change where, how fast or how visibly a job runs, not what it computes: left out of a run's
# fingerprint, of the parameters a report compares runs by, and of run names. Prefixes end in a dot.
NOT_RESULT = (
    "tracking.",
    "search.",
    "paths.",
    "data.root",
    "data.download",
    # A folder or file stands for its contents: a run's fingerprint carries their digest, wherever they lie.
    "data.path",
    "eval.classifier_dir",
    "training.threads",
    "training.progress",
    "training.resume",
    "training.checkpoint_every",
    "training.heartbeat_timeout_s",
)


def defines_result(key: str) -> bool:
    """Whether a dotted config key can change what a job computes (see NOT_RESULT)."""
    return not key.startswith(NOT_RESULT)


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{"model": {"latent": 2}} -> {"model.latent": 2}; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat
