"""3D grounding: grounded points lifted with the aligned depth frame of their own stamp and the colour camera's
intrinsics, into the camera's optical frame (x right, y down, z forward, metres).

- `DepthStore` keeps, per stream, only the depth frames that match colour frames the clip buffer kept (same stamp,
  or the nearest within `max_dt_s`), and each only as long as its colour frame lives (in the buffer, a pending or a
  running clip): memory follows the window, not the depth rate. Depth that arrives before its colour frame waits
  in a small pending queue; depth that no kept colour frame can use is never decoded (`wants`).
- `CameraModel` holds a CameraInfo (K, D, distortion model) and turns pixels into rays: OpenCV undistorts
  plumb_bob / rational_polynomial (`cv2.undistortPoints`) and equidistant (`cv2.fisheye.undistortPoints`).
- `lookup_depths` takes a robust depth per point: an actual sample near the median of the valid pixels in a
  small window, scaled to the depth resolution when it differs from the colour one.
- `DepthLifter` lifts every point, track trajectory and event evidence of a QueryResult. Points of tracks and
  events that lie outside the buffer by now keep the 3D they got while their frames were held.

Pixel conventions: GroundedPoint x/y have their origin at the top-left pixel CORNER (pixel i spans [i, i+1));
CameraInfo/OpenCV put pixel CENTRES at integers, so the ray of point (x, y) is that of OpenCV pixel
(x - 0.5, y - 0.5). Depth images are 16UC1 (millimetres) or 32FC1 (metres); depth is the z coordinate (what
RealSense, ZED and OAK-D publish), not the distance along the ray.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from .counters import Counters
from .intake import BadFrame
from .types import (NS_PER_S, EventState, Frame, GroundedPoint, Lifted3D, LiftStatus, Point3D, QueryResult,
                    TrackStatus)

# metres per unit of each supported depth encoding
DEPTH_ENCODINGS = {"16UC1": 1e-3, "32FC1": 1.0}
DISTORTION_MODELS = ("plumb_bob", "rational_polynomial", "equidistant")
# Aligned depth may have another resolution than colour (RealSense: 848x480 depth for 1920x1080 colour, aspect
# 1.767 vs 1.778); a larger relative difference means it is not registered to the colour image.
MAX_ASPECT_DIFF = 0.02
# Depth frames that arrived before their colour frame; more than a few means colour lags depth badly.
PENDING_MAX = 8
# cv2.undistortPoints stops after 5 iterations by default: 1e-5 rad off at a wide-angle image corner.
UNDISTORT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-12)


@dataclass(frozen=True)
class DepthConfig:
    """enabled: lift points to 3D; max_dt_s: largest |depth stamp - colour stamp| matched (0 = exact stamps);
    min_m, max_m: valid depth range; window_px: side of the square look-up window in colour pixels; wait_s: how long
    lifting a clip waits for the depth of its newest frame (a depth topic published just after the colour image
    arrives after a fast answer; 0 = lift with what has arrived)."""

    enabled: bool = False
    max_dt_s: float = 0.02
    min_m: float = 0.1
    max_m: float = 10.0
    window_px: int = 5
    wait_s: float = 0.1

    def __post_init__(self) -> None:
        if self.max_dt_s < 0:
            raise ValueError("depth.max_dt_s must be >= 0")
        if not 0 <= self.min_m < self.max_m:
            raise ValueError(f"depth range must satisfy 0 <= min_m < max_m, got {self.min_m}..{self.max_m}")
        if self.window_px < 1:
            raise ValueError("depth.window_px must be >= 1")
        if self.wait_s < 0:
            raise ValueError("depth.wait_s must be >= 0")


class BadDepth(BadFrame):
    """A depth image that cannot be used; `reason`: unsupported_encoding, empty_image, bad_step, truncated_data."""


@dataclass(frozen=True, eq=False)
class DepthImage:
    """One aligned depth frame: `data` (H, W) as received (uint16 millimetres or float32 metres), `unit_m` metres
    per unit of data."""

    stamp_ns: int
    data: np.ndarray
    unit_m: float
    frame_id: str = ""

    @property
    def width(self) -> int:
        return int(self.data.shape[1])

    @property
    def height(self) -> int:
        return int(self.data.shape[0])


def depth_from_buffer(encoding: str, width: int, height: int, step: int, is_bigendian: int, data, stamp_ns: int,
                      frame_id: str = "") -> DepthImage:
    """A DepthImage from sensor_msgs/Image fields (rows may be padded: `step` bytes each). Raises BadDepth."""
    unit = DEPTH_ENCODINGS.get(encoding)
    if unit is None:
        raise BadDepth("unsupported_encoding", f"depth encoding '{encoding}' is not supported (16UC1 in millimetres "
                                               "or 32FC1 in metres)")
    if width <= 0 or height <= 0:
        raise BadDepth("empty_image", f"depth image is {width}x{height}")
    dtype = np.dtype(np.uint16 if encoding == "16UC1" else np.float32).newbyteorder(">" if is_bigendian else "<")
    if step < width * dtype.itemsize:
        raise BadDepth("bad_step", f"step {step} < width {width} x {dtype.itemsize} bytes")
    buffer = np.frombuffer(data, np.uint8)
    if buffer.size < step * height:
        raise BadDepth("truncated_data", f"{buffer.size} bytes < step {step} x height {height}")
    rows = buffer[:step * height].reshape(height, step)[:, :width * dtype.itemsize]
    # a copy in native byte order: it does not pin the message's buffer while the depth frame is held
    pixels = rows.copy().view(dtype).astype(dtype.newbyteorder("="), copy=False)
    return DepthImage(stamp_ns=stamp_ns, data=pixels, unit_m=unit, frame_id=frame_id)


def depth_from_msg(msg, stamp_ns: int) -> DepthImage:
    """The DepthImage of a sensor_msgs/Image (an rclpy or rosbags message alike). Raises BadDepth."""
    return depth_from_buffer(msg.encoding, int(msg.width), int(msg.height), int(msg.step), msg.is_bigendian, msg.data,
                             stamp_ns, str(msg.header.frame_id))


def aligned(depth_size: tuple[int, int], colour_size: tuple[int, int]) -> bool:
    """Whether a (width, height) depth image can be registered to a colour image: same aspect ratio within 2 %."""
    (dw, dh), (cw, ch) = depth_size, colour_size
    return abs((dw / dh) / (cw / ch) - 1.0) <= MAX_ASPECT_DIFF


# ---- camera model -------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class CameraModel:
    """Intrinsics of the colour camera from its CameraInfo: image size (px), K (3x3), D, distortion model."""

    width: int
    height: int
    k: np.ndarray
    d: np.ndarray
    model: str
    frame_id: str = ""

    @classmethod
    def from_camera_info(cls, width: int, height: int, k: Sequence[float], d: Sequence[float],
                         distortion_model: str, frame_id: str = "") -> CameraModel:
        """Validated model; ValueError says what is wrong. All-zero (or no) D means an undistorted image, whatever
        the model name."""
        k_arr = np.asarray(k, np.float64)
        d_arr = np.asarray(d, np.float64).reshape(-1)
        if width <= 0 or height <= 0:
            raise ValueError(f"CameraInfo image size is {width}x{height}")
        if k_arr.size != 9 or not np.isfinite(k_arr).all():
            raise ValueError("CameraInfo K must hold 9 finite numbers")
        k_arr = k_arr.reshape(3, 3)
        if k_arr[0, 0] <= 0 or k_arr[1, 1] <= 0 or not np.allclose(k_arr[2], (0.0, 0.0, 1.0)):
            raise ValueError(f"CameraInfo K is not a camera matrix (fx, fy > 0, last row 0 0 1): {k_arr.tolist()}")
        if not np.isfinite(d_arr).all():
            raise ValueError("CameraInfo D holds non-finite numbers")
        model = distortion_model if np.any(d_arr) else ""
        if model and model not in DISTORTION_MODELS:
            raise ValueError(f"distortion model '{distortion_model}' is not supported "
                             f"({', '.join(DISTORTION_MODELS)}, or an all-zero D)")
        if model == "equidistant" and d_arr.size != 4:
            raise ValueError(f"equidistant distortion needs 4 coefficients, got {d_arr.size}")
        if model in ("plumb_bob", "rational_polynomial") and d_arr.size not in (4, 5, 8, 12, 14):
            raise ValueError(f"{model} distortion needs 4, 5, 8, 12 or 14 coefficients, got {d_arr.size}")
        return cls(width=int(width), height=int(height), k=k_arr, d=d_arr, model=model, frame_id=frame_id)

    def rays(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """(N, 2) undistorted normalised coordinates (x/z, y/z) of OpenCV pixel coordinates u, v (centres at
        integers)."""
        pts = np.stack([np.asarray(u, np.float64), np.asarray(v, np.float64)], axis=-1).reshape(-1, 1, 2)
        if pts.shape[0] == 0:
            return np.empty((0, 2))
        if not self.model:
            fx, fy, cx, cy = self.k[0, 0], self.k[1, 1], self.k[0, 2], self.k[1, 2]
            skew = self.k[0, 1]
            y = (pts[:, 0, 1] - cy) / fy
            return np.stack([(pts[:, 0, 0] - cx - skew * y) / fx, y], axis=-1)
        if self.model == "equidistant":
            out = cv2.fisheye.undistortPoints(pts, self.k, self.d, None, None, None, UNDISTORT_CRITERIA)
        else:
            out = cv2.undistortPoints(pts, self.k, self.d, None, None, None, UNDISTORT_CRITERIA)
        return out.reshape(-1, 2)


# ---- depth look-up ------------------------------------------------------------------------------------------
def window_values(depths: list[DepthImage], xs: np.ndarray, ys: np.ndarray, colour_size: tuple[int, int],
                  config: DepthConfig) -> np.ndarray:
    """(N, K) depths in metres of the look-up window of each point at colour pixel positions xs, ys (corner
    origin), point i read from depths[i] (all of one size); inf where the pixel is invalid (0, NaN, outside
    min_m..max_m) or outside the image.

    The window is `window_px` colour pixels wide, scaled to the depth resolution (at least 1 depth pixel, odd,
    centred on the depth pixel under the point)."""
    cw, ch = colour_size
    dw, dh = depths[0].width, depths[0].height
    sx, sy = dw / cw, dh / ch
    half = max(0, int(round((config.window_px * sx - 1) / 2)))
    offsets = np.arange(-half, half + 1)
    cols = np.clip(np.floor(np.asarray(xs) * sx).astype(np.int64), 0, dw - 1)
    rows = np.clip(np.floor(np.asarray(ys) * sy).astype(np.int64), 0, dh - 1)
    rr = (rows[:, None] + offsets[None, :])[:, :, None]
    cc = (cols[:, None] + offsets[None, :])[:, None, :]
    n = len(cols)
    inside = ((rr >= 0) & (rr < dh) & (cc >= 0) & (cc < dw)).reshape(n, -1)
    flat = (np.clip(rr, 0, dh - 1) * dw + np.clip(cc, 0, dw - 1)).reshape(n, -1)
    values = np.empty(flat.shape)
    start = 0
    while start < n:  # one gather per run of points on the same depth frame
        depth = depths[start]
        stop = start + 1
        while stop < n and depths[stop] is depth:
            stop += 1
        values[start:stop] = depth.data.reshape(-1)[flat[start:stop]] * depth.unit_m
        start = stop
    with np.errstate(invalid="ignore"):  # NaN compares false: invalid
        valid = inside & (values >= max(config.min_m, np.nextafter(0.0, 1.0))) & (values <= config.max_m)
    return np.where(valid, values, np.inf)


def lower_median(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lower median of the finite values of each row, NaN when none; share of finite values per row). The lower
    median is an actual sample: at an edge it is one of the two surfaces (the nearer one, usually the object
    pointed at), never a depth in between."""
    finite = np.isfinite(values)
    counts = finite.sum(axis=1)
    ordered = np.sort(values, axis=1)  # invalid (inf) last
    picked = ordered[np.arange(len(values)), np.maximum(counts - 1, 0) // 2]
    return np.where(counts > 0, picked, np.nan), counts / values.shape[1]


def lookup_depths(depth: DepthImage, xs: np.ndarray, ys: np.ndarray, colour_size: tuple[int, int],
                  config: DepthConfig) -> tuple[np.ndarray, np.ndarray]:
    """(depth in metres, NaN where no valid pixel; fraction of valid pixels in the window) for points at colour
    pixel positions xs, ys: the lower median of `window_values`."""
    return lower_median(window_values([depth] * len(xs), xs, ys, colour_size, config))


# ---- depth store --------------------------------------------------------------------------------------------
@dataclass(eq=False)
class _Held:
    """A kept colour frame's slot: its size and the best depth matched so far (|dt| in ns)."""

    size: tuple[int, int]
    depth: DepthImage | None = None
    dt_ns: int = 0


class DepthStore:
    """Depth frames of one stream, matched to the colour frames its clip buffer kept.

    A kept colour frame gets the depth frame of the same stamp or the nearest one within max_dt_s (a closer one
    arriving later replaces it). The match lives exactly as long as the colour Frame object (a weakref finalizer
    drops it): while the buffer, a pending clip or a running inference holds the frame. Depth arriving before its
    colour frame waits in a pending queue of at most PENDING_MAX frames.

    Threads: `add_colour` from the camera thread (under the stream's buffer lock), `wants`/`add_depth` from the
    depth thread, `depth_for` from the runtime's worker; all state is guarded by one lock. Finalizers may run on
    any thread, also inside the lock, so they only append to a deque that the next call purges."""

    def __init__(self, config: DepthConfig, counters: Counters, notice=None) -> None:
        self.max_dt_ns = int(round(config.max_dt_s * NS_PER_S))
        self.counters = counters
        self._notice = notice or (lambda key, message: None)
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)  # notified by add_depth (wait_for)
        self._held: dict[int, _Held] = {}
        self._pending: deque[DepthImage] = deque()
        self._dead: deque[tuple[int, _Held]] = deque()
        self._newest_colour_ns = 0
        self._newest_depth_ns = 0

    def _purge(self) -> None:
        while self._dead:
            stamp, held = self._dead.popleft()
            if self._held.get(stamp) is held:
                del self._held[stamp]

    def _attach(self, stamp: int, held: _Held, depth: DepthImage) -> bool:
        """Match `depth` to the colour slot when it is aligned and closer than the current match."""
        dt = abs(depth.stamp_ns - stamp)
        if dt > self.max_dt_ns or (held.depth is not None and dt >= held.dt_ns):
            return False
        if not aligned((depth.width, depth.height), held.size):
            self.counters.add("depth_frames_refused_not_aligned")
            self._notice("not_aligned", (
                f"depth image {depth.width}x{depth.height} is not aligned with the colour image "
                f"{held.size[0]}x{held.size[1]} (aspect ratios {depth.width / depth.height:.3f} vs "
                f"{held.size[0] / held.size[1]:.3f}): refused, no 3D. Publish depth registered to the colour camera "
                "(e.g. RealSense aligned_depth_to_color)"))
            return False
        if held.depth is None:
            self.counters.add("depth_frames_matched")
        held.depth, held.dt_ns = depth, dt
        return True

    def add_colour(self, frame: Frame) -> None:
        """A colour frame the buffer kept: match it to the best pending depth frame."""
        stamp = frame.stamp_ns
        held = _Held(size=(frame.width, frame.height))
        with self._lock:
            self._purge()
            self._held[stamp] = held
            self._newest_colour_ns = stamp
            best = min((d for d in self._pending if abs(d.stamp_ns - stamp) <= self.max_dt_ns),
                       key=lambda d: abs(d.stamp_ns - stamp), default=None)
            if best is not None and self._attach(stamp, held, best):
                self._pending.remove(best)
            # older pending depth can match neither this frame nor a later one
            self._pending = deque(d for d in self._pending if d.stamp_ns >= stamp - self.max_dt_ns)
        weakref.finalize(frame, self._dead.append, (stamp, held))

    def wants(self, stamp_ns: int, colour_verdict: str) -> bool:
        """Whether a depth frame of this stamp is worth decoding: it is closer to a held colour frame than that
        frame's match, or a colour frame the buffer would keep may still come (`colour_verdict`: the buffer's
        `accepts` for stamp_ns + max_dt)."""
        with self._lock:
            self._purge()
            for stamp, held in self._held.items():
                dt = abs(stamp_ns - stamp)
                if dt <= self.max_dt_ns and (held.depth is None or dt < held.dt_ns):
                    return True
        return colour_verdict in ("keep", "backward_jump")

    def add_depth(self, depth: DepthImage) -> None:
        """A decoded depth frame: matched to held colour frames, else kept pending for the colour frame to come."""
        with self._lock:
            self._purge()
            self._newest_depth_ns = max(self._newest_depth_ns, depth.stamp_ns)
            self._arrived.notify_all()
            matched = [self._attach(s, h, depth) for s, h in self._held.items()
                       if abs(depth.stamp_ns - s) <= self.max_dt_ns]
            if any(matched):
                return
            if depth.stamp_ns + self.max_dt_ns <= self._newest_colour_ns:
                self.counters.add("depth_frames_late")  # its colour frame was kept without it, or never kept
                return
            self._pending.append(depth)
            if len(self._pending) > PENDING_MAX:
                self._pending.popleft()
                self.counters.add("depth_frames_expired")

    def wait_for(self, stamp_ns: int, timeout_s: float) -> bool:
        """Wait at most `timeout_s` until the held colour frame of this stamp has its final depth match: one of the
        same stamp, or any match once a depth frame past stamp + max_dt arrived (depth comes in stamp order, so no
        closer one can follow). True when it has a match; False at once for a stamp not held, and no wait while the
        depth stream is silent (its newest frame over a second older than the stamp: no depth topic, a dead camera)."""
        deadline = time.monotonic() + timeout_s
        with self._arrived:
            while True:
                self._purge()
                held = self._held.get(stamp_ns)
                if held is None:
                    return False
                settled = self._newest_depth_ns > stamp_ns + self.max_dt_ns
                if held.depth is not None and (held.dt_ns == 0 or settled):
                    return True
                remaining = deadline - time.monotonic()
                if settled or remaining <= 0 or self._newest_depth_ns + NS_PER_S < stamp_ns:
                    return held.depth is not None
                self._arrived.wait(remaining)

    def depth_for(self, stamp_ns: int) -> DepthImage | None:
        """The depth frame matched to the held colour frame of this stamp, or None."""
        with self._lock:
            self._purge()
            held = self._held.get(stamp_ns)
            return held.depth if held is not None else None

    def held_frames(self) -> int:
        """Depth frames held now (matched + pending): what bounds the store's memory."""
        with self._lock:
            self._purge()
            return sum(h.depth is not None for h in self._held.values()) + len(self._pending)

    def held_bytes(self) -> int:
        with self._lock:
            self._purge()
            frames = [h.depth for h in self._held.values() if h.depth is not None] + list(self._pending)
            return sum(d.data.nbytes for d in frames)


