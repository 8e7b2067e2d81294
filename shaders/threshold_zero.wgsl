// A threshold rule applied to every token of a batched forward (prefill,
// perplexity, calibration), as the Sparsing Law measures it: neuron i of
// token t is zeroed when
//   CETT: |h_ti| * norm_i < eps_layer, or
//   CATS: |silu(gate_ti)| * norm_i < t_layer,
// norm the rule's per-neuron weights (CETT's ||W_down[:, i]||, CATS's 1, or a file's).
// Decoding applies the same rule in `threshold_select.wgsl` and skips the
// zeroed neurons' weights; here they are computed, then zeroed.

struct Params { ffn: u32, layer: u32, rule: u32, _a: u32 }
struct Step { n_tokens: u32, pos0: u32, _a: u32, _b: u32 }

const CETT: u32 = 0u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read_write> h: array<f32>;
@group(0) @binding(3) var<storage, read> gate_up: array<f32>;
@group(0) @binding(4) var<storage, read> norms: array<f32>;
@group(0) @binding(5) var<storage, read> thresholds: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= step.n_tokens * p.ffn) { return; }
    let t = i / p.ffn;
    let j = i % p.ffn;
    var v = abs(h[i]);
    if (p.rule != CETT) {
        let g = gate_up[t * 2u * p.ffn + j];
        v = abs(g / (1.0 + exp(-g)));
    }
    if (v * norms[p.layer * p.ffn + j] < thresholds[p.layer]) { h[i] = 0.0; }
}
