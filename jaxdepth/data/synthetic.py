"""Procedural indoor RGB-D scenes: a cheap, reproducible stand-in for NYU Depth v2.

Each frame is a rectangular room (floor, four walls, ceiling) furnished with axis-aligned and
yaw-rotated boxes, spheres, vertical cylinders and furniture-like groups (tables, chairs, shelves,
beds, sofas, cabinets), with pictures, doors and windows on the walls. Every surface carries a
procedural texture (plain, checker, stripes, tiles, value noise, wood grain); shading is Lambertian
with two or three point lights (hard shadows, distance fall-off) plus ambient light, then gamma and
sensor noise.

The camera is a pinhole with NYU Depth v2 (Kinect) intrinsics scaled to the requested resolution
(at 480x640: fx 518.86, fy 519.47, cx 325.58, cy 253.74). Depth is the z-depth in metres (distance
along the optical axis, like NYU), clipped to [0.5, 10] m.

Rendering is vectorised NumPy ray casting against analytic primitives: every primitive is
intersected with all rays at once (no per-ray Python loop).

    >>> from jaxdepth.data import synthetic
    >>> images, depths = synthetic.generate(4, seed=0, height=240, width=320)
    >>> images.shape, images.dtype, depths.shape, depths.dtype
    ((4, 240, 320, 3), dtype('uint8'), (4, 240, 320), dtype('float32'))

Frame ``i`` of seed ``s`` depends only on ``(s, i)``, so ``generate(n, s)[i]`` equals
``render_frame(s, i)`` and a dataset can be produced in chunks or in parallel.

Dataset format (`write_dataset`): a folder holding

- ``images.npy``  uint8 (N, H, W, 3) RGB,
- ``depths.npy``  float32 (N, H, W) metres,
- ``meta.json``   {"format": "jaxdepth-synthetic", "version": 1, "n", "height", "width", "seed",
  "intrinsics": {"fx", "fy", "cx", "cy"}, "depth_range": [0.5, 10.0], "generator_version"}.

Both arrays can be memory-mapped (``np.load(..., mmap_mode="r")``); `jaxdepth.data.load` reads the
folder.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

GENERATOR_VERSION = 1
NYU_SIZE = (480, 640)
NYU_INTRINSICS = {"fx": 518.8579, "fy": 519.4696, "cx": 325.5824, "cy": 253.7362}
MIN_DEPTH, MAX_DEPTH = 0.5, 10.0
#: Largest frame rendered (4096 x 4096, 16.8 MP: its ray casting alone takes a few GB), and the bytes a
#: rendered pixel takes in memory and on disk (uint8 RGB + float32 depth).
MAX_FRAME_PIXELS = 4096 * 4096
BYTES_PER_PIXEL = 3 + 4
_FAR = np.float32(1e9)


def intrinsics(height: int, width: int) -> dict[str, float]:
    """NYU intrinsics scaled from 480x640 to ``height`` x ``width`` (pixel centres at +0.5)."""
    sy, sx = height / NYU_SIZE[0], width / NYU_SIZE[1]
    return {"fx": NYU_INTRINSICS["fx"] * sx, "fy": NYU_INTRINSICS["fy"] * sy,
            "cx": (NYU_INTRINSICS["cx"] + 0.5) * sx - 0.5, "cy": (NYU_INTRINSICS["cy"] + 0.5) * sy - 0.5}


# --------------------------------------------------------------------------------------------------
# Materials and textures
# --------------------------------------------------------------------------------------------------

@dataclass
class Material:
    """Albedo = texture(uv) mixing ``color_a`` / ``color_b``; ``emissive`` surfaces ignore lights."""
    kind: str                 # plain | checker | stripes | tiles | noise | wood
    color_a: np.ndarray
    color_b: np.ndarray
    scale: float = 1.0        # texture period in metres
    angle: float = 0.0        # stripe / grain direction (radians in uv space)
    emissive: bool = False
    noise_seed: int = 0


def _value_noise(u: np.ndarray, v: np.ndarray, seed: int, octaves: int = 3) -> np.ndarray:
    """Smooth fractal value noise in [0, 1] at points (u, v) (a 64x64 periodic lattice per octave)."""
    rng = np.random.default_rng(seed)
    out = np.zeros_like(u)
    amp, total, freq = 1.0, 0.0, 1.0
    for _ in range(octaves):
        grid = rng.random((64, 64), dtype=np.float32)
        x, y = u * freq, v * freq
        x0, y0 = np.floor(x), np.floor(y)
        fx, fy = x - x0, y - y0
        fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
        i0, j0 = x0.astype(np.int64) % 64, y0.astype(np.int64) % 64
        i1, j1 = (i0 + 1) % 64, (j0 + 1) % 64
        top = grid[j0, i0] * (1 - fx) + grid[j0, i1] * fx
        bot = grid[j1, i0] * (1 - fx) + grid[j1, i1] * fx
        out += amp * (top * (1 - fy) + bot * fy)
        total += amp
        amp *= 0.5
        freq *= 2.0
    return out / total


def _albedo(mat: Material, uv: np.ndarray) -> np.ndarray:
    """(M, 3) albedo of material ``mat`` at surface coordinates ``uv`` (M, 2) in metres."""
    u, v = uv[:, 0] / mat.scale, uv[:, 1] / mat.scale
    ca, cb = mat.color_a[None, :], mat.color_b[None, :]
    if mat.kind == "plain":
        w = 0.06 * (_value_noise(u * 4, v * 4, mat.noise_seed, 2) - 0.5)
        return np.clip(ca * (1 + w[:, None]), 0, 1)
    c, s = math.cos(mat.angle), math.sin(mat.angle)
    ru, rv = c * u - s * v, s * u + c * v
    if mat.kind == "checker":
        m = ((np.floor(ru) + np.floor(rv)) % 2).astype(np.float32)
    elif mat.kind == "stripes":
        m = (np.sin(2 * np.pi * ru) > 0.2).astype(np.float32)
    elif mat.kind == "tiles":
        fu, fv = ru - np.floor(ru), rv - np.floor(rv)
        grout = (np.minimum(fu, 1 - fu) < 0.04) | (np.minimum(fv, 1 - fv) < 0.04)
        jitter = _value_noise(np.floor(ru) * 7.3, np.floor(rv) * 7.3, mat.noise_seed, 1)
        m = np.where(grout, 1.0, 0.15 * jitter).astype(np.float32)
    elif mat.kind == "noise":
        m = _value_noise(ru * 3, rv * 3, mat.noise_seed, 4)
    elif mat.kind == "wood":
        n = _value_noise(ru * 0.7, rv * 6, mat.noise_seed, 3)
        rings = 0.5 + 0.5 * np.sin(2 * np.pi * (rv * 5 + 3.0 * n))
        plank = (np.floor(ru * 2.5) % 3) * 0.08
        m = (0.65 * rings + plank).astype(np.float32)
    else:
        raise ValueError(f"unknown texture kind {mat.kind!r}")
    m = np.clip(m, 0, 1)[:, None]
    return ca * (1 - m) + cb * m


# --------------------------------------------------------------------------------------------------
# Primitives: each intersects all rays at once and reports normals / surface coordinates at hits
# --------------------------------------------------------------------------------------------------

def _rot_y(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], np.float32)


@dataclass
class Box:
    """A box with centre ``center``, half sizes ``half`` and rotation ``yaw`` about the vertical axis.

    ``inside=True`` is the room: rays start inside and hit the far side (normals point inwards).
    """
    center: np.ndarray
    half: np.ndarray
    material: int
    yaw: float = 0.0
    inside: bool = False
    rot: np.ndarray = field(init=False)

    def __post_init__(self):
        self.center = np.asarray(self.center, np.float32)
        self.half = np.asarray(self.half, np.float32)
        self.rot = _rot_y(self.yaw)  # local -> world

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        # component-wise (structure of arrays) slab test: much faster than reductions over axis 1
        rel = o - self.center
        tnear = np.full(len(d), -_FAR, np.float32)
        tfar = np.full(len(d), _FAR, np.float32)
        for k in range(3):
            axis = self.rot[:, k]
            lo = rel @ axis
            ld = d @ axis
            ld = np.where(np.abs(ld) < 1e-9, np.float32(1e-9), ld)
            inv = 1.0 / ld
            t1 = (-self.half[k] - lo) * inv
            t2 = (self.half[k] - lo) * inv
            np.maximum(tnear, np.minimum(t1, t2), out=tnear)
            np.minimum(tfar, np.maximum(t1, t2), out=tfar)
        if self.inside:
            return np.where(tfar > 1e-4, tfar, _FAR)
        hit = (tnear <= tfar) & (tfar > 1e-4)
        return np.where(hit, np.where(tnear > 1e-4, tnear, tfar), _FAR)

    def surface(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lp = (p - self.center) @ self.rot
        rel = np.abs(lp) / self.half[None, :]
        axis = np.argmax(rel, axis=1)
        n_local = np.zeros_like(lp)
        n_local[np.arange(len(lp)), axis] = np.sign(lp[np.arange(len(lp)), axis])
        if self.inside:
            n_local = -n_local
        # uv: the two in-face coordinates (metres), y kept as v on vertical faces
        uv = np.where((axis == 0)[:, None], lp[:, [2, 1]],
                      np.where((axis == 1)[:, None], lp[:, [0, 2]], lp[:, [0, 1]]))
        return n_local @ self.rot.T, uv + self.half[[0, 1]][None, :]


@dataclass
class Sphere:
    center: np.ndarray
    radius: float
    material: int

    def __post_init__(self):
        self.center = np.asarray(self.center, np.float32)

    def intersect(self, o, d):
        oc = o - self.center
        a = np.einsum("ij,ij->i", d, d)
        b = np.einsum("ij,ij->i", oc, d)
        c = np.einsum("ij,ij->i", oc, oc) - self.radius ** 2
        disc = b * b - a * c
        sq = np.sqrt(np.maximum(disc, 0))
        t0, t1 = (-b - sq) / a, (-b + sq) / a
        t = np.where(t0 > 1e-4, t0, t1)
        return np.where((disc >= 0) & (t > 1e-4), t, _FAR)

    def surface(self, p):
        n = (p - self.center) / self.radius
        uv = np.stack([np.arctan2(n[:, 0], n[:, 2]) * self.radius, np.arcsin(np.clip(n[:, 1], -1, 1)) * self.radius],
                      axis=1)
        return n, uv


@dataclass
class Cylinder:
    """A vertical (y-axis) capped cylinder: base centre ``base``, ``radius``, ``height``."""
    base: np.ndarray
    radius: float
    height: float
    material: int

    def __post_init__(self):
        self.base = np.asarray(self.base, np.float32)

    def intersect(self, o, d):
        ox, oz = o[:, 0] - self.base[0], o[:, 2] - self.base[2]
        dx, dz = d[:, 0], d[:, 2]
        a = dx * dx + dz * dz
        b = ox * dx + oz * dz
        c = ox * ox + oz * oz - self.radius ** 2
        disc = b * b - a * c
        sq = np.sqrt(np.maximum(disc, 0))
        with np.errstate(divide="ignore", invalid="ignore"):
            a_safe = np.where(a < 1e-12, 1e-12, a)
            t0, t1 = (-b - sq) / a_safe, (-b + sq) / a_safe
        y0, y1 = self.base[1], self.base[1] + self.height
        best = np.full(len(o), _FAR, np.float32)
        for t in (t0, t1):
            y = o[:, 1] + t * d[:, 1]
            ok = (disc >= 0) & (t > 1e-4) & (y >= y0) & (y <= y1)
            best = np.where(ok & (t < best), t, best)
        with np.errstate(divide="ignore", invalid="ignore"):
            dy = np.where(np.abs(d[:, 1]) < 1e-12, 1e-12, d[:, 1])
            for yc in (y0, y1):
                t = (yc - o[:, 1]) / dy
                px, pz = ox + t * dx, oz + t * dz
                ok = (t > 1e-4) & (px * px + pz * pz <= self.radius ** 2)
                best = np.where(ok & (t < best), t, best)
        return best

    def surface(self, p):
        rel = p - self.base
        r = np.sqrt(rel[:, 0] ** 2 + rel[:, 2] ** 2)
        cap_top = np.abs(rel[:, 1] - self.height) < 1e-3
        cap_bot = np.abs(rel[:, 1]) < 1e-3
        side = ~(cap_top | cap_bot) | (r > self.radius * 0.999)
        n = np.zeros_like(p)
        n[:, 0] = np.where(side, rel[:, 0] / self.radius, 0)
        n[:, 2] = np.where(side, rel[:, 2] / self.radius, 0)
        n[:, 1] = np.where(side, 0, np.where(cap_top, 1, -1))
        uv = np.stack([np.where(side, np.arctan2(rel[:, 0], rel[:, 2]) * self.radius, rel[:, 0]),
                       np.where(side, rel[:, 1], rel[:, 2])], axis=1)
        return n, uv


# --------------------------------------------------------------------------------------------------
# Scene sampling
# --------------------------------------------------------------------------------------------------

_PALETTES = {
    "wall": [(0.85, 0.83, 0.78), (0.80, 0.78, 0.70), (0.70, 0.76, 0.80), (0.88, 0.86, 0.84), (0.76, 0.70, 0.62),
             (0.66, 0.74, 0.64), (0.90, 0.80, 0.68), (0.60, 0.62, 0.66)],
    "floor": [(0.45, 0.30, 0.18), (0.60, 0.45, 0.30), (0.35, 0.33, 0.32), (0.55, 0.52, 0.48), (0.30, 0.22, 0.16),
              (0.70, 0.66, 0.60)],
    "furniture": [(0.50, 0.33, 0.20), (0.35, 0.22, 0.12), (0.85, 0.85, 0.82), (0.20, 0.20, 0.22), (0.55, 0.15, 0.12),
                  (0.20, 0.30, 0.50), (0.70, 0.60, 0.45), (0.30, 0.45, 0.30), (0.60, 0.60, 0.62), (0.80, 0.70, 0.30)],
}


class _SceneBuilder:
    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.materials: list[Material] = []
        self.prims: list = []
        self.footprints: list[tuple[float, float, float, float]] = []  # x0, x1, z0, z1 on the floor
        self.groups: list[tuple[Box, list[int]]] = []  # (bounding box, member indices) for culling

    def color(self, palette: str, jitter: float = 0.08) -> np.ndarray:
        base = np.array(_PALETTES[palette][self.rng.integers(len(_PALETTES[palette]))], np.float32)
        return np.clip(base * (1 + self.rng.uniform(-jitter, jitter, 3)), 0, 1).astype(np.float32)

    def material(self, palette: str, kinds: tuple[str, ...], scale=(0.2, 0.8), emissive=False) -> int:
        rng = self.rng
        a = self.color(palette)
        kind = kinds[rng.integers(len(kinds))]
        b = np.clip(a * rng.uniform(0.55, 0.85) if rng.random() < 0.7 else self.color(palette), 0, 1)
        self.materials.append(Material(kind, a, b.astype(np.float32), float(rng.uniform(*scale)),
                                       float(rng.uniform(0, np.pi) if rng.random() < 0.3 else 0.0),
                                       emissive, int(rng.integers(1 << 30))))
        return len(self.materials) - 1

    def add(self, prim):
        self.prims.append(prim)
        return prim

    def free(self, x0, x1, z0, z1, margin=0.05) -> bool:
        return all(x1 + margin < a0 or x0 - margin > a1 or z1 + margin < b0 or z0 - margin > b1
                   for a0, a1, b0, b1 in self.footprints)

    def box(self, x0, x1, y0, y1, z0, z1, mat, yaw=0.0):
        return self.add(Box([(x0 + x1) / 2, (y0 + y1) / 2, (z0 + z1) / 2], [(x1 - x0) / 2, (y1 - y0) / 2,
                                                                          (z1 - z0) / 2], mat, yaw))


def _place(sb: _SceneBuilder, room, half_w, half_d, cam, against_wall: bool, tries=25):
    """Find a free floor spot for a footprint of half sizes (half_w, half_d); returns (cx, cz, yaw) or None."""
    rng = sb.rng
    W, _, D = room
    for _ in range(tries):
        if against_wall:
            wall = rng.integers(3)  # 0 back (z = D), 1 left (x = 0), 2 right (x = W)
            if wall == 0:
                cx, cz, yaw = rng.uniform(half_w, W - half_w), D - half_d - 0.02, 0.0
            else:
                cz = rng.uniform(max(half_w, 1.5), D - half_w)
                cx = half_d + 0.02 if wall == 1 else W - half_d - 0.02
                yaw = np.pi / 2
        else:
            cx, cz = rng.uniform(half_w + 0.1, W - half_w - 0.1), rng.uniform(1.0, D - half_d - 0.1)
            yaw = float(rng.uniform(-0.6, 0.6)) if rng.random() < 0.5 else 0.0
        ext = max(half_w, half_d) if yaw not in (0.0, np.pi / 2) else None
        if yaw == np.pi / 2:
            hx, hz = half_d, half_w
        elif ext is not None:
            hx = hz = ext
        else:
            hx, hz = half_w, half_d
        if math.hypot(cx - cam[0], cz - cam[2]) < max(hx, hz) + 0.9:
            continue
        if sb.free(cx - hx, cx + hx, cz - hz, cz + hz):
            sb.footprints.append((cx - hx, cx + hx, cz - hz, cz + hz))
            return cx, cz, yaw
    return None


def _group(sb: _SceneBuilder, cx, cz, yaw, parts, mat_for):
    """Add boxes given in group-local coordinates (x0, x1, y0, y1, z0, z1, material key), rotated by yaw."""
    r = _rot_y(yaw)
    first = len(sb.prims)
    for x0, x1, y0, y1, z0, z1, key in parts:
        c_local = np.array([(x0 + x1) / 2, (y0 + y1) / 2, (z0 + z1) / 2], np.float32)
        c = r @ c_local + np.array([cx, 0, cz], np.float32)
        sb.add(Box(c, [(x1 - x0) / 2, (y1 - y0) / 2, (z1 - z0) / 2], mat_for[key], yaw))
    if len(parts) > 1:
        lo = np.min([[p[0], p[2], p[4]] for p in parts], axis=0) - 0.01
        hi = np.max([[p[1], p[3], p[5]] for p in parts], axis=0) + 0.01
        c = r @ ((lo + hi) / 2).astype(np.float32) + np.array([cx, 0, cz], np.float32)
        sb.groups.append((Box(c, (hi - lo) / 2, -1, yaw), list(range(first, len(sb.prims)))))


def _furniture(sb: _SceneBuilder, room, cam):
    rng = sb.rng
    kind = ["table", "chair", "shelf", "bed", "sofa", "cabinet", "desk"][rng.integers(7)]
    wood = sb.material("furniture", ("wood", "plain", "noise"), (0.3, 0.9))
    cloth = sb.material("furniture", ("plain", "noise", "checker", "stripes"), (0.08, 0.3))
    m = {"w": wood, "c": cloth}
    if kind in ("table", "desk"):
        w, d, h = rng.uniform(0.4, 0.9), rng.uniform(0.35, 0.6), rng.uniform(0.68, 0.78)
        spot = _place(sb, room, w, d, cam, against_wall=kind == "desk")
        if spot is None:
            return
        t, leg = 0.04, 0.03
        parts = [(-w, w, h - t, h, -d, d, "w")]
        for sx in (-1, 1):
            for sz in (-1, 1):
                lx, lz = sx * (w - 0.06), sz * (d - 0.06)
                parts.append((lx - leg, lx + leg, 0, h - t, lz - leg, lz + leg, "w"))
        if kind == "desk" and rng.random() < 0.7:  # a monitor or a lamp on top
            parts.append((-0.25, 0.25, h + 0.1, h + 0.42, d - 0.15, d - 0.12, "c"))
            parts.append((-0.03, 0.03, h, h + 0.1, d - 0.16, d - 0.1, "c"))
        _group(sb, *spot, parts, m)
    elif kind == "chair":
        s, h = rng.uniform(0.2, 0.26), rng.uniform(0.42, 0.48)
        spot = _place(sb, room, s, s, cam, against_wall=False)
        if spot is None:
            return
        leg = 0.02
        parts = [(-s, s, h - 0.05, h, -s, s, "c"), (-s, s, h, h + rng.uniform(0.35, 0.5), s - 0.04, s, "w")]
        for sx in (-1, 1):
            for sz in (-1, 1):
                parts.append((sx * (s - 0.03) - leg, sx * (s - 0.03) + leg, 0, h - 0.05,
                              sz * (s - 0.03) - leg, sz * (s - 0.03) + leg, "w"))
        _group(sb, *spot, parts, m)
    elif kind == "shelf":
        w, d, h = rng.uniform(0.35, 0.8), rng.uniform(0.15, 0.22), rng.uniform(1.2, 2.1)
        spot = _place(sb, room, w, d, cam, against_wall=True)
        if spot is None:
            return
        t = 0.025
        parts = [(-w, -w + t, 0, h, -d, d, "w"), (w - t, w, 0, h, -d, d, "w"), (-w, w, 0, h, d - t, d, "w")]
        n = int(rng.integers(3, 6))
        for k in range(n + 1):
            y = k * (h - t) / n
            parts.append((-w, w, y, y + t, -d, d, "w"))
            if k < n and rng.random() < 0.8:  # books: a row of coloured blocks
                x = -w + t
                while x < w - 0.1:
                    bw = rng.uniform(0.02, 0.06)
                    bh = min(rng.uniform(0.15, 0.3), (h - t) / n - 0.03)
                    key = f"b{len(m)}"
                    m[key] = sb.material("furniture", ("plain",), (1, 1))
                    parts.append((x, x + bw, y + t, y + t + bh, -d + 0.02, d - 0.03, key))
                    x += bw + rng.uniform(0.0, 0.03)
        _group(sb, *spot, parts, m)
    elif kind == "bed":
        w, d = rng.uniform(0.45, 0.8), rng.uniform(0.95, 1.05)
        spot = _place(sb, room, w, d, cam, against_wall=True)
        if spot is None:
            return
        parts = [(-w, w, 0, 0.3, -d, d, "w"), (-w + 0.02, w - 0.02, 0.3, 0.5, -d + 0.02, d - 0.02, "c"),
                 (-w, w, 0, rng.uniform(0.8, 1.1), d - 0.06, d, "w"),
                 (-w + 0.1, w - 0.1, 0.5, 0.62, d - 0.45, d - 0.1, "c")]
        _group(sb, *spot, parts, m)
    elif kind == "sofa":
        w, d = rng.uniform(0.7, 1.1), rng.uniform(0.4, 0.5)
        spot = _place(sb, room, w, d, cam, against_wall=True)
        if spot is None:
            return
        parts = [(-w, w, 0, 0.42, -d, d, "c"), (-w, w, 0.42, 0.85, d - 0.18, d, "c"),
                 (-w, -w + 0.18, 0.42, 0.62, -d, d, "c"), (w - 0.18, w, 0.42, 0.62, -d, d, "c")]
        _group(sb, *spot, parts, m)
    else:  # cabinet / fridge-like block with a handle line
        w, d, h = rng.uniform(0.3, 0.6), rng.uniform(0.2, 0.35), rng.uniform(0.6, 1.9)
        spot = _place(sb, room, w, d, cam, against_wall=True)
        if spot is None:
            return
        parts = [(-w, w, 0, h, -d, d, "w"), (-0.01, 0.01, h * 0.3, h * 0.7, -d - 0.015, -d, "c")]
        _group(sb, *spot, parts, m)


def _small_object(sb: _SceneBuilder, room, cam):
    rng = sb.rng
    mat = sb.material("furniture", ("plain", "checker", "stripes", "noise", "wood"), (0.05, 0.3))
    kind = rng.integers(3)
    if kind == 0:
        r = rng.uniform(0.1, 0.35)
        spot = _place(sb, room, r, r, cam, against_wall=False)
        if spot is not None:
            sb.add(Sphere([spot[0], r, spot[1]], r, mat))
    elif kind == 1:
        r, h = rng.uniform(0.08, 0.3), rng.uniform(0.2, 1.2)
        spot = _place(sb, room, r, r, cam, against_wall=rng.random() < 0.3)
        if spot is not None:
            sb.add(Cylinder([spot[0], 0, spot[1]], r, h, mat))
    else:
        w, d, h = rng.uniform(0.1, 0.5), rng.uniform(0.1, 0.5), rng.uniform(0.1, 0.9)
        spot = _place(sb, room, w, d, cam, against_wall=rng.random() < 0.4)
        if spot is not None:
            _group(sb, *spot, [(-w, w, 0, h, -d, d, "m")], {"m": mat})


def _wall_decor(sb: _SceneBuilder, room):
    """Pictures, a door and windows as thin boxes on the walls."""
    rng = sb.rng
    W, H, D = room
    walls = [  # (axis, position, sign into the room, span along wall)
        (2, D, -1, W), (0, 0.0, 1, D), (0, W, -1, D)]
    for _ in range(int(rng.integers(1, 5))):
        axis, pos, sgn, span = walls[rng.integers(3)]
        kind = rng.choice(["picture", "picture", "window", "door"])
        if kind == "door":
            w, h, y0 = 0.45, 2.05, 0.0
            mat = sb.material("furniture", ("wood", "plain"), (0.3, 0.8))
        elif kind == "window":
            w, h, y0 = rng.uniform(0.4, 0.9), rng.uniform(0.8, 1.3), rng.uniform(0.8, 1.0)
            mat = len(sb.materials)
            sky = np.array([0.75, 0.85, 0.95], np.float32) * rng.uniform(0.8, 1.1)
            sb.materials.append(Material("stripes", np.clip(sky, 0, 1), np.clip(sky * 0.8, 0, 1),
                                         float(rng.uniform(0.2, 0.5)), float(np.pi / 2), True, 0))
        else:
            w, h, y0 = rng.uniform(0.15, 0.5), rng.uniform(0.15, 0.5), rng.uniform(1.2, 1.7)
            mat = sb.material("furniture", ("noise", "stripes", "checker", "plain"), (0.05, 0.2))
        c = rng.uniform(w + 0.1, span - w - 0.1) if span > 2 * w + 0.3 else span / 2
        t = 0.03 if kind != "window" else 0.005
        lo, hi = (pos, pos + sgn * t) if sgn > 0 else (pos + sgn * t, pos)
        if axis == 2:
            sb.box(c - w, c + w, y0, min(y0 + h, H - 0.05), lo, hi, mat)
        else:
            sb.box(lo, hi, y0, min(y0 + h, H - 0.05), c - w, c + w, mat)


@dataclass
class Scene:
    room: tuple[float, float, float]
    cam_pos: np.ndarray
    cam_rot: np.ndarray          # camera (x right, y down, z forward) -> world (x right, y up, z forward)
    prims: list
    groups: list                 # (bounding Box, member indices): members are only tested inside the bound
    materials: list[Material]
    lights: list[tuple[np.ndarray, float]]
    ambient: float
    exposure: float
    noise: float


def sample_scene(rng: np.random.Generator) -> Scene:
    """A random furnished room with camera, lights and materials."""
    W, H, D = rng.uniform(2.8, 6.5), rng.uniform(2.4, 3.1), rng.uniform(3.0, 7.5)
    room = (W, H, D)
    cam = np.array([rng.uniform(0.25, 0.75) * W, rng.uniform(1.0, 1.7), rng.uniform(0.15, 0.8)], np.float32)
    sb = _SceneBuilder(rng)
    wall = sb.material("wall", ("plain", "plain", "plain", "stripes", "noise"), (0.1, 0.4))
    floor = sb.material("floor", ("wood", "tiles", "noise", "checker", "plain"), (0.25, 0.8))
    ceiling = len(sb.materials)
    sb.materials.append(Material("plain", np.full(3, rng.uniform(0.85, 0.95), np.float32),
                                 np.full(3, 0.8, np.float32), 1.0, 0.0, False, int(rng.integers(1 << 30))))
    # the room: walls share one material; floor and ceiling as thin slabs just inside the shell
    sb.add(Box([W / 2, H / 2, D / 2], [W / 2, H / 2, D / 2], wall, inside=True))
    sb.box(-0.1, W + 0.1, -0.1, 0.0, -0.1, D + 0.1, floor)
    sb.box(-0.1, W + 0.1, H, H + 0.1, -0.1, D + 0.1, ceiling)
    if rng.random() < 0.5:  # skirting board
        skirt = sb.material("furniture", ("plain",), (1, 1))
        sb.box(0, W, 0, 0.08, D - 0.015, D, skirt)
    _wall_decor(sb, room)
    if rng.random() < 0.5:  # a rug
        rug = sb.material("furniture", ("stripes", "checker", "noise"), (0.1, 0.4))
        rw, rd = rng.uniform(0.5, 1.2), rng.uniform(0.5, 1.5)
        rx, rz = rng.uniform(rw, max(rw + 0.01, W - rw)), rng.uniform(1.2, max(1.21, D - rd))
        sb.box(rx - rw, rx + rw, 0.0, 0.01, rz - rd, rz + rd, rug)
    for _ in range(int(rng.integers(2, 6))):
        _furniture(sb, room, cam)
    for _ in range(int(rng.integers(1, 6))):
        _small_object(sb, room, cam)
    # camera orientation: look into the room (yaw), slightly down (pitch), small roll
    yaw, pitch, roll = rng.uniform(-0.5, 0.5), rng.uniform(-0.35, 0.08), rng.uniform(-0.04, 0.04)
    flip = np.diag([1.0, -1.0, 1.0]).astype(np.float32)
    cp, sp = math.cos(pitch), math.sin(pitch)
    r_pitch = np.array([[1, 0, 0], [0, cp, sp], [0, -sp, cp]], np.float32)   # +pitch looks up
    cr, sr = math.cos(roll), math.sin(roll)
    r_roll = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]], np.float32)
    cam_rot = _rot_y(yaw) @ r_pitch @ r_roll @ flip
    lights = []
    for _ in range(int(rng.integers(2, 4))):
        pos = np.array([rng.uniform(0.15, 0.85) * W, H - rng.uniform(0.1, 0.5), rng.uniform(0.1, 0.95) * D],
                       np.float32)
        lights.append((pos, float(rng.uniform(0.5, 1.1))))
    return Scene(room, cam, cam_rot.astype(np.float32), sb.prims, sb.groups, sb.materials, lights,
                 float(rng.uniform(0.18, 0.35)), float(rng.uniform(0.85, 1.25)), float(rng.uniform(0.005, 0.02)))


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------

def _items(scene: Scene):
    """(bound or None, member indices): grouped primitives behind their bounding box, the rest alone."""
    grouped = {i for _, members in scene.groups for i in members}
    items = [(bound, members) for bound, members in scene.groups]
    items += [(None, [i]) for i in range(len(scene.prims)) if i not in grouped]
    return items


def _candidates(scene: Scene, o, d, limit: np.ndarray, skip_inside: bool = False):
    """(primitive index, rays, t) for every primitive, testing grouped members only on the rays whose
    group bound is hit before ``limit`` (read live, so a caller may lower it while iterating)."""
    for bound, members in _items(scene):
        sel = None
        if bound is not None:
            sel = np.nonzero(bound.intersect(o, d) < limit)[0]
            if sel.size == 0:
                continue
        for k in members:
            prim = scene.prims[k]
            if skip_inside and getattr(prim, "inside", False):
                continue
            if sel is None:
                yield k, np.arange(len(d)), prim.intersect(o, d)
            else:
                yield k, sel, prim.intersect(o[sel], d[sel])


def _cast(scene: Scene, o, d):
    """Nearest hit per ray: (t, primitive index or -1)."""
    t_best = np.full(len(d), _FAR, np.float32)
    idx = np.full(len(d), -1, np.int32)
    for k, rays, t in _candidates(scene, o, d, t_best):
        closer = t < t_best[rays]
        t_best[rays[closer]] = t[closer]
        idx[rays[closer]] = k
    return t_best, idx


def _occluded(scene: Scene, o, d, dist) -> np.ndarray:
    """Whether anything but the room shell (lights are inside it) lies within ``dist`` along each ray."""
    hit = np.zeros(len(d), bool)
    for _, rays, t in _candidates(scene, o, d, dist, skip_inside=True):
        hit[rays[t < dist[rays]]] = True
    return hit


def render(scene: Scene, height: int, width: int, shadows: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Ray-cast ``scene``: (image uint8 (H, W, 3), z-depth float32 metres (H, W) clipped to [0.5, 10])."""
    k = intrinsics(height, width)
    v, u = np.mgrid[0:height, 0:width].astype(np.float32)
    d_cam = np.stack([(u - k["cx"]) / k["fx"], (v - k["cy"]) / k["fy"], np.ones_like(u)], -1).reshape(-1, 3)
    d = (d_cam @ scene.cam_rot.T).astype(np.float32)   # z_cam = 1, so t is the z-depth
    o = np.broadcast_to(scene.cam_pos, d.shape).copy()
    t, idx = _cast(scene, o, d)
    p = o + t[:, None] * d
    normal = np.zeros_like(d)
    albedo = np.zeros_like(d)
    emissive = np.zeros(len(d), bool)
    for k_prim, prim in enumerate(scene.prims):
        sel = np.nonzero(idx == k_prim)[0]
        if sel.size == 0:
            continue
        n, uv = prim.surface(p[sel])
        normal[sel] = n
        mat = scene.materials[prim.material]
        albedo[sel] = _albedo(mat, uv.astype(np.float32))
        emissive[sel] = mat.emissive
    # face the normal towards the camera
    flip = np.einsum("ij,ij->i", normal, d) > 0
    normal[flip] *= -1
    light = np.full(len(d), scene.ambient, np.float32)
    p_off = p + normal * 1e-3
    for pos, power in scene.lights:
        to_l = pos[None, :] - p_off
        dist = np.linalg.norm(to_l, axis=1)
        ldir = to_l / dist[:, None]
        lam = np.maximum(np.einsum("ij,ij->i", normal, ldir), 0)
        contrib = power * lam / (1 + 0.08 * dist * dist)
        if shadows:
            lit = lam > 0
            occ = np.zeros(len(d), bool)
            occ[lit] = _occluded(scene, p_off[lit], ldir[lit], dist[lit])
            contrib = np.where(occ, contrib * 0.15, contrib)
        light += contrib.astype(np.float32)
    rgb = albedo * light[:, None] * scene.exposure
    rgb = np.where(emissive[:, None], albedo * 1.05, rgb)
    rgb = np.clip(rgb, 0, 1) ** (1 / 1.6)
    seed = int(1e6 * float(scene.cam_pos.sum())) % (1 << 31)
    rgb = rgb + np.random.default_rng(seed).normal(0, scene.noise, rgb.shape).astype(np.float32)
    image = (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8).reshape(height, width, 3)
    depth = np.clip(t, MIN_DEPTH, MAX_DEPTH).astype(np.float32).reshape(height, width)
    return image, depth


