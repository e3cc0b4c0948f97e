"""Training clips from random worlds of the synthetic scenario: pointing, counting, tracking and events.

Each sample is a new world from `molmo2_ros.offline.data.scenario.build_random_world` (objects that rest, move, enter,
leave, fall and touch), rendered at 2 fps (the product's sampling rate) over 1-12 frames, with a SlowFast plan
drawn per clip (`PLANS`). Ground truth comes from the scenario's own rules (`is_visible`, `scenario_events` on a 10 fps
timeline), and answers use the grammar of the oracle (`molmo2_ros/offline/evaluation/oracle.py`), so that the evaluation
scores exactly what the model was taught:

- point  `Point to the {label}.` -> every visible instance on every frame, running ids, `There are none.`;
- count  `How many "{labels}" are there in the video?` -> `Counting the <points ...>{text}</points> shows a total
  of N.` with each object once, on its first visible frame (`There are none.` for 0);
- track  `Track the {label}.` -> `<tracks ...>`, ids by first appearance (then by x);
- event  `Point to any {kind} falling|{kind}s touching|{kind} leaving the frame in the video` -> the objects of
  the asked kind on the frames inside an event span of that type (all of the event's objects of that kind).

Within a frame, points go left to right (the oracle keeps the scenario's object order; the metrics do not
depend on it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from molmo2_ros.offline.data.scenario import (COLORS, EVENT_TEXT, KINDS, build_random_world, is_visible, render_frame,
                                         scenario_events, textured_background)
from samples import EVENT_FLAGS, FRAME_DT, LABELS, NONE_ANSWER, Sample, write_coords

TASKS = ("point", "count", "track", "event")
EVENT_TYPES = tuple(EVENT_TEXT)
# SlowFast plans: (key pooling, other pooling, key every n-th sample). "key3_fast5" is the node's default plan,
# "key2_fast3" the previous default, "uniform3" Molmo2's released uniform 3x3; "random" draws one per clip.
PLANS = {"key3_fast5": (3, 5, 4), "uniform3": (3, 3, 1), "key2_fast3": (2, 3, 4)}
PLAN_WEIGHTS = {"key3_fast5": 0.5, "uniform3": 0.15, "key2_fast3": 0.2, "random": 0.15}
GRID_DT = 0.1  # the ground-truth timeline (a 10 fps camera)
MARGIN_S = 2.0  # timeline beyond the clip, so that a "leave" at the clip's end is known


def plan_pools(rng: np.random.Generator, n_frames: int, plan: str) -> list[int]:
    """Pooling of each frame under `plan`, the key frames starting at a random sample offset."""
    if plan == "random":
        key = int(rng.choice([2, 3]))
        plan_t = (key, int(rng.integers(key, 6)), int(rng.choice([1, 2, 3, 4, 6])))
    else:
        plan_t = PLANS[plan]
    key, fast, every = plan_t
    offset = int(rng.integers(every))
    return [key if (offset + i) % every == 0 else fast for i in range(n_frames)]


@dataclass
class WorldClip:
    """A random world seen at the clip's frames: images, visible objects per frame ({id: (x, y)}), labels and
    kinds by id, and the world's events with the clip frames inside each span."""

    images: list[np.ndarray]
    visible: list[dict[str, tuple[float, float]]]
    labels: dict[str, str]
    kinds: dict[str, str]
    events: list[dict]
    w: int
    h: int


