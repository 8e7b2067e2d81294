// Dynamic per-token neuron masks for one layer, in one workgroup: neuron i is
// active when |v_i| * norm_i >= eps_layer, with
//   CETT (Sparsing Law): v = h (the neuron outputs), norm = ||W_down[:, i]||,
//   CATS:                v = silu(gate), norm = 1,
// or a weighted rule's per-neuron weights for norm (either v).
// Writes the active ids in increasing order (a workgroup prefix sum over
// per-invocation counts: deterministic, no atomics), their values compacted
// (compact[a] = v_index[a]), the count, and the display bitmap.

struct Params { n: u32, layer: u32, _a: u32, index_offset: u32 }

const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> values: array<f32>;
@group(0) @binding(2) var<storage, read> norms: array<f32>;
@group(0) @binding(3) var<storage, read> thresholds: array<f32>;
@group(0) @binding(4) var<storage, read_write> index: array<u32>;
@group(0) @binding(5) var<storage, read_write> counts: array<u32>;
@group(0) @binding(6) var<storage, read_write> bitmap: array<u32>;
@group(0) @binding(7) var<storage, read_write> compact: array<f32>;

var<workgroup> sums: array<u32, WG>;

fn kept(i: u32) -> bool {
    return abs(values[i]) * norms[p.layer * p.n + i] >= thresholds[p.layer];
}

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_id) lid: vec3<u32>) {
    let t = lid.x;
    let per = (p.n + WG - 1u) / WG;
    let start = min(p.n, t * per);
    let end = min(p.n, start + per);
    var mine = 0u;
    for (var i = start; i < end; i++) {
        if (kept(i)) { mine++; }
    }
    sums[t] = mine;
    workgroupBarrier();
    // Inclusive prefix sum (Hillis-Steele).
    for (var step = 1u; step < WG; step *= 2u) {
        var add = 0u;
        if (t >= step) { add = sums[t - step]; }
        workgroupBarrier();
        sums[t] += add;
        workgroupBarrier();
    }
    var at = sums[t] - mine;
    for (var i = start; i < end; i++) {
        let on = kept(i);
        bitmap[p.layer * p.n + i] = select(0u, 1u, on);
        if (on) {
            index[p.index_offset + at] = i;
            compact[at] = values[i];
            at++;
        }
    }
    if (t == WG - 1u) { counts[p.layer] = sums[t]; }
}
