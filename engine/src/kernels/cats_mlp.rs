//! A per-token gate rule's MLP in one dispatch (`cats_mlp.wgsl`): the norm,
//! every gate row, the rule |silu(gate_i)| * w_i >= t_layer, and only for
//! the kept neurons their up row and W_down column, added to the residual.
//!
//! A rule on the gate (CATS, or a calibrated weighting of it) is the one
//! per-token rule that can skip work: a rule on h needs every up row too.
//! It skips two thirds of a dropped neuron's weights: its up row (the
//! model's own packed [gate; up], the dropped lanes' loads masked off) and
//! its W_down column, read from a per-neuron copy ([`neuron_weights`]) with
//! W_down's Q4_1 scales (shared by 32 neurons of a row) beside the columns,
//! so a kept neuron's column is one contiguous run and holds the model's
//! own weights, bit for bit.
//!
//! It runs where [`fused_mlp`](super::fused_mlp) does (CPU adapters whose
//! workgroups of 8 are one subgroup; the last workgroup to finish adds the
//! others' slices), with the model's [gate; up] packed in 4 bits and W_up
//! and W_down exactly 4-bit (a Q4_1 model).

use super::linear::{Matrix, INTERLEAVE_ROWS};
use super::packed::{q4_block, units, BLOCK};
use super::{Call, Dispatch, KernelFamily};
use crate::gpu::{uniform_buffer, Binding, GpuContext, Kernel};

/// The widest model the kernel takes (`MAX_K32` and `MAX_ROWS4` in the kernel).
pub const MAX_DIM: usize = 2048;

/// Storage buffers the kernel binds (its parameters too on CPU adapters).
const STORAGE_BINDINGS: u32 = 11;

/// Whether a model of this width and MLP width runs its gate rules in one
/// dispatch on this adapter: where the fused compacted MLP runs, with whole
/// 64-row blocks of both widths.
pub fn runs_on(ctx: &GpuContext, family: KernelFamily, dim: usize, ffn: usize) -> bool {
    super::fused_mlp::runs_on(ctx, family)
        && ctx.limits.max_storage_buffers_per_shader_stage >= STORAGE_BINDINGS
        && dim.is_multiple_of(INTERLEAVE_ROWS)
        && ffn.is_multiple_of(INTERLEAVE_ROWS)
        && dim <= MAX_DIM
}

/// One layer's W_down [dim, ffn] per neuron in 4 bits, in words: the
/// columns [ffn][dim / 8] (word j holds rows 8j .. 8j + 7, a nibble each
/// from the low one up), then the scales [ffn / 32][dim] (the d and m of row
/// r's block of 32 neurons, d in the low half, f16). None unless every block
/// of 32 is exactly 4-bit.
pub fn neuron_weights(w_down: &[f32], dim: usize, ffn: usize) -> Option<Vec<u32>> {
    if !dim.is_multiple_of(INTERLEAVE_ROWS) || !ffn.is_multiple_of(BLOCK) || w_down.len() != dim * ffn {
        return None;
    }
    let scales = ffn * dim / 8;
    let mut out = vec![0u32; scales + ffn / BLOCK * dim];
    for r in 0..dim {
        for b in 0..ffn / BLOCK {
            let (d, m, q) = q4_block(&w_down[r * ffn + b * BLOCK..][..BLOCK])?;
            out[scales + b * dim + r] = d.to_bits() as u32 | (m.to_bits() as u32) << 16;
            for e in 0..BLOCK {
                let nibble = (q[e / 8] >> (4 * (e % 8))) & 15;
                out[(b * BLOCK + e) * (dim / 8) + r / 8] |= nibble << (4 * (r % 8));
            }
        }
    }
    Some(out)
}

/// Workgroups for `ffn` neurons on `threads` threads: one per thread, and no
/// more than there are 64-neuron blocks; with the blocks each takes.
pub fn workgroups(ffn: usize, threads: usize) -> (usize, usize) {
    let blocks = ffn / INTERLEAVE_ROWS;
    let per = blocks.div_ceil(threads.clamp(1, blocks.max(1)));
    (blocks.div_ceil(per.max(1)), per)
}

