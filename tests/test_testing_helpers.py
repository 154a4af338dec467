import numpy as np
import pytest

from molsamp.testing import assert_mean_close, effective_sample_size, integrated_autocorrelation_time


def test_autocorrelation_time_of_an_ar1_chain():
    rng = np.random.default_rng(0)
    rho, x = 0.9, np.zeros(200_000)
    for t in range(1, x.size):
        x[t] = rho * x[t - 1] + rng.normal()
    assert integrated_autocorrelation_time(x) == pytest.approx((1 + rho) / (1 - rho), rel=0.1)


def test_a_chain_that_never_moves_has_no_effective_samples():
    constant = np.zeros((100, 4))
    assert effective_sample_size(constant) == 0.0
    with pytest.raises(AssertionError):
        assert_mean_close(constant, 0.0)
