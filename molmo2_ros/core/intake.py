"""One intake for camera frames, the node's (ros/camera_input.py, ros/depth_input.py) and the replay's
(offline/replay.py, offline/data/depth_bag.py): a frame is decoded only when its stream will use it, and every frame
dropped on the way is counted under one vocabulary, so that a bad frame counts the same live and in a replay.

Colour (`ColourGate`): the clip buffer's verdict on the stamp decides. "keep" and "backward_jump" frames are decoded;
any other passes on as a placeholder without pixels, which the buffer counts (buffer_decimated,
buffer_dropped_<reason>). Depth (`DepthGate`): a depth frame is decoded only when it can match a colour frame the
buffer keeps (`Stream.wants_depth`); the others count as frames_skipped. A decoded frame counts as frames_decoded.

Drop reasons (`BadFrame.reason`, counted as bad_<reason>): truncated_message (serialized data too short to hold a
header stamp), undeserializable (not a message of the topic's type), and the decoders' refusals
(core/image_decode.BadImage, core/depth.BadDepth): unsupported_encoding, empty_image, bad_step, truncated_data,
empty_data, undecodable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

import numpy as np

from .counters import Counters
from .types import Frame

if TYPE_CHECKING:
    from .depth import DepthImage
    from .stream import Stream

P = TypeVar("P")  # what a frame is decoded from: serialized bytes, a message, a bag frame
T = TypeVar("T")  # what decoding gives: a Frame, a DepthImage

NO_PIXELS = np.empty((0, 0, 3), np.uint8)  # every placeholder's image: nothing allocated per skipped frame
DECODED_VERDICTS = frozenset(("keep", "backward_jump"))


class BadFrame(ValueError):
    """A frame dropped before it reaches the stream: `reason` is its counter key (bad_<reason>), the message says
    why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class FrameGate(Generic[P, T]):
    """Decoding and drop counting shared by both gates. `decode(payload, stamp_ns)` raises BadFrame; `on_drop(error,
    payload)` hears of every drop (payload None for a frame dropped before it had a stamp); counter keys start with
    `prefix`."""

    def __init__(self, decode: Callable[[P, int], T], counters: Counters,
                 on_drop: Callable[[BadFrame, P | None], None], prefix: str = "") -> None:
        self.counters = counters
        self._decode = decode
        self._on_drop = on_drop
        self._prefix = prefix
        self._decoded_key = f"{prefix}frames_decoded"

    def drop(self, error: BadFrame, payload: P | None = None) -> None:
        """Count a dropped frame under its reason."""
        self.counters.add(f"{self._prefix}bad_{error.reason}")
        self._on_drop(error, payload)

    def decoded(self, payload: P, stamp_ns: int) -> T | None:
        """The decoded frame, or None when it was dropped (counted)."""
        try:
            frame = self._decode(payload, stamp_ns)
        except BadFrame as error:
            self.drop(error, payload)
            return None
        self.counters.add(self._decoded_key)
        return frame


class ColourGate(FrameGate[P, Frame]):
    """Colour frames of one stream: `accepts(stamp_ns)` is the clip buffer's verdict (Stream.accepts)."""

    def __init__(self, accepts: Callable[[int], str], decode: Callable[[P, int], Frame], counters: Counters,
                 on_drop: Callable[[BadFrame, P | None], None]) -> None:
        super().__init__(decode, counters, on_drop)
        self._accepts = accepts

    def take(self, stamp_ns: int, payload: P) -> Frame | None:
        """The frame to push: decoded when the buffer keeps its stamp, else a placeholder the buffer counts; None
        when it was dropped."""
        if self._accepts(stamp_ns) not in DECODED_VERDICTS:
            return Frame(stamp_ns=stamp_ns, image=NO_PIXELS)
        return self.decoded(payload, stamp_ns)


class DepthGate(FrameGate[P, "DepthImage"]):
    """Depth frames of one stream: `stream_of()` is the stream (None, or one without depth: nothing is taken)."""

    def __init__(self, stream_of: Callable[[], Stream | None], decode: Callable[[P, int], DepthImage],
                 counters: Counters, on_drop: Callable[[BadFrame, P | None], None], prefix: str = "") -> None:
        super().__init__(decode, counters, on_drop, prefix)
        self._stream_of = stream_of
        self._skipped_key = f"{prefix}frames_skipped"

    def take(self, stamp_ns: int, payload: P) -> DepthImage | None:
        """The depth frame to add to the stream's depth store, decoded when a kept colour frame can match it; None
        when it was skipped or dropped (counted) or the stream has no depth."""
        stream = self._stream_of()
        if stream is None or stream.depth is None:
            return None
        if not stream.wants_depth(stamp_ns):
            self.counters.add(self._skipped_key)
            return None
        return self.decoded(payload, stamp_ns)
