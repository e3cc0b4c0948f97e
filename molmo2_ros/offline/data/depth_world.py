"""Aligned depth and CameraInfo for the synthetic world (`molmo2-ros generate --depth`), with exact 3D ground truth.

Every object is a flat card facing the camera at its own distance (object i at 1.2 + 0.4 i metres) in front of a
background plane at 4 m; the grey occluder is nearest (0.8 m). Cards are drawn in the colour image's order, so
what covers what agrees between colour and depth. The colour image is taken as seen through the CameraInfo's
lens: with distortion, an object's 3D position is the ray of its (distorted) pixel, found by inverting OpenCV's
forward projection (`cv2.projectPoints`) with Newton steps, independent of the undistortion under test.

Pixel convention: the scenario's pixel positions are GroundedPoint coordinates (origin at the top-left pixel
corner), so OpenCV's pixel of position (x, y) is (x - 0.5, y - 0.5), as in core/depth.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from molmo2_ros.core.types import NS_PER_S

BACKGROUND_M = 4.0
OCCLUDER_M = 0.8
DEPTH_TOPIC = "/camera/aligned_depth_to_color/image_raw"
CAMERA_INFO_TOPIC = "/camera/camera_info"
ENCODINGS = ("16UC1", "32FC1")
# CameraInfo distortion of each --distortion choice: (ROS model name, D); moderate lenses of RGB-D cameras
DISTORTIONS = {
    "none": ("plumb_bob", [0.0, 0.0, 0.0, 0.0, 0.0]),
    "plumb_bob": ("plumb_bob", [-0.12, 0.05, 0.0008, -0.0012, -0.01]),
    "rational_polynomial": ("rational_polynomial", [0.35, -0.08, 0.0008, -0.0012, 0.0, 0.45, -0.02, 0.01]),
    "equidistant": ("equidistant", [0.05, -0.012, 0.002, -0.0005]),
}


@dataclass(frozen=True)
class DepthOptions:
    """encoding: 16UC1 (mm) or 32FC1 (m); scale: depth resolution relative to colour (0.5 = half); distortion: a
    DISTORTIONS key; holes: fraction of pixels without depth (0 or NaN), at random; offset_s: depth stamp minus
    colour stamp (0 = the same stamps); seed: randomness of the holes."""

    encoding: str = "16UC1"
    scale: float = 1.0
    distortion: str = "none"
    holes: float = 0.02
    offset_s: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.encoding not in ENCODINGS:
            raise ValueError(f"depth encoding must be one of {', '.join(ENCODINGS)}, got '{self.encoding}'")
        if self.distortion not in DISTORTIONS:
            raise ValueError(f"distortion must be one of {', '.join(DISTORTIONS)}, got '{self.distortion}'")
        if not 0 < self.scale <= 1 or not 0 <= self.holes < 1:
            raise ValueError("depth scale must be in (0, 1], holes in [0, 1)")


def camera_matrix(width: int, height: int) -> np.ndarray:
    """K of the synthetic camera: ~58 degrees horizontal field of view, principal point slightly off centre."""
    f = 0.9 * width
    return np.array([[f, 0.0, (width - 1) / 2 + 2.3], [0.0, f, (height - 1) / 2 - 1.7], [0.0, 0.0, 1.0]])


def _project(xy: np.ndarray, k: np.ndarray, d: np.ndarray, model: str) -> np.ndarray:
    """OpenCV pixels (N, 2) of normalised points (N, 2) at z = 1 (the forward lens model)."""
    pts = np.column_stack([xy, np.ones(len(xy))]).reshape(-1, 1, 3)
    if model == "equidistant":
        out = cv2.fisheye.projectPoints(pts, np.zeros(3), np.zeros(3), k, d)[0]
    else:
        out = cv2.projectPoints(pts, np.zeros(3), np.zeros(3), k, d)[0]
    return out.reshape(-1, 2)


def pixel_rays(uv: np.ndarray, k: np.ndarray, d: np.ndarray, model: str) -> np.ndarray:
    """Normalised rays (N, 2) whose projection is OpenCV pixel uv (N, 2): Newton's method on the forward model with
    a finite-difference Jacobian, to 1e-12 px."""
    xy = (uv - k[:2, 2]) / np.diag(k)[:2]
    eps = 1e-7
    for _ in range(50):
        residual = _project(xy, k, d, model) - uv
        if np.abs(residual).max() < 1e-12:
            break
        jx = (_project(xy + [eps, 0.0], k, d, model) - _project(xy, k, d, model)) / eps
        jy = (_project(xy + [0.0, eps], k, d, model) - _project(xy, k, d, model)) / eps
        jac = np.stack([jx, jy], axis=-1)  # (N, 2 pixel, 2 ray)
        xy = xy - np.linalg.solve(jac, residual[..., None])[..., 0]
    return xy


def _draw(img: np.ndarray, kind: str, x: float, y: float, r: float, value: float) -> None:
    """The object shapes of scenario.render_frame (same centres, sizes and rounding), filled with a depth value."""
    c = (int(round(x)), int(round(y)))
    if kind == "ball":
        cv2.circle(img, c, int(round(r)), value, cv2.FILLED)
    elif kind == "square":
        h = int(round(r))
        cv2.rectangle(img, (c[0] - h, c[1] - h), (c[0] + h, c[1] + h), value, cv2.FILLED)
    else:
        pts = np.array([[x, y - r], [x - r * 0.95, y + r * 0.7], [x + r * 0.95, y + r * 0.7]])
        cv2.fillPoly(img, [np.round(pts).astype(np.int32)], value)


class DepthWorld:
    """Renders the depth and CameraInfo messages of each frame and collects the objects' 3D ground truth.

    objects: the scenario's objects in drawing order (attributes id, kind, size); occluder: (x0, y0, x1, y1) as
    fractions of the image."""

    def __init__(self, options: DepthOptions, width: int, height: int, objects, occluder: tuple, frame_id: str):
        self.options = options
        self.width, self.height = width, height
        self.depth_width = max(1, int(round(width * options.scale)))
        self.depth_height = max(1, int(round(height * options.scale)))
        self.objects = list(objects)
        self.occluder = occluder
        self.frame_id = frame_id
        self.k = camera_matrix(width, height)
        self.model, d = DISTORTIONS[options.distortion]
        self.d = np.array(d)
        self.distance = {o.id: round(1.2 + 0.4 * i, 3) for i, o in enumerate(self.objects)}
        self._rng = np.random.default_rng(options.seed)
        self._truth: dict[str, list] = {o.id: [] for o in self.objects}
        self._conns: dict[str, object] = {}

    def add_connections(self, writer, typestore) -> None:
        self._conns["depth"] = writer.add_connection(DEPTH_TOPIC, "sensor_msgs/msg/Image", typestore=typestore)
        self._conns["info"] = writer.add_connection(CAMERA_INFO_TOPIC, "sensor_msgs/msg/CameraInfo",
                                                    typestore=typestore)

    def render(self, positions: dict[str, tuple[float, float]]) -> np.ndarray:
        """Depth in metres at colour resolution (float64), before holes."""
        img = np.full((self.height, self.width), BACKGROUND_M)
        px = min(self.width, self.height)
        for obj in self.objects:
            _draw(img, obj.kind, *positions[obj.id], obj.size * px, self.distance[obj.id])
        ox0, oy0, ox1, oy1 = self.occluder
        cv2.rectangle(img, (int(ox0 * self.width), int(oy0 * self.height)),
                      (int(ox1 * self.width), int(oy1 * self.height)), OCCLUDER_M, cv2.FILLED)
        return img

    def write(self, writer, typestore, stamp_ns: int, positions: dict[str, tuple[float, float]]) -> None:
        """Render one frame's depth, write its depth and CameraInfo messages, record the 3D truth."""
        depth = self.render(positions)
        self._record(stamp_ns, positions, depth)
        small = cv2.resize(depth, (self.depth_width, self.depth_height), interpolation=cv2.INTER_NEAREST)
        holes = self._rng.random(small.shape) < self.options.holes
        if self.options.encoding == "16UC1":
            pixels = np.where(holes, 0, np.round(small * 1000)).astype("<u2")
        else:
            pixels = np.where(holes, np.nan, small).astype("<f4")
        t = typestore.types
        depth_stamp = stamp_ns + int(round(self.options.offset_s * NS_PER_S))
        msg = t["sensor_msgs/msg/Image"](
            header=self._header(typestore, depth_stamp), height=self.depth_height, width=self.depth_width,
            encoding=self.options.encoding, is_bigendian=0, step=self.depth_width * pixels.itemsize,
            data=pixels.view(np.uint8).reshape(-1))
        writer.write(self._conns["depth"], depth_stamp, typestore.serialize_cdr(msg, "sensor_msgs/msg/Image"))
        writer.write(self._conns["info"], stamp_ns,
                     typestore.serialize_cdr(self.camera_info(typestore, stamp_ns), "sensor_msgs/msg/CameraInfo"))

    def _header(self, typestore, stamp_ns: int):
        t = typestore.types
        return t["std_msgs/msg/Header"](
            stamp=t["builtin_interfaces/msg/Time"](sec=stamp_ns // NS_PER_S, nanosec=stamp_ns % NS_PER_S),
            frame_id=self.frame_id)

    def camera_info(self, typestore, stamp_ns: int):
        t = typestore.types
        p = np.zeros((3, 4))
        p[:, :3] = self.k
        roi = t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        return t["sensor_msgs/msg/CameraInfo"](
            header=self._header(typestore, stamp_ns), height=self.height, width=self.width,
            distortion_model=self.model, d=self.d.astype(np.float64), k=self.k.reshape(-1),
            r=np.eye(3).reshape(-1), p=p.reshape(-1), binning_x=0, binning_y=0, roi=roi)

    def _record(self, stamp_ns: int, positions: dict[str, tuple[float, float]], depth: np.ndarray) -> None:
        """3D truth of every object on this frame; `visible`: its centre pixel shows the object in the depth image
        (inside the image, not covered by the occluder or a card drawn later)."""
        ids = [o.id for o in self.objects]
        xy = np.array([positions[i] for i in ids], np.float64)
        rays = pixel_rays(xy - 0.5, self.k, self.d, self.model)
        for (oid, (x, y)), (rx, ry) in zip(zip(ids, xy), rays):
            z = self.distance[oid]
            inside = 0 <= x < self.width and 0 <= y < self.height
            visible = inside and depth[int(y), int(x)] == z
            self._truth[oid].append([stamp_ns, round(rx * z, 6), round(ry * z, 6), z, bool(visible)])

    def truth(self) -> dict:
        """The `depth` section of scenario.json."""
        return {"depth_topic": DEPTH_TOPIC, "camera_info_topic": CAMERA_INFO_TOPIC,
                "encoding": self.options.encoding, "depth_width": self.depth_width,
                "depth_height": self.depth_height, "distortion_model": self.model, "d": self.d.tolist(),
                "k": self.k.reshape(-1).tolist(), "offset_s": self.options.offset_s, "background_m": BACKGROUND_M,
                "objects": {oid: {"distance_m": self.distance[oid], "track3d": rows}
                            for oid, rows in self._truth.items()}}


def truth_3d(scenario: dict) -> dict[str, dict[int, tuple[float, float, float]]] | None:
    """object id -> stamp -> 3D position (metres, optical frame) where the object's centre is visible in depth;
    None when the scenario has no depth."""
    depth = scenario.get("depth")
    if not depth:
        return None
    return {oid: {int(s): (float(x), float(y), float(z)) for s, x, y, z, visible in o["track3d"] if visible}
            for oid, o in depth["objects"].items()}
