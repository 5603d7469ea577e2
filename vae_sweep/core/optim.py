"""Optimizers from the `optimizer` config node, and a cheaper way to step a fused Adam."""

from __future__ import annotations

import functools
import sys
from typing import Callable

import torch
from torch import nn
from torch.optim.adam import adam

from vae_sweep import schedule

OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD, "adagrad": torch.optim.Adagrad}
# Optimizer methods that torch wraps in torch._disable_dynamo: the first call of each imports torch._dynamo (~1.9 s
# here, a quarter of a small job's wall time) only to build the version that keeps torch.compile out of it.
_DYNAMO_DISABLED = ("add_param_group", "zero_grad", "state_dict", "load_state_dict")


def _skip_the_dynamo_import() -> None:
    """Hand each of those methods itself as its dynamo-disabled version, which is what that version does outside
    torch.compile; vae_sweep compiles nothing. Once torch._dynamo is loaded anyway, torch's own path costs nothing."""
    if "torch._dynamo" in sys.modules:
        return
    for name in _DYNAMO_DISABLED:
        plain = getattr(getattr(torch.optim.Optimizer, name), "__wrapped__", None)
        if plain is not None and getattr(plain, "__dynamo_disable", None) is None:
            setattr(plain, "__dynamo_disable", plain)


def build_optimizer(model: nn.Module, optimizer_cfg) -> torch.optim.Optimizer:
    _skip_the_dynamo_import()
    name = optimizer_cfg.name.value
    # Fused kernels update all parameters in one pass (~0.8x the time here); deterministic run to run, though not
    # bitwise equal to the per-tensor loop (differences ~1e-7), hence a setting.
    options = {"lr": optimizer_cfg.lr, "weight_decay": optimizer_cfg.weight_decay, "fused": optimizer_cfg.fused}
    if name == "sgd":
        options["momentum"] = optimizer_cfg.momentum
    if name == "adam":
        options["eps"] = optimizer_cfg.eps
    return OPTIMIZERS[name](model.parameters(), **options)


def lr_schedule(optimizer_cfg) -> Callable[[int], float] | None:
    """Epoch -> learning rate for the `optimizer` node's schedule; None keeps the optimizer's lr throughout."""
    if optimizer_cfg.schedule.value == schedule.BURDA:
        return functools.partial(schedule.burda_lr, lr=optimizer_cfg.lr, pass_scale=optimizer_cfg.schedule_pass_scale)
    return None


def _plain_fused_adam(optimizer: torch.optim.Optimizer) -> bool:
    """A fused Adam with one parameter group, no hooks, and no option the functional call below leaves out."""
    if type(optimizer) is not torch.optim.Adam or len(optimizer.param_groups) != 1:
        return False
    group = optimizer.param_groups[0]
    unsupported = ("amsgrad", "capturable", "differentiable", "decoupled_weight_decay")
    hooks = [getattr(optimizer, name, None) for name in ("_optimizer_step_pre_hooks", "_optimizer_step_post_hooks")]
    return bool(group["fused"]) and not any(group.get(option) for option in unsupported) and not any(hooks)


def _adam_moments(optimizer: torch.optim.Optimizer, params: list[torch.Tensor]) -> dict[str, list[torch.Tensor]]:
    """Each parameter's Adam state (step, exp_avg, exp_avg_sq) in parameter order, created as Adam's first fused step
    creates it when no parameter has any (a resumed optimizer has them all); {} when only some have it."""
    states = [optimizer.state.get(param) for param in params]  # state is a defaultdict: [] would add {}
    if not any(states):
        states = [
            {
                "step": torch.zeros((), dtype=torch.float32, device=param.device),  # a fused Adam counts in float32
                "exp_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
                "exp_avg_sq": torch.zeros_like(param, memory_format=torch.preserve_format),
            }
            for param in params
        ]
        for param, state in zip(params, states, strict=True):
            optimizer.state[param] = state
    if not all(states):
        return {}
    return {key: [state[key] for state in states] for key in ("exp_avg", "exp_avg_sq", "step")}


def stepper(optimizer: torch.optim.Optimizer) -> Callable[[], None]:
    """A function that does `optimizer.step()`. For a fused Adam it calls torch.optim.adam.adam, the functional
    form that Adam.step ends in, on the moments looked up once instead of at every step.

    Optimizer.step's work around the fused kernel (profiler label, hook checks, a state lookup per parameter, a
    graph-capture check) takes ~0.1 ms a call: 2-3% of a batch of the models here on a CPU; and its first call imports
    torch._dynamo (~1.9 s). The parameters and the optimizer's state come out bitwise the same as with
    optimizer.step().
    """
    if not _plain_fused_adam(optimizer):
        return optimizer.step
    group = optimizer.param_groups[0]
    params = group["params"]
    moments: dict[str, list[torch.Tensor]] = {}

    def step() -> None:
        grads = [param.grad for param in params]
        complete = all(grad is not None for grad in grads)
        if complete and not moments:
            moments.update(_adam_moments(optimizer, params))
        if not (complete and moments):
            optimizer.step()  # skips parameters without a gradient
            return
        beta1, beta2 = group["betas"]
        with torch.no_grad():
            adam(
                params,
                grads,
                moments["exp_avg"],
                moments["exp_avg_sq"],
                [],
                moments["step"],
                fused=True,
                amsgrad=False,
                beta1=beta1,
                beta2=beta2,
                lr=group["lr"],
                weight_decay=group["weight_decay"],
                eps=group["eps"],
                maximize=group["maximize"],
            )

    return step
