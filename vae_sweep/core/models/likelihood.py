"""-log p(x|z) of the Bernoulli decoder: binary cross-entropy with logits, summed over each image's pixels.

torch's binary_cross_entropy_with_logits goes through log_sigmoid, whose log1p some CPUs' vector math computes far
slower than log: 8.5 ns an element against 1.0-1.8 on the AMD EPYC of 2026-12-06 (benchmarks/SPEEDUPS.md), which made
it half of a small model's epoch and over a third of the IWAE bound's time. Here softplus(l) = max(l, 0) +
log(1 + exp(-|l|)) takes the plain log: 1 + exp(-|l|) lies in (1, 2], so what log1p would add is below float32's
resolution at 1 (< 6e-8 nats a pixel), the size of the rounding of the sum over pixels anyway.
"""

from __future__ import annotations

import torch
from torch import Tensor


class _BernoulliNLL(torch.autograd.Function):
    """Per-image sums in the forward pass; the backward is the closed form sigmoid(l) - x, so autograd keeps no
    intermediate tensors of the forward."""

    @staticmethod
    def forward(ctx, logits: Tensor, x: Tensor) -> Tensor:
        ctx.save_for_backward(logits, x)
        softplus = logits.abs().neg_().exp_().add_(1).log_().add_(logits.clamp_min(0))
        return softplus.addcmul_(x, logits, value=-1).sum(-1)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        logits, x = ctx.saved_tensors
        grad = grad.unsqueeze(-1)
        grad_logits = torch.sigmoid(logits).sub_(x).mul_(grad) if ctx.needs_input_grad[0] else None
        grad_x = (-logits * grad).sum_to_size(x.shape) if ctx.needs_input_grad[1] else None
        return grad_logits, grad_x


def bernoulli_nll(logits: Tensor, x: Tensor) -> Tensor:
    """-log p(x|z) under Bernoulli(sigmoid(logits)), summed over the last axis: one value per image (per sample and
    image for logits of shape (samples, images, pixels)). x holds values in [0, 1], grey levels too (then it is a
    cross-entropy, not a likelihood), and broadcasts against logits."""
    return _BernoulliNLL.apply(logits, x)
