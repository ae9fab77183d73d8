"""Objectives: composition, activation, spatial-channel cosine, tension (exact vs linearized),
diversity, closeness to a seed, redirected ReLU, and gradient ascent on ``evaluate``'s forward
raising what the objective measures (the engine's step without Lightning)."""

from __future__ import annotations

import pytest
import torch
from tolerances import NETWORK, assert_reordered
from torch import nn

from mti_lightning.core.attribution import energies
from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.evaluation import evaluate
from mti_lightning.core.features import build_readout, parse_feature
from mti_lightning.core.models import LoadedModel
from mti_lightning.core.objectives import (
    Activation,
    CosineDirection,
    Diversity,
    Evaluation,
    L2ToSeed,
    SpatialChannelCosine,
    Sum,
    Tension,
    smooth_min,
)
from mti_lightning.core.parameterizations import FourierImage
from mti_lightning.core.relu import redirect_relus, redirected_relu
from mti_lightning.core.token_grid import SpatialView
from mti_lightning.core.transforms import TransformConfig, identity_draws, sample_draws

PLAIN = TransformConfig(scale=(1.0, 1.0), jitter=0.0, gaussian_noise=0.0)


def _ev(acts: dict[str, torch.Tensor], values: torch.Tensor, images=None) -> Evaluation:
    k = values.shape[0]
    images = torch.zeros(k, 3, 4, 4) if images is None else images
    return Evaluation(acts=acts, values=values, images=images)


def _piecewise_linear(wrap) -> LoadedModel:
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 4, 3, padding=1)
    )
    return wrap(net)


def _smooth(wrap) -> LoadedModel:
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.GELU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.SiLU(),
        nn.Conv2d(8, 4, 3, padding=1),
    )
    return wrap(net)


def _readout(lm: LoadedModel, *texts: str):
    return build_readout(lm.model, lm.input_size, [parse_feature(t) for t in texts])


# composition -------------------------------------------------------------------------------


def test_composition_sums_and_scales() -> None:
    seeds = torch.zeros(2, 3, 4, 4)
    images = torch.full((2, 3, 4, 4), 0.5)
    ev = _ev({}, torch.tensor([[1.0, 3.0], [-2.0, -4.0]]), images)
    act, l2 = Activation(), L2ToSeed(seeds)
    a, b = act.score(ev), l2.score(ev)
    torch.testing.assert_close(a, torch.tensor([2.0, -3.0]))
    torch.testing.assert_close(b, torch.tensor([-0.25, -0.25]))
    torch.testing.assert_close((act + l2).score(ev), a + b)
    torch.testing.assert_close((act - l2).score(ev), a - b)
    torch.testing.assert_close((2.5 * act).score(ev), 2.5 * a)
    torch.testing.assert_close((act * 2.5).score(ev), 2.5 * a)
    torch.testing.assert_close((-act).score(ev), -a)
    torch.testing.assert_close((act + 3 * l2 - act).score(ev), 3 * b)
    # terms are modules: callable, and the targets of nested terms move with the sum
    total = act + 0.5 * l2 + Activation(-1.0)
    assert isinstance(total, Sum) and len(total.terms) == 3
    torch.testing.assert_close(total(ev), a + 0.5 * b - a)
    total = total.double()
    assert total.terms[1].term.seeds.dtype == torch.float64


def test_composition_layers() -> None:
    t = torch.ones(1, 2, 3, 3)
    score = SpatialChannelCosine("a", t) + 0.1 * Diversity("b") - L2ToSeed(t[:, :1])
    assert score.layers() == {"a", "b"}
    assert (score + Activation()).layers() == {"a", "b"}
    assert (-Tension("c")).layers() == {"c"}


