"""Region proposals from a graph segmentation: Felzenszwalb-Huttenlocher, then selective search.

R-CNN does not slide a window over every position and scale. It asks a cheap,
class-agnostic algorithm for ~2000 boxes that probably contain *something*, and
classifies only those. This module is that algorithm, in two stages.

1. **Graph-based segmentation** (Felzenszwalb and Huttenlocher, "Efficient Graph-Based
   Image Segmentation", IJCV 2004). Pixels are the nodes of a graph whose edges join
   8-neighbours, weighted by their color distance. Edges are visited by increasing
   weight, as in Kruskal's minimum-spanning-tree algorithm; an edge joins its two
   components C1 and C2 when it is lighter than both components' thresholds

       w < min(Int(C1) + k / |C1|,  Int(C2) + k / |C2|)

   where Int(C) is the heaviest edge inside C (its largest internal difference) and
   k/|C| lets small components grow. A last pass merges components smaller than
   ``min_size`` into a neighbour along the same sorted edges. The result is an
   over-segmentation: a few hundred regions, none crossing a strong edge.

2. **Selective search** (Uijlings, van de Sande, Gevers and Smeulders, "Selective Search
   for Object Recognition", IJCV 2013). Starting from those regions, the two most similar
   neighbours are merged, again and again, until one region is left. Every region of this
   hierarchy, at every level, yields a box. Similarity adds up to four cues, each in [0, 1]:

       s_color   = sum_k min(c_i^k, c_j^k)       color histograms (25 bins per channel)
       s_texture = sum_k min(t_i^k, t_j^k)       gradient-orientation histograms
       s_size    = 1 - (|r_i| + |r_j|) / |image|  small regions merge first
       s_fill    = 1 - (|BB_ij| - |r_i| - |r_j|) / |image|   regions that fill each other's gaps

   No single strategy finds everything, so the paper *diversifies*: several color spaces,
   several k, several similarity combinations, and pools the boxes. Each strategy's box at
   hierarchy position j (1 = the last merge) gets the score ``j * u`` with u uniform in
   [0, 1]; pooled boxes are sorted by that score (lower is better) and duplicates dropped.

How the segmentation is vectorized. The union-find over sorted edges is sequential by
nature. It runs in *rounds*: each round decides a chunk of the next edges at once from
the components as they were at the start of the round, and keeps the decisions up to
the first edge that touches a component an earlier edge of the same chunk has merged
(that one must be decided again, from the updated components, in the next round).
Two facts make the chunks long: an edge inside one component is skipped whatever
happened before it, and a component that rejected an edge never merges again (the
paper's Lemma 1: every later edge is at least as heavy), so edges touching it are
decided for good. Where merges chain through growing regions (most of the lightest
edges), rounds keep few edges; those chunks go to a scalar loop over the edges still
open (arrays first drop the edges inside one component and those touching a frozen
one), on Python lists, which index several times faster than arrays. The result is the
sequential algorithm's, edge for edge. ``selective_search`` sorts the edges of an image
once and segments them at every k.
"""
import heapq

import numpy as np
from scipy import ndimage

from nn.random import get_generator

__all__ = ["felzenszwalb", "selective_search", "hierarchical_grouping", "region_features",
           "region_neighbours", "convert_color"]


