"""A Label Studio labelling config, as far as a segmentation model answers it: the images, the brush and polygon
tools, their labels, and which of the model's classes each label is.

Label Studio sends the project's config (XML) with every ``/predict`` and ``/setup``. A ``<BrushLabels>`` or
``<PolygonLabels>`` tool whose ``toName`` is an ``<Image>`` gets regions; its ``<Label value="...">`` names are
matched to the model's class names case-insensitively (``Car`` is the model's ``car``); class 0 is the background
and is never a region. Other tools (choices, rectangles...) are left alone.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

__all__ = ["LabelConfig", "Tool", "parse_label_config"]

TOOL_KINDS = {"brushlabels": "brush", "polygonlabels": "polygon"}
MAX_CONFIG_CHARS = 1 << 20  # a labelling config is a few KB; refuse to parse a megabyte of XML


@dataclass(frozen=True)
class Tool:
    """One ``<BrushLabels>``/``<PolygonLabels>`` tag: its ``name`` (``from_name``), the image it labels
    (``to_name``), the task data key holding that image's URL, and the model class each of its labels is."""

    name: str
    kind: str  # "brush" or "polygon"
    to_name: str
    data_key: str  # "image" for <Image value="$image">
    labels: dict[int, str] = field(default_factory=dict)  # class index -> the label's own spelling


@dataclass(frozen=True)
class LabelConfig:
    """The tools that get regions, and the model classes no tool names (left out of every prediction)."""

    tools: tuple[Tool, ...]
    unmatched: tuple[str, ...]  # class names (background excluded) no label of any tool matches

    @property
    def data_keys(self) -> list[str]:
        """The task data keys of the images the tools label (``["image"]`` for most configs), each once."""
        return list(dict.fromkeys(tool.data_key for tool in self.tools))


def parse_label_config(xml: str, categories: list[str]) -> LabelConfig:
    """The brush and polygon tools of a labelling config, their labels matched to ``categories`` by name, case
    and surrounding spaces ignored. ``ValueError`` when the XML is malformed or has no such tool on an image."""
    if len(xml) > MAX_CONFIG_CHARS:
        raise ValueError(f"labelling config is {len(xml)} characters, over the {MAX_CONFIG_CHARS} limit")
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        raise ValueError(f"labelling config is not valid XML: {e}") from None
    images = {el.get("name"): el.get("value", "") for el in root.iter() if el.tag.lower() == "image"}
    by_name = {}
    for i, name in enumerate(categories):
        by_name.setdefault(name.strip().lower(), i)  # two classes of one name: the first wins
    tools, named = [], set()
    for el in root.iter():
        kind = TOOL_KINDS.get(el.tag.lower())
        to_name = el.get("toName", "")
        if kind is None or to_name not in images or not images[to_name].startswith("$"):
            continue
        labels = {}
        for label in el.iter():
            value = label.get("value") if label.tag.lower() == "label" else None
            index = by_name.get(value.strip().lower()) if value else None
            if index not in (None, 0):
                labels.setdefault(index, value)
        named.update(labels)
        tools.append(Tool(el.get("name", ""), kind, to_name, images[to_name][1:], labels))
    if not tools:
        raise ValueError(
            'labelling config has no <BrushLabels> or <PolygonLabels> on an <Image value="$...">: '
            "a segmentation model has nothing to answer"
        )
    unmatched = tuple(name for i, name in enumerate(categories) if i != 0 and i not in named)
    return LabelConfig(tuple(tools), unmatched)
