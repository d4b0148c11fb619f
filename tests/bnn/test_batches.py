import pytest
import torch
import torch.nn.functional as F

from bnn.batches import Augment, iterate_batches, normalize, random_crop, random_hflip
from bnn.data import ImageData


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _pattern(n: int, size: int = 4) -> torch.Tensor:
    """n copies of a 2-channel image whose pixels are all distinct and nonzero."""
    one = torch.arange(1, 2 * size * size + 1, dtype=torch.uint8).view(1, 2, size, size)
    return one.repeat(n, 1, 1, 1)


def test_normalize_per_channel():
    images = torch.tensor([0, 255], dtype=torch.uint8).view(1, 2, 1, 1).repeat(3, 1, 2, 2)
    out = normalize(images, torch.tensor([0.5, 0.5]), torch.tensor([0.25, 0.5]))
    assert out.dtype == torch.float32 and out.shape == images.shape
    assert torch.allclose(out[:, 0], torch.tensor(-2.0)) and torch.allclose(out[:, 1], torch.tensor(1.0))


def test_random_crop_without_padding_is_identity():
    x = _pattern(5)
    assert torch.equal(random_crop(x, 0, _gen(0)), x)


def test_random_crop_shifts_content_within_padding():
    x, padding = _pattern(64), 2
    out = random_crop(x, padding, _gen(0))
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = F.pad(x[0], (padding,) * 4)
    windows = {
        (top - padding, left - padding): padded[:, top : top + 4, left : left + 4]
        for top in range(2 * padding + 1)
        for left in range(2 * padding + 1)
    }
    shifts = set()
    for sample in out:
        matches = [shift for shift, window in windows.items() if torch.equal(sample, window)]
        assert len(matches) == 1
        shifts.add(matches[0])
    assert len(shifts) > 10
    # Shift (dy, dx) = (1, 0): the crop starts one row lower, so row r shows input row r + 1 and the
    # last row is padding.
    down = windows[(1, 0)]
    assert torch.equal(down[:, :3], x[0, :, 1:]) and down[:, 3].eq(0).all()
    assert torch.equal(random_crop(x, padding, _gen(0)), out)


def test_random_hflip_flips_exactly_the_chosen_samples():
    x = _pattern(32)
    out = random_hflip(x, _gen(1))
    chosen = torch.rand(32, generator=_gen(1)) < 0.5
    for i in range(32):
        expected = x[i].flip(-1) if chosen[i] else x[i]
        assert torch.equal(out[i], expected)
    assert 0 < int(chosen.sum()) < 32


def test_augment_off_is_a_no_op_that_draws_nothing():
    x, gen = _pattern(4), _gen(0)
    state = gen.get_state()
    assert Augment()(x, gen) is x
    assert torch.equal(gen.get_state(), state)
    with pytest.raises(ValueError, match="crop_padding"):
        Augment(crop_padding=-1)


def test_augment_is_reproducible():
    x, augment = _pattern(16), Augment(crop_padding=1, hflip=True)
    assert torch.equal(augment(x, _gen(3)), augment(x, _gen(3)))
    assert not torch.equal(augment(x, _gen(3)), x)


def _data(n: int) -> ImageData:
    images = torch.randint(0, 256, (n, 3, 4, 4), generator=_gen(0), dtype=torch.uint8)
    return ImageData(images, torch.arange(n))


def _epoch(data: ImageData, **kwargs) -> list[tuple[torch.Tensor, torch.Tensor]]:
    stats = {"mean": torch.full((3,), 0.5), "std": torch.full((3,), 0.25)}
    return list(iterate_batches(data, **stats, **kwargs))


def test_iterate_batches_covers_each_sample_once():
    data = _data(103)
    batches = _epoch(data, batch_size=10, shuffle=True, generator=_gen(0))
    assert [len(y) for _, y in batches] == [10] * 10 + [3]
    seen = torch.cat([y for _, y in batches])
    assert sorted(seen.tolist()) == list(range(103)) and seen.tolist() != list(range(103))
    for x, y in batches:
        assert x.dtype == torch.float32 and x.shape == (len(y), 3, 4, 4)
        assert torch.allclose(x, normalize(data.images[y], torch.full((3,), 0.5), torch.full((3,), 0.25)))
    dropped = _epoch(data, batch_size=10, shuffle=True, generator=_gen(0), drop_last=True)
    assert [len(y) for _, y in dropped] == [10] * 10


def test_iterate_batches_without_shuffle_keeps_order():
    batches = _epoch(_data(7), batch_size=3, shuffle=False)
    assert [y.tolist() for _, y in batches] == [[0, 1, 2], [3, 4, 5], [6]]


def test_iterate_batches_reproducible_with_seeded_generator():
    data, augment = _data(50), Augment(crop_padding=1, hflip=True)

    def run(seed: int):
        return _epoch(data, batch_size=16, shuffle=True, generator=_gen(seed), augment=augment)

    first, again, other = run(4), run(4), run(5)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(first, other, strict=True))
