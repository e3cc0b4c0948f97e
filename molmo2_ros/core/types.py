"""Data types that flow through the pipeline: frames -> clips -> generations -> grounded results.

All stamps are absolute times in integer nanoseconds (ROS time of the source camera frame).
"""

from __future__ import annotations

import enum
import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

NS_PER_S = 1_000_000_000


class TaskKind(str, enum.Enum):
    """What a query asks for; values equal the StandingQuery.TASK_* constants of the messages."""

    POINT = "point"
    COUNT = "count"
    TRACK = "track"
    EVENT = "event"
    CAPTION = "caption"
    QUESTION = "question"


@dataclass(frozen=True)
class Query:
    """A standing or on-demand query."""

    id: str
    task: TaskKind
    text: str = ""
    topic: str = ""


@dataclass(frozen=True, eq=False)
class Frame:
    """One camera frame: RGB uint8 pixels (H, W, 3) and the camera's stamp and frame_id.

    source_size: (width, height) of the camera's original image when `image` is a scaled-down copy (a frame read
    back from the history); width/height are the original's, so grounded pixels land in the original image."""

    stamp_ns: int
    image: np.ndarray
    frame_id: str = ""
    source_size: tuple[int, int] | None = None

    @property
    def height(self) -> int:
        return self.source_size[1] if self.source_size else int(self.image.shape[0])

    @property
    def width(self) -> int:
        return self.source_size[0] if self.source_size else int(self.image.shape[1])


@dataclass(frozen=True, eq=False)
class ClipFrame:
    """A frame as fed to the model: its absolute sample index and its pooling (SlowFast role)."""

    frame: Frame
    sample_index: int
    pooling: tuple[int, int]
    is_key: bool = False

    @property
    def stamp_ns(self) -> int:
        return self.frame.stamp_ns


@dataclass(frozen=True, eq=False)
class Clip:
    """A window of sampled frames, oldest first, all of the same size. stream: the camera it came from (its name
    in the node's `cameras` parameter; "" for the single unnamed camera)."""

    index: int
    frames: tuple[ClipFrame, ...]
    epoch: int = 0
    num_visual_tokens: int = 0
    stream: str = ""

    @property
    def start_ns(self) -> int:
        return self.frames[0].stamp_ns

    @property
    def end_ns(self) -> int:
        return self.frames[-1].stamp_ns

    @property
    def stamps_ns(self) -> list[int]:
        return [f.stamp_ns for f in self.frames]

    @property
    def width(self) -> int:
        return self.frames[0].frame.width

    @property
    def height(self) -> int:
        return self.frames[0].frame.height

    @property
    def frame_id(self) -> str:
        return self.frames[-1].frame.frame_id

    def relative_times(self) -> list[float]:
        """Seconds of each frame after the clip's first frame (what the prompt shows the model)."""
        start = self.start_ns
        return [(s - start) / NS_PER_S for s in self.stamps_ns]


@dataclass(frozen=True)
class RawPoint:
    """A point as the model wrote it: key (seconds in the clip, or 1-based image index), id, x/y in 0..1000.

    key_is_index: the key was written without a decimal point, i.e. as an image index, not a time.
    """

    key: float
    object_id: int | None
    x: float
    y: float
    key_is_index: bool = False


@dataclass
class ParsedAnswer:
    """Structured content of one model answer.

    kind: "points", "tracks", "count" (a number only), "none" (explicitly empty) or "prose" (no tags).
    dropped: counts of malformed or out-of-range items, by reason.
    """

    text: str
    kind: str
    label: str = ""
    points: list[RawPoint] = field(default_factory=list)
    count: int | None = None
    dropped: Counter = field(default_factory=Counter)


@dataclass(frozen=True)
class GroundedPoint:
    """A point on a source frame: the frame's exact stamp and pixel coordinates of the original image.

    object_id: the persistent track id (`Track.id`) when the point belongs to a track, else "". (Inside the
    pipeline, between grounding and track association, it briefly holds the model's per-answer object number;
    no such point leaves the pipeline.)
    """

    stamp_ns: int
    x: float
    y: float
    label: str = ""
    object_id: str = ""