# ---- lifting ------------------------------------------------------------------------------------------------
def _key(p: GroundedPoint) -> tuple[int, float, float]:
    return p.stamp_ns, p.x, p.y


@dataclass
class _Notices:
    """Problems to log once per key (the ROS layer takes them on its 1 Hz tick)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    seen: set[str] = field(default_factory=set)
    new: list[str] = field(default_factory=list)

    def add(self, key: str, message: str) -> None:
        with self.lock:
            if key not in self.seen:
                self.seen.add(key)
                self.new.append(message)

    def take(self) -> list[str]:
        with self.lock:
            out, self.new = self.new, []
            return out


class DepthLifter:
    """The 3D side of one stream: its depth store, the colour camera's model, and the 3D that track and event
    points got while their depth frames were held (so a trajectory keeps its 3D after the window moved on).

    Threads: `set_camera_info` from the camera-info thread, `lift`/`reset`/`forget` from the runtime's worker
    (the stream's grounding lock is held), the store as documented there."""

    def __init__(self, config: DepthConfig, counters: Counters) -> None:
        self.config = config
        self.counters = counters
        self.notices = _Notices()
        self.store = DepthStore(config, counters, self.notices.add)
        self._camera: CameraModel | None = None
        self._camera_lock = threading.Lock()
        self._memo: dict[str, dict[tuple[int, float, float], Point3D]] = {}

    @property
    def camera(self) -> CameraModel | None:
        with self._camera_lock:
            return self._camera

    def set_camera(self, camera: CameraModel | None) -> None:
        with self._camera_lock:
            self._camera = camera

    def reset(self) -> None:
        """Forget remembered 3D (after a backward time jump the tracks and events are forgotten too)."""
        self._memo.clear()

    def forget(self, query_id: str) -> None:
        """Forget the remembered 3D of a removed query's tracks and events (ids `<query_id>/...`)."""
        for owner in [o for o in self._memo if o.startswith(f"{query_id}/")]:
            del self._memo[owner]

    def memo_points(self) -> int:
        return sum(len(m) for m in self._memo.values())

    def _usable_camera(self, width: int, height: int) -> CameraModel | None:
        camera = self.camera
        if camera is None:
            return None
        if (camera.width, camera.height) != (width, height):
            self.notices.add(f"camera_size:{camera.width}x{camera.height}:{width}x{height}", (
                f"CameraInfo is for {camera.width}x{camera.height} images but the colour image is {width}x{height}: "
                "no 3D (publish the CameraInfo of this colour image)"))
            return None
        return camera

    def lift_points(self, points: list[GroundedPoint], width: int, height: int) -> list[Point3D]:
        """Lift points of a width x height colour image (look-ups counted as lift_<status>)."""
        camera = self._usable_camera(width, height)
        if camera is None:
            self.counters.add("lift_no_camera_info", len(points))
            return [Point3D(p, LiftStatus.NO_CAMERA_INFO) for p in points]
        depth_of = {stamp: self.store.depth_for(stamp) for stamp in {p.stamp_ns for p in points}}
        found = [(i, d) for i, p in enumerate(points) if (d := depth_of[p.stamp_ns]) is not None]
        status = np.full(len(points), int(LiftStatus.NO_DEPTH))
        z = np.full(len(points), np.nan)
        fraction = np.zeros(len(points))
        by_size: dict[tuple[int, int], list[tuple[int, DepthImage]]] = {}
        for i, d in sorted(found, key=lambda item: item[1].stamp_ns):
            by_size.setdefault((d.width, d.height), []).append((i, d))
        for group in by_size.values():  # one group unless the depth resolution changed
            rows = [i for i, _ in group]
            xy = np.array([(points[i].x, points[i].y) for i in rows])
            values = window_values([d for _, d in group], xy[:, 0], xy[:, 1], (width, height), self.config)
            z[rows], fraction[rows] = lower_median(values)
        looked_up = [i for i, _ in found]
        status[looked_up] = np.where(np.isfinite(z[looked_up]), int(LiftStatus.OK), int(LiftStatus.INVALID_DEPTH))
        ok = np.flatnonzero(status == LiftStatus.OK)
        rays = camera.rays(np.array([points[i].x for i in ok]) - 0.5, np.array([points[i].y for i in ok]) - 0.5)
        xyz = np.zeros((len(points), 3))
        if len(ok):
            xyz[ok] = np.column_stack([rays * z[ok, None], z[ok]])
        positions = xyz.tolist()
        for s in LiftStatus:
            self.counters.add(f"lift_{s.name.lower()}", int((status == s).sum()))
        statuses = [_STATUSES[v] for v in status.tolist()]
        return [Point3D(p, st, tuple(xyz_i) if st == LiftStatus.OK else None, f)
                for p, st, xyz_i, f in zip(points, statuses, positions, fraction.tolist())]

    def lift(self, results: list[QueryResult], stateful: bool) -> None:
        """Set `lifted` on results of one clip: the 3D of their points, track trajectories and event evidence, each
        distinct point looked up once. `stateful` (standing queries): tracks and events remember the 3D of their
        points (OK or INVALID_DEPTH, which a later look-up would repeat), so only their new points are looked up
        and points whose depth frame is gone keep their 3D."""
        known: dict[tuple[int, float, float], Point3D] = {}
        todo: dict[tuple[int, int], dict[tuple[int, float, float], GroundedPoint]] = {}
        for r in results:
            owners = [*(t.id for t in r.tracks), *(e.id for e in r.events)]
            if stateful:
                for owner in owners:
                    known.update(self._memo.get(owner, {}))
            pending = todo.setdefault((r.width, r.height), {})
            for p in _all_points(r):
                key = _key(p)
                if key not in known:
                    pending.setdefault(key, p)
        fresh: dict[tuple[int, float, float], Point3D] = {}
        for (width, height), pending in todo.items():
            fresh.update(zip(pending, self.lift_points(list(pending.values()), width, height)))
        remembered = 0
        for r in results:
            r.lifted = lifted = Lifted3D(frame_id=r.frame_id,
                                         points=[known.get(_key(p)) or fresh[_key(p)] for p in r.points])
            owners = [(t.id, t.trajectory, t.status == TrackStatus.ENDED, lifted.tracks) for t in r.tracks]
            owners += [(e.id, e.evidence, e.state == EventState.ENDED, lifted.events) for e in r.events]
            for owner, pts, ended, into in owners:
                out = []
                for p in pts:
                    key = _key(p)
                    q = known.get(key)
                    remembered += q is not None
                    out.append(q or fresh[key])
                into[owner] = out
                if stateful:
                    if ended:
                        self._memo.pop(owner, None)
                    else:
                        self._memo[owner] = {_key(q.point): q for q in out if q.status in _FINAL}
        self.counters.add("lift_remembered", remembered)


_FINAL = (LiftStatus.OK, LiftStatus.INVALID_DEPTH)  # statuses a later look-up of the same point would repeat
_STATUSES = tuple(LiftStatus)


def _all_points(r: QueryResult):
    yield from r.points
    for t in r.tracks:
        yield from t.trajectory
    for e in r.events:
        yield from e.evidence
