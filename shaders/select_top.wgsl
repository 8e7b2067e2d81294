// Per-layer top-k selection for activation masks, one invocation per layer.
// Scores map to order-preserving u32 keys (NaN counts as lowest), and a
// binary search over the key bits finds the k-th largest key t: the largest t
// with at least k keys >= t. The units above t are active, and so are the
// lowest-id units equal to t until k are chosen (ties go to the lower id).
// index[layer, 0..k] lists them in ascending id order; bitmap[layer, i] = 1
// marks them for display. 33 passes over n units instead of n^2 comparisons.

struct Params { n_units: u32, k: u32, score_offset: u32, n_layers: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> scores: array<f32>;
@group(0) @binding(2) var<storage, read_write> index: array<u32>;
@group(0) @binding(3) var<storage, read_write> bitmap: array<u32>;

fn key(layer: u32, i: u32) -> u32 {
    var s = scores[p.score_offset + layer * p.n_units + i];
    s = select(-3.0e38, s, s == s);
    let b = bitcast<u32>(s);
    // Negative floats order backwards: flip them all; positive ones go above.
    return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

fn count_at_least(layer: u32, t: u32) -> u32 {
    var c = 0u;
    for (var i = 0u; i < p.n_units; i++) {
        c += select(0u, 1u, key(layer, i) >= t);
    }
    return c;
}

@compute @workgroup_size(8)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let layer = gid.x;
    if (layer >= p.n_layers) { return; }
    var t = 0u;
    for (var bit = 31i; bit >= 0i; bit--) {
        let candidate = t | (1u << u32(bit));
        if (count_at_least(layer, candidate) >= p.k) { t = candidate; }
    }
    // Units strictly above t all fit; ties at t fill the rest by id.
    var ties = p.k - count_at_least(layer, t + 1u);
    if (t == 0xffffffffu) { ties = p.k; }
    let base = layer * p.n_units;
    var n = 0u;
    for (var i = 0u; i < p.n_units; i++) {
        let ki = key(layer, i);
        var on = ki > t;
        if (ki == t && ties > 0u) {
            on = true;
            ties--;
        }
        bitmap[base + i] = select(0u, 1u, on);
        if (on) {
            index[base + n] = i;
            n++;
        }
    }
}
