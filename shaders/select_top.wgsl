// Per-layer top-k selection for activation masks, one invocation per unit:
// unit i's rank is the number of units of its layer scored higher (ties go to
// the lower id; NaN counts as lowest). Units ranked below k are active:
// index[layer, rank] = i (a compact list, best first) and bitmap[layer, i] = 1
// (a bitmap for display).

struct Params { n_units: u32, k: u32, score_offset: u32, _a: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> scores: array<f32>;
@group(0) @binding(2) var<storage, read_write> index: array<u32>;
@group(0) @binding(3) var<storage, read_write> bitmap: array<u32>;

fn score(layer: u32, i: u32) -> f32 {
    let s = scores[p.score_offset + layer * p.n_units + i];
    return select(-3.0e38, s, s == s);
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let layer = gid.y;
    if (i >= p.n_units) { return; }
    let s = score(layer, i);
    var rank = 0u;
    for (var j = 0u; j < p.n_units; j++) {
        let o = score(layer, j);
        if (o > s || (o == s && j < i)) { rank++; }
    }
    let base = layer * p.n_units;
    let on = rank < p.k;
    bitmap[base + i] = select(0u, 1u, on);
    if (on) { index[base + rank] = i; }
}