class VideoTaskSampler:
    """Draws worlds, clips and questions. All randomness comes from `rng` (resumable with it)."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        self._backgrounds: dict[tuple[int, int, int], np.ndarray] = {}

    def background(self, w: int, h: int) -> np.ndarray:
        """One of 8 textured backgrounds per size; each is a function of (seed, size, index) only, so a run
        resumed from `rng` draws the same images."""
        key = (w, h, int(self.rng.integers(8)))
        if key not in self._backgrounds:
            seed = int(np.random.default_rng([self.seed, *key]).integers(1 << 30))
            self._backgrounds[key] = textured_background(w, h, seed)
        return self._backgrounds[key]

    def world_clip(self, w: int, h: int, n_frames: int) -> WorldClip:
        rng = self.rng
        span = (n_frames - 1) * FRAME_DT
        palette: tuple = ()
        if rng.random() < 0.5:  # few labels: several instances of one label, like the default scenario
            picks = rng.choice(len(LABELS), size=int(rng.integers(1, 4)), replace=False)
            palette = tuple(tuple(LABELS[int(i)].split()) for i in picks)
        objects = build_random_world(max(span, 1.0), w, h, rng, palette)
        steps = np.arange(-round(MARGIN_S / GRID_DT), round((span + MARGIN_S) / GRID_DT) + 1)
        times = [float(k * GRID_DT) for k in steps]
        stamps = [int(k) for k in steps]  # one unit = GRID_DT
        tracks = {o.id: [(o.motion(t)[0] * w, o.motion(t)[1] * h) for t in times] for o in objects}
        events = scenario_events(objects, tracks, times, stamps, w, h)
        frame_steps = [round(i * FRAME_DT / GRID_DT) for i in range(n_frames)]
        background = self.background(w, h)
        images, visible = [], []
        for k in frame_steps:
            i = k - int(steps[0])
            pos = {o.id: tracks[o.id][i] for o in objects}
            images.append(render_frame(background, objects, pos))
            visible.append({o: p for o, p in pos.items() if is_visible(*p, w, h)})
        for e in events:
            e["frames"] = [f for f, k in enumerate(frame_steps) if e["start_ns"] <= k <= e["end_ns"]]
        return WorldClip(images, visible, {o.id: o.label for o in objects}, {o.id: o.kind for o in objects},
                         events, w, h)

    # ---- questions ----------------------------------------------------------------------------------------
    def sample(self, w: int, h: int, n_frames: int, task: str, plan: str, p_none: float) -> Sample:
        return self.samples(w, h, n_frames, [task], plan, p_none)[0]

    def samples(self, w: int, h: int, n_frames: int, tasks: list[str], plan: str, p_none: float) -> list[Sample]:
        """One world clip and one question per task about it (the samples share their frames list, so the
        Batcher encodes the clip once)."""
        world = self.world_clip(w, h, n_frames)
        pools = plan_pools(self.rng, n_frames, plan)
        ask = {"point": self._point, "count": self._count, "track": self._track}
        return [ask[t](world, pools, p_none) if t in ask else self._event(world, pools) for t in tasks]

    def _label(self, world: WorldClip, p_none: float) -> str:
        """A label visible in the clip; with probability p_none (or when none is visible) one that is not:
        half of the time one of the world's objects hidden during the whole clip, when there is one."""
        seen = sorted({world.labels[o] for frame in world.visible for o in frame})
        if seen and self.rng.random() >= p_none:
            return seen[int(self.rng.integers(len(seen)))]
        hidden = sorted(set(world.labels.values()) - set(seen))
        if hidden and self.rng.random() < 0.5:
            return hidden[int(self.rng.integers(len(hidden)))]
        absent = [lab for lab in LABELS if lab not in seen]
        return absent[int(self.rng.integers(len(absent)))]

    def _sample(self, world: WorldClip, pools: list[int], prompt: str, label: str, answer_of, groups) -> Sample:
        """Builds the Sample from groups [(frame, [(id, x, y)])]; answer_of(coords) -> (text before the coords
        attribute, text after it), or no groups -> `There are none.`."""
        targets = [[(x, y) for f2, pts in groups if f2 == f for _, x, y in pts] for f in range(len(pools))]
        digits, keys = [], []
        if groups:
            head, tail = answer_of()
            coords, digits, keys = write_coords(groups, pools, world.w, world.h, len(head))
            answer = head + coords + tail
        else:
            answer = NONE_ANSWER
        visible = [[(world.labels[o], x, y) for o, (x, y) in frame.items()] for frame in world.visible]
        return Sample(world.images, pools, prompt, answer, digits, visible, world.w, world.h, label, targets, keys,
                      self._flags(world))

    @staticmethod
    def _flags(world: WorldClip) -> list[list[tuple[float, float, tuple[int, ...]]]]:
        """Per frame and visible object: is it falling, touching, leaving (inside such an event span), is this
        its first visible frame in the clip."""
        inside = {(e["type"], o, f) for e in world.events for o in e["object_ids"] for f in e["frames"]}
        first: dict[str, int] = {}
        out = []
        for f, frame in enumerate(world.visible):
            rows = []
            for o, (x, y) in frame.items():
                first.setdefault(o, f)
                flags = tuple(int((t, o, f) in inside) for t in EVENT_FLAGS[:3]) + (int(first[o] == f),)
                rows.append((x, y, flags))
            out.append(rows)
        return out

    @staticmethod
    def _per_frame(world: WorldClip, ids: set[str]) -> list[list[tuple[str, float, float]]]:
        return [sorted(((o, x, y) for o, (x, y) in frame.items() if o in ids), key=lambda p: p[1])
                for frame in world.visible]

    def _point(self, world: WorldClip, pools: list[int], p_none: float) -> Sample:
        label = self._label(world, p_none)
        ids = {o for o, lab in world.labels.items() if lab == label}
        groups, n = [], 0
        for f, pts in enumerate(self._per_frame(world, ids)):
            if pts:
                groups.append((f, [(n + i + 1, x, y) for i, (_, x, y) in enumerate(pts)]))
                n += len(pts)
        return self._sample(world, pools, f"Point to the {label}.", label,
                            lambda: ('<points coords="', f'">{label}</points>'), groups)

    def _count(self, world: WorldClip, pools: list[int], p_none: float) -> Sample:
        label = self._label(world, p_none)
        colour, kind = label.split()
        by_kind = self.rng.random() < 0.25
        text = f"{kind}s" if by_kind else f"{label}s"
        ids = {o for o, lab in world.labels.items() if (world.kinds[o] == kind if by_kind else lab == label)}
        groups, seen = [], set()
        for f, pts in enumerate(self._per_frame(world, ids)):
            new = [(o, x, y) for o, x, y in pts if o not in seen]
            if new:
                groups.append((f, [(len(seen) + i + 1, x, y) for i, (_, x, y) in enumerate(new)]))
                seen.update(o for o, _, _ in new)
        return self._sample(world, pools, f'How many "{text}" are there in the video?', text,
                            lambda: ('Counting the <points coords="', f'">{text}</points> shows a total of '
                                     f'{len(seen)}.'), groups)

    def _track(self, world: WorldClip, pools: list[int], p_none: float) -> Sample:
        label = self._label(world, p_none)
        ids = {o for o, lab in world.labels.items() if lab == label}
        numbers: dict[str, int] = {}
        groups = []
        for f, pts in enumerate(self._per_frame(world, ids)):
            for o, _, _ in pts:  # new objects of a frame numbered left to right
                numbers.setdefault(o, len(numbers) + 1)
            if pts:
                groups.append((f, sorted((numbers[o], x, y) for o, x, y in pts)))
        return self._sample(world, pools, f"Track the {label}.", label,
                            lambda: ('<tracks coords="', f'">{label}</tracks>'), groups)

    def _event(self, world: WorldClip, pools: list[int]) -> Sample:
        rng = self.rng
        in_clip = [e for e in world.events if e["frames"]]
        if in_clip and rng.random() < 0.7:
            e = in_clip[int(rng.integers(len(in_clip)))]
            etype, obj = e["type"], e["object_ids"][int(rng.integers(len(e["object_ids"])))]
            colour, kind = world.labels[obj].split()
        else:
            etype = EVENT_TYPES[int(rng.integers(len(EVENT_TYPES)))]
            colour, kind = str(rng.choice(list(COLORS))), str(rng.choice(KINDS))
        by_colour = rng.random() < 0.25
        subject = f"{colour} {kind}" if by_colour else kind
        text = EVENT_TEXT[etype].format(kind=subject)
        ids = {o for o in world.labels if world.kinds[o] == kind and (not by_colour or world.labels[o].startswith(colour))}
        spans = [e for e in world.events if e["type"] == etype and set(e["object_ids"]) <= ids]
        groups, n = [], 0
        for f, pts in enumerate(self._per_frame(world, ids)):
            pts = [p for p in pts if any(f in e["frames"] and p[0] in e["object_ids"] for e in spans)]
            if pts:
                groups.append((f, [(n + i + 1, x, y) for i, (_, x, y) in enumerate(pts)]))
                n += len(pts)
        return self._sample(world, pools, f"Point to any {text} in the video", text,
                            lambda: ('<points coords="', f'">{text}</points>'), groups)