def render_frame(seed: int, index: int, height: int = 240, width: int = 320,
                 shadows: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``index`` of the sequence ``seed``: (image uint8 (H, W, 3), depth float32 metres (H, W))."""
    rng = np.random.default_rng([int(seed), int(index), GENERATOR_VERSION])
    return render(sample_scene(rng), height, width, shadows)


def generate(n: int, seed: int = 0, height: int = 240, width: int = 320, *, start: int = 0,
             shadows: bool = True, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``n`` frames ``start .. start+n-1`` of sequence ``seed``: images uint8 (n, H, W, 3), depths float32 (n, H, W)."""
    _check_request(n, seed, height, width)
    images = np.empty((n, height, width, 3), np.uint8)
    depths = np.empty((n, height, width), np.float32)
    it = range(n)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="rendering", unit="frame")
    for i in it:
        images[i], depths[i] = render_frame(seed, start + i, height, width, shadows)
    return images, depths


def frame_too_large(height: int, width: int) -> Optional[str]:
    """``"HxW is N MP; at most 16.8 MP (4096 x 4096)"`` when a frame is above `MAX_FRAME_PIXELS`, else None
    (the one limit and message for every tool that renders or holds such frames)."""
    if height * width <= MAX_FRAME_PIXELS:
        return None
    return f"{height}x{width} is {height * width / 1e6:.0f} MP; at most {MAX_FRAME_PIXELS / 1e6:.1f} MP (4096 x 4096)"


