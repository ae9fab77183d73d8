"""Curve stimuli sized for a receptive field (world/stimuli.py): centred arcs on flat colours."""

from __future__ import annotations

import torch

from mti_lightning.world.stimuli import centred_arcs


def test_arcs_are_balanced_centred_small_and_their_controls_are_the_background():
    images, labels, background = centred_arcs(2, arc_px=48, canvas=96, seed=3)
    assert images.shape == background.shape == (16, 3, 96, 96)
    assert torch.bincount(labels, minlength=8).tolist() == [2] * 8
    drawn = (images - background).abs().amax(1) > 0.05  # where the arc is
    assert drawn.flatten(1).any(1).all()
    ys, xs = drawn.nonzero(as_tuple=True)[1:]
    # every stroke pixel lies within the arc's scale around the centre
    assert (ys - 48).abs().max() <= 24 and (xs - 48).abs().max() <= 24
    # the control is the flat colour each image shows away from its arc
    assert torch.allclose(images[:, :, :8, :8], background[:, :, :8, :8])
    again = centred_arcs(2, arc_px=48, canvas=96, seed=3)[0]
    assert torch.equal(images, again)
