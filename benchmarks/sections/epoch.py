"""Epoch time: one epoch of vae_sweep's fit() (train_epoch + full test-set evaluate on in-memory tensors, the
optimizer a job builds), alternated epoch by epoch with the conventional torchvision/DataLoader loop of
pytorch/examples, on each model shape."""

from __future__ import annotations

import math
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import (
    MODELS,
    TEST_IMAGES,
    TRAIN_IMAGES,
    Context,
    Section,
    alternated,
    fit_epochs,
    fmt_s,
    job_model,
    job_optimizer,
    job_training_node,
    matmul_operands,
    matmul_sample,
    spread,
    summary,
)
from vae_sweep import names
from vae_sweep.core.data import SHAPES

EXAMPLES_MODEL = MODELS[3][0]
TARGET = "epoch time of the pytorch/examples shape <= 0.35 x the conventional loop"


def optimizer_flags(optimizer: torch.optim.Optimizer) -> str:
    flags = {key: optimizer.defaults.get(key) for key in ("lr", "foreach", "fused")}
    return f"{type(optimizer).__name__}(" + ", ".join(f"{key}={value}" for key, value in flags.items()) + ")"


def denormals_flushed() -> bool:
    """Whether this thread flushes denormal floats to zero (torch.set_flush_denormal has no getter)."""
    return bool(torch.tensor([1e-39], dtype=torch.float32).mul(1.0).item() == 0.0)


def linear_flops(model: nn.Module) -> int:
    """Forward FLOPs of one image through the model's Linear layers (2 * in * out each; elementwise ops left out)."""
    return sum(2 * m.in_features * m.out_features for m in model.modules() if isinstance(m, nn.Linear))


# ---- the conventional loop ----------------------------------------------------------------------------------------
# As pytorch/examples' vae/main.py writes it (DataLoader of ToTensor images, summed BCE on sigmoid outputs + KL,
# loss.item() per batch), on the same VAE module so that only the loop differs.