def _check_request(n: int, seed: int, height: int, width: int) -> None:
    """ValueError unless ``n`` >= 0 frames of 8x8 to `MAX_FRAME_PIXELS` pixels with a seed >= 0 (numpy's
    seeds are)."""
    if n < 0 or height < 8 or width < 8:
        raise ValueError(f"need n >= 0 and a size of at least 8x8, got n={n}, {height}x{width}")
    too_large = frame_too_large(height, width)
    if too_large:
        raise ValueError(f"frame size {too_large}")
    if int(seed) < 0:
        raise ValueError(f"the seed must be a non-negative integer, got {seed}")


#: Bytes of frames `write_dataset` renders in memory at a time (fewer frames per chunk for large frames).
CHUNK_BYTES = 256 << 20


def write_dataset(path: str | Path, n: int, seed: int = 0, height: int = 240, width: int = 320, *,
                  shadows: bool = True, progress: bool = False, chunk: int = 64) -> Path:
    """Render ``n`` frames into folder ``path`` (``images.npy``, ``depths.npy``, ``meta.json``; see module doc).

    The arrays are written under temporary names and moved into place only when complete, replacing a
    dataset already in ``path`` at the very end (its ``meta.json`` goes first, the new one comes last): an
    error or Ctrl-C leaves the previous dataset (or none) as it was, never a half-written or mixed one.
    """
    from ..io.atomic import replacing_all, write_json
    _check_request(n, seed, height, width)           # before anything is touched
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    files = [path / "images.npy", path / "depths.npy", path / "meta.json"]   # renamed in this order
    chunk = max(1, min(chunk, CHUNK_BYTES // (height * width * BYTES_PER_PIXEL)))
    with replacing_all(files) as tmps:
        images = np.lib.format.open_memmap(tmps[0], "w+", np.uint8, (n, height, width, 3))
        depths = np.lib.format.open_memmap(tmps[1], "w+", np.float32, (n, height, width))
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=n, desc=f"rendering {path.name}", unit="frame")
        for s in range(0, n, chunk):
            m = min(chunk, n - s)
            images[s:s + m], depths[s:s + m] = generate(m, seed, height, width, start=s, shadows=shadows)
            if bar is not None:
                bar.update(m)
        if bar is not None:
            bar.close()
        images.flush()
        depths.flush()
        del images, depths
        meta = {"format": "jaxdepth-synthetic", "version": 1, "n": n, "height": height, "width": width,
                "seed": seed, "intrinsics": intrinsics(height, width), "depth_range": [MIN_DEPTH, MAX_DEPTH],
                "generator_version": GENERATOR_VERSION, "shadows": shadows}
        write_json(tmps[2], meta)
        # complete: the old meta.json goes before the arrays are swapped in, so old and new arrays never pass
        # for one dataset (the loaders refuse a folder without meta.json); the new one is renamed last
        files[2].unlink(missing_ok=True)
    return path


if __name__ == "__main__":   # python -m jaxdepth.data.synthetic: the command line lives in jaxdepth.cli
    from jaxdepth.cli.synthetic import main
    raise SystemExit(main())
