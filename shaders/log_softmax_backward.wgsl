// Gradient of F = sum over rows of log softmax(logits[row])[tgt[row]] with
// respect to the logits: dlogits = onehot(tgt) - softmax(logits), one
// workgroup per row. A tgt of NONE gives a zero row; GREEDY takes the
// row's argmax (the model's own next token, lowest id on ties). `info` gets
// each row's (log-prob of its tgt, tgt id) for the caller to read.

struct Params { vocab: u32, out_stride: u32, _a: u32, _b: u32 }
struct Step { n_tokens: u32, pos0: u32, _a: u32, _b: u32 }

const NONE: u32 = 0xffffffffu;
const GREEDY: u32 = 0xfffffffeu;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> logits: array<f32>;
@group(0) @binding(3) var<storage, read> targets: array<u32>;
@group(0) @binding(4) var<storage, read_write> dlogits: array<f32>;
@group(0) @binding(5) var<storage, read_write> info: array<u32>;

const WG: u32 = 64u;
var<workgroup> best: array<f32, WG>;
var<workgroup> best_id: array<u32, WG>;
var<workgroup> total: array<f32, WG>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = wg.x;
    if (row >= step.n_tokens) { return; }
    let base = row * p.vocab;
    let out = row * p.out_stride;
    var m = -3.0e38;
    var m_id = NONE;
    for (var v = lid.x; v < p.vocab; v += WG) {
        let l = logits[base + v];
        if (l > m) { m = l; m_id = v; }
    }
    best[lid.x] = m;
    best_id[lid.x] = m_id;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid.x < s) {
            let a = best[lid.x];
            let b = best[lid.x + s];
            if (b > a || (b == a && best_id[lid.x + s] < best_id[lid.x])) {
                best[lid.x] = b;
                best_id[lid.x] = best_id[lid.x + s];
            }
        }
        workgroupBarrier();
    }
    let mx = best[0];
    var sum = 0.0;
    for (var v = lid.x; v < p.vocab; v += WG) {
        sum += exp(logits[base + v] - mx);
    }
    total[lid.x] = sum;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid.x < s) { total[lid.x] += total[lid.x + s]; }
        workgroupBarrier();
    }
    let lse = mx + log(total[0]);
    var tgt = targets[row];
    if (tgt == GREEDY) { tgt = best_id[0]; }
    for (var v = lid.x; v < p.out_stride; v += WG) {
        var d = 0.0;
        if (tgt != NONE && v < p.vocab) {
            d = select(0.0, 1.0, v == tgt) - exp(logits[base + v] - lse);
        }
        dlogits[out + v] = d;
    }
    if (lid.x == 0u) {
        var lp = 0.0;
        if (tgt != NONE) { lp = logits[base + tgt] - lse; }
        info[2u * row] = bitcast<u32>(lp);
        info[2u * row + 1u] = tgt;
    }
}
