"""Datasets read from their real on-disk formats; each yields ``(PIL RGB image, PIL "L" index mask)``."""

from .folder import FolderSegmentation, read_classes, read_mask

__all__ = ["FolderSegmentation", "read_classes", "read_mask"]
