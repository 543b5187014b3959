"""ella.affine: the sampling grid against torch's ``F.affine_grid`` (float64)."""

import torch
import torch.nn.functional as F

from ella.affine import affine_matrices, affine_transform


def test_affine_transform_matches_affine_grid_reference_with_gradients():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(5, 2, 7, 9, generator=g, dtype=torch.float64)
    eta = torch.tensor([0.3, -0.2, 1.1, 0.4, -0.3, 0.2], dtype=torch.float64, requires_grad=True)
    eps = 2 * torch.rand(5, 6, generator=g, dtype=torch.float64) - 1
    ours = affine_transform(images, affine_matrices(eta, eps))
    inv = torch.linalg.inv(affine_matrices(eta, eps))
    grid = F.affine_grid(inv[:, :2], list(images.shape), align_corners=False)
    ref = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)
    weights = torch.rand(ref.shape, generator=g, dtype=torch.float64)
    (g_ours,) = torch.autograd.grad((ours * weights).sum(), eta)
    (g_ref,) = torch.autograd.grad((ref * weights).sum(), eta)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-10, atol=1e-12)
    assert g_ref.abs().max() > 1e-3  # the comparison is not between zeros


def test_affine_transform_identity_and_translation_by_one_pixel():
    images = torch.rand(2, 1, 6, 8, dtype=torch.float64)
    eye = torch.eye(3, dtype=torch.float64).expand(2, 3, 3)
    torch.testing.assert_close(affine_transform(images, eye), images, rtol=0, atol=1e-14)
    shift = eye.clone()
    shift[:, 0, 2] = 2.0 / 8  # one pixel to the right in normalised coordinates
    moved = affine_transform(images, shift)
    torch.testing.assert_close(moved[..., 1:], images[..., :-1], rtol=0, atol=1e-12)
    assert torch.all(moved[..., 0] == 0)
