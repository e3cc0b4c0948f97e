"""One colour per query in every view: the node's overlay image and RViz markers, the replay bag's Foxglove
annotations, the demo video and the HTML report.

A colour is a function of the id alone, so a query keeps its colour in every tool, every run and whatever else is
asked. Where tracks are told apart (overlay, markers, annotations) a track id gets its own colour the same way.
Ten colours, bright on grey and on camera images, none of them a colour of the synthetic scenes' objects (red, blue,
green): two ids may share one; marks of different tasks differ in shape.
"""

from __future__ import annotations

import zlib

PALETTE = ((255, 150, 0), (255, 0, 255), (0, 230, 255), (255, 240, 0), (160, 90, 255), (140, 255, 90),
           (255, 120, 160), (0, 200, 170), (255, 255, 255), (200, 160, 80))


def id_colour(key: str) -> tuple[int, int, int]:
    """The RGB colour (0-255) of a query id or a track id: PALETTE at the id's CRC-32."""
    return PALETTE[zlib.crc32(key.encode("utf-8")) % len(PALETTE)]
