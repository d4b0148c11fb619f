"""bnn.latent on constructed weights: exact absolute measures, the scale-free measures order a
three-peak, a uniform and a Gaussian layer as the three-peak picture says, and ignore scale; the
mixtures count one component for a Gaussian and three for three peaks."""

import math

import pytest
import torch
from torch import nn

from bnn.latent import (
    MIXTURE_SAMPLE,
    bimodality,
    latent_mass,
    latent_measures,
    median_abs_weight,
    mixture_sample,
    mixture_shape,
    rel_histogram,
    relative_shape,
)
from bnn.layers import BinaryLinear

N = 20_000  # weights per constructed layer


def network(*layers: torch.Tensor) -> nn.Module:
    """Binary linear layers holding the given weights, and a real head that is never measured."""
    binary = []
    for weights in layers:
        layer = BinaryLinear(weights.shape[1], weights.shape[0])
        with torch.no_grad():
            layer.weight.copy_(weights)
        binary.append(layer)
    return nn.Sequential(*binary, nn.Linear(2, 2))


def three_peaks(n: int = N) -> torch.Tensor:
    """AdamBNN's picture: equal mass near -1, 0 and +1."""
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([-1.0, 0.0, 1.0])[torch.randint(0, 3, (n,), generator=g)]
    return (centres + 0.03 * torch.randn(n, generator=g)).view(-1, 100)


def uniform(n: int = N) -> torch.Tensor:
    return torch.empty(n).uniform_(-1, 1, generator=torch.Generator().manual_seed(1)).view(-1, 100)


def gaussian(n: int = N) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(2)).view(-1, 100)


SHAPES = {"three_peaks": three_peaks, "uniform": uniform, "gaussian": gaussian}


def test_absolute_measures_count_exactly():
    model = network(torch.tensor([[0.05, -0.95], [1.5, 0.5]]), torch.tensor([[-0.1, 2.0], [0.3, -1.05]]))
    assert latent_mass(model) == {
        "mass_near_zero": 2 / 8,  # 0.05, -0.1
        "mass_near_one": 2 / 8,  # -0.95, -1.05
        "beyond_clip": 3 / 8,  # 1.5, 2.0, -1.05
        "max_abs_weight": 2.0,
    }
    assert median_abs_weight(model) == pytest.approx(0.5)  # the lower of the two middle values (0.5, 0.95)


def test_relative_measures_order_three_peaks_uniform_and_gaussian():
    shape = {name: relative_shape(network(make())) for name, make in SHAPES.items()}
    peaks, flat, bell = shape["three_peaks"], shape["uniform"], shape["gaussian"]
    # Mass near the layer's extreme: piled there, spread evenly, or thin tails.
    assert (
        peaks["rel_mass_near_extreme"] > 0.3 > flat["rel_mass_near_extreme"] > bell["rel_mass_near_extreme"]
    )
    assert flat["rel_mass_near_extreme"] == pytest.approx(0.1, abs=0.01)
    # Mass near 0: a peak, a bell, then the flat law (exactly NEAR of it).
    assert peaks["rel_mass_near_zero"] > 0.3 > bell["rel_mass_near_zero"] > flat["rel_mass_near_zero"]
    assert flat["rel_mass_near_zero"] == pytest.approx(0.1, abs=0.01)
    # Two modes of |w| (0 and the extreme) against one: Sarle's reference values.
    assert peaks["bimodality"] > 0.8
    assert flat["bimodality"] == pytest.approx(5 / 9, abs=0.01)
    assert bell["bimodality"] == pytest.approx(0.514, abs=0.01)  # half-normal


@pytest.mark.parametrize("make", SHAPES.values(), ids=SHAPES.keys())
def test_relative_measures_do_not_depend_on_scale(make):
    weights = make()
    big, small = latent_measures(network(weights)), latent_measures(network(weights * 0.01))
    for key in ("rel_mass_near_zero", "rel_mass_near_extreme", "bimodality", "bic_gain_3v1"):
        assert small[key] == pytest.approx(big[key], abs=1e-4), key
    assert small["mixture_components"] == big["mixture_components"]
    assert small["mass_near_zero"] == 1.0 and small["mass_near_one"] == small["beyond_clip"] == 0.0
    assert small["max_abs_weight"] == pytest.approx(big["max_abs_weight"] * 0.01)


def test_each_layer_is_normalised_by_its_own_scale():
    """A layer a hundred times smaller still counts its own extreme: the pooled measures are the
    one-layer ones, where one global scale would see the small layer as mass near 0."""
    one = relative_shape(network(uniform()))
    two = relative_shape(network(uniform(), uniform() * 0.01))
    for key, value in one.items():
        assert two[key] == pytest.approx(value, abs=1e-3), key


def test_bimodality_of_two_point_masses_is_one_and_of_a_constant_nan():
    assert bimodality(torch.tensor([0.0, 1.0] * 500)) == pytest.approx(1.0, abs=0.01)
    assert math.isnan(bimodality(torch.ones(10)))
    with pytest.raises(ValueError, match="at least 4"):
        bimodality(torch.tensor([0.0, 1.0, 2.0]))


def test_rel_histogram_covers_every_weight_with_outliers_in_the_end_bins():
    weights = uniform()
    weights[0, 0] = 100.0  # far beyond the layer's q99: clipped to the last bin
    histogram = rel_histogram(network(weights), bins=31)
    assert len(histogram["counts"]) == 31 and len(histogram["edges"]) == 32
    assert histogram["edges"][0] == pytest.approx(-1.5) and histogram["edges"][-1] == pytest.approx(1.5)
    assert sum(histogram["counts"]) == N
    assert histogram["counts"][-1] == 1
    # Scale-free: the same histogram at a hundredth of the scale.
    assert rel_histogram(network(weights * 0.01), bins=31)["counts"] == histogram["counts"]


def test_a_model_without_binary_layers_is_refused():
    with pytest.raises(ValueError, match="no binary layers"):
        latent_measures(nn.Linear(2, 2))


def test_mixtures_count_one_component_for_a_gaussian_and_three_for_three_peaks():
    bell, peaks = mixture_shape(network(gaussian())), mixture_shape(network(three_peaks()))
    assert bell["mixture_components"] == 1 and bell["bic_gain_3v1"] < 0
    assert peaks["mixture_components"] == 3 and peaks["bic_gain_3v1"] > 2


def test_a_flat_top_also_takes_three_components_but_gains_far_less_than_three_peaks():
    """The docstring's caveat: BIC counts components, not modes (the Kaiming init is uniform)."""
    flat = mixture_shape(network(uniform()))
    assert flat["mixture_components"] == 3
    assert 0.1 < flat["bic_gain_3v1"] < 0.3 < 2 < mixture_shape(network(three_peaks()))["bic_gain_3v1"]


def test_the_mixture_sample_is_evenly_spaced_and_bounded():
    weights = torch.arange(3 * N, dtype=torch.float32).view(-1, 100)
    sample = mixture_sample(network(weights[:200], weights[200:]))  # two layers, pooled in order
    assert len(sample) == MIXTURE_SAMPLE
    assert sample[0] == 0 and sample[-1] == 3 * N - 1
    steps = sample[1:] - sample[:-1]
    assert steps.min() >= 2 and steps.max() <= 4  # a stride of 3, rounded
    assert len(mixture_sample(network(gaussian(1000)))) == 1000  # small sets are taken whole


def test_equal_weights_have_no_mixture_shape():
    shape = mixture_shape(network(torch.full((10, 10), 0.5)))
    assert math.isnan(shape["mixture_components"]) and math.isnan(shape["bic_gain_3v1"])