def conventional_loss(recon: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    bce = F.binary_cross_entropy(recon, x, reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


PIXELS_OF_MNIST = math.prod(SHAPES["mnist"])


def conventional_forward(model, data: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """pytorch/examples' forward: decoder logits of a posterior sample, with the posterior's mu and logvar."""
    posterior = model.encode(data)
    return model.decode(posterior.sample()), posterior.mean, posterior.logvar


def conventional_train(model, optimizer, loader, pixels: int, max_batches: int | None = None) -> float:
    model.train()
    train_loss, images = 0.0, 0
    for batch, (data, _) in enumerate(loader):
        if max_batches is not None and batch >= max_batches:
            break
        data = data.view(-1, pixels)
        optimizer.zero_grad()
        logits, mu, logvar = conventional_forward(model, data)
        loss = conventional_loss(torch.sigmoid(logits), data, mu, logvar)
        loss.backward()
        train_loss += loss.item()
        optimizer.step()
        images += len(data)
    return train_loss / max(images, 1)


def conventional_test(model, loader, pixels: int) -> float:
    model.eval()
    test_loss = 0.0
    with torch.no_grad():
        for data, _ in loader:
            data = data.view(-1, pixels)
            logits, mu, logvar = conventional_forward(model, data)
            test_loss += conventional_loss(torch.sigmoid(logits), data, mu, logvar).item()
    return test_loss / len(loader.dataset)


# ---- measurement --------------------------------------------------------------------------------------------------


def measure(ctx: Context) -> dict:
    from torch.utils.data import Subset
    from torchvision import datasets, transforms

    root = str(ctx.args.data_root)
    conv_train = datasets.MNIST(root, train=True, transform=transforms.ToTensor(), download=False)
    conv_test = datasets.MNIST(root, train=False, transform=transforms.ToTensor(), download=False)
    if ctx.args.quick:
        conv_train, conv_test = Subset(conv_train, range(ctx.n_train)), Subset(conv_test, range(ctx.n_test))
    mm = matmul_operands()
    matmul: list[float] = []
    models = {}
    for label, hidden, latent in MODELS:
        models[label] = figures = compare(ctx, hidden, latent, conv_train, conv_test, mm, matmul)
        print(
            f"  {label}: ours {figures['ours']['epoch']['median']:.2f} s, conventional "
            f"{figures['conventional']['epoch']['median']:.2f} s, ratio {figures['ratio']:.3f}",
            flush=True,
        )
    return {"models": models, "interleaved_matmul_flops": summary(matmul)}


def compare(ctx: Context, hidden, latent, conv_train, conv_test, mm, matmul: list[float]) -> dict:
    """Epochs of vae_sweep's loop and of the conventional loop on one model shape, alternated; a matmul sample
    after each pair, so that the efficiency section's rate is measured under the same load as the epochs."""
    from torch.utils.data import DataLoader

    from vae_sweep.core.data import Split
    from vae_sweep.core.train import EpochSettings, evaluate, train_epoch
    from vae_sweep.tracking.runs import NullTracker

    train, test = ctx.data()
    training = job_training_node()
    batch, eval_batch = training.batch_size, training.eval_batch_size
    train_scale, test_scale = TRAIN_IMAGES / ctx.n_train, TEST_IMAGES / ctx.n_test
    torch.manual_seed(0)
    ours = job_model(latent, hidden)
    torch.manual_seed(0)
    conv = job_model(latent, hidden)
    ours_opt = job_optimizer(ours)  # as a job builds it (conf/optimizer/adam.yaml)
    conv_opt = torch.optim.Adam(conv.parameters(), lr=ours_opt.defaults["lr"])  # as pytorch/examples builds it
    generator = torch.Generator().manual_seed(0)
    history: list[dict[str, float]] = []
    settings = {}
    loader = DataLoader(conv_train, batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(0))
    test_loader = DataLoader(conv_test, batch_size=batch, shuffle=False)
    # Warm-up (not timed): a few batches of each loop.
    warm = Split(train.images[:1280], train.labels[:1280])
    train_epoch(ours, ours_opt, warm, EpochSettings(batch), torch.Generator().manual_seed(1), 1.0, 0)
    evaluate(ours, Split(test.images[:eval_batch], test.labels[:eval_batch]), eval_batch, 0)
    conventional_train(conv, conv_opt, loader, PIXELS_OF_MNIST, max_batches=10)
    times = {name: {"train": [], "test": [], "epoch": [], "cpu": []} for name in ("ours", "conventional")}
    cpu = [0.0]  # process CPU time of the last epoch, set by the run functions
    losses = {}

    def run_ours() -> tuple[float, float]:
        # One epoch of vae_sweep's fit() (train_epoch + evaluate, and whatever process settings fit makes).
        training.epochs = len(history) + 1
        start, cpu_start = time.perf_counter(), time.process_time()
        history[:] = fit_epochs(ours, ours_opt, train, test, training, NullTracker(), generator, history)
        epoch_s, cpu[0] = time.perf_counter() - start, time.process_time() - cpu_start
        settings["ours"] = {"optimizer": optimizer_flags(ours_opt), "denormals_flushed": denormals_flushed()}
        # The test part on its own, once more, to split the epoch into training and evaluation.
        start = time.perf_counter()
        evaluate(ours, test, training.eval_batch_size, training.eval_seed, training.beta)
        test_s = time.perf_counter() - start
        losses["ours"] = {"train": history[-1][names.TRAIN_LOSS], "test": history[-1][names.TEST_LOSS]}
        return epoch_s - test_s, test_s

    def run_conv() -> tuple[float, float]:
        torch.set_flush_denormal(False)  # a separate script would run with the process defaults
        settings["conventional"] = {
            "optimizer": optimizer_flags(conv_opt),
            "denormals_flushed": denormals_flushed(),
        }
        start, cpu_start = time.perf_counter(), time.process_time()
        train_loss = conventional_train(conv, conv_opt, loader, PIXELS_OF_MNIST)
        middle = time.perf_counter()
        test_loss = conventional_test(conv, test_loader, PIXELS_OF_MNIST)
        end = time.perf_counter()
        losses["conventional"] = {"train": train_loss, "test": test_loss}
        cpu[0] = time.process_time() - cpu_start
        return middle - start, end - middle

    variants: list[tuple[str, Callable[[], tuple[float, float]]]] = [
        ("ours", run_ours),
        ("conventional", run_conv),
    ]
    for repeat in range(ctx.args.repeats):
        for name, run in alternated(variants, repeat):
            train_s, test_s = run()
            # Process CPU time: the work itself, without the time other processes held the core.
            times[name]["cpu"].append(cpu[0] * train_scale)
            train_s, test_s = train_s * train_scale, test_s * test_scale
            times[name]["train"].append(train_s)
            times[name]["test"].append(test_s)
            times[name]["epoch"].append(train_s + test_s)
        matmul.append(matmul_sample(*mm))
        ctx.note_load()
    ours_epochs, conv_epochs = times["ours"]["epoch"], times["conventional"]["epoch"]
    return {
        "hidden": list(hidden),
        "latent": latent,
        "forward_flops_per_image": linear_flops(ours),
        "ours": {key: summary(values) for key, values in times["ours"].items()},
        "conventional": {key: summary(values) for key, values in times["conventional"].items()},
        "ours_images_per_s": TRAIN_IMAGES / statistics.median(times["ours"]["train"]),
        "conventional_images_per_s": TRAIN_IMAGES / statistics.median(times["conventional"]["train"]),
        "ratio": statistics.median(ours_epochs) / statistics.median(conv_epochs),
        "paired_ratio": summary([a / b for a, b in zip(ours_epochs, conv_epochs, strict=True)]),
        "last_losses_per_image": losses,
        "settings": settings,
    }


# ---- report -------------------------------------------------------------------------------------------------------


def targets(epoch: dict) -> list[tuple[str, bool | None]]:
    if EXAMPLES_MODEL not in epoch["models"]:  # a results.json measured with another model list
        return []
    ratio = epoch["models"][EXAMPLES_MODEL]["ratio"]
    return [(f"{ratio:.3f} x", ratio <= 0.35)]


def render(epoch: dict, results: dict) -> list[str]:
    out = [
        "## 1–2. Epoch time: vae_sweep vs the conventional loop",
        "",
        "One epoch = one pass over the 60 000 training images (batch 128, Adam lr 1e-3) + the whole 10 000-image "
        "test set. *vae_sweep*: `train_epoch` + `evaluate` (eval batch 2000) on the in-memory tensors of "
        "`vae_sweep.core.data.load`. *conventional*: pytorch/examples' vae/main.py loop on the same VAE module: "
        "`torchvision.datasets.MNIST` + `ToTensor()` through `DataLoader(shuffle=True, batch_size=128, "
        "num_workers=0)`, `F.binary_cross_entropy(sigmoid(logits), x, reduction='sum')` + KL, `loss.item()` "
        "per batch, and a test DataLoader (batch 128). Images/s counts training images over the training part.",
        "",
        "vae_sweep's epochs run through its `fit()` (one epoch per call, `NullTracker`), with the optimizer "
        "`vae_sweep.core.optim.build_optimizer` makes from conf/optimizer/adam.yaml, so process settings that `fit` "
        "makes are included; the conventional loop runs with the process defaults, as its own script would. "
        "Here: "
        + "; ".join(
            f"{loop}: {info['optimizer']}, denormals flushed: {info['denormals_flushed']}"
            for loop, info in next(iter(epoch["models"].values())).get("settings", {}).items()
        )
        + ".",
        "",
        "| model | vae_sweep epoch | train img/s | conventional epoch | train img/s | ratio (medians) "
        "| ratio per pair (median, range) |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, m in epoch["models"].items():
        ours, conv, paired = m["ours"]["epoch"], m["conventional"]["epoch"], m["paired_ratio"]
        out.append(
            f"| {label} | {fmt_s(ours['median'])} {spread(ours)} | {m['ours_images_per_s']:,.0f} "
            f"| {fmt_s(conv['median'])} {spread(conv)} | {m['conventional_images_per_s']:,.0f} "
            f"| {m['ratio']:.3f} | {paired['median']:.3f} ({paired['min']:.3f}–{paired['max']:.3f}) |"
        )
    # The section's own count: a later --merge run with other --repeats rewrites results["repeats"].
    epochs = next(iter(epoch["models"].values()))["ours"]["epoch"]["n"]
    out += [
        "",
        f"The {epochs} epochs of each loop are epochs 1…{epochs} of a fresh model. Where "
        "denormals are not flushed, epochs get slower from about the second one on: Adam's moment estimates for "
        "weights whose gradient is mostly zero (MNIST's always-black border pixels) decay into denormal floats, "
        "which the CPU handles slowly (about +35% CPU time per epoch for the default model at steady state, "
        "measured separately; see SPEEDUPS.md), so a long run's later epochs are slower than these. "
        "Epoch 1 → last, vae_sweep / conventional: "
        + "; ".join(
            f"{label.split(',')[-1].strip() if label != EXAMPLES_MODEL else '[400]/20'}: "
            f"{m['ours']['epoch']['samples'][0]:.2f}→{m['ours']['epoch']['samples'][-1]:.2f} / "
            f"{m['conventional']['epoch']['samples'][0]:.2f}→{m['conventional']['epoch']['samples'][-1]:.2f} s"
            for label, m in epoch["models"].items()
        )
        + ".",
        "",
        "Training and test parts of the medians, CPU time of the process (the work without the time other "
        "processes held the core), and the last epoch's losses (a sanity check):",
        "",
        "| model | vae_sweep train / test | conventional train / test | CPU s per epoch (ours / conv) "
        "| last train loss (ours / conv) |",
        "|---|---|---|---|---|",
    ]
    for label, m in epoch["models"].items():
        losses = m["last_losses_per_image"]
        out.append(
            f"| {label} | {m['ours']['train']['median']:.2f} / {m['ours']['test']['median']:.2f} s "
            f"| {m['conventional']['train']['median']:.2f} / {m['conventional']['test']['median']:.2f} s "
            f"| {m['ours']['cpu']['median']:.2f} / {m['conventional']['cpu']['median']:.2f} s "
            f"| {losses['ours']['train']:.1f} / {losses['conventional']['train']:.1f} nats |"
        )
    out.append("")
    return out


SECTION = Section("epoch", measure, render, target=TARGET, targets=targets)