def _ascend(lm, param, objective, readout, steps, lr, draws, transform=None) -> list[float]:
    """Adam on ``-objective`` through ``evaluate``, the engine's step without Lightning;
    the losses."""
    transform = transform or TransformConfig()
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(param.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        ev = evaluate(
            lm, param(), objective, readout, sample_draws(transform, draws, gen), transform
        )
        loss = -objective(ev).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    return losses


def test_activation_sign() -> None:
    ev = _ev({}, torch.tensor([[1.0, 3.0], [-2.0, -4.0]]))
    torch.testing.assert_close(Activation(1.0).score(ev), torch.tensor([2.0, -3.0]))
    torch.testing.assert_close(Activation(-1.0).score(ev), torch.tensor([-2.0, 3.0]))
    per_image = Activation(torch.tensor([1.0, -1.0]))
    torch.testing.assert_close(per_image.score(ev), torch.tensor([2.0, 3.0]))


# spatial-channel cosine --------------------------------------------------------------------


def _map_ev(a: torch.Tensor, layer: str = "L") -> Evaluation:
    """Evaluation of K images with one draw each holding maps ``a (K, C, H, W)``."""
    return _ev({layer: a}, torch.zeros(a.shape[0], 1))


def test_spatial_channel_cosine_is_maximal_at_the_target() -> None:
    gen = torch.Generator().manual_seed(0)
    target = torch.rand(2, 6, 5, 5, generator=gen)
    obj = SpatialChannelCosine("L", target, power=2.0)
    best = obj.score(_map_ev(target))
    assert_reordered(best, target.flatten(1).square().sum(1))
    for noise in (0.05, 0.3, 1.0):
        other = target + noise * torch.randn(target.shape, generator=gen)
        other = other * (target.flatten(1).norm(dim=1) / other.flatten(1).norm(dim=1)).view(
            -1, 1, 1, 1
        )  # same norm as the target: only the direction differs
        assert (obj.score(_map_ev(other)) < best).all()
    # draws average: D copies of the target score the same as one
    ev = _ev({"L": target.repeat_interleave(3, 0)}, torch.zeros(2, 3))
    torch.testing.assert_close(obj.score(ev), best)


def test_spatial_channel_cosine_respects_bounds() -> None:
    gen = torch.Generator().manual_seed(1)
    target = torch.rand(2, 4, 6, 6, generator=gen)
    bounds = torch.tensor([[1, 4, 0, 3], [2, 6, 2, 5]])
    obj = SpatialChannelCosine("L", target, bounds)
    a = torch.rand(2, 4, 6, 6, generator=gen)
    inside = torch.zeros(2, 1, 6, 6, dtype=torch.bool)
    inside[0, :, 1:4, 0:3] = True
    inside[1, :, 2:6, 2:5] = True
    changed_outside = torch.where(inside, a, 10 * torch.randn(a.shape, generator=gen))
    torch.testing.assert_close(obj.score(_map_ev(changed_outside)), obj.score(_map_ev(a)))
    changed_inside = torch.where(inside, a + 0.5, a)
    assert not torch.allclose(obj.score(_map_ev(changed_inside)), obj.score(_map_ev(a)))
    # the target outside the bounds is ignored too
    other_target = torch.where(inside, target, torch.rand(target.shape, generator=gen))
    obj2 = SpatialChannelCosine("L", other_target, bounds)
    torch.testing.assert_close(obj2.score(_map_ev(a)), obj.score(_map_ev(a)))
    with pytest.raises(MTIConfigError, match=r"must be \(K, C, H, W\)"):
        SpatialChannelCosine("L", torch.rand(2, 4, 6))


def test_cosine_direction_prefers_the_direction() -> None:
    v = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    aligned = v.view(2, 3, 1, 1).expand(2, 3, 4, 4).clone()
    ortho = v.flip(0).view(2, 3, 1, 1).expand(2, 3, 4, 4).clone() + 0.01
    obj = CosineDirection("L", v)
    torch.testing.assert_close(obj.score(_map_ev(aligned)), torch.ones(2))
    assert (obj.score(_map_ev(ortho)) < 0.1).all()
    tokens = v.view(2, 1, 3).expand(2, 5, 3)  # (K, N, C) token layers too
    torch.testing.assert_close(obj.score(_map_ev(tokens)), torch.ones(2))


# tension -----------------------------------------------------------------------------------


def test_smooth_min_approaches_min() -> None:
    a = torch.tensor([1.0, 5.0, 3.0, 100.0])
    b = torch.tensor([2.0, 1.0, 3.0, 1.0])
    exact = torch.minimum(a, b)
    errors = []
    for temperature in (1.0, 0.1, 0.01, 0.001):
        s = smooth_min(a, b, temperature)
        assert (s <= exact + 1e-6).all()  # a soft minimum lies below the minimum
        tau = temperature * (a + b) / 2
        assert ((exact - s) <= tau * torch.log(torch.tensor(2.0)) + 1e-6).all()
        errors.append((exact - s).abs().max().item())
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < 1e-3 * 100


def _tension_grad(lm: LoadedModel, readout, x: torch.Tensor, objective) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    ev = evaluate(lm, x, objective, readout, identity_draws(2), PLAIN)
    (grad,) = torch.autograd.grad(objective.score(ev).sum(), x)
    return grad


def test_tension_energies_split_the_feature(wrap) -> None:
    """ReLU -> max-pool -> conv is positively homogeneous: ``E+ - E- == f - bias``."""
    lm = _piecewise_linear(wrap)
    readout = _readout(lm, "3:0@center", "3:2@(1,5)")
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    ev = evaluate(lm, x, Tension("1"), readout, identity_draws(2), PLAIN)
    e_plus, e_minus = Tension("1").energies(ev)
    bias = lm.model[3].bias[[0, 2]].view(2, 1)
    assert_reordered(e_plus - e_minus, ev.values - bias, scale=float((e_plus + e_minus).max()))
    assert (e_plus > 0).all() and (e_minus > 0).all()
    flat = ev.acts["1"]  # the energies agree with attribution.energies on act * grad
    (grad,) = torch.autograd.grad(ev.values.sum(), flat, retain_graph=True)
    ref = energies(flat * grad)
    assert_reordered(e_plus.flatten(), ref.e_plus)
    assert_reordered(e_minus.flatten(), ref.e_minus)


def test_exact_equals_linearized_on_piecewise_linear_path(wrap) -> None:
    lm = _piecewise_linear(wrap)
    readout = _readout(lm, "3:0@center", "3:2@(1,5)")
    x = torch.rand(2, 3, 16, 16)
    g_exact = _tension_grad(lm, readout, x, Tension("1", mode="exact"))
    g_lin = _tension_grad(lm, readout, x, Tension("1", mode="linearized"))
    assert g_lin.abs().sum() > 0
    assert_reordered(g_exact, g_lin, tol=NETWORK)  # two backward graphs of the same maths


def test_exact_differs_from_linearized_on_smooth_path(wrap) -> None:
    lm = _smooth(wrap)
    readout = _readout(lm, "4:0@center", "4:2@(1,5)")
    x = torch.rand(2, 3, 16, 16)
    g_exact = _tension_grad(lm, readout, x, Tension("1", mode="exact"))
    g_lin = _tension_grad(lm, readout, x, Tension("1", mode="linearized"))
    assert g_lin.abs().sum() > 0 and g_exact.abs().sum() > 0
    rel = (g_exact - g_lin).norm() / g_lin.norm()
    assert rel > 0.05, rel
    # exact differentiates through df/dact: its E+ gradient matches finite differences
    # (smooth_min's temperature is a detached scale, so E+ itself is the clean check)
    obj = Tension("1", mode="exact")
    direction = torch.randn_like(x)
    eps = 1e-6  # small: E+ has kinks where an attribution entry crosses zero
    lm.model.double()
    try:
        x, direction = x.double(), direction.double()

        def e_plus(z: torch.Tensor) -> torch.Tensor:
            ev = evaluate(lm, z, obj, readout, identity_draws(1), PLAIN)
            return obj.energies(ev)[0].sum()

        z = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(e_plus(z), z)
        numeric = (
            e_plus((x + eps * direction).requires_grad_(True))
            - e_plus((x - eps * direction).requires_grad_(True))
        ) / (2 * eps)
    finally:
        lm.model.float()
    torch.testing.assert_close((g * direction).sum(), numeric.detach(), rtol=1e-5, atol=1e-8)


def test_exact_tension_on_resnet(resnet: LoadedModel, images) -> None:
    readout = _readout(resnet, "layer2.0.conv2:5@center")
    g = _tension_grad(resnet, readout, images(1), Tension("layer1.1.act2", mode="exact"))
    assert torch.isfinite(g).all() and g.abs().sum() > 0


@pytest.mark.parametrize("offset", [-1.0, 1.0])
def test_hold_pulls_activation_to_the_held_value(wrap, offset: float) -> None:
    lm = _piecewise_linear(wrap)
    readout = _readout(lm, "3:0@center")
    x = torch.rand(1, 3, 16, 16)
    f0 = evaluate(lm, x, Activation(), readout, identity_draws(1), PLAIN).values.item()
    hold = f0 + offset
    obj = Tension("1", hold=hold, hold_weight=100.0)
    g = _tension_grad(lm, readout, x, obj)
    x1 = x + 1e-2 * g / g.norm()
    f1 = evaluate(lm, x1, Activation(), readout, identity_draws(1), PLAIN).values.item()
    assert abs(f1 - hold) < abs(f0 - hold)
    assert (f1 - f0) * offset > 0


def test_tension_rejects_unknown_mode() -> None:
    with pytest.raises(MTIConfigError, match="valid: exact, linearized"):
        Tension("1", mode="second-order")


def test_ascent_raises_tension(wrap) -> None:
    lm = _piecewise_linear(wrap)
    readout = _readout(lm, "3:0@center")
    obj = Tension("1")
    param = FourierImage(1, (16, 16), seed=0)

    def tension() -> float:
        x = param().detach().requires_grad_(True)
        ev = evaluate(lm, x, obj, readout, identity_draws(1), PLAIN)
        e_plus, e_minus = obj.energies(ev)
        return torch.minimum(e_plus, e_minus).item()

    before = tension()
    _ascend(lm, param, obj, readout, steps=20, lr=0.05, draws=2, transform=PLAIN)
    assert tension() > 1.5 * before


# diversity and closeness -------------------------------------------------------------------


def test_diversity_sign() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(1, 4, 5, 5, generator=gen)
    same = _map_ev(a.expand(3, -1, -1, -1).contiguous())
    torch.testing.assert_close(Diversity("L").score(same), -torch.ones(3))
    different = _map_ev(torch.randn(3, 4, 5, 5, generator=gen))
    div = Diversity("L").score(different)
    assert (div > -1 + 1e-3).all()
    assert Diversity("L").score(_map_ev(a)).tolist() == [0.0]  # a single image: nothing to push
    tokens = _map_ev(torch.randn(3, 7, 4, generator=gen))  # (K, N, C) token layers too
    assert (Diversity("L").score(tokens) > -1 + 1e-3).all()


def test_l2_to_seed_sign() -> None:
    seeds = torch.rand(2, 3, 8, 8)
    at_seed = L2ToSeed(seeds).score(_ev({}, torch.zeros(2, 1), seeds.clone()))
    torch.testing.assert_close(at_seed, torch.zeros(2))
    moved = seeds.clone()
    moved[1] += 0.1
    score = L2ToSeed(seeds).score(_ev({}, torch.zeros(2, 1), moved))
    torch.testing.assert_close(score, torch.tensor([0.0, -0.01]))


# redirected ReLU ---------------------------------------------------------------------------


def test_redirected_relu_wakes_a_silent_unit(wrap) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    with torch.no_grad():
        conv.bias.fill_(-50.0)  # every pre-activation negative: the ReLU output is all zero
    lm = wrap(nn.Sequential(conv, nn.ReLU()))
    readout = _readout(lm, "1:2@center")

    def image_grad() -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.rand(1, 3, 16, 16, requires_grad=True)
        ev = evaluate(lm, x, Activation(), readout, identity_draws(1), PLAIN)
        (-Activation().score(ev).sum()).backward()  # the loss a search minimises
        return ev.values.detach(), x.grad

    value, grad = image_grad()
    assert value.item() == 0 and grad.abs().sum() == 0
    with redirect_relus(lm.model):
        value, grad = image_grad()
    assert value.item() == 0 and grad.abs().sum() > 0
    value, grad = image_grad()  # restored on exit
    assert grad.abs().sum() == 0
    with redirect_relus(lm.model, active=False):
        assert image_grad()[1].abs().sum() == 0


def test_redirected_relu_function() -> None:
    x = torch.tensor([-1.0, -1.0, 2.0, 2.0], requires_grad=True)
    y = redirected_relu(x)
    torch.testing.assert_close(y, torch.tensor([0.0, 0.0, 2.0, 2.0]))
    y.backward(torch.tensor([-1.0, 1.0, -1.0, 1.0]))
    # negative input: only the gradient that would raise it passes; positive input: all passes
    torch.testing.assert_close(x.grad, torch.tensor([-1.0, 0.0, -1.0, 1.0]))


# ascent ------------------------------------------------------------------------------------


def test_ascent_raises_the_activation(resnet: LoadedModel) -> None:
    readout = _readout(resnet, "layer2.0.conv1:3@center")
    param = FourierImage(1, (64, 64), seed=0)

    def activation() -> float:
        with torch.no_grad():
            ev = evaluate(resnet, param(), Activation(), readout, identity_draws(1), PLAIN)
        return ev.values.item()

    before = activation()
    losses = _ascend(resnet, param, Activation(), readout, steps=10, lr=0.1, draws=2)
    after = activation()
    assert after > before + 0.5
    assert len(losses) == 10 and losses[-1] < losses[0]


def test_direction_and_diversity_read_channels_last_and_tokens_through_their_view() -> None:
    """A Swin stage's ``(H, W, C)`` and a ViT's tokens (a class token first) score as the
    ``(C, H, W)`` map of their patch grid does, once the term is given the layer's view."""
    gen = torch.Generator().manual_seed(3)
    grid = torch.randn(6, 4, 3, 5, generator=gen)  # (K * D, C, H, W): K = 3 images, D = 2 draws
    directions = torch.randn(3, 4, generator=gen)
    on_map = _ev({"L": grid}, torch.zeros(3, 2))
    last = SpatialView("L", (3, 5, 4), "channels_last", (3, 5))
    cls = torch.randn(6, 1, 4, generator=gen)
    tokens = torch.cat([cls, grid.flatten(2).transpose(1, 2)], 1)
    vit = SpatialView("L", (16, 4), "tokens", (3, 5), prefix=("cls",))
    for value, view in ((grid.permute(0, 2, 3, 1).contiguous(), last), (tokens, vit)):
        ev = _ev({"L": value}, torch.zeros(3, 2))
        for plain, viewed in (
            (CosineDirection("L", directions, 2.0), CosineDirection("L", directions, 2.0, view)),
            (Diversity("L"), Diversity("L", view)),
        ):
            torch.testing.assert_close(viewed.score(ev), plain.score(on_map))
    with pytest.raises(MTIConfigError, match="has no .*grid: a vector"):
        CosineDirection("L", directions, view=SpatialView("L", (4,), "vector", reason="a vector"))