/// What one layer's dispatch reads and writes.
pub struct CatsMlpSpec<'a> {
    pub layer: usize,
    pub dim: usize,
    pub ffn: usize,
    pub eps: f32,
    pub threads: usize,
    /// The residual stream, [dim]: read, and the MLP added.
    pub x: &'a wgpu::Buffer,
    pub norm_weight: &'a wgpu::Buffer,
    /// The model's [gate; up], packed in 4 bits.
    pub gate_up: &'a Matrix,
    /// This layer's [`neuron_weights`].
    pub neurons: &'a wgpu::Buffer,
    /// Scratch: [workgroups, dim] f32, and [1 + workgroups] u32 zeroed.
    pub partial: &'a wgpu::Buffer,
    pub arrivals: &'a wgpu::Buffer,
    /// [layers, ffn] the rule's weights, [layers] its thresholds.
    pub rule_weights: &'a wgpu::Buffer,
    pub thresholds: &'a wgpu::Buffer,
    /// Written: [layers, ffn] 1 where kept, and [layers] the kept counts.
    pub bitmap: &'a wgpu::Buffer,
    pub counts: &'a wgpu::Buffer,
}

/// One layer's gate-rule MLP, bound to its buffers.
pub struct CatsMlpCall {
    call: Call,
    /// [gate; up] and the per-neuron W_down (what a token keeping every neuron reads), for the roofline.
    weight_bytes: u64,
}

impl CatsMlpCall {
    pub fn plan<'a>(&'a self, label: &'static str, out: &mut Vec<Dispatch<'a>>) {
        let c = &self.call;
        out.push(Dispatch { label, kernel: &c.kernel, group: &c.group, grid: (c.grid)(1), weight_bytes: self.weight_bytes });
    }
}

