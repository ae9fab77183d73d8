"""The components figure: a row per NMF component with its channel weights (bars), its
rendered image and its top data images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mti_lightning.core.io import atomic_write, to_uint8
from mti_lightning.shells.images import ImageSource

TOP_SHOWN = 4


def components_figure(
    path: Path,
    title: str,
    components: list[dict[str, Any]],
    rendered: list[Path],
    source: ImageSource,
) -> Path:
    """Write the figure to ``path`` (atomically); ``rendered``: one PNG per component or
    none."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    n, cols = len(components), 2 + TOP_SHOWN
    fig, axes = plt.subplots(n, cols, figsize=(2.0 * cols + 2, 1.9 * n + 0.6), squeeze=False)
    for i, c in enumerate(components):
        row = axes[i]
        sign = "+" if c["part"] == "plus" else "-"
        row[0].bar(
            range(len(c["weights"])), c["weights"], color="tab:red" if sign == "+" else "tab:blue"
        )
        row[0].set_title(
            f"E{sign} #{c['component']}: {100 * c['share']:.0f}% of E{sign}", fontsize=8
        )
        row[0].tick_params(labelsize=6)
        if rendered:
            row[1].imshow(Image.open(rendered[i]))
        row[1].set_title("rendered" if rendered else "(not rendered)", fontsize=8)
        for j, index in enumerate(c["top_images"][:TOP_SHOWN]):
            img = source.load(index)
            if img is not None:
                row[2 + j].imshow(to_uint8(img))
            row[2 + j].set_title(f"top {j + 1}", fontsize=8)
        for ax in row[1:]:
            ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))

    def save(tmp: Path) -> None:
        fig.savefig(tmp, dpi=90, format="png")

    try:
        return atomic_write(path, save)
    finally:
        plt.close(fig)
