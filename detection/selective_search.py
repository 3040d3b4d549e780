"""Region proposals from a graph segmentation: Felzenszwalb-Huttenlocher, then selective search.

R-CNN does not slide a window over every position and scale. It asks a cheap,
class-agnostic algorithm for ~2000 boxes that probably contain *something*, and
classifies only those. This module is that algorithm, in two stages.

1. **Graph-based segmentation** (Felzenszwalb and Huttenlocher, "Efficient Graph-Based
   Image Segmentation", IJCV 2004). Pixels are the nodes of a graph whose edges join
   8-neighbours, weighted by their colour distance. Edges are visited by increasing
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

       s_colour  = sum_k min(c_i^k, c_j^k)       colour histograms (25 bins per channel)
       s_texture = sum_k min(t_i^k, t_j^k)       gradient-orientation histograms
       s_size    = 1 - (|r_i| + |r_j|) / |image|  small regions merge first
       s_fill    = 1 - (|BB_ij| - |r_i| - |r_j|) / |image|   regions that fill each other's gaps

   No single strategy finds everything, so the paper *diversifies*: several colour spaces,
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
decided for good. The result is the sequential algorithm's, edge for edge.
"""
import numpy as np
from scipy import ndimage

__all__ = ["felzenszwalb"]


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
    """The 8-connected grid graph of an image, its edges weighted by colour distance.

    Each pixel links to its right, down, down-right and up-right neighbours (every
    8-neighbour pair once), in that order of blocks, each block in row-major order
    (scikit-image's order: equal weights are then sorted the same way).

    Args:
        image (ndarray[H, W, C]): float64.
    Returns:
        tuple: ``(a, b, weights)``: ``a``, ``b`` (ndarray[E] int64) flat pixel indices of
        the two ends, ``weights`` (ndarray[E] float64) the euclidean colour distance.
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
            if np.array_equal(up, roots):
                break
            roots = up
        parent[nodes] = roots
        return roots

    def compress(self):
        """Point every node straight at its root (pointer doubling)."""
        parent = self.parent
        while True:
            up = parent[parent]
            if np.array_equal(up, parent):
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
    docstring). Where merges chain through one growing set (a region absorbing pixel
    after pixel), rounds keep only a few edges each; the next chunk is then decided by a
    scalar loop over the edges whose answer depends on earlier ones, every other edge
    of the chunk still classified with arrays.

    Args:
        forest (_Forest): the sets, updated in place.
        a, b (ndarray[E] int64): edge ends, in visiting order.
        rule: an object with
            ``decide(positions, ra, rb) -> (merge, certain)``: ndarray[L] bool each, for
            edges with distinct roots as of the chunk's start: whether the edge merges,
            and whether that answer holds whatever earlier edges of the chunk did;
            ``apply(positions, ra, rb, merge, new_roots)``: record the kept decisions of a
            round (edges at ``positions``, in order; ``new_roots`` of the merging ones);
            ``scalar(positions, ra, rb)``: decide and apply the given edges one by one.
        chunk (int): first chunk length; it adapts to the length kept per round.
    """
    total = a.size
    start = 0
    none = np.iinfo(np.int64).max
    scratch = np.full(forest.parent.size, none, dtype=np.int64)
    scalar_next = False
    rounds = 0
    while start < total:
        stop = min(total, start + (_SCALAR_CHUNK if scalar_next else chunk))
        ra = forest.find(a[start:stop])
        rb = forest.find(b[start:stop])
        between = np.flatnonzero(ra != rb)
        merge, certain = rule.decide(start + between, ra[between], rb[between])
        if scalar_next:
            live = between[~certain]
            rule.scalar(start + live, ra[live], rb[live])
            scalar_next = False
            start = stop
            continue
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
        kept = between < start + done - start
        kept_between = between[kept]
        kept_merge = merge[kept]
        ka, kb = ra[kept_between], rb[kept_between]
        new_roots = forest.union_disjoint_pairs(ka[kept_merge], kb[kept_merge])
        rule.apply(start + kept_between, ka, kb, kept_merge, new_roots)
        start += done
        chunk = int(np.clip(2 * done, 64, 1 << 16))
        scalar_next = done < _SCALAR_SWITCH
        rounds += 1
        if rounds % 64 == 0:
            forest.compress()
    forest.compress()


