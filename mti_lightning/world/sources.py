"""The built-in world's data sets, registered by name with the engine's image source
(``shells/images.py``): ``curves``, the synthetic curve images, and ``photos``, seeded crops
of scikit-image's photographs, each written as an image folder."""

from __future__ import annotations

from mti_lightning.shells.images import FolderSource, ImageSource, SourceRequest, register_source
from mti_lightning.world.curve_dataset import write_image_folder
from mti_lightning.world.photos import write_photo_folder


def curves_source(request: SourceRequest) -> ImageSource:
    """``request.n`` curve images (seed stream ``request.seed``; ``two_arc_fraction`` of them
    with a second arc) written to ``request.folder`` (files already there are kept)."""
    fraction = float(request.options.get("two_arc_fraction", 0.0))
    folder = write_image_folder(request.folder, request.n, request.seed, None, fraction)
    return FolderSource(folder, request.size)


def photos_source(request: SourceRequest) -> ImageSource:
    """The crops that ``photos[:KEY=VALUE,...]`` names (``request.n`` and ``request.seed``
    where the spec gives none) written to ``request.folder`` at 224 px, whatever the model's
    size (the source resizes), so models of several sizes share one folder of crops."""
    spec = str(request.options.get("spec", "photos"))
    overrides = {"seed": request.seed, **({"n": request.n} if request.n else {})}
    folder = write_photo_folder(spec, request.folder, **overrides)
    return FolderSource(folder, request.size)


register_source("curves", curves_source)
register_source("photos", photos_source)
