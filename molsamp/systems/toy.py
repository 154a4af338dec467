"""Analytic systems with known equilibrium answers: harmonic oscillator, double well, LJ fluid."""

from __future__ import annotations

import math

import torch

from molsamp.potentials import DoubleWell, HarmonicPotential, LennardJones
from molsamp.system import State, System, check_walker_count
from molsamp.thermo import maxwell_boltzmann_velocities, remove_center_of_mass_velocity

ARGON_EPSILON = 0.996  # kJ/mol
ARGON_SIGMA = 0.3405  # nm
ARGON_MASS = 39.948  # amu


def _start_state(
    positions: torch.Tensor, masses: torch.Tensor, temperature: float, seed: int, cell=None
) -> State:
    generator = torch.Generator(device=positions.device).manual_seed(seed)
    velocities = maxwell_boltzmann_velocities(
        masses, temperature, positions.shape[0], generator, dtype=positions.dtype
    )
    return State(positions, velocities, cell)


def harmonic_oscillator(
    n_atoms: int = 1,
    spring_constant: float = 1000.0,
    mass: float = 12.0,
    temperature: float = 300.0,
    n_walkers: int = 1,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> tuple[System, State, HarmonicPotential]:
    """Independent 3D harmonic oscillators: ⟨x²⟩ = kT/k and ⟨v²⟩ = kT/m per component.

    spring_constant in kJ/mol/nm², mass in amu, temperature in K (for the starting velocities).
    """
    system = System(torch.full((n_atoms,), 6), torch.full((n_atoms,), float(mass)))
    positions = torch.zeros(check_walker_count(n_walkers), n_atoms, 3, dtype=dtype, device=device)
    state = _start_state(positions, system.masses, temperature, seed)
    return system, state, HarmonicPotential(spring_constant)


def double_well(
    n_atoms: int = 1,
    barrier: float = 5.0,
    minimum: float = 0.1,
    transverse_spring_constant: float = 1000.0,
    mass: float = 12.0,
    temperature: float = 300.0,
    n_walkers: int = 1,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> tuple[System, State, DoubleWell]:
    """Particles in a double well along x (barrier kJ/mol, minima at ±minimum nm)."""
    system = System(torch.full((n_atoms,), 6), torch.full((n_atoms,), float(mass)))
    positions = torch.zeros(check_walker_count(n_walkers), n_atoms, 3, dtype=dtype, device=device)
    positions[..., 0] = minimum
    state = _start_state(positions, system.masses, temperature, seed)
    return system, state, DoubleWell(barrier, minimum, transverse_spring_constant)


def lennard_jones_fluid(
    n_cells: int = 3,
    reduced_density: float = 0.8,
    temperature: float = 120.0,
    cutoff_sigma: float = 2.5,
    n_walkers: int = 1,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> tuple[System, State, LennardJones]:
    """Liquid argon: 4·n_cells³ atoms on an fcc lattice in a cubic periodic box.

    reduced_density ρσ³; cutoff in units of σ; starting velocities at ``temperature`` (K)
    with zero total momentum.
    """
    if n_cells < 1:
        raise ValueError(f"n_cells must be >= 1, got {n_cells}")
    n_atoms = 4 * n_cells**3
    box = ARGON_SIGMA * (n_atoms / reduced_density) ** (1.0 / 3.0)
    basis = torch.tensor([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]], dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(*[torch.arange(n_cells)] * 3, indexing="ij"), -1).reshape(-1, 1, 3)
    lattice = ((grid + basis) / n_cells * box).reshape(-1, 3)
    system = System(
        torch.full((n_atoms,), 18),
        torch.full((n_atoms,), ARGON_MASS),
        cell=torch.eye(3, dtype=torch.float64) * box,
        pbc=(True, True, True),
        topology=_single_element_topology(n_atoms, "AR", "Ar"),
    )
    positions = lattice.to(dtype=dtype, device=device).expand(check_walker_count(n_walkers), -1, -1).clone()
    state = _start_state(positions, system.masses, temperature, seed, cell=system.cell)
    state = state.replace(velocities=remove_center_of_mass_velocity(state.velocities, system.masses))
    cutoff = min(cutoff_sigma * ARGON_SIGMA, 0.5 * box * (1 - 1e-9))
    if not math.isclose(cutoff, cutoff_sigma * ARGON_SIGMA):
        raise ValueError(
            f"cutoff {cutoff_sigma}σ exceeds half the box ({box:.4g} nm); use more cells or a smaller cutoff"
        )
    return system, state, LennardJones(ARGON_EPSILON, ARGON_SIGMA, cutoff, periodic=True)


def _single_element_topology(n_atoms: int, residue: str, symbol: str):
    import mdtraj

    topology = mdtraj.Topology()
    chain = topology.add_chain()
    element = mdtraj.element.get_by_symbol(symbol)
    for _ in range(n_atoms):
        topology.add_atom(symbol, element, topology.add_residue(residue, chain))
    return topology