# A round keeping fewer edges than this hands the next chunk to the scalar loop.
_SCALAR_SWITCH = 256
_SCALAR_CHUNK = 4096


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
    """

    def __init__(self, forest, weights, k):
        n = forest.parent.size
        self.forest, self.weights, self.k = forest, weights, k
        self.internal = np.zeros(n, dtype=np.float64)     # Int(C) at each root
        self.frozen = np.zeros(n, dtype=bool)

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

    def apply(self, positions, ra, rb, merge, new_roots):
        self.internal[new_roots] = self.weights[positions[merge]]
        freeze_a, freeze_b, final = self._freeze
        count = positions.size      # the kept edges are a prefix of the decided ones
        rejected = ~merge & ~final[:count]
        self.frozen[ra[rejected & freeze_a[:count]]] = True
        self.frozen[rb[rejected & freeze_b[:count]]] = True

    def scalar(self, positions, ra, rb):
        if positions.size == 0:
            return
        forest, k = self.forest, self.k
        roots = np.unique(np.concatenate([ra, rb]))
        size = dict(zip(roots.tolist(), forest.size[roots].tolist()))
        internal = dict(zip(roots.tolist(), self.internal[roots].tolist()))
        frozen = set()
        up = {}
        for w, x, y in zip(self.weights[positions].tolist(), ra.tolist(), rb.tolist()):
            while x in up:
                x = up[x]
            while y in up:
                y = up[y]
            if x == y or x in frozen or y in frozen:
                continue
            tx = internal[x] + k / size[x]
            ty = internal[y] + k / size[y]
            # w < float32(t), exact: only a w within float32 rounding of t needs rounding.
            if w < tx * _BELOW and w < ty * _BELOW or (
                    w < ty * _ABOVE and w < tx * _ABOVE
                    and w < _round_float32(tx) and w < _round_float32(ty)):
                new, old = (x, y) if x < y else (y, x)
                up[old] = new
                size[new] = size[x] + size[y]
                internal[new] = w
            else:
                tx, ty = _round_float32(tx), _round_float32(ty)
                if tx <= ty:
                    frozen.add(x)
                if ty <= tx:
                    frozen.add(y)
        _write_back(forest, up, size)
        if up:
            new_roots = np.fromiter(set(up.values()), dtype=np.int64)
            self.internal[new_roots] = [internal[r] for r in new_roots.tolist()]
        if frozen:
            self.frozen[np.fromiter(frozen, dtype=np.int64)] = True


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
    edge that last grew C. Then, over the same sorted edges, two different components are
    merged when either has fewer than ``min_size`` pixels. Every segment is 8-connected.

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
    height, width = image.shape[:2]
    smooth = ndimage.gaussian_filter(image, [sigma, sigma, 0.0], mode="reflect", truncate=4.0)
    a, b, weights = grid_edges(smooth)
    order = np.argsort(weights, kind="stable")       # equal weights in edge order
    a, b, weights = a[order], b[order], weights[order]

    forest = _Forest(height * width)
    _sequential_unions(forest, a, b, _MergeRule(forest, weights, scale / 255.0))
    if min_size > 1:
        # Only edges touching a component below min_size can merge: sizes only grow.
        small = forest.size[forest.parent] < min_size
        candidates = np.flatnonzero(small[a] | small[b])
        _sequential_unions(forest, a[candidates], b[candidates], _MinSizeRule(forest, min_size))
    labels = np.unique(forest.parent, return_inverse=True)[1]
    return labels.reshape(height, width).astype(np.int64)

