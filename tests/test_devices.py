import pytest
import torch

from molsamp.devices import usable_device
from molsamp.interop.ase import MolsampCalculator
from molsamp.interop.openmm import openmm_force
from molsamp.potentials import HarmonicPotential


def test_cpu_is_usable_and_a_bad_name_is_refused_by_its_field():
    assert usable_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match=r"--device 'gpu0' is not a torch device.*use 'cpu' or 'cuda'"):
        usable_device("gpu0", "--device")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_cuda_without_cuda_says_so_instead_of_an_assertion():
    with pytest.raises(ValueError, match=r"device cuda:0 needs CUDA.*use 'cpu'"):
        usable_device("cuda:0")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cuda_index_past_the_last_device_is_refused():
    assert usable_device("cuda") == torch.device("cuda")
    with pytest.raises(ValueError, match="numbered from 0"):
        usable_device(f"cuda:{torch.cuda.device_count()}")


def test_calculator_force_and_train_command_check_their_device(tmp_path, capsys):
    from molsamp.cli import main

    with pytest.raises(ValueError, match="device 'gpu0' is not a torch device"):
        MolsampCalculator(HarmonicPotential(1.0), device="gpu0")
    with pytest.raises(ValueError, match="device 'gpu0' is not a torch device"):
        openmm_force(HarmonicPotential(1.0), device="gpu0")
    args = ["train", "--alanine-frames", "10", "--device", "gpu0", "--output", str(tmp_path / "m.pt")]
    assert main([*args, "--quiet"]) == 2
    assert "--device 'gpu0' is not a torch device" in capsys.readouterr().err
