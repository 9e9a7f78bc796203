"""A matplotlib figure of a prediction, as on the seed page: image | mask | overlay, with a legend of the classes.

matplotlib is optional (``pip install fcnseg[plot]``) and imported only when a figure is drawn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .predict import SegmentationResult
from .transforms import palette

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["plot_result"]


def plot_result(result: SegmentationResult, *, alpha: float = 0.5, figsize: tuple[float, float] = (13, 4.5)) -> Figure:
    """Three panels (the image, the coloured mask, the overlay) and a legend of the classes present.

    Matplotlib's constrained layout places the titles and the legend (below the panels, as many rows as the classes
    need) so that none is cut off or drawn over a panel, whatever the image's shape and the number of classes.
    """
    try:
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError:
        raise ImportError("plot_result needs matplotlib: pip install 'fcnseg[plot]'") from None
    panels = [("mask", result.to_image().convert("RGB"))]
    if result.image is not None:
        panels = [("image", result.image), *panels, ("overlay", result.overlay(alpha))]
    fig, axes = plt.subplots(1, len(panels), figsize=figsize, squeeze=False, layout="constrained")
    for ax, (title, img) in zip(axes[0], panels, strict=True):
        ax.imshow(img)
        ax.set_title(title)
        ax.axis("off")
    colors = palette(256) / 255
    stats = result.class_stats(confidence=False)
    handles = [Patch(color=tuple(colors[s["index"]]), label=f"{s['name']} ({s['share']:.1%})") for s in stats]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), frameon=False)
    return fig
