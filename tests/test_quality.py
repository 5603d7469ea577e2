import math

import torch

from vae_sweep import names
from vae_sweep.core.models.base import Posterior
from vae_sweep.core.models.priors import standard_kl_per_dim
from vae_sweep.evaluation import quality


def test_a_constant_mean_with_another_variance_than_the_prior_is_inactive_but_not_the_prior():
    images = 50
    # Dimension 0 is the prior itself; dimension 1 has a constant mean 0 but variance 0.1: KL = (0.1 - 1 - ln 0.1) / 2.
    posterior = Posterior(torch.zeros(images, 2), torch.tensor([[0.0, math.log(0.1)]]).repeat(images, 1))
    kl = standard_kl_per_dim(posterior).mean(0)
    usage = quality.latent_usage(posterior, kl)
    assert usage[names.Q_ACTIVE_UNITS] == 0
    assert usage[names.Q_PRIOR_DIMS] == 1
    assert math.isclose(usage[names.Q_KL_MAX_DIM], (0.1 - 1 - math.log(0.1)) / 2, rel_tol=1e-5)