# ------------------------------------------------------------------ input checks
def _check_image(image, name="image"):
    """``image`` as float64 ``(H, W, C)``: uint8 scaled to [0, 1], floats as given."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{name} must be a numpy array (H, W) or (H, W, C), "
                        f"got {type(image).__name__}")
    if image.ndim not in (2, 3) or image.shape[0] == 0 or image.shape[1] == 0 \
            or (image.ndim == 3 and image.shape[2] == 0):
        raise ValueError(f"{name} must have shape (H, W) or (H, W, C) with H, W, C > 0, "
                         f"got {image.shape}")
    if image.dtype == np.uint8:
        image = image.astype(np.float64) / 255.0
    elif np.issubdtype(image.dtype, np.floating):
        image = image.astype(np.float64)
        if not np.isfinite(image).all():
            raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    else:
        raise TypeError(f"{name} must be uint8 or floating point, got dtype {image.dtype}")
    return image[:, :, None] if image.ndim == 2 else image


def _check_number(value, name, low, low_inclusive=True):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not np.isfinite(value) or value < low or (value == low and not low_inclusive):
        bound = ">=" if low_inclusive else ">"
        raise ValueError(f"{name} must be finite and {bound} {low}, got {value!r}")
    return value


def _check_count(value, name, low=0):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


# ------------------------------------------------------------ the grid graph
def grid_edges(image):
    """The 8-connected grid graph of an image, its edges weighted by color distance.

    Each pixel links to its right, down, down-right and up-right neighbours (every
    8-neighbour pair once), in that order of blocks, each block in row-major order
    (scikit-image's order: equal weights are then sorted the same way).

    Args:
        image (ndarray[H, W, C]): float64.
    Returns:
        tuple: ``(a, b, weights)``: ``a``, ``b`` (ndarray[E] int64) flat pixel indices of
        the two ends, ``weights`` (ndarray[E] float64) the euclidean color distance.
    """
    height, width = image.shape[:2]
    index = np.arange(height * width, dtype=np.int64).reshape(height, width)
    pairs = [
        ((slice(None), slice(1, None)), (slice(None), slice(None, -1))),            # right
        ((slice(1, None), slice(None)), (slice(None, -1), slice(None))),            # down
        ((slice(1, None), slice(1, None)), (slice(None, -1), slice(None, -1))),     # down-right
        ((slice(None, -1), slice(1, None)), (slice(1, None), slice(None, -1))),     # up-right
    ]
    a, b, weights = [], [], []
    for first, second in pairs:
        diff = image[first] - image[second]                      # (h, w, C)
        weights.append(np.sqrt(np.sum(diff * diff, axis=-1)).ravel())
        a.append(index[first].ravel())
        b.append(index[second].ravel())
    return np.concatenate(a), np.concatenate(b), np.concatenate(weights)


# ------------------------------------------------------------- union-find rounds
class _Forest:
    """Disjoint sets over ``n`` nodes; a root is the smallest node of its set.

    ``parent[r] == r`` for a root. A union points the larger root at the smaller, so a
    set's root is always its minimum node (scikit-image's convention, which fixes the
    label order of the result).
    """

    def __init__(self, n):
        self.parent = np.arange(n, dtype=np.int64)
        self.size = np.ones(n, dtype=np.int64)

    def find(self, nodes):
        """Roots of ``nodes`` (ndarray[M] int64); compresses the paths of ``nodes``."""
        parent = self.parent
        roots = parent[nodes]
        while True:
            up = parent[roots]
            if (up == roots).all():
                break
            roots = parent[up]          # two steps per check: checks cost as much as steps
        parent[nodes] = roots
        return roots

    def compress(self):
        """Point every node straight at its root (pointer doubling)."""
        parent = self.parent
        while True:
            up = parent[parent]
            if (up == parent).all():
                return
            parent = up
            self.parent = parent

    def union_disjoint_pairs(self, ra, rb):
        """Join root pairs ``(ra[i], rb[i])``; no root appears twice among the pairs.

        Returns:
            ndarray[P] int64: the root of each joined pair.
        """
        new = np.minimum(ra, rb)
        old = np.maximum(ra, rb)
        self.parent[old] = new
        self.size[new] = self.size[ra] + self.size[rb]
        return new


def _first_touch(roots_by_edge, merge_positions, scratch):
    """For each root, the first chunk position of a merging edge that touches it.

    Args:
        roots_by_edge (tuple of two ndarray[L] int64): roots of the two ends per edge.
        merge_positions (ndarray[P] int64): increasing chunk positions of merging edges.
        scratch (ndarray[n] int64): all ``L`` (no touch) on entry; filled for the touched
            roots on return (the caller resets them).
    Returns:
        ndarray[U] int64: the touched roots (to reset ``scratch`` afterwards).
    """
    ra, rb = roots_by_edge
    touched = np.stack([ra[merge_positions], rb[merge_positions]], axis=1).ravel()   # (2P,)
    positions = np.repeat(merge_positions, 2)                                           # (2P,)
    order = np.argsort(touched, kind="stable")          # within a root: increasing position
    touched, positions = touched[order], positions[order]
    first = np.ones(touched.size, dtype=bool)
    first[1:] = touched[1:] != touched[:-1]
    unique = touched[first]
    scratch[unique] = positions[first]
    return unique


def _sequential_unions(forest, a, b, rule, chunk=512):
    """Visit edges ``(a[i], b[i])`` in order, joining their sets when ``rule`` says so.

    The result is that of the loop ``for i: ra, rb = find(a[i]), find(b[i]); if ra != rb
    and rule(ra, rb): union(ra, rb)``. Edges are decided a chunk at a time (module
    docstring). Where merges chain through growing sets (a region absorbing pixel after
    pixel), rounds keep only a few edges each; the next chunks are then decided by a
    scalar loop over the edges whose answer is not known in advance (the edges inside
    one set at the chunk's start and the final answers are sorted out with arrays).
    Each short round doubles the number of scalar chunks before the next round (up to
    ``_SCALAR_RUN``); a long round resets it.

    Args:
        forest (_Forest): the sets, updated in place.
        a, b (ndarray[E] int64): edge ends, in visiting order.
        rule: an object with
            ``decide(positions, ra, rb) -> (merge, certain)``: ndarray[L] bool each, for
            edges with distinct roots as of the chunk's start: whether the edge merges,
            and whether that answer holds whatever earlier edges of the chunk did;
            ``apply(positions, ra, rb, merge, new_roots)``: record the kept decisions of a
            round (edges at ``positions``, in order; ``new_roots`` of the merging ones);
            ``open(ra, rb) -> ndarray[L] bool``: the edges between sets ``ra``, ``rb``
            whose answer depends on earlier edges (those of ``certain`` excluded);
            ``scalar(positions, ra, rb)``: decide and apply the given edges one by one.
        chunk (int): first chunk length; it adapts to the length kept per round.
    """
    total = a.size
    start = 0
    none = np.iinfo(np.int64).max
    scratch = np.full(forest.parent.size, none, dtype=np.int64)
    scalar_chunks, scalar_run = 0, 1
    rounds = 0
    while start < total:
        if scalar_chunks:
            stop = min(total, start + _SCALAR_CHUNK)
            ra = forest.find(a[start:stop])
            rb = forest.find(b[start:stop])
            live = np.flatnonzero((ra != rb) & rule.open(ra, rb))
            rule.scalar(start + live, ra[live], rb[live])
            scalar_chunks -= 1
            start = stop
            continue
        stop = min(total, start + chunk)
        ra = forest.find(a[start:stop])
        rb = forest.find(b[start:stop])
        between = np.flatnonzero(ra != rb)
        merge, certain = rule.decide(start + between, ra[between], rb[between])
        done = stop - start
        merging = np.flatnonzero(merge)
        if merging.size:
            # An edge is stale if a merge earlier in the chunk touched one of its sets.
            touched = _first_touch((ra[between], rb[between]), merging, scratch)
            ea, eb = ra[between], rb[between]
            stale = ~certain & ((scratch[ea] < np.arange(between.size))
                                | (scratch[eb] < np.arange(between.size)))
            scratch[touched] = none
            stale_at = np.flatnonzero(stale)
            if stale_at.size:
                done = int(between[stale_at[0]])
        kept_between = between[between < done]
        kept_merge = merge[:kept_between.size]
        ka, kb = ra[kept_between], rb[kept_between]
        new_roots = forest.union_disjoint_pairs(ka[kept_merge], kb[kept_merge])
        rule.apply(start + kept_between, ka, kb, kept_merge, new_roots)
        start += done
        chunk = int(np.clip(2 * done, 64, 1 << 16))
        if done < _SCALAR_SWITCH:
            scalar_chunks = scalar_run
            scalar_run = min(2 * scalar_run, _SCALAR_RUN)
        else:
            scalar_run = 1
        rounds += 1
        if rounds % 64 == 0:
            forest.compress()
    forest.compress()


# A round keeping fewer edges than this hands the next chunks to the scalar loop.
_SCALAR_SWITCH = 256
_SCALAR_CHUNK = 4096
_SCALAR_RUN = 16


# float32(t) lies within a relative 2**-24 of t: w below t·(1 - 2**-23) is below it for sure.
_BELOW = 1.0 - 2.0 ** -23
_ABOVE = 1.0 + 2.0 ** -23


def _round_float32(value):
    """``value`` rounded to the nearest float32, as a Python float."""
    return float(np.float32(value))


class _MergeRule:
    """The main pass: merge when ``w < min(Int(C1) + k/|C1|, Int(C2) + k/|C2|)``.

    Thresholds are rounded to float32 (scikit-image stores them in C floats). A
    component that rejects an edge is *frozen*: every later edge is at least as heavy,
    so it never merges again (Felzenszwalb and Huttenlocher, Lemma 1), and the answer
    for any edge touching it is known whatever happened before.

    The state lives twice: in arrays for the chunked rounds and in Python lists for
    the scalar loop (list indexing is several times faster there than array indexing
    or dicts); each side writes its changes to the other.
    """

    def __init__(self, forest, weights, k):
        n = forest.parent.size
        self.forest, self.weights, self.k = forest, weights, k
        self.internal = np.zeros(n, dtype=np.float64)     # Int(C) at each root
        self.frozen = np.zeros(n, dtype=bool)
        self.size_list = [1] * n
        self.internal_list = [0.0] * n
        # w below (Int + k/|C|)·(1 - 2^-23) is below the float32 threshold for sure;
        # -1 marks a frozen component.
        self.sure_list = [self._sure(0.0, 1)] * n

    def _sure(self, internal, size):
        return (internal + self.k / size) * _BELOW

    def thresholds(self, roots):
        return (self.internal[roots] + self.k / self.forest.size[roots]).astype(
            np.float32).astype(np.float64)

    def decide(self, positions, ra, rb):
        ta, tb = self.thresholds(ra), self.thresholds(rb)
        low = np.minimum(ta, tb)
        final = self.frozen[ra] | self.frozen[rb]
        merge = ~final & (self.weights[positions] < low)
        self._freeze = (ta == low, tb == low, final)
        self._positions = positions
        return merge, final

    def open(self, ra, rb):
        return ~(self.frozen[ra] | self.frozen[rb])

    def apply(self, positions, ra, rb, merge, new_roots):
        internal = self.weights[positions[merge]]
        self.internal[new_roots] = internal
        for root, size, value in zip(new_roots.tolist(), self.forest.size[new_roots].tolist(),
                                     internal.tolist()):
            self.size_list[root] = size
            self.internal_list[root] = value
            self.sure_list[root] = self._sure(value, size)
        freeze_a, freeze_b, final = self._freeze
        count = positions.size      # the kept edges are a prefix of the decided ones
        rejected = ~merge & ~final[:count]
        frozen = np.concatenate([ra[rejected & freeze_a[:count]], rb[rejected & freeze_b[:count]]])
        self.frozen[frozen] = True
        for root in frozen.tolist():
            self.sure_list[root] = -1.0

    def scalar(self, positions, ra, rb):
        """Decide and apply edges ``(ra[i], rb[i])`` (roots now) one by one, in order."""
        k = self.k
        size, internal, sure = self.size_list, self.internal_list, self.sure_list
        up = {}             # root absorbed in this loop -> the root it joined
        frozen = []
        for w, x, y in zip(self.weights[positions].tolist(), ra.tolist(), rb.tolist()):
            while x in up:
                x = up[x]
            while y in up:
                y = up[y]
            if x == y:
                continue
            if not (w < sure[x] and w < sure[y]):
                if sure[x] < 0 or sure[y] < 0:           # a frozen component
                    continue
                # w within float32 rounding of a threshold: round exactly.
                tx = _round_float32(internal[x] + k / size[x])
                ty = _round_float32(internal[y] + k / size[y])
                if not (w < tx and w < ty):
                    if tx <= ty:
                        sure[x] = -1.0
                        frozen.append(x)
                    if ty <= tx:
                        sure[y] = -1.0
                        frozen.append(y)
                    continue
            merged = size[x] + size[y]
            if x < y:                           # the smaller root is kept
                up[y] = x
            else:
                up[x] = y
                x = y
            size[x] = merged
            internal[x] = w
            sure[x] = (w + k / merged) * _BELOW
        if up:
            self.forest.parent[np.fromiter(up.keys(), dtype=np.int64, count=len(up))] = \
                np.fromiter(up.values(), dtype=np.int64, count=len(up))
            roots = np.unique(np.fromiter(up.values(), dtype=np.int64, count=len(up)))
            listed = roots.tolist()
            self.forest.size[roots] = [size[r] for r in listed]
            self.internal[roots] = [internal[r] for r in listed]
        if frozen:
            self.frozen[frozen] = True


class _MinSizeRule:
    """The post-pass: merge two components when either has fewer than ``min_size`` pixels.

    A "no" is final: sizes only grow.
    """

    def __init__(self, forest, min_size):
        self.forest, self.min_size = forest, min_size

    def decide(self, positions, ra, rb):
        size = self.forest.size
        merge = (size[ra] < self.min_size) | (size[rb] < self.min_size)
        return merge, ~merge

    def open(self, ra, rb):
        size = self.forest.size
        return (size[ra] < self.min_size) | (size[rb] < self.min_size)

    def apply(self, positions, ra, rb, merge, new_roots):
        pass

    def scalar(self, positions, ra, rb):
        if positions.size == 0:
            return
        forest, min_size = self.forest, self.min_size
        roots = np.unique(np.concatenate([ra, rb]))
        size = dict(zip(roots.tolist(), forest.size[roots].tolist()))
        up = {}
        for x, y in zip(ra.tolist(), rb.tolist()):
            while x in up:
                x = up[x]
            while y in up:
                y = up[y]
            if x != y and (size[x] < min_size or size[y] < min_size):
                new, old = (x, y) if x < y else (y, x)
                up[old] = new
                size[new] = size[x] + size[y]
        _write_back(forest, up, size)


def _write_back(forest, up, size):
    """Store a scalar loop's unions (``up``: absorbed root -> its new root) and sizes."""
    if not up:
        return
    old = np.fromiter(up.keys(), dtype=np.int64)
    forest.parent[old] = np.fromiter(up.values(), dtype=np.int64)
    new_roots = np.fromiter(set(up.values()), dtype=np.int64)
    forest.size[new_roots] = [size[r] for r in new_roots.tolist()]


# ------------------------------------------------------------ felzenszwalb
def felzenszwalb(image, scale=1.0, sigma=0.8, min_size=20):
    """Felzenszwalb-Huttenlocher graph-based segmentation (scikit-image's semantics).

    The image (uint8 scaled to [0, 1], floats as given) is smoothed per channel by a
    gaussian of ``sigma`` (``scipy.ndimage.gaussian_filter``, mode "reflect"). Edges join
    8-neighbours with weight ``|I(p) - I(q)|`` (euclidean over channels) and are visited
    by increasing weight, equal weights in edge order (``grid_edges``). An edge between
    two components merges them when

        w < min(Int(C1) + k / |C1|, Int(C2) + k / |C2|),   k = scale / 255,

    each threshold rounded to float32 (as scikit-image does); Int(C) is the weight of the
    edge that last grew C. Equal weights are visited in edge order (a stable sort);
    scikit-image sorts with numpy's default, unstable sort, so on images with many
    exactly equal weights (flat synthetic colors) the two may break such ties
    differently; elsewhere the labels are identical. Then, over the same sorted edges,
    two different components are merged when either has fewer than ``min_size`` pixels.
    Every segment is 8-connected.

    Args:
        image (ndarray[H, W] | ndarray[H, W, C]): uint8 or float.
        scale (float): k of the paper times 255, >= 0; larger gives larger segments.
        sigma (float): gaussian smoothing, >= 0 (0: none).
        min_size (int): smallest segment size after the post-pass, >= 0.
    Returns:
        ndarray[H, W] int64: segment ids ``0..S-1``, numbered in order of each segment's
        first pixel in row-major order.
    Raises:
        TypeError / ValueError: bad image (dtype, shape, non-finite) or parameters.
    """
    image = _check_image(image)
    scale = _check_number(scale, "scale", 0.0)
    sigma = _check_number(sigma, "sigma", 0.0)
    min_size = _check_count(min_size, "min_size")
    return _segment(image.shape[:2], sorted_edges(image, sigma), scale, min_size)


def stable_argsort(values):
    """``np.argsort(values, kind="stable")``, faster: equal values keep their index order.

    An unstable sort, then each run of equal values is put in index order (ties are few
    in natural images).

    Args:
        values (ndarray[N]): float.
    Returns:
        ndarray[N] int64.
    """
    order = np.argsort(values)
    ordered = values[order]
    tie = ordered[1:] == ordered[:-1]
    if tie.any():
        in_run = np.zeros(values.size, dtype=bool)     # positions inside runs of equal values
        in_run[1:] |= tie
        in_run[:-1] |= tie
        members = order[in_run]
        order[in_run] = members[np.lexsort((members, values[members]))]
    return order


def sorted_edges(image, sigma):
    """The grid graph of the smoothed image, edges by increasing weight (``felzenszwalb``'s).

    It depends on the image and ``sigma`` only: ``selective_search`` segments it at
    several k.

    Args:
        image (ndarray[H, W, C]): float64.
        sigma (float): gaussian smoothing.
    Returns:
        tuple: ``(a, b, weights)`` as ``grid_edges``, sorted by weight, equal weights in
        edge order.
    """
    smooth = ndimage.gaussian_filter(image, [sigma, sigma, 0.0], mode="reflect", truncate=4.0)
    a, b, weights = grid_edges(smooth)
    order = stable_argsort(weights)
    return a[order], b[order], weights[order]


def _segment(shape, edges, scale, min_size):
    """``felzenszwalb`` on sorted edges: the main pass, the min-size pass, the labels."""
    height, width = shape
    a, b, weights = edges
    forest = _Forest(height * width)
    _sequential_unions(forest, a, b, _MergeRule(forest, weights, scale / 255.0))
    if min_size > 1:
        # Only edges touching a component below min_size can merge: sizes only grow.
        small = forest.size[forest.parent] < min_size
        candidates = np.flatnonzero(small[a] | small[b])
        _sequential_unions(forest, a[candidates], b[candidates], _MinSizeRule(forest, min_size))
    # A set's root is its first pixel: numbering roots in order numbers the segments
    # by their first pixel.
    is_root = forest.parent == np.arange(height * width)
    labels = (np.cumsum(is_root) - 1)[forest.parent]
    return labels.reshape(height, width).astype(np.int64)


# ------------------------------------------------------------ color spaces
def _rgb_to_hsv(rgb):
    """(H, W, 3) RGB in [0, 1] -> HSV, each channel in [0, 1]."""
    high = rgb.max(axis=2)
    low = rgb.min(axis=2)
    spread = high - low
    safe = np.where(spread > 0, spread, 1.0)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    hue = np.where(high == r, (g - b) / safe % 6.0,
                   np.where(high == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0))
    hue = np.where(spread > 0, hue / 6.0, 0.0)
    saturation = np.where(high > 0, spread / np.where(high > 0, high, 1.0), 0.0)
    return np.stack([hue, saturation, high], axis=2)


def _rgb_to_lab(rgb):
    """(H, W, 3) sRGB in [0, 1] -> CIE Lab (D65) rescaled to about [0, 1] per channel."""
    linear = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    to_xyz = np.array([[0.412453, 0.357580, 0.180423],
                       [0.212671, 0.715160, 0.072169],
                       [0.019334, 0.119193, 0.950227]])
    xyz = linear @ to_xyz.T / np.array([0.950456, 1.0, 1.088754])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    lightness = 116.0 * f[..., 1] - 16.0
    a = 500.0 * (f[..., 0] - f[..., 1])
    b = 200.0 * (f[..., 1] - f[..., 2])
    return np.stack([lightness / 100.0, (a + 128.0) / 255.0, (b + 128.0) / 255.0], axis=2)


def convert_color(rgb, space):
    """Convert an RGB image in [0, 1] to one of the paper's color spaces, about [0, 1].

    Args:
        rgb (ndarray[H, W, 3]): float64 in [0, 1].
        space (str): ``"rgb"``, ``"hsv"``, ``"lab"``, ``"rgi"`` (normalised r, g and
            intensity), ``"h"`` (hue only) or ``"i"`` (intensity only).
    Returns:
        ndarray[H, W, C]: float64, C = 3 (or 1 for "h" and "i").
    """
    if space == "rgb":
        return rgb
    if space == "hsv":
        return _rgb_to_hsv(rgb)
    if space == "lab":
        return _rgb_to_lab(rgb)
    intensity = rgb.mean(axis=2, keepdims=True)
    if space == "i":
        return intensity
    if space == "h":
        return _rgb_to_hsv(rgb)[..., :1]
    if space == "rgi":
        total = rgb.sum(axis=2, keepdims=True)
        chroma = rgb[..., :2] / np.where(total > 0, total, 1.0)
        return np.concatenate([chroma, intensity], axis=2)
    raise ValueError(f"color space must be one of {sorted(COLOR_SPACES)}, got {space!r}")


COLOR_SPACES = ("rgb", "hsv", "lab", "rgi", "h", "i")


# ------------------------------------------------------------ region features
COLOR_BINS = 25
TEXTURE_BINS = 10
TEXTURE_ORIENTATIONS = 8


def _texture_bins(image):
    """Per pixel, channel and orientation, the bin of its gaussian-derivative response.

    The derivative of a sigma-1 gaussian in eight directions (every 45 degrees) per
    channel, its positive part binned in 10 bins up to the channel's largest response.

    Returns:
        ndarray[H, W, C, 8] int8 in 0..9.
    """
    gy = ndimage.gaussian_filter(image, 1.0, order=(1, 0, 0))            # (H, W, C)
    gx = ndimage.gaussian_filter(image, 1.0, order=(0, 1, 0))
    angles = np.arange(TEXTURE_ORIENTATIONS) * (2 * np.pi / TEXTURE_ORIENTATIONS)
    response = np.empty(image.shape + (TEXTURE_ORIENTATIONS,))          # (H, W, C, 8)
    for o, angle in enumerate(angles):     # in place: the array is large, passes are costly
        response[..., o] = gx * np.cos(angle) + gy * np.sin(angle)
    np.maximum(response, 0.0, out=response)
    top = response.max(axis=(0, 1, 3), keepdims=True)                   # (1, 1, C, 1)
    np.divide(response, np.where(top > 0, top, 1.0), out=response)
    np.multiply(response, TEXTURE_BINS, out=response)
    bins = response.astype(np.int8)                                     # floor: values >= 0
    return np.minimum(bins, TEXTURE_BINS - 1, out=bins)


def _histograms(labels, count, bins, width):
    """L1-normalised histograms per region: ``bins`` (ndarray[H, W, D]) int in 0..width-1.

    Returns:
        ndarray[count, D·width] float64, each row summing to 1.
    """
    depth = bins.shape[2]
    index = (labels[:, :, None] * depth + np.arange(depth)) * width + bins     # (H, W, D)
    hist = np.bincount(index.ravel(), minlength=count * depth * width)
    hist = hist.reshape(count, depth * width).astype(np.float64)
    return hist / hist.sum(axis=1, keepdims=True)


def region_features(image, labels, texture_bins=None):
    """Size, box, color and texture histograms of every segment.

    Args:
        image (ndarray[H, W, C]): float64 color-space image, about [0, 1].
        labels (ndarray[H, W] int64): segment ids 0..S-1.
        texture_bins (ndarray[H, W, C, 8] | None): ``_texture_bins(image)`` if already
            computed (it depends on the image only).
    Returns:
        dict: ``size`` (ndarray[S] float64, pixels), ``boxes`` (ndarray[S, 4] float64
        xyxy covering the pixels), ``color`` (ndarray[S, 25·C]), ``texture``
        (ndarray[S, 80·C]); histograms L1-normalised.
    """
    height, width = labels.shape
    count = int(labels.max()) + 1
    flat = labels.ravel()
    order = np.argsort(flat, kind="stable")
    size = np.bincount(flat, minlength=count)
    starts = np.concatenate([[0], np.cumsum(size)[:-1]])
    ys, xs = np.divmod(order, width)                                     # pixels by segment
    boxes = np.stack([np.minimum.reduceat(xs, starts), np.minimum.reduceat(ys, starts),
                      np.maximum.reduceat(xs, starts) + 1, np.maximum.reduceat(ys, starts) + 1],
                     axis=1).astype(np.float64)
    color_bins = np.minimum((np.clip(image, 0.0, 1.0) * COLOR_BINS).astype(np.int64),
                             COLOR_BINS - 1)
    if texture_bins is None:
        texture_bins = _texture_bins(image)
    texture_bins = texture_bins.reshape(height, width, -1)               # (H, W, C·8)
    return {
        "size": size.astype(np.float64),
        "boxes": boxes,
        "color": _histograms(labels, count, color_bins, COLOR_BINS),
        "texture": _histograms(labels, count, texture_bins, TEXTURE_BINS),
    }


def region_neighbours(labels):
    """Pairs of 8-adjacent segments.

    Returns:
        ndarray[P, 2] int64: ``(i, j)`` with ``i < j``, each pair once, sorted.
    """
    pairs = []
    for first, second in ((labels[:, 1:], labels[:, :-1]), (labels[1:, :], labels[:-1, :]),
                          (labels[1:, 1:], labels[:-1, :-1]), (labels[:-1, 1:], labels[1:, :-1])):
        differ = first != second
        pairs.append(np.stack([first[differ], second[differ]], axis=1))
    pairs = np.sort(np.concatenate(pairs), axis=1)
    count = int(labels.max()) + 1
    codes = np.unique(pairs[:, 0] * count + pairs[:, 1])                # one int per pair
    return np.stack(np.divmod(codes, count), axis=1)


# ------------------------------------------------------------ hierarchical grouping
SIMILARITIES = ("CTSF", "TSF", "F", "S", "C", "T", "CT", "CS", "CF", "TS", "TF", "SF", "CTS",
                "CTF", "CSF")


def _similarity(features, i, j, measures, image_area):
    """Similarity of regions ``i`` and ``j`` as the sum of ``measures``.

    Args:
        i (ndarray[P] int64 | int): one region, or one per pair.
        j (ndarray[P] int64): the other regions.
    Returns:
        ndarray[P] float64.
    """
    total = np.zeros(np.size(j))
    if "C" in measures:
        total += np.minimum(features["color"][i], features["color"][j]).sum(axis=1)
    if "T" in measures:
        total += np.minimum(features["texture"][i], features["texture"][j]).sum(axis=1)
    size_sum = features["size"][i] + features["size"][j]
    if "S" in measures:
        total += 1.0 - size_sum / image_area
    if "F" in measures:
        bi, bj = features["boxes"][i], features["boxes"][j]
        low = np.minimum(bi[..., :2], bj[..., :2])                       # (P, 2)
        high = np.maximum(bi[..., 2:], bj[..., 2:])
        box_area = (high[:, 0] - low[:, 0]) * (high[:, 1] - low[:, 1])
        total += 1.0 - (box_area - size_sum) / image_area
    return total


def hierarchical_grouping(image, labels, similarity="CTSF"):
    """Merge the most similar neighbouring regions until one is left (Uijlings et al., 3.1).

    Args:
        image (ndarray[H, W, C]): float64 color-space image, about [0, 1].
        labels (ndarray[H, W] int64): initial segments 0..S-1.
        similarity (str): the measures summed, letters of "CTSF" (color, texture,
            size, fill), e.g. "CTSF" or "TSF".
    Returns:
        tuple: ``(boxes, merges)``: ``boxes`` (ndarray[2S-1, 4] float64) xyxy of every
        region of the hierarchy in creation order (the S segments, then one region per
        merge, the whole image last when the segments are connected); ``merges``
        (ndarray[S-1, 2] int64) the two regions each merge joined.
    """
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
    return _group(region_features(image, labels), region_neighbours(labels),
                  float(labels.size), similarity)


def _group(base, pairs, image_area, similarity):
    """``hierarchical_grouping`` on the segments' features and neighbour pairs."""
    count = base["size"].shape[0]
    capacity = 2 * count - 1
    features = {}
    for key, value in base.items():
        features[key] = np.zeros((capacity,) + value.shape[1:])
        features[key][:count] = value
    size, boxes = features["size"], features["boxes"]
    color, texture = features["color"], features["texture"]
    neighbours = [set() for _ in range(capacity)]
    for i, j in pairs.tolist():
        neighbours[i].add(j)
        neighbours[j].add(i)
    scores = _similarity(features, pairs[:, 0], pairs[:, 1], similarity, image_area)
    heap = list(zip((-scores).tolist(), pairs[:, 0].tolist(), pairs[:, 1].tolist()))
    heapq.heapify(heap)
    alive = np.zeros(capacity, dtype=bool)
    alive[:count] = True
    merges = []
    new = count
    while heap:
        _, i, j = heapq.heappop(heap)
        if not (alive[i] and alive[j]):
            continue
        # The merged region: sizes add, boxes join, histograms average weighted by size.
        si, sj = size[i], size[j]
        size[new] = si + sj
        np.minimum(boxes[i, :2], boxes[j, :2], out=boxes[new, :2])
        np.maximum(boxes[i, 2:], boxes[j, 2:], out=boxes[new, 2:])
        for histogram in (color, texture):
            histogram[new] = (si * histogram[i] + sj * histogram[j]) / (si + sj)
        alive[i] = alive[j] = False
        alive[new] = True
        around = (neighbours[i] | neighbours[j]) - {i, j}
        for other in around:
            neighbours[other].discard(i)
            neighbours[other].discard(j)
            neighbours[other].add(new)
        neighbours[new] = around
        if around:
            others = np.fromiter(around, dtype=np.int64)
            scores = _similarity(features, new, others, similarity, image_area)
            for score, other in zip((-scores).tolist(), others.tolist()):
                heapq.heappush(heap, (score, other, new))
        merges.append((i, j))
        new += 1
    return features["boxes"][:new], np.array(merges, dtype=np.int64).reshape(-1, 2)


# ------------------------------------------------------------ selective search
STRATEGIES = {
    # The paper's "fast" and "quality" diversification (Uijlings et al., section 5.2).
    "fast": {"color_spaces": ("hsv", "lab"), "ks": (50, 100), "similarities": ("CTSF", "TSF")},
    "quality": {"color_spaces": ("hsv", "lab", "rgi", "h", "i"), "ks": (50, 100, 150, 300),
                "similarities": ("CTSF", "TSF", "F", "S")},
}


def selective_search(image, mode="fast", generator=None, sigma=0.8, min_size=None,
                     color_spaces=None, ks=None, similarities=None):
    """Class-agnostic box proposals by hierarchical grouping (Uijlings et al., IJCV 2013).

    For every combination of color space, k and similarity, the image converted to that
    color space is segmented (``felzenszwalb(scale=k, sigma, min_size=k)``) and grouped
    (``hierarchical_grouping``). The box of hierarchy position j (1 = the last merge)
    scores ``j · u``, u uniform in [0, 1]; all strategies' boxes are sorted by that score
    (lower first) and exact duplicates dropped, keeping the best-ranked copy.

    Args:
        image (ndarray[H, W, 3]): RGB, uint8 or float in [0, 1].
        mode (str): ``"fast"`` (HSV and Lab, k in {50, 100}, similarities CTSF and TSF:
            8 strategies) or ``"quality"`` (HSV, Lab, rgI, H, I; k in {50, 100, 150, 300};
            CTSF, TSF, F, S: 80 strategies).
        generator (np.random.Generator | int | None): the ranking's randomness; None is
            seed 0 (reproducible proposals, whatever ``nn.manual_seed`` was given).
        sigma (float): gaussian smoothing of the segmentation.
        min_size (int | None): smallest segment; None uses k (the paper's setting).
        color_spaces, ks, similarities (sequence | None): override the mode's lists.
    Returns:
        ndarray[R, 4] float32: xyxy proposals, best-ranked first, within the image.
    Raises:
        TypeError / ValueError: bad image, mode or strategy lists.
    """
    if mode not in STRATEGIES:
        raise ValueError(f"mode must be 'fast' or 'quality', got {mode!r}")
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be an RGB array of shape (H, W, 3), got "
                         f"{getattr(image, 'shape', type(image).__name__)}")
    rgb = _check_image(image)
    rng = np.random.default_rng(0) if generator is None else get_generator(generator)
    settings = STRATEGIES[mode]
    color_spaces = tuple(color_spaces or settings["color_spaces"])
    ks = tuple(ks or settings["ks"])
    similarities = tuple(similarities or settings["similarities"])
    for space in color_spaces:
        if space not in COLOR_SPACES:
            raise ValueError(f"color space must be one of {COLOR_SPACES}, got {space!r}")
    ks = tuple(_check_number(k, "k", 0.0) for k in ks)
    for similarity in similarities:
        if similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
    sigma = _check_number(sigma, "sigma", 0.0)
    if min_size is not None:
        min_size = _check_count(min_size, "min_size")

    all_boxes, all_ranks = [], []
    for space in color_spaces:
        converted = convert_color(rgb, space)
        texture = _texture_bins(converted)
        edges = sorted_edges(converted, sigma)        # shared by every k
        for k in ks:
            segment_min = int(k) if min_size is None else min_size
            labels = _segment(converted.shape[:2], edges, k, segment_min)
            features = region_features(converted, labels, texture)
            pairs = region_neighbours(labels)
            for similarity in similarities:
                boxes, _ = _group(features, pairs, float(labels.size), similarity)
                # Position j = 1 for the last region created (the top of the hierarchy).
                position = np.arange(boxes.shape[0], 0, -1, dtype=np.float64)
                all_boxes.append(boxes)
                all_ranks.append(position * rng.random(boxes.shape[0]))
    boxes = np.concatenate(all_boxes)
    order = np.argsort(np.concatenate(all_ranks), kind="stable")
    boxes = boxes[order]
    _, first = np.unique(boxes, axis=0, return_index=True)
    return boxes[np.sort(first)].astype(np.float32)
