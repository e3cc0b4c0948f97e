"""The bounded on-disk video history of every camera (rewind) and the sightings of the standing queries.

One SQLite database (stdlib `sqlite3`, WAL) in the history folder holds everything: the index of stored frames,
each frame's JPEG (scaled so its longest side is at most `max_side_px`) and aligned depth (16-bit PNG, millimetres)
as blobs, and every grounded output of the standing queries (sightings). Frames are evicted oldest first, by age
(source time behind the camera's newest stored frame) and by size (the stored bytes above `max_gb`).

Why SQLite blobs and not a rolling split MCAP (bench/bench_history.py measures both): a frame and its index row are
written in ONE transaction, so a frame is either fully there or not at all (no half-written frame), a process
killed at any moment (kill -9) leaves a database that opens with every committed frame, and a commit every
frame costs little (WAL, synchronous=NORMAL: no fsync per commit; a killed process loses nothing the OS has). An
MCAP writer keeps its current chunk in memory (lost on kill -9: many seconds of frames unless every frame is its
own chunk) and an unfinished split has no summary or rosbag2 metadata until it is recovered; eviction could only
drop whole splits, and looking a frame up by stamp needs an index of its own anyway.

Threads: `offer_frame`, `offer_clip` and `record` from any thread, never blocking (they only enqueue; a full queue
drops and counts); ONE writer thread owned by the store scales, encodes, writes, commits (at least every
`commit_every_s`) and evicts; readers (`frames`, `load`, `sightings`, ...) from any thread, each thread with its
own read connection. Paths are never built from camera names or query text: everything lives in one file whose
name is fixed.
"""

from __future__ import annotations

import errno
import math
import os
import sqlite3
import threading
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .counters import Counters
from .types import NS_PER_S, Clip, Frame, LiftStatus, QueryResult, TaskKind

