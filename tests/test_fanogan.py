"""f-AnoGAN: the izif loss and score terms against a direct computation, WGAN-GP's residual
blocks against their definition, the network shapes, and what a short fit must already get
right. The conformance suite runs on fanogan from test_conformance.py (it parametrises over
every registered plugin); the gradient penalty itself is tested in test_tdg.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fsad_bench.params import ParamError
from fsad_bench.testing.data import tiny_defect, tiny_normals
from fsad_methods.common.gan import ResidualBlock, layer_norm_2d
from fsad_methods.fanogan.core import (
    Critic,
    Encoder,
    EncoderSchedule,
    FAnoGANConfig,
    GANSchedule,
    Generator,
    izif_terms,
    num_blocks,
    train_izif,
)
from fsad_methods.fanogan.core import (
    FAnoGAN as FAnoGANModel,
)
from fsad_methods.fanogan.plugin import FAnoGAN


def _nets(size: int = 16, dim: int = 4, z_dim: int = 8) -> tuple[Generator, Critic, Encoder]:
    torch.manual_seed(0)
    nets = Generator(size, dim, z_dim), Critic(size, dim), Encoder(size, dim, z_dim)
    for net in nets:
        net.eval()
    return nets


def _images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ---------------------------------------------------------------- losses and score


def test_izif_terms_match_a_direct_computation() -> None:
    generator, critic, encoder = _nets()
    x = _images(3, 16)
    residual, feature, recon = izif_terms(x, generator, critic, encoder)
    with torch.no_grad():
        for i in range(3):
            xi = x[i : i + 1]
            xhat = generator(encoder(xi))
            f_x = critic.blocks(critic.input(xi)).reshape(-1)
            f_hat = critic.blocks(critic.input(xhat)).reshape(-1)
            expected_r = ((xi - xhat) ** 2).sum() / xi.numel()
            expected_f = ((f_x - f_hat) ** 2).sum() / f_x.numel()
            torch.testing.assert_close(recon[i : i + 1], xhat)
            torch.testing.assert_close(residual[i], expected_r)
            torch.testing.assert_close(feature[i], expected_f)


def test_the_encoder_loss_is_the_official_mse_plus_kappa_feature_mse() -> None:
    """z_encoding_izif.py: MSE(real, recon) + kappa * MSE(recon_features, image_features),
    both means over the whole batch."""
    generator, critic, encoder = _nets()
    x = _images(4, 16, seed=1)
    kappa = 0.7
    residual, feature, recon = izif_terms(x, generator, critic, encoder)
    official = F.mse_loss(recon, x) + kappa * F.mse_loss(critic.features(recon), critic.features(x))
    torch.testing.assert_close(residual.mean() + kappa * feature.mean(), official)


def test_score_is_residual_plus_kappa_feature_and_the_map_is_the_pixel_residual() -> None:
    config = FAnoGANConfig(
        image_size=16,
        dim=4,
        z_dim=8,
        gan=GANSchedule(iterations=2, critic_iters=1, batch_size=4),
        encoder=EncoderSchedule(iterations=2, batch_size=4, kappa=2.0),
        support_views="none",
        sigma=0.0,
    )
    model = FAnoGANModel(config).fit(tiny_normals(2, 16), torch.Generator().manual_seed(0))
    images = tiny_normals(3, 16, seed=5)
    scores, maps = model.score(images)
    x = images * 2 - 1
    residual, feature, recon = izif_terms(x, model.generator, model.critic, model.encoder)
    torch.testing.assert_close(scores, residual + 2.0 * feature)
    torch.testing.assert_close(maps, (x - recon).abs().mean(dim=1))


# ---------------------------------------------------------------- networks


def test_residual_block_down_is_its_definition() -> None:
    torch.manual_seed(1)
    block = ResidualBlock(3, 5, "down", layer_norm_2d).eval()
    x = torch.randn(2, 3, 8, 8)
    h = block.conv1(F.relu(block.norm1(x)))
    h = F.avg_pool2d(block.conv2(F.relu(block.norm2(h))), 2)
    shortcut = block.shortcut(F.avg_pool2d(x, 2))
    torch.testing.assert_close(block(x), shortcut + h)
    assert block(x).shape == (2, 5, 4, 4)


def test_residual_block_up_upsamples_before_its_first_convolution() -> None:
    torch.manual_seed(2)
    block = ResidualBlock(4, 2, "up").eval()
    x = torch.randn(2, 4, 4, 4)
    up = torch.repeat_interleave(torch.repeat_interleave(F.relu(block.norm1(x)), 2, 2), 2, 3)
    h = block.conv2(F.relu(block.norm2(block.conv1(up))))
    x_up = torch.repeat_interleave(torch.repeat_interleave(x, 2, 2), 2, 3)
    torch.testing.assert_close(block(x), block.shortcut(x_up) + h)
    assert block(x).shape == (2, 2, 8, 8)


def test_identity_shortcut_when_nothing_changes() -> None:
    block = ResidualBlock(3, 3)
    assert isinstance(block.shortcut, torch.nn.Identity)


def test_layer_norm_normalises_each_sample_over_channels_and_pixels() -> None:
    norm = layer_norm_2d(3)
    x = torch.randn(2, 3, 5, 5) * 4 + 2
    flat = x.flatten(1)
    expected = (flat - flat.mean(1, keepdim=True)) / torch.sqrt(
        flat.var(1, unbiased=False, keepdim=True) + norm.eps
    )
    torch.testing.assert_close(norm(x).flatten(1), expected)


@pytest.mark.parametrize(("size", "blocks"), [(8, 1), (32, 3), (64, 4)])
def test_networks_follow_the_official_layout(size: int, blocks: int) -> None:
    dim, z_dim = 2, 5
    assert num_blocks(size) == blocks
    generator, critic, encoder = (
        Generator(size, dim, z_dim),
        Critic(size, dim),
        Encoder(size, dim, z_dim),
    )
    z = torch.randn(3, z_dim)
    images = generator(z)
    assert images.shape == (3, 3, size, size) and images.abs().max() <= 1
    assert critic(images).shape == (3,)
    assert encoder(images).shape == (3, z_dim)
    # the 64 px official critic ends at 4x4x8 DIM features
    assert critic.feature_dim == 4 * 4 * dim * min(2**blocks, 8)
    assert all(isinstance(m, torch.nn.GroupNorm) for b in critic.blocks for m in (b.norm1, b.norm2))
    assert all(isinstance(m, torch.nn.BatchNorm2d) for b in encoder.blocks for m in (b.norm1,))


def test_image_size_must_be_a_power_of_two() -> None:
    with pytest.raises(ValueError, match="power of two"):
        num_blocks(48)


# ---------------------------------------------------------------- the method

TINY = dict(FAnoGAN.conformance_params)


def _fit_and_score(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    method = FAnoGAN(**TINY)
    method.fit(tiny_normals(4, 64))
    defect, _ = tiny_defect(64)
    with torch.inference_mode():
        pred = method.predict(torch.cat([defect, tiny_normals(3, 64, seed=9)]))
    return pred.scores, pred.maps


def test_a_corrupted_image_scores_above_normal_ones_after_a_short_fit() -> None:
    scores, maps = _fit_and_score()
    assert scores[0] > scores[1:].max()
    _, mask = tiny_defect(64)
    assert maps[0][mask[0]].mean() > maps[0][~mask[0]].mean()  # the map points at the square


def test_same_seed_same_scores_and_maps() -> None:
    first, second = _fit_and_score(seed=4), _fit_and_score(seed=4)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_izif_training_lowers_its_loss_and_leaves_generator_and_critic_alone() -> None:
    generator, critic, encoder = _nets()
    frozen = [{k: v.clone() for k, v in net.state_dict().items()} for net in (generator, critic)]
    with torch.no_grad():  # images the generator can make: the encoder can learn to invert it
        images = generator(torch.randn(6, 8, generator=torch.Generator().manual_seed(3)))
    schedule = EncoderSchedule(iterations=60, batch_size=6, lr=1e-3)
    losses = train_izif(encoder, generator, critic, images, schedule, torch.Generator())
    assert sum(losses[-5:]) < 0.8 * sum(losses[:5])
    for net, before in zip((generator, critic), frozen, strict=True):
        assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"image_size": 48}, "image_size=48: must be a power of two"),
        ({"critic_iters": 0}, "critic_iters=0"),
        ({"support_views": "all"}, "support_views='all'"),
    ],
)
def test_a_bad_value_is_one_line_naming_it(params: dict, fragment: str) -> None:
    with pytest.raises(ParamError) as error:
        FAnoGAN(**params)
    message = str(error.value)
    assert message.startswith("fanogan: ") and fragment in message and "\n" not in message
