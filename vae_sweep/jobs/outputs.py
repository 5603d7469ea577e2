"""What a trained job leaves behind: history, checkpoint, figures, final and quality metrics, in its folder and run."""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig

from vae_sweep import names
from vae_sweep.core import metrics
from vae_sweep.core.data import Data, Split, to_float
from vae_sweep.core.memory import release_freed_memory
from vae_sweep.core.models import Posterior, VAEModel
from vae_sweep.evaluation import quality
from vae_sweep.evaluation.classifier import MIN_SIDE
from vae_sweep.jobs import checkpoint
from vae_sweep.tracking.runs import Tracker

log = logging.getLogger(__name__)


@dataclass
class JobOutputs:
    """Where a job's results go: its folder and its run."""

    cfg: DictConfig
    config: dict  # cfg resolved to plain values, as the checkpoint stores it
    folder: Path
    tracker: Tracker
    kl_history: list[list[float]] = field(default_factory=list)  # the test set's KL per dimension, one row an epoch
    data_digest: str | None = None  # of a user's own images (core.sources); None for the MNIST datasets


def write_history(history: list[dict[str, float]], path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def write_kl_history(kl_history: list[list[float]], path: Path) -> None:
    """One row per epoch (from 1), one column per latent dimension: the test set's KL in nats."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", *(f"z{dim}" for dim in range(1, len(kl_history[0]) + 1))])
        writer.writerows([epoch, *(round(value, 6) for value in row)] for epoch, row in enumerate(kl_history, 1))


@torch.no_grad()
def write_figures(
    model: VAEModel,
    test: Split,
    history: list[dict[str, float]],
    folder: Path,
    posterior: Posterior,
    kl: torch.Tensor,
    kl_history=(),
) -> None:
    """The study's figures for a trained model, from the test set and fixed seeds so that runs compare."""
    from vae_sweep.evaluation import figures  # matplotlib: loaded by a job that has trained, not by a config error

    images, shape, prior = test.images, model.shape, model.prior
    figures.losses(history, folder / names.FIG_LOSSES)
    reconstructed = model.pixel_means(posterior.mean[:16]).cpu()
    figures.reconstructions(to_float(images[:16]).cpu(), reconstructed, folder / names.FIG_RECONSTRUCTIONS, shape=shape)
    prior_draws = model.sample(64, torch.Generator(images.device).manual_seed(0)).cpu()
    figures.samples(prior_draws, folder / names.FIG_SAMPLES, prior.words, shape)
    figures.latent_scatter(posterior.mean.cpu(), test.labels, folder / names.FIG_LATENT_SCATTER)
    if model.latent == 2:
        figures.manifold(
            model.pixel_means, folder / names.FIG_MANIFOLD, device=images.device, shape=shape,
            note=prior.manifold_note,
        )  # fmt: skip
    figures.kl_per_dim(kl.cpu(), folder / names.FIG_KL_PER_DIM)
    if kl_history:
        figures.kl_per_dim_history(torch.tensor(kl_history), folder / names.FIG_KL_PER_DIM_HISTORY)


def _binarized(cfg: DictConfig) -> bool:
    """Whether the job's images are binarized (fixed or dynamic): its IWAE bound is then an NLL bound."""
    return cfg.data.binarize.value != "none"


def classifier_key(cfg: DictConfig, data_digest: str | None = None) -> str:
    """The classifier cache entry of the job's data: binarized runs score against a classifier of binarized data.

    Both binarized modes train it on the same fixed-seed copy (core.data.Data.classifier_train), so they share it.
    A user's own images get an entry per content (`data_digest`), and per size and channels they are converted to. A
    validation split leaves it fewer training images: its own entry, so that jobs with and without one do not train
    over each other's.
    """
    name = cfg.data.name.value
    if data_digest is not None:
        name += f"_{data_digest[:12]}_{cfg.data.size or 'asis'}_{cfg.data.channels or 'asis'}"
    held_out = f"_val{cfg.data.validation}" if cfg.data.get("validation") else ""
    return name + ("_binarized" if _binarized(cfg) else "") + held_out


def unscored_because(data: Data) -> str | None:
    """Why samples of this data get no FID or inception score, if they get none."""
    if data.test.labels is None:
        return "the data has no labels to train their classifier on"
    if min(data.shape[1:]) < MIN_SIDE:
        return f"images of {data.shape[2]}x{data.shape[1]} pixels are too small for their classifier (>= {MIN_SIDE})"
    return None


def scores_samples(cfg: DictConfig, data: Data) -> bool:
    """Whether the end-of-run evaluation scores samples with the data's classifier."""
    return cfg.eval.enabled and cfg.eval.sample_quality and unscored_because(data) is None


def classifier_to_train(cfg: DictConfig, data: Data, data_digest: str | None = None) -> bool:
    """Whether the end-of-run evaluation will find no cached classifier to score samples with, and train one."""
    if not scores_samples(cfg, data):
        return False
    return not (Path(cfg.eval.classifier_dir) / f"{classifier_key(cfg, data_digest)}_cnn.pt").exists()


def evaluate_quality(model: VAEModel, data: Data, posterior: Posterior, kl, out: JobOutputs) -> dict[str, float]:
    """The quality/ metrics; the per-dimension KL goes to kl_per_dim.json, a newly trained classifier to the run."""
    cfg, test, scored = out.cfg, data.test, scores_samples(out.cfg, data)
    # Each step starts from what the last one left live, not from its high-water mark.
    release_freed_memory()
    results = quality.generalisation(model, data.train_eval, test, cfg.training)
    release_freed_memory()
    results.update(quality.likelihood(model, test, cfg.eval, _binarized(cfg)))
    release_freed_memory()
    usage = quality.latent_usage(posterior, kl)
    results.update(usage)
    (out.folder / names.KL_PER_DIM).write_text(json.dumps([round(value, 6) for value in kl.tolist()]))
    out.tracker.log_artifact(out.folder / names.KL_PER_DIM)
    if cfg.eval.sample_quality and unscored_because(data):
        log.info(f"quality: no FID or inception score: {unscored_because(data)}.")
    if scored:
        results.update(_sample_scores(model, data, out))
    log.info(_quality_line(results, cfg, scored))
    return results


def _sample_scores(model: VAEModel, data: Data, out: JobOutputs) -> dict[str, float]:
    """FID and inception score of the model's samples, with the classifier's test accuracy; the classifier is loaded
    from the cache, or trained once per machine and dataset (then its time and file go to this run)."""
    cfg = out.cfg
    key = classifier_key(cfg, out.data_digest)
    cache = Path(cfg.eval.classifier_dir)
    started = time.perf_counter()
    scorer = quality.load_classifier(key, data.classifier_train, data.test, cache, data.shape)
    results = {}
    if scorer.newly_trained:
        # Inside this run's duration: said so, or the run looks slow.
        results[names.CLASSIFIER_TIME] = time.perf_counter() - started
        out.tracker.set_tags({names.TAG_CLASSIFIER_TRAINED: f"{key}: the FID classifier that later runs load"})
    release_freed_memory()
    results[names.Q_CLASSIFIER_ACCURACY] = scorer.accuracy
    results.update(quality.sample_quality(model, scorer, data.test, cfg.eval))
    if scorer.newly_trained:
        out.tracker.log_artifact(cache / f"{key}_cnn.pt", names.ARTIFACT_CLASSIFIER)
    return results


def _quality_line(results: dict[str, float], cfg: DictConfig, scored: bool) -> str:
    bound = f"k={cfg.eval.iwae_k}, {int(results[names.Q_IWAE_IMAGES])} test images"
    if _binarized(cfg):
        likelihood = f"IWAE NLL bound -L_k ({bound}) {results[names.Q_IWAE_NLL]:.2f} nats"
    else:
        likelihood = f"IWAE bound on grey levels -L_k ({bound}; not a likelihood) {results[names.Q_IWAE_GREY]:.2f} nats"
    samples = ""
    if scored:
        samples = (
            f", {cfg.eval.samples} samples: FID {results[names.Q_FID]:.2f}, inception score "
            f"{results[names.Q_IS_MEAN]:.2f} ± {results[names.Q_IS_STD]:.2f} over 10 splits"
        )
    return (
        f"quality: {likelihood}, {results[names.Q_ACTIVE_UNITS]} active units, "
        f"train-test gap {results[names.Q_GAP]:.2f}{samples}"
    )


def run_description(final: dict[str, float], cfg: DictConfig, figure_files: list[str], tracker) -> str:
    """The run's headline numbers and links to its figures, as Markdown for the run's Description in the UI."""
    latent = cfg.model.latent
    lines = [
        f"- **Test loss {final[names.TEST_LOSS]:.2f} nats** per image: reconstruction "
        f"{final[names.TEST_RECON]:.2f}, KL {final[names.TEST_KL]:.2f}; {cfg.training.epochs} epochs, latent {latent}"
    ]
    for key, words in ((names.Q_IWAE_NLL, "IWAE NLL"), (names.Q_IWAE_GREY, "IWAE bound on grey levels (not an NLL)")):
        if key in final:
            lines.append(
                f"- {words} (k={final[names.Q_IWAE_K]:.0f}): {final[key]:.2f} nats; "
                f"active units: {final[names.Q_ACTIVE_UNITS]:.0f} of {latent}"
            )
    if names.Q_FID in final:
        lines.append(
            f"- FID {final[names.Q_FID]:.2f} (real data: {final[names.Q_FID_REFERENCE]:.2f}), inception score "
            f"{final[names.Q_IS]:.2f} (real data: {final[names.Q_IS_REFERENCE]:.2f})"
        )
    if names.CLASSIFIER_TIME in final:
        lines.append(
            f"- This run trained the shared FID classifier: {final[names.CLASSIFIER_TIME]:.0f} s of its duration "
            f"(`{names.CLASSIFIER_TIME}`); runs after it load it"
        )
    links = [f"[{file}]({tracker.artifact_link(f'{names.ARTIFACT_FIGURES}/{file}')})" for file in figure_files]
    lines.append("- Figures: " + (", ".join(links) or "none drawn (`tracking.figures=false`)"))
    return "\n".join(lines)


def write_outputs(model: VAEModel, data: Data, history: list[dict[str, float]], out: JobOutputs) -> dict:
    """History, model checkpoint, figures, final and quality metrics: in the job folder and on the run."""
    cfg, folder, tracker, test = out.cfg, out.folder, out.tracker, data.test
    model.eval()
    release_freed_memory()  # what training freed
    write_history(history, folder / names.HISTORY)
    checkpoint.save(model, out.config, folder / names.CHECKPOINT, epoch=cfg.training.epochs)
    posterior = metrics.posterior_means(model, test.images, cfg.training.eval_batch_size)
    kl = metrics.kl_per_dimension(model, posterior, cfg.eval.seed)
    if cfg.tracking.figures:
        write_figures(model, test, history, folder / names.FIGURES, posterior, kl, out.kl_history)
    final = {key: value for key, value in history[-1].items() if key != "epoch"}
    end_of_run = {names.TRAIN_TIME: sum(row[names.EPOCH_TIME] for row in history)}
    if cfg.eval.enabled:
        end_of_run.update(evaluate_quality(model, data, posterior, kl, out))
    # The last epoch's values are on the run already, as its metrics' latest values.
    tracker.log_metrics(end_of_run, step=cfg.training.epochs)
    final.update(end_of_run)
    (folder / names.FINAL_METRICS).write_text(json.dumps(final, indent=1))
    tracker.log_artifact(folder / names.HISTORY)
    if out.kl_history:
        write_kl_history(out.kl_history, folder / names.KL_PER_DIM_HISTORY)
        tracker.log_artifact(folder / names.KL_PER_DIM_HISTORY)
    tracker.log_artifact(folder / names.CHECKPOINT, names.ARTIFACT_CHECKPOINT)
    figure_files = []
    if cfg.tracking.figures:
        tracker.log_artifacts(folder / names.FIGURES, names.ARTIFACT_FIGURES)
        figure_files = sorted(path.name for path in (folder / names.FIGURES).iterdir())
    tracker.set_tags({names.TAG_NOTE: run_description(final, cfg, figure_files, tracker)})
    # Python's exit then touches ~110 MB more of the CUDA libraries (unregistering their kernels): on a trimmed heap.
    release_freed_memory()
    return final
