"""AnoGrad (GradCon): reference gradient, gradient loss, per-image scores under inference_mode."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fsad_bench.method import MetaTrainSet
from fsad_bench.params import ParamError
from fsad_bench.testing.data import tiny_normals
from fsad_methods.anograd.core import (
    ConvAutoencoder,
    ReferenceGradient,
    gradcon_scores,
    gradient_loss,
    train_gradcon,
)
from fsad_methods.anograd.plugin import AnoGrad

TINY = {"input_size": 32, "width": 4, "pretrain_steps": 3, "fit_steps": 3, "batch_size": 4}


def trained(alpha: float = 0.03, steps: int = 4) -> tuple[ConvAutoencoder, ReferenceGradient]:
    torch.manual_seed(0)
    model, reference = ConvAutoencoder(4), ReferenceGradient()
    train_gradcon(
        model,
        tiny_normals(4, 32),
        reference,
        steps=steps,
        lr=1e-3,
        batch_size=2,
        alpha=alpha,
        generator=torch.Generator().manual_seed(0),
    )
    return model, reference


def test_autoencoder_shapes_and_decoder_weights() -> None:
    model = ConvAutoencoder(4)
    x = torch.rand(2, 3, 48, 32)
    out = model(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert model.decoder_weights() == ["up.0.weight", "up.2.weight", "up.4.weight", "up.6.weight"]


def test_reference_is_the_running_mean() -> None:
    reference, updates = ReferenceGradient(), [{"w": torch.randn(3, 2)} for _ in range(5)]
    for update in updates:
        reference.update(update)
    expected = torch.stack([u["w"] for u in updates]).mean(dim=0)
    torch.testing.assert_close(reference.mean["w"], expected)
    restored = ReferenceGradient.from_state_dict(reference.state_dict())
    assert restored.count == 5 and torch.equal(restored.mean["w"], reference.mean["w"])


def test_gradient_loss_is_minus_the_mean_cosine() -> None:
    reference = ReferenceGradient({"a": torch.tensor([1.0, 0.0]), "b": torch.tensor([0.0, 2.0])}, 1)
    same = {"a": torch.tensor([3.0, 0.0]), "b": torch.tensor([0.0, 1.0])}
    assert gradient_loss(same, reference).item() == pytest.approx(-1.0)
    mixed = {"a": torch.tensor([-1.0, 0.0]), "b": torch.tensor([1.0, 1.0])}
    assert gradient_loss(mixed, reference).item() == pytest.approx(-(-1 + 2**-0.5) / 2)


def test_training_counts_steps_and_the_gradient_term_changes_the_weights() -> None:
    with_term, reference = trained(alpha=1.0)
    without_term, _ = trained(alpha=0.0)
    assert reference.count == 4
    assert set(reference.mean) == set(with_term.decoder_weights())
    differs = [
        not torch.equal(a, b)
        for a, b in zip(with_term.parameters(), without_term.parameters(), strict=True)
    ]
    assert any(differs)


def loop_scores(
    model: ConvAutoencoder, images: torch.Tensor, reference: ReferenceGradient, beta: float
) -> torch.Tensor:
    """Independent per-image scores: one backward pass per image with plain autograd."""
    params = dict(model.named_parameters())
    weights = [params[n] for n in model.decoder_weights()]
    scores = []
    for image in images:
        mse = F.mse_loss(model(image[None]), image[None])
        grads = torch.autograd.grad(mse, weights)
        cos = [
            F.cosine_similarity(g.flatten(), reference.mean[n].flatten(), dim=0)
            for n, g in zip(model.decoder_weights(), grads, strict=True)
        ]
        scores.append(mse.detach() - beta * torch.stack(cos).mean())
    return torch.stack(scores)


def test_vmap_scores_match_a_plain_loop_even_under_inference_mode() -> None:
    model, reference = trained()
    images = tiny_normals(3, 32, seed=9)
    expected = loop_scores(model, images, reference, beta=0.12)
    with torch.inference_mode():
        got = gradcon_scores(model, images, reference, beta=0.12)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    alone = torch.cat([gradcon_scores(model, images[i : i + 1], reference, 0.12) for i in range(3)])
    torch.testing.assert_close(got, alone, rtol=1e-5, atol=1e-6)


def test_scoring_before_training_is_refused() -> None:
    with pytest.raises(RuntimeError, match="reference gradient is empty"):
        gradcon_scores(ConvAutoencoder(4), torch.rand(1, 3, 32, 32), ReferenceGradient(), 0.1)


def meta_set() -> MetaTrainSet:
    images = {"a": tiny_normals(4, 32, seed=1), "b": tiny_normals(4, 32, seed=2)}
    return MetaTrainSet(images=images, held_out="c", data_hash="x", seed=0)


@pytest.mark.parametrize(("mode", "count"), [("reset", 3), ("continue", 6)])
def test_fit_reference_modes(mode: str, count: int) -> None:
    method = AnoGrad(**(TINY | {"fit_reference": mode}))
    torch.manual_seed(0)
    method.meta_fit(meta_set())
    method.fit(tiny_normals(2, 64))
    assert method._reference.count == count
    with torch.inference_mode():
        pred = method.predict(tiny_normals(2, 64, seed=3))
    assert pred.maps is None and pred.scores.shape == (2,)


def test_beta_defaults_to_four_alpha() -> None:
    assert AnoGrad(alpha=0.05).beta == pytest.approx(0.2)
    assert AnoGrad(alpha=0.05, beta=1.0).beta == 1.0


def test_bad_fit_reference_names_the_choices() -> None:
    with pytest.raises(ParamError, match="fit_reference='keep': input should be 'reset' or"):
        AnoGrad(fit_reference="keep")
    with pytest.raises(ParamError, match="input_size=40: input should be a multiple of 16"):
        AnoGrad(input_size=40)


@pytest.mark.parametrize(("name", "value"), [("alpha", -0.1), ("beta", -1.0), ("batch_size", 0)])
def test_out_of_range_value_is_one_line_naming_the_parameter(name: str, value: object) -> None:
    with pytest.raises(ParamError) as error:
        AnoGrad(**{name: value})
    message = str(error.value)
    assert message.startswith(f"anograd: parameter {name}={value!r}:") and "\n" not in message
