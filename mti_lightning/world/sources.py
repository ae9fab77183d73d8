"""The built-in world's data sets, registered by name with the engine's image source
(``shells/images.py``): ``curves``, the synthetic curve images as an image folder."""

from __future__ import annotations

from mti_lightning.shells.images import FolderSource, ImageSource, SourceRequest, register_source
from mti_lightning.world.curve_dataset import write_image_folder


def curves_source(request: SourceRequest) -> ImageSource:
    """``request.n`` curve images (seed stream ``request.seed``; ``two_arc_fraction`` of them
    with a second arc) written to ``request.folder`` (files already there are kept)."""
    fraction = float(request.options.get("two_arc_fraction", 0.0))
    folder = write_image_folder(request.folder, request.n, request.seed, None, fraction)
    return FolderSource(folder, request.size)


register_source("curves", curves_source)