pub fn call(ctx: &GpuContext, s: &CatsMlpSpec) -> CatsMlpCall {
    use Binding::{ReadOnly as R, ReadWrite as W, Uniform as U};
    let gate_up = s.gate_up.q4().expect("a 4-bit [gate; up]");
    assert!(s.gate_up.rows == 2 * s.ffn && s.gate_up.cols == s.dim && s.dim.is_multiple_of(INTERLEAVE_ROWS) && s.dim <= MAX_DIM && s.ffn.is_multiple_of(INTERLEAVE_ROWS));
    let source = super::fused_mlp::source(include_str!("../../../shaders/cats_mlp.wgsl"));
    let kernel = Kernel::get(ctx, "cats_mlp", &source, &[U, W, R, R, R, W, W, R, R, W, W]);
    let (workgroups, per) = workgroups(s.ffn, s.threads);
    assert!(s.partial.size() >= (workgroups * s.dim * 4) as u64 && s.arrivals.size() >= (4 * (1 + workgroups)) as u64, "scratch for {workgroups} workgroups");
    // The gate_up binding is vec4s: a unit of quants is one, and the scales follow them.
    let gate_units = units(2 * s.ffn, s.dim);
    let params: [u32; 8] = [s.dim as u32, s.ffn as u32, workgroups as u32, s.eps.to_bits(), s.layer as u32, gate_units as u32, per as u32, 0];
    let params = uniform_buffer(ctx, "cats mlp params", &params);
    let call = Call {
        group: kernel.bind(ctx, &[&params, s.x, s.norm_weight, gate_up, s.neurons, s.partial, s.arrivals, s.rule_weights, s.thresholds, s.bitmap, s.counts]),
        kernel,
        grid: Box::new(move |_| [workgroups as u32, 1, 1]),
    };
    CatsMlpCall { call, weight_bytes: gate_up.size() + s.neurons.size() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{read_buffer_f32, read_buffer_u32, storage_buffer, zeroed_buffer};
    use crate::kernels::sparse::mlp_reference;
    use crate::kernels::{rmsnorm, run_plan, swiglu::silu, test_util::*};

    #[test]
    fn workgroups_cover_the_blocks() {
        assert_eq!(workgroups(1536, 2), (2, 12));
        assert_eq!(workgroups(320, 3), (3, 2));
        assert_eq!(workgroups(320, 16), (5, 1));
        assert_eq!(workgroups(64, 1), (1, 1));
    }

    /// The layout holds W_down exactly: every column unpacked from it equals the matrix's.
    #[test]
    fn neuron_weights_hold_every_column() {
        let (dim, ffn) = (128usize, 96usize);
        let down = q4_1_weights(dim * ffn, 161);
        let words = neuron_weights(&down, dim, ffn).expect("Q4_1 weights");
        let dm = |w: u32| (half::f16::from_bits(w as u16).to_f32(), half::f16::from_bits((w >> 16) as u16).to_f32());
        for n in 0..ffn {
            for r in 0..dim {
                let (d, m) = dm(words[ffn * dim / 8 + n / BLOCK * dim + r]);
                let q = (words[n * (dim / 8) + r / 8] >> (4 * (r % 8))) & 15;
                assert_eq!(d * q as f32 + m, down[r * ffn + n], "W_down row {r}, neuron {n}");
            }
        }
        assert!(neuron_weights(&random(ffn * dim, 162), dim, ffn).is_none(), "f32 weights are not 4-bit");
    }

    /// The dispatch gives x + the MLP of the neurons the rule keeps on
    /// RMSNorm(x), and marks them: 5 blocks of 64 neurons over 1 to 5
    /// workgroups, the rule keeping about half, all and none; run twice, so
    /// the arrival counter must have been reset.
    #[test]
    fn gate_rule_mlp_gives_the_residual_plus_the_kept_neurons_mlp() {
        let ctx = crate::testing::gpu();
        if !runs_on(&ctx, KernelFamily::RowPerInvocation, 128, 320) {
            eprintln!("skipped: the gate-rule MLP needs a CPU adapter with 8-wide subgroups");
            return;
        }
        let (dim, ffn, eps, layers, layer) = (128usize, 320usize, 1e-5f32, 2usize, 1usize);
        let (gate, up, down) = (q4_1_weights(ffn * dim, 163), q4_1_weights(ffn * dim, 164), q4_1_weights(dim * ffn, 165));
        let (x, norm_weight) = (random(dim, 166).iter().map(|v| 3.0 * v).collect::<Vec<f32>>(), random(dim, 167));
        let rule_weights: Vec<f32> = random(layers * ffn, 168).iter().map(|v| v.abs() + 0.5).collect();
        let gate_up = Matrix::upload(&ctx, "gate_up", &[gate.as_slice(), &up].concat(), 2 * ffn, dim, true);
        let neurons = storage_buffer(&ctx, "neurons", &neuron_weights(&down, dim, ffn).unwrap());
        let (nwb, rwb) = (storage_buffer(&ctx, "norm weight", &norm_weight), storage_buffer(&ctx, "rule weights", &rule_weights));
        let (partial, arrivals) = (zeroed_buffer(&ctx, "partial", (16 * dim * 4) as u64), zeroed_buffer(&ctx, "arrivals", 17 * 4));
        let (bitmap, counts) = (zeroed_buffer(&ctx, "bitmap", (layers * ffn * 4) as u64), zeroed_buffer(&ctx, "counts", (layers * 4) as u64));
        // The rule on the reference's own gates.
        let kept = |x: &[f32], t: f32| -> Vec<u32> {
            let xn = rmsnorm::reference(x, &norm_weight, eps);
            (0..ffn as u32)
                .filter(|&i| {
                    let g: f32 = gate[i as usize * dim..][..dim].iter().zip(&xn).map(|(a, b)| a * b).sum();
                    silu(g).abs() * rule_weights[layer * ffn + i as usize] >= t
                })
                .collect()
        };
        for (t, what) in [(0.35f32, "half"), (0.0, "all"), (1e9, "none")] {
            for threads in [1, 2, 3, 5] {
                let xb = storage_buffer(&ctx, "x", &x);
                let tb = storage_buffer(&ctx, "thresholds", &[0.0f32, t]);
                let spec = CatsMlpSpec { layer, dim, ffn, eps, threads, x: &xb, norm_weight: &nwb, gate_up: &gate_up, neurons: &neurons, partial: &partial, arrivals: &arrivals, rule_weights: &rwb, thresholds: &tb, bitmap: &bitmap, counts: &counts };
                let c = call(&ctx, &spec);
                let mut plan = Vec::new();
                c.plan("cats_mlp", &mut plan);
                for run in 1..=2 {
                    // Each run is checked from the x it started with.
                    let mut want = read_buffer_f32(&ctx, &xb, 0, dim).unwrap();
                    run_plan(&ctx, &plan);
                    let active = kept(&want, t);
                    match what {
                        "half" => assert!(active.len() > ffn / 4 && active.len() < 3 * ffn / 4, "{} kept", active.len()),
                        "all" => assert_eq!(active.len(), ffn),
                        _ => assert!(active.is_empty()),
                    }
                    let mlp = mlp_reference(&rmsnorm::reference(&want, &norm_weight, eps), &gate, &up, &down, ffn, &active);
                    want.iter_mut().zip(&mlp).for_each(|(a, m)| *a += m);
                    let bits = read_buffer_u32(&ctx, &bitmap, layer * ffn, ffn).unwrap();
                    let marked: Vec<u32> = (0..ffn as u32).filter(|&i| bits[i as usize] == 1).collect();
                    assert_eq!(marked, active, "{what}, {threads} threads, run {run}: the bitmap");
                    let err = max_err(&read_buffer_f32(&ctx, &xb, 0, dim).unwrap(), &want);
                    // Sums of up to 320 terms of size ~10 in another order: a
                    // few 1e-6 relative; a neuron lost or a slice added twice is O(1).
                    assert!(err < 5e-5, "{what}, {threads} threads, run {run}: {err}");
                    assert_eq!(read_buffer_u32(&ctx, &counts, layer, 1).unwrap()[0] as usize, active.len());
                }
            }
        }
    }
}