DB_NAME = "history.sqlite3"
FORMAT = "molmo2_ros.history/1"
# Every file SQLite may keep next to the database; a folder holding anything else is not wiped.
DB_FILES = (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", f"{DB_NAME}-journal")
DIR_MODE = 0o700
FILE_MODE = 0o600

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS frames(
    id INTEGER PRIMARY KEY, camera TEXT NOT NULL, stamp_ns INTEGER NOT NULL, epoch INTEGER NOT NULL,
    sample_index INTEGER NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL, frame_id TEXT NOT NULL,
    bytes INTEGER NOT NULL, crc INTEGER NOT NULL, depth_crc INTEGER);
CREATE UNIQUE INDEX IF NOT EXISTS frames_camera_stamp ON frames(camera, stamp_ns);
CREATE INDEX IF NOT EXISTS frames_stamp ON frames(stamp_ns);
CREATE TABLE IF NOT EXISTS blobs(id INTEGER PRIMARY KEY, jpeg BLOB NOT NULL, depth BLOB);
CREATE TABLE IF NOT EXISTS sightings(
    id INTEGER PRIMARY KEY, camera TEXT NOT NULL, query_id TEXT NOT NULL, task TEXT NOT NULL, query TEXT NOT NULL,
    label TEXT NOT NULL, stamp_ns INTEGER NOT NULL, x REAL NOT NULL, y REAL NOT NULL, image_width INTEGER NOT NULL,
    image_height INTEGER NOT NULL, object_id TEXT NOT NULL, frame_id TEXT NOT NULL, px REAL, py REAL, pz REAL);
CREATE UNIQUE INDEX IF NOT EXISTS sightings_unique ON sightings(camera, query_id, object_id, stamp_ns, x, y);
CREATE INDEX IF NOT EXISTS sightings_stamp ON sightings(stamp_ns);
"""


class HistoryError(Exception):
    """A folder that is not a history (refused: nothing is written or removed there) or a history that cannot be
    opened; the message says which and what to do."""


@dataclass(frozen=True)
class HistoryConfig:
    """path: the history folder (created 0700; its files 0600). max_age_s: frames older than this (source time,
    behind the camera's newest stored frame) are evicted; max_gb: stored bytes (JPEG + depth, 1 GB = 1e9 bytes) above
    which the oldest frames are evicted; fps: stored frames per second of source time per camera; max_side_px:
    longest side of a stored frame (and depth); queue_s: write queue bound in seconds of frames per camera (kill -9
    loses at most this much); jpeg_quality: 0..100; commit_every_s: longest time between commits; retry_s: after a
    full disk, how often writing is tried again; max_pending_sightings: sightings queued at most."""

    path: Path
    max_age_s: float = 3600.0
    max_gb: float = 2.0
    fps: float = 2.0
    max_side_px: int = 640
    queue_s: float = 1.0
    jpeg_quality: int = 80
    commit_every_s: float = 0.5
    retry_s: float = 5.0
    max_pending_sightings: int = 20000

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path).expanduser())
        if self.max_age_s <= 0 or self.max_gb <= 0 or self.fps <= 0 or self.queue_s <= 0:
            raise ValueError("history max_age_s, max_gb, fps and queue_s must be > 0")
        if self.max_side_px < 16:
            raise ValueError(f"history max_side_px must be >= 16, got {self.max_side_px}")
        if not 0 <= self.jpeg_quality <= 100:
            raise ValueError(f"history jpeg_quality must be in 0..100, got {self.jpeg_quality}")

    @property
    def period_ns(self) -> int:
        return round(NS_PER_S / self.fps)

    @property
    def queue_frames(self) -> int:
        """Frames per camera queued or written but not yet committed, at most."""
        return max(1, math.ceil(self.queue_s * self.fps))

    @property
    def max_bytes(self) -> int:
        return int(self.max_gb * 1e9)


@dataclass(frozen=True)
class StoredFrame:
    """One stored frame's index row. width/height: the ORIGINAL image size (the stored JPEG may be smaller);
    epoch and sample_index: the clip buffer's (core/clip_buffer.py) when the frame was kept."""

    camera: str
    stamp_ns: int
    epoch: int
    sample_index: int
    width: int
    height: int
    frame_id: str
    has_depth: bool


@dataclass(frozen=True)
class Sighting:
    """One grounded output of a standing query (msg/Sighting.msg): stamp of its source frame, pixel (x, y) in the
    original image (image_width x image_height), object_id = track or event id ("" for a plain point), position =
    3D in frame_id (metres) when it was lifted with depth."""

    camera: str
    query_id: str
    task: str
    query: str
    label: str
    stamp_ns: int
    x: float
    y: float
    image_width: int
    image_height: int
    object_id: str
    frame_id: str
    position: tuple[float, float, float] | None = None


@dataclass
class _FrameItem:
    camera: str
    frame: Frame
    epoch: int
    sample_index: int
    depth: np.ndarray | None
    depth_unit_m: float


@dataclass
class _SightingsItem:
    rows: list[tuple] = field(default_factory=list)


def _is_disk_full(error: BaseException) -> bool:
    """SQLITE_FULL, a write refused for lack of space or over a file size limit (SQLite reports a write that the
    OS refused outright as a disk I/O error)."""
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
    text = str(error).lower()
    return "full" in text or "disk i/o error" in text


def _prepare_folder(path: Path, create: bool) -> Path:
    """The database path in `path`, after checking that the folder is new, empty, or already a history."""
    db = path / DB_NAME
    if path.exists() and not path.is_dir():
        raise HistoryError(f"'{path}' is a file, not a history folder: choose a folder path")
    if not create:
        if not db.is_file():
            raise HistoryError(f"'{path}' is not a history (no {DB_NAME}): pass the folder of history.path / "
                               "replay --history")
        return db
    if path.is_dir() and not db.exists() and any(path.iterdir()):
        raise HistoryError(f"'{path}' is not empty and not a history: choose a new or empty folder")
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    os.chmod(path, DIR_MODE)
    if not db.exists():
        # SQLite gives its -wal and -shm files the mode of the database file
        os.close(os.open(db, os.O_CREAT | os.O_WRONLY, FILE_MODE))
    return db


def _secure(db: Path) -> None:
    for name in DB_FILES:
        try:
            os.chmod(db.parent / name, FILE_MODE)
        except FileNotFoundError:
            pass


def _fold(text: str | None) -> str:
    return (text or "").casefold()


class HistoryStore:
    """The history of one node or replay (see the module docstring). `read_only`: no writer (recall, ask)."""

    def __init__(self, config: HistoryConfig, *, read_only: bool = False) -> None:
        self.config = config
        self.read_only = read_only
        self.counters = Counters()
        self._db = _prepare_folder(config.path, create=not read_only)
        self._cond = threading.Condition()
        self._items: deque = deque()
        self._pending: dict[str, int] = {}  # camera -> frames queued or uncommitted (guarded by _cond)
        self._pending_sightings = 0
        self._enqueued = 0  # items handed to the writer / items it finished (guarded by _cond)
        self._done = 0
        self._closing = False
        self._last_kept: dict[str, tuple[int, int]] = {}  # camera -> (epoch, stamp) of the last frame kept
        self._last_offered: dict[str, tuple[int, int]] = {}  # camera -> (epoch, stamp), offer_clip
        self._offer_lock = threading.Lock()
        self._full_until = 0.0  # monotonic time before which writing is not tried again (disk full)
        self._full_since = 0.0
        self._last_error = ""
        self._last_error_t = 0.0
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._writer: threading.Thread | None = None
        if read_only:
            conn = self._reader()
            if conn.execute("SELECT value FROM meta WHERE key='format'").fetchone() != (FORMAT,):
                raise HistoryError(f"'{config.path}' is not a molmo2_ros history of this version")
            return
        conn = self._connect()
        try:
            conn.executescript(_SCHEMA)
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('format', ?)", (FORMAT,))
            found = conn.execute("SELECT value FROM meta WHERE key='format'").fetchone()
            if found != (FORMAT,):
                raise HistoryError(f"'{config.path}' holds a history of another format ({found[0]}): wipe it "
                                   "(molmo2-ros history-wipe) or choose another folder")
            conn.commit()
        except sqlite3.DatabaseError as error:
            conn.close()
            raise HistoryError(f"'{config.path}': cannot open the history ({error}): wipe it or choose another "
                               "folder") from None
        _secure(self._db)
        self._writer = threading.Thread(target=self._run, args=(conn,), name="history-writer", daemon=True)
        self._writer.start()

    # ---- connections -------------------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._db, timeout=10.0, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=10000")
        return conn

    def _reader(self) -> sqlite3.Connection:
        """This thread's read connection (made on first use)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self.read_only:
                conn = sqlite3.connect(f"{self._db.resolve().as_uri()}?mode=ro", uri=True, timeout=10.0,
                                       check_same_thread=False)
            else:
                conn = sqlite3.connect(self._db, timeout=10.0, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=10000")
            conn.create_function("fold", 1, _fold, deterministic=True)
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    # ---- writing (any thread, never blocks) --------------------------------------------------------------
    def offer_frame(self, camera: str, frame: Frame, *, epoch: int, sample_index: int,
                    depth: np.ndarray | None = None, depth_unit_m: float = 0.0, wait_s: float = 0.0) -> bool:
        """Offer a sampled frame (and its aligned depth) for storage. False when it is not kept: thinned to
        config.fps by source stamp (not counted), the camera's write queue is full (counted history_queue_full),
        the disk is full (counted history_frames_dropped_disk_full), or the store is read-only or closed.
        wait_s: how long to wait for room in a full queue (0, the node's: never blocks; an offline replay, faster
        than real time, waits instead of dropping).
        depth: (H, W) integer millimetres or float metres unless `depth_unit_m` (metres per unit) says otherwise.
        The frame and depth arrays must not change afterwards: the writer thread scales and encodes them later."""
        if self.read_only or self._closing:
            return False
        with self._offer_lock:
            last = self._last_kept.get(camera)
            if last is not None and last[0] == epoch:
                gap = frame.stamp_ns - last[1]
                if gap < self.config.period_ns - self.config.period_ns // 50:
                    return False
            if time.monotonic() < self._full_until:
                self.counters.add("history_frames_dropped_disk_full")
                return False
            with self._cond:
                deadline = time.monotonic() + wait_s
                while self._pending.get(camera, 0) >= self.config.queue_frames:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._closing:
                        self.counters.add("history_queue_full")
                        return False
                    self._cond.wait(remaining)
                self._pending[camera] = self._pending.get(camera, 0) + 1
                unit = depth_unit_m or (1e-3 if depth is not None and depth.dtype.kind in "iu" else 1.0)
                self._items.append(_FrameItem(camera, frame, epoch, sample_index, depth, unit))
                self._enqueued += 1
                self._cond.notify()
            self._last_kept[camera] = (epoch, frame.stamp_ns)
        return True

    def offer_clip(self, camera: str, clip: Clip, depth_for=None, wait_s: float = 0.0) -> int:
        """Offer the frames of an emitted clip that no earlier clip of this camera offered (a new epoch starts
        over), with their depth from `depth_for(stamp_ns)` -> DepthImage | None when given (the stream's
        DepthStore.depth_for: settled once the clip is lifted). Returns frames kept. wait_s: per frame, see
        offer_frame.

        The hook of both doors: replay and the node call it with each clip they ran (and, at the end, with the
        window left over): the window of a clip holds every frame the buffer kept since the previous clip. A frame
        is thus offered up to stride_s (plus the inference) after it was kept."""
        kept = 0
        for cf in clip.frames:
            last = self._last_offered.get(camera)
            if last is not None and last[0] == clip.epoch and cf.stamp_ns <= last[1]:
                continue
            self._last_offered[camera] = (clip.epoch, cf.stamp_ns)
            depth = depth_for(cf.stamp_ns) if depth_for is not None else None
            kept += self.offer_frame(camera, cf.frame, epoch=clip.epoch, sample_index=cf.sample_index,
                                     depth=None if depth is None else depth.data,
                                     depth_unit_m=0.0 if depth is None else depth.unit_m, wait_s=wait_s)
        return kept

    def record(self, camera: str, results: list[QueryResult]) -> None:
        """Record the sightings of every grounded output of `results` (points, track trajectories with the track
        id, event evidence with the event id, 3D from `r.lifted`). Rows are made here (results change as tracks
        go on), written by the writer thread; a sighting already recorded is kept once."""
        if self.read_only or self._closing:
            return
        rows = [row for r in results for row in _sighting_rows(camera, r)]
        if not rows:
            return
        if time.monotonic() < self._full_until:
            self.counters.add("history_sightings_dropped", len(rows))
            return
        with self._cond:
            if self._pending_sightings + len(rows) > self.config.max_pending_sightings:
                self.counters.add("history_sightings_dropped", len(rows))
                return
            self._pending_sightings += len(rows)
            self._items.append(_SightingsItem(rows))
            self._enqueued += 1
            self._cond.notify()

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until everything offered so far is committed (or dropped); False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            target = self._enqueued
            while self._done < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._writer is None or not self._writer.is_alive():
                    return self._done >= target
                self._cond.wait(remaining)
        return True

    def close(self) -> None:
        """Write what is queued, stop the writer, close every connection."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._writer is not None:
            self._writer.join()
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        self._local = threading.local()

    def __enter__(self) -> HistoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the writer thread -------------------------------------------------------------------------------
    def _run(self, conn: sqlite3.Connection) -> None:
        total = conn.execute("SELECT COALESCE(SUM(bytes), 0) FROM frames").fetchone()[0]
        self._total_bytes = int(total)
        while True:
            with self._cond:
                while not self._items and not self._closing:
                    self._cond.wait()
                if not self._items:
                    break
                batch = list(self._items)
                self._items.clear()
            if time.monotonic() < self._full_until:
                self._drop(batch, "disk_full")
                continue
            try:
                self._write(conn, batch)
            except (sqlite3.Error, OSError) as error:
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                self._total_bytes = int(conn.execute("SELECT COALESCE(SUM(bytes), 0) FROM frames").fetchone()[0])
                if _is_disk_full(error):
                    now = time.monotonic()
                    self._full_until = now + self.config.retry_s
                    self._full_since = self._full_since or now
                    self.counters.add("history_disk_full")
                else:
                    self.counters.add("history_write_errors")
                self._last_error, self._last_error_t = f"{type(error).__name__}: {error}", time.monotonic()
                self._drop(batch, "disk_full" if _is_disk_full(error) else "write_error")
        conn.close()

    def _write(self, conn: sqlite3.Connection, batch: list) -> None:
        """Encode and write a batch, committing at least every commit_every_s; each item counts as done (and
        leaves the camera's queue bound) only once committed, when it also leaves `batch`."""
        started = time.monotonic()
        done: list = []
        conn.execute("BEGIN IMMEDIATE")
        cameras: set[str] = set()
        written = {"frames": 0, "sightings": 0}
        for item in batch:
            if isinstance(item, _FrameItem):
                self._insert_frame(conn, item)
                cameras.add(item.camera)
                written["frames"] += 1
            else:
                before = conn.total_changes
                conn.executemany(_UPSERT_SIGHTING, item.rows)
                written["sightings"] += conn.total_changes - before
            done.append(item)
            if time.monotonic() - started >= self.config.commit_every_s:
                self._evict(conn, cameras)
                conn.execute("COMMIT")
                self._committed(done, written)
                del batch[:len(done)]
                done, cameras, written = [], set(), {"frames": 0, "sightings": 0}
                started = time.monotonic()
                conn.execute("BEGIN IMMEDIATE")
        self._evict(conn, cameras)
        conn.execute("COMMIT")
        self._committed(done, written)
        del batch[:len(done)]

    def _committed(self, items: list, written: dict[str, int]) -> None:
        self.counters.add("frames_written", written["frames"])
        self.counters.add("sightings_written", written["sightings"])
        if self._full_since:  # space returned: writing resumed
            self._full_since = 0.0
            self._last_error = ""
        self._release(items)

    def _drop(self, items: list, reason: str) -> None:
        frames = sum(isinstance(i, _FrameItem) for i in items)
        self.counters.add(f"history_frames_dropped_{reason}", frames)
        self.counters.add(f"history_sightings_dropped_{reason}",
                          sum(len(i.rows) for i in items if isinstance(i, _SightingsItem)))
        self._release(items)

    def _release(self, items: list) -> None:
        with self._cond:
            for item in items:
                if isinstance(item, _FrameItem):
                    self._pending[item.camera] -= 1
                else:
                    self._pending_sightings -= len(item.rows)
            self._done += len(items)
            self._cond.notify_all()

    def _insert_frame(self, conn: sqlite3.Connection, item: _FrameItem) -> None:
        jpeg, depth = encode_frame(item.frame.image, self.config.max_side_px, self.config.jpeg_quality,
                                   item.depth, item.depth_unit_m)
        old = conn.execute("SELECT id, bytes FROM frames WHERE camera=? AND stamp_ns=?",
                           (item.camera, item.frame.stamp_ns)).fetchone()
        if old is not None:  # the same source frame again (a bag replayed into the same history): replaced
            self._delete(conn, [old])
        size = len(jpeg) + (len(depth) if depth is not None else 0)
        cur = conn.execute(
            "INSERT INTO frames(camera, stamp_ns, epoch, sample_index, width, height, frame_id, bytes, crc, "
            "depth_crc) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (item.camera, item.frame.stamp_ns, item.epoch, item.sample_index, item.frame.width, item.frame.height,
             item.frame.frame_id, size, zlib.crc32(jpeg), None if depth is None else zlib.crc32(depth)))
        conn.execute("INSERT INTO blobs(id, jpeg, depth) VALUES (?,?,?)", (cur.lastrowid, jpeg, depth))
        self._total_bytes += size

    def _delete(self, conn: sqlite3.Connection, rows: list[tuple[int, int]]) -> None:
        ids = [(r[0],) for r in rows]
        conn.executemany("DELETE FROM frames WHERE id=?", ids)
        conn.executemany("DELETE FROM blobs WHERE id=?", ids)
        self._total_bytes -= sum(r[1] for r in rows)
        self.counters.add("frames_evicted", len(rows))

    def _evict(self, conn: sqlite3.Connection, cameras: set[str]) -> None:
        """Oldest first: by age behind each written camera's newest frame (its sightings too), then by size."""
        age_ns = int(self.config.max_age_s * NS_PER_S)
        for camera in cameras:
            newest = conn.execute("SELECT MAX(stamp_ns) FROM frames WHERE camera=?", (camera,)).fetchone()[0]
            if newest is None:
                continue
            old = conn.execute("SELECT id, bytes FROM frames WHERE camera=? AND stamp_ns < ?",
                               (camera, newest - age_ns)).fetchall()
            if old:
                self._delete(conn, old)
            conn.execute("DELETE FROM sightings WHERE camera=? AND stamp_ns < ?", (camera, newest - age_ns))
        while self._total_bytes > self.config.max_bytes:
            old = conn.execute("SELECT id, bytes FROM frames ORDER BY stamp_ns LIMIT 32").fetchall()
            if not old:
                break
            over = self._total_bytes - self.config.max_bytes
            take, freed = [], 0
            for row in old:
                take.append(row)
                freed += row[1]
                if freed >= over:
                    break
            self._delete(conn, take)

    # ---- reading (any thread) ----------------------------------------------------------------------------
    def frames(self, camera: str, start_ns: int, end_ns: int) -> list[StoredFrame]:
        """The stored frames of `camera` with start_ns <= stamp <= end_ns, oldest first."""
        rows = self._reader().execute(
            "SELECT camera, stamp_ns, epoch, sample_index, width, height, frame_id, depth_crc IS NOT NULL "
            "FROM frames WHERE camera=? AND stamp_ns BETWEEN ? AND ? ORDER BY stamp_ns",
            (camera, start_ns, end_ns)).fetchall()
        return [StoredFrame(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7])) for r in rows]

    def _blob(self, stored: StoredFrame, column: str) -> tuple[bytes, int] | None:
        try:  # CAST: a damaged row may hold text where a blob was
            row = self._reader().execute(
                f"SELECT CAST(b.{column} AS BLOB), f.{'crc' if column == 'jpeg' else 'depth_crc'} FROM frames f "
                "JOIN blobs b ON b.id = f.id WHERE f.camera=? AND f.stamp_ns=?",
                (stored.camera, stored.stamp_ns)).fetchone()
        except sqlite3.DatabaseError:
            return None
        if row is None or row[0] is None or row[1] is None or zlib.crc32(row[0]) != row[1]:
            return None
        return bytes(row[0]), row[1]

    def load(self, stored: StoredFrame) -> Frame | None:
        """The stored frame: RGB at its stored size, `source_size` = the original (width, height), so grounded
        pixels land in the original image. None (counted history_frames_skipped) when it was evicted, its blob is
        corrupt (checksum) or does not decode."""
        import cv2

        blob = self._blob(stored, "jpeg")
        image = None
        if blob is not None:
            bgr = cv2.imdecode(np.frombuffer(blob[0], np.uint8), cv2.IMREAD_COLOR)
            image = None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        if image is None:
            self.counters.add("history_frames_skipped")
            return None
        return Frame(stored.stamp_ns, image, stored.frame_id, source_size=(stored.width, stored.height))

    def load_depth(self, stored: StoredFrame) -> np.ndarray | None:
        """The stored aligned depth: float32 metres (0 = no depth), longest side at most max_side_px (aligned with
        the colour image, as received it may have another resolution). None when there is none or it is corrupt
        (the latter counted history_depth_skipped)."""
        import cv2

        if not stored.has_depth:
            return None
        blob = self._blob(stored, "depth")
        data = None if blob is None else cv2.imdecode(np.frombuffer(blob[0], np.uint8), cv2.IMREAD_UNCHANGED)
        if data is None or data.dtype != np.uint16:
            self.counters.add("history_depth_skipped")
            return None
        return data.astype(np.float32) * np.float32(1e-3)

    def span(self, camera: str | None = None) -> tuple[int, int] | None:
        """(first, last) stored stamp of `camera` ("" = the unnamed camera), or of every camera when None; None
        when nothing is stored."""
        sql = "SELECT MIN(stamp_ns), MAX(stamp_ns) FROM frames"
        row = (self._reader().execute(sql).fetchone() if camera is None
               else self._reader().execute(sql + " WHERE camera=?", (camera,)).fetchone())
        return None if row is None or row[0] is None else (int(row[0]), int(row[1]))

    def cameras(self) -> list[str]:
        """Cameras with stored frames or sightings, sorted."""
        rows = self._reader().execute("SELECT camera FROM frames UNION SELECT camera FROM sightings").fetchall()
        return sorted(r[0] for r in rows)

    def sightings(self, text: str = "", query_id: str = "", camera: str | None = None, start_ns: int = 0,
                  end_ns: int = 0, limit: int = 1) -> list[Sighting]:
        """Sightings newest first (by source stamp): `text` found case-insensitively in the label or the query
        text ("" = any), `query_id` ("" = any), `camera` (None = every camera; "" = the unnamed one), stamps in
        [start_ns, end_ns] (0 = open end), at most `limit` (< 1 = 1)."""
        where, args = [], []
        if text:
            where.append("(instr(fold(label), ?) > 0 OR instr(fold(query), ?) > 0)")
            args += [_fold(text), _fold(text)]
        if query_id:
            where.append("query_id = ?")
            args.append(query_id)
        if camera is not None:
            where.append("camera = ?")
            args.append(camera)
        if start_ns:
            where.append("stamp_ns >= ?")
            args.append(start_ns)
        if end_ns:
            where.append("stamp_ns <= ?")
            args.append(end_ns)
        sql = ("SELECT camera, query_id, task, query, label, stamp_ns, x, y, image_width, image_height, object_id, "
               "frame_id, px, py, pz FROM sightings" + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY stamp_ns DESC, id DESC LIMIT ?")
        rows = self._reader().execute(sql, (*args, max(1, int(limit)))).fetchall()
        return [Sighting(*r[:12], position=None if r[12] is None else (r[12], r[13], r[14])) for r in rows]

    def stored_bytes(self) -> int:
        """Bytes of the stored frames (JPEG + depth), what max_gb bounds."""
        return int(self._reader().execute("SELECT COALESCE(SUM(bytes), 0) FROM frames").fetchone()[0])

    def health(self) -> tuple[str, str]:
        """("ok" | "error", message) for diagnostics: error while the disk is full (writing stopped, tried again
        every retry_s), after a write error in the last minute, or when the writer thread died."""
        if self.read_only:
            return "ok", "history read-only"
        if self._writer is not None and not self._writer.is_alive() and not self._closing:
            return "error", "history writer stopped"
        counts = self.counters.snapshot()
        if self._full_since:
            dropped = counts.get("history_frames_dropped_disk_full", 0)
            return "error", (f"history disk full: writing stopped ({dropped} frames dropped so far), tried again "
                             f"every {self.config.retry_s:g} s; free space in {self.config.path} ({self._last_error})")
        if self._last_error and time.monotonic() - self._last_error_t < 60.0:
            return "error", f"history write error: {self._last_error}"
        return "ok", (f"history: {counts.get('frames_written', 0)} frames written, "
                      f"{counts.get('frames_evicted', 0)} evicted, {counts.get('history_queue_full', 0)} dropped "
                      f"(queue full), {counts.get('sightings_written', 0)} sightings")


_UPSERT_SIGHTING = (
    "INSERT INTO sightings(camera, query_id, task, query, label, stamp_ns, x, y, image_width, image_height, "
    "object_id, frame_id, px, py, pz) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
    "ON CONFLICT(camera, query_id, object_id, stamp_ns, x, y) DO UPDATE SET px=excluded.px, py=excluded.py, "
    "pz=excluded.pz WHERE excluded.px IS NOT NULL")


def _sighting_rows(camera: str, r: QueryResult) -> list[tuple]:
    """Rows of every grounded output of one result (see HistoryStore.record)."""

    q = r.query
    lifted = r.lifted

    def rows(points, label: str, object_id: str, lifted_points) -> list[tuple]:
        out = []
        lifts = lifted_points if lifted_points is not None and len(lifted_points) == len(points) else None
        for i, p in enumerate(points):
            pos = None
            if lifts is not None and lifts[i].status == LiftStatus.OK and lifts[i].position is not None:
                pos = lifts[i].position
            out.append((camera, q.id, q.task.value, q.text, p.label or label, int(p.stamp_ns), float(p.x),
                        float(p.y), int(r.width), int(r.height), object_id or p.object_id, r.frame_id,
                        *(pos if pos is not None else (None, None, None))))
        return out

    # an event's points are its evidence (below, with the event id)
    out = [] if q.task == TaskKind.EVENT else rows(list(r.points), q.text, "", lifted.points if lifted else None)
    for track in r.tracks:
        out += rows(list(track.trajectory), track.label or q.text, track.id,
                    lifted.tracks.get(track.id) if lifted else None)
    for event in r.events:
        out += rows(list(event.evidence), event.description or q.text, event.id,
                    lifted.events.get(event.id) if lifted else None)
    return out


def encode_frame(image: np.ndarray, max_side_px: int, quality: int, depth: np.ndarray | None = None,
                 depth_unit_m: float = 1e-3) -> tuple[bytes, bytes | None]:
    """(JPEG of the RGB image scaled so its longest side is at most max_side_px, 16-bit PNG of the depth in
    millimetres scaled the same way (nearest: depths are never blended), or None)."""
    import cv2

    h, w = image.shape[:2]
    scale = min(1.0, max_side_px / max(h, w))
    if scale < 1.0:
        image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    png = None
    if depth is not None:
        dh, dw = depth.shape[:2]
        dscale = min(1.0, max_side_px / max(dh, dw))
        if dscale < 1.0:
            depth = cv2.resize(depth, (max(1, round(dw * dscale)), max(1, round(dh * dscale))),
                               interpolation=cv2.INTER_NEAREST)
        mm = depth.astype(np.float64) * (depth_unit_m * 1000.0)
        mm = np.where(np.isfinite(mm) & (mm > 0) & (mm < 65535.5), np.round(mm), 0).astype(np.uint16)
        ok, encoded = cv2.imencode(".png", mm, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        if not ok:
            raise ValueError("PNG encoding failed")
        png = encoded.tobytes()
    return jpeg.tobytes(), png


def is_history(path: Path) -> bool:
    """Whether `path` is a history folder: it holds the database and nothing but SQLite's files next to it."""
    path = Path(path)
    return (path.is_dir() and (path / DB_NAME).is_file()
            and all(p.name in DB_FILES for p in path.iterdir()))


def wipe_history(path: Path) -> int:
    """Remove a history folder (its database files, then the folder); returns the bytes freed. HistoryError, with
    nothing removed, when the folder is not a history (holds other files, or no database)."""
    path = Path(path)
    if not path.exists():
        raise HistoryError(f"'{path}' does not exist: pass the history folder (history.path / replay --history)")
    if path.is_symlink() or not is_history(path):
        raise HistoryError(f"'{path}' is not a history folder (it must hold only {DB_NAME} and SQLite's -wal/-shm "
                           "files): nothing removed")
    freed = 0
    for name in DB_FILES:
        file = path / name
        if file.is_file():
            freed += file.stat().st_size
            file.unlink()
    path.rmdir()
    return freed
