// A magnitude rule on a linear layer's input (TEAL): element j of token t's
// input is zeroed when |v_tj| < threshold, so the projection after it reads
// none of column j. Kept elements are counted (per layer and site), so that
// a run can say what share of the projections' weights the rule read.

struct Params { width: u32, index: u32, _a: u32, _b: u32 }
struct Step { n_tokens: u32, pos0: u32, _a: u32, _b: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read_write> v: array<f32>;
@group(0) @binding(3) var<storage, read> thresholds: array<f32>;
@group(0) @binding(4) var<storage, read_write> kept: array<atomic<u32>>;

var<workgroup> wg_kept: atomic<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lane: u32) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i < step.n_tokens * p.width) {
        if (abs(v[i]) < thresholds[p.index]) {
            v[i] = 0.0;
        } else {
            atomicAdd(&wg_kept, 1u);
        }
    }
    workgroupBarrier();
    if (lane == 0u) {
        atomicAdd(&kept[p.index], atomicLoad(&wg_kept));
    }
}