class TrackStatus(enum.IntEnum):
    """Values equal molmo2_ros/Track STATUS_*."""

    NEW = 0
    TRACKED = 1
    LOST = 2
    ENDED = 3


@dataclass
class Track:
    """A persistent track: its id never changes and is never reused."""

    id: str
    label: str
    status: TrackStatus
    first_ns: int
    last_ns: int
    trajectory: list[GroundedPoint] = field(default_factory=list)


class EventState(enum.IntEnum):
    """Values equal molmo2_ros/Event STATE_*."""

    STARTED = 0
    ONGOING = 1
    ENDED = 2


@dataclass
class Event:
    """An event with a stable id and a time span of source-frame stamps."""

    id: str
    query_id: str
    query: str
    description: str
    start_ns: int
    end_ns: int
    state: EventState
    evidence: list[GroundedPoint] = field(default_factory=list)


@dataclass
class Generation:
    """Raw model output for one query on one clip.

    confidence: mean token log-probability of the answer's coordinate tokens when the engine provides it, else
    NaN."""

    query: Query
    text: str
    num_new_tokens: int = 0
    inference_s: float = 0.0
    confidence: float = math.nan


class LiftStatus(enum.IntEnum):
    """Why a grounded point has (OK) or has no 3D position; values equal molmo2_ros/GroundedPoint3D STATUS_*."""

    OK = 0
    NO_CAMERA_INFO = 1  # no usable CameraInfo of the colour camera (missing, other image size, unknown model)
    NO_DEPTH = 2  # no aligned depth frame within depth.max_dt_s of the point's stamp (missing, late, refused)
    INVALID_DEPTH = 3  # no valid depth pixel (0, NaN, outside depth.min_m..max_m) in the window around the point


@dataclass(frozen=True)
class Point3D:
    """A grounded point lifted to 3D: position in metres in the colour camera's optical frame (x right, y down,
    z forward) at the point's own stamp, or None when status is not OK. valid_fraction: share of the depth pixels
    in the look-up window that held valid depth."""

    point: GroundedPoint
    status: LiftStatus
    position: tuple[float, float, float] | None = None
    valid_fraction: float = 0.0


@dataclass
class Lifted3D:
    """The 3D side of one QueryResult: `points` parallel to result.points, `tracks[track id]` parallel to that
    track's trajectory, `events[event id]` parallel to that event's evidence. frame_id: the optical frame."""

    frame_id: str
    points: list[Point3D] = field(default_factory=list)
    tracks: dict[str, list[Point3D]] = field(default_factory=dict)
    events: dict[str, list[Point3D]] = field(default_factory=dict)


@dataclass
class QueryResult:
    """Grounded result for one query on one clip: what the ROS layer and the replay tool publish.

    frame_stamps_ns: stamps of the frames fed to the model, oldest first (empty only in a closing result).
    confidence: see Generation.confidence (NaN when the engine gave none).
    closing: a report made by Pipeline.finish() when the stream ends, not by the model: it carries only the
    tracks and events it ends (text empty, no frames).
    """

    query: Query
    clip_index: int
    clip_start_ns: int
    clip_end_ns: int
    frame_id: str
    width: int
    height: int
    num_frames: int
    num_visual_tokens: int
    text: str
    model_id: str
    inference_s: float
    points: list[GroundedPoint] = field(default_factory=list)
    count: int | None = None
    tracks: list[Track] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    frame_stamps_ns: list[int] = field(default_factory=list)
    confidence: float = math.nan
    closing: bool = False
    lifted: Lifted3D | None = None  # 3D of the points, tracks and events when the stream has depth enabled

    @property
    def stamp_ns(self) -> int:
        """Stamp of the newest frame used: the header stamp of every message made from this result."""
        return self.clip_end_ns


@dataclass
class Inference:
    """What an engine returns for one clip: the clip actually used (fewer frames after an out-of-memory
    retry) and one generation per query. `error` is set (and generations empty) when inference failed;
    `stopped` when it ended early because its stop flag was set (shutdown, deactivate, cancel)."""

    clip: Clip
    generations: list[Generation]
    oom_retries: int = 0
    vision_frames_encoded: int = 0
    prefill_tokens: int = 0
    error: str = ""
    stopped: bool = False
