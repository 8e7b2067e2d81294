// Multiply-adds in registers and nothing else: how fast an adapter computes,
// for the bench's roofline (kernels::peak_flops). Each invocation runs CHAINS
// independent vec4 chains a = a * m + c for ITERS steps, enough chains in
// flight to hide an FMA's latency on a CPU core (a lavapipe invocation is one
// SIMD lane, so a chain is one vector register) and few enough to stay in
// registers. m and c come from a buffer (1 and 1 at run time), so no compiler
// can fold the loop, and the result (a0 + ITERS) checks that every step ran.

override ITERS: u32 = 1024u;

@group(0) @binding(0) var<storage, read> coeffs: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let m = vec4<f32>(coeffs[0]);
    let c = vec4<f32>(coeffs[1]);
    var a0 = vec4<f32>(0.0, 1.0, 2.0, 3.0);
    var a1 = a0 + 4.0;
    var a2 = a0 + 8.0;
    for (var i = 0u; i < ITERS; i++) {
        a0 = fma(a0, m, c);
        a1 = fma(a1, m, c);
        a2 = fma(a2, m, c);
    }
    let id = gid.x + gid.y * nwg.x * 64u;
    // Each lane's least value: exactly ITERS when every step ran.
    out[id] = min(min(a0.x, a1.x), a2.x);
}
