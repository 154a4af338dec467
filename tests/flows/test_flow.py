"""Spline coupling flows: exact inverse, exact log-det, periodic splines, dtype, context."""

import math

import pytest
import torch

from molsamp.flows.flow import CouplingSplineFlow, wrap


def perturbed_flow(dim=4, circular=(False, True, False, True), context_dim=0, dtype=torch.float64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    flow = CouplingSplineFlow(
        dim,
        torch.tensor(circular),
        n_couplings=4,
        hidden=16,
        bins=6,
        tail_bound=3.0,
        context_dim=context_dim,
        generator=generator,
        dtype=dtype,
    )
    with torch.no_grad():  # leave the identity initialisation so the tests see real splines
        for parameter in flow.parameters():
            parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator, dtype=dtype))
    return flow


def random_inputs(n, flow, seed=1):
    generator = torch.Generator().manual_seed(seed)
    x = 2.0 * torch.randn(n, flow.dim, generator=generator, dtype=flow.dtype)  # some beyond the tails
    return torch.where(flow.circular, wrap(x), x)


def test_identity_at_initialisation():
    flow = CouplingSplineFlow(6, None, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = torch.randn(5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    u, log_det = flow(x)
    torch.testing.assert_close(u, x, atol=1e-10, rtol=0)
    torch.testing.assert_close(log_det, torch.zeros(5, dtype=torch.float64), atol=1e-10, rtol=0)


def test_inverse_and_log_det_are_exact():
    flow = perturbed_flow()
    x = random_inputs(64, flow)
    u, log_det = flow(x)
    assert not torch.allclose(u, x, atol=1e-3)
    back, inverse_log_det = flow.inverse(u)
    torch.testing.assert_close(back, x, atol=1e-8, rtol=0)
    torch.testing.assert_close(log_det, -inverse_log_det, atol=1e-9, rtol=1e-9)
    for row in x[:6]:
        jacobian = torch.autograd.functional.jacobian(lambda v: flow(v[None])[0][0], row)
        expected = flow(row[None])[1][0]
        assert torch.linalg.slogdet(jacobian)[1].item() == pytest.approx(expected.item(), abs=1e-8)


def test_circular_coordinates_stay_on_the_circle_and_the_map_is_smooth_there():
    flow = perturbed_flow(dim=2, circular=(True, False))
    eps = 1e-7
    edge = torch.tensor([[-math.pi + eps, 0.3], [math.pi - eps, 0.3]], dtype=torch.float64)
    u, log_det = flow(edge)
    assert (u[:, 0] >= -math.pi).all() and (u[:, 0] < math.pi).all()
    gap = wrap(u[1, 0] - u[0, 0]).abs()
    assert gap < 1e-5  # the two sides of the seam meet: continuous on the circle
    assert log_det[0].item() == pytest.approx(log_det[1].item(), abs=1e-5)  # tied end slopes


def test_density_integrates_to_one_on_cylinder():
    flow = perturbed_flow(dim=2, circular=(True, False))
    angles = torch.linspace(-math.pi, math.pi, 401, dtype=torch.float64)[:-1]
    reals = torch.linspace(-12, 12, 801, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(angles, reals, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        density = flow.log_prob(grid).exp()
    integral = density.sum() * (2 * math.pi / 400) * (24 / 800)
    assert integral.item() == pytest.approx(1.0, abs=2e-3)


def test_float64_sampling_without_changing_the_global_dtype():
    assert torch.get_default_dtype() == torch.float32
    flow = perturbed_flow()
    x, log_q = flow.sample(100, torch.Generator().manual_seed(2))
    assert x.dtype == torch.float64 and log_q.dtype == torch.float64
    assert torch.get_default_dtype() == torch.float32
    torch.testing.assert_close(flow.log_prob(x), log_q, atol=1e-8, rtol=0)
    assert (x[:, flow.circular].abs() <= math.pi).all()
    again, _ = flow.sample(100, torch.Generator().manual_seed(2))
    assert torch.equal(x, again)  # the caller's generator is the only source of randomness
    flow32 = perturbed_flow(dtype=torch.float32)
    assert flow32.sample(3, torch.Generator().manual_seed(0))[0].dtype == torch.float32


def test_conditional_flow_depends_on_context_and_checks_it():
    flow = perturbed_flow(context_dim=2)
    x = random_inputs(10, flow)
    a = torch.zeros(10, 2, dtype=torch.float64)
    b = torch.ones(10, 2, dtype=torch.float64)
    assert not torch.allclose(flow.log_prob(x, a), flow.log_prob(x, b))
    u, _ = flow(x, b)
    torch.testing.assert_close(flow.inverse(u, b)[0], x, atol=1e-9, rtol=0)
    samples, log_q = flow.sample(10, torch.Generator().manual_seed(3), context=b[0])
    torch.testing.assert_close(flow.log_prob(samples, b), log_q, atol=1e-8, rtol=0)
    with pytest.raises(ValueError, match="context must be"):
        flow.log_prob(x)


def test_maximum_likelihood_learns_a_von_mises_times_gaussian():
    """A circular and a real coordinate: the trained flow's moments match the target."""
    generator = torch.Generator().manual_seed(4)
    n = 4000
    # von Mises(μ=2.5, κ=4) by rejection from uniform, wrapped across the seam at ±π
    proposals = (2 * torch.rand(4 * n, generator=generator, dtype=torch.float64) - 1) * math.pi
    accept = torch.rand(4 * n, generator=generator, dtype=torch.float64) < torch.exp(
        4 * (torch.cos(proposals - 2.5) - 1)
    )
    angles = proposals[accept][:n]
    reals = 0.5 * torch.randn(angles.shape[0], generator=generator, dtype=torch.float64) + torch.sin(angles)
    data = torch.stack([angles, reals], 1)
    flow = CouplingSplineFlow(
        2, torch.tensor([True, False]), n_couplings=4, hidden=32, generator=generator, dtype=torch.float64
    )
    optimizer = torch.optim.Adam(flow.parameters(), lr=5e-3)
    for _ in range(300):
        batch = data[torch.randint(0, data.shape[0], (256,), generator=generator)]
        loss = -flow.log_prob(batch).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        samples, _ = flow.sample(4000, generator)
    resultant = torch.exp(1j * samples[:, 0]).mean()
    assert abs(math.remainder(torch.angle(resultant).item() - 2.5, 2 * math.pi)) < 0.1
    assert resultant.abs().item() == pytest.approx(torch.exp(1j * angles).mean().abs().item(), abs=0.05)
    assert samples[:, 1].std().item() == pytest.approx(reals.std().item(), rel=0.1)
    assert -flow.log_prob(data).mean().item() < 2.2  # entropy of the target ≈ 1.45 + 0.73


def test_non_finite_inputs_give_non_finite_density_not_an_error():
    flow = perturbed_flow()
    x = random_inputs(4, flow)
    x[1, 0] = float("nan")
    x[2, 1] = float("nan")  # a circular coordinate
    x[3, 2] = float("inf")
    log_q = flow.log_prob(x)
    assert torch.isfinite(log_q[0]) and not torch.isfinite(log_q[1:]).any()
