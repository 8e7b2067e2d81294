//! Causal attention backward, in three kernels (no float atomics in WGSL):
//! `attention_backward_scores.wgsl` recomputes the softmax rows P and forms dS,
//! then `attention_backward_dq.wgsl` and `attention_backward_dkv.wgsl` reduce
//! them along keys and along queries. The queries are the step's n rows at
//! positions pos0.. and the keys the first pos0 + n rows of the KV cache; the
//! cached keys before pos0 are constants (a full pass has pos0 = 0).

use crate::gpu::{Binding, GpuContext, Kernel};
use crate::kernels::attention::AttentionShape;
use crate::kernels::{Call, Dispatch, Grid};

/// Buffers of one layer's attention backward.
pub struct AttentionBuffers<'a> {
    /// Saved forward inputs: q [T, heads*hd] after RoPE, K and V caches.
    pub q: &'a wgpu::Buffer,
    pub k: &'a wgpu::Buffer,
    pub v: &'a wgpu::Buffer,
    /// Gradient of the head outputs [T, heads*hd].
    pub da: &'a wgpu::Buffer,
    /// Scratch [heads, T, T] each.
    pub probs: &'a wgpu::Buffer,
    pub dscores: &'a wgpu::Buffer,
    /// Gradients out: dq [T, heads*hd], dk and dv [T, kv_heads*hd] (before RoPE's inverse).
    pub dq: &'a wgpu::Buffer,
    pub dk: &'a wgpu::Buffer,
    pub dv: &'a wgpu::Buffer,
}

pub struct AttentionBackward {
    scores: Call,
    dq: Call,
    dkv: Call,
}

impl AttentionBackward {
    pub fn plan<'a>(&'a self, n_tokens: u32, out: &mut Vec<Dispatch<'a>>) {
        // Three roles, so a profile says which of the three steps costs.
        self.scores.plan("attention_backward", n_tokens, out);
        self.dq.plan("attention_backward_dq", n_tokens, out);
        self.dkv.plan("attention_backward_dkv", n_tokens, out);
    }
}

/// How the scores kernel reads keys and values: every invocation all of
/// each, or an eighth each, shared through subgroup broadcasts.
pub(crate) const SCORES_KEYS: &str = include_str!("../../../../shaders/attention_backward_keys.wgsl");
pub(crate) const SCORES_KEYS_SUBGROUP: &str = include_str!("../../../../shaders/attention_backward_keys_subgroup.wgsl");

pub fn call(ctx: &GpuContext, s: AttentionShape, step: &wgpu::Buffer, b: &AttentionBuffers) -> AttentionBackward {
    assert!(s.head_dim.is_multiple_of(4) && s.n_heads.is_multiple_of(s.n_kv_heads));
    use crate::kernels::attention::{params_buffer, with_params};
    let params = params_buffer(ctx, s);
    use Binding::{ReadOnly as R, ReadWrite as W, Uniform as U};
    // Workgroups of 8 rows sharing each key's loads through a subgroup
    // where that is one (lavapipe), of 64 rows loading their own elsewhere.
    let (keys, keys_name, wg) = if ctx.has_subgroups_of_8() { (SCORES_KEYS_SUBGROUP, "_subgroup", 8u32) } else { (SCORES_KEYS, "", 64) };
    let scores = Kernel::specialized(
        ctx,
        &format!("attention_backward_scores{keys_name}"),
        &with_params(&format!("{}\n{keys}", include_str!("../../../../shaders/attention_backward_scores.wgsl"))),
        &[U, U, R, R, R, R, W, W],
        &[("HEAD_DIM4", (s.head_dim / 4) as f64), ("WG", wg as f64)],
    );
    let (heads, kv_heads, hd4) = (s.n_heads as u32, s.n_kv_heads as u32, (s.head_dim / 4) as u32);
    // dQ and dK/dV: a row of the head dimension per invocation, sharing loads
    // through subgroups, where a workgroup of 8 is one (lavapipe); elsewhere
    // a vec4 of one row per invocation.
    let rows = ctx.has_subgroups_of_8();
    let hd4_constant = [("HEAD_DIM4", hd4 as f64)];
    let (dq, dkv, dq_grid, dkv_grid): (_, _, Grid, Grid) = if rows {
        (
            Kernel::specialized(ctx, "attention_backward_dq_rows", &with_params(include_str!("../../../../shaders/attention_backward_dq_rows.wgsl")), &[U, U, R, R, W], &hd4_constant),
            Kernel::specialized(ctx, "attention_backward_dkv_rows", &with_params(include_str!("../../../../shaders/attention_backward_dkv_rows.wgsl")), &[U, U, R, R, R, R, W, W], &hd4_constant),
            Box::new(move |n| [n.div_ceil(8), heads, 1]),
            Box::new(move |n| [n.div_ceil(8), kv_heads, 1]),
        )
    } else {
        (
            Kernel::get(ctx, "attention_backward_dq", &with_params(include_str!("../../../../shaders/attention_backward_dq.wgsl")), &[U, U, R, R, W]),
            Kernel::get(ctx, "attention_backward_dkv", &with_params(include_str!("../../../../shaders/attention_backward_dkv.wgsl")), &[U, U, R, R, R, R, W, W]),
            Box::new(move |n| [(heads * hd4).div_ceil(64), n, 1]),
            Box::new(move |n| [(kv_heads * hd4).div_ceil(64), n, 1]),
        )
    };
    AttentionBackward {
        scores: Call {
            group: scores.bind(ctx, &[&params, step, b.q, b.k, b.v, b.da, b.probs, b.dscores]),
            kernel: scores,
            grid: Box::new(move |n| [n.div_ceil(wg), heads, 1]),
        },
        dq: Call {
            group: dq.bind(ctx, &[&params, step, b.dscores, b.k, b.dq]),
            kernel: dq,
            grid: dq_grid,
        },
        dkv: Call {
            group: dkv.bind(ctx, &[&params, step, b.probs, b.dscores, b.q, b.da, b.dk, b.dv]),
            kernel: dkv,
            grid: dkv_grid,
        },
    }
}

/// (dq, dk, dv) of causal attention from position 0 for head-output gradient `da`.
pub fn reference(s: AttentionShape, q: &[f32], k: &[f32], v: &[f32], da: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let hd = s.head_dim;
    let (qs, kvs) = (s.n_heads * hd, s.n_kv_heads * hd);
    let n = q.len() / qs;
    let group = s.n_heads / s.n_kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    let (mut dq, mut dk, mut dv) = (vec![0.0f32; q.len()], vec![0.0f32; n * kvs], vec![0.0f32; n * kvs]);
    for i in 0..n {
        for h in 0..s.n_heads {
            let kvh = h / group;
            let (qi, dai) = (&q[i * qs + h * hd..][..hd], &da[i * qs + h * hd..][..hd]);
            let scores: Vec<f32> = (0..=i).map(|j| dot(qi, &k[j * kvs + kvh * hd..][..hd]) * scale).collect();
            let m = scores.iter().cloned().fold(f32::MIN, f32::max);
            let e: Vec<f32> = scores.iter().map(|x| (x - m).exp()).collect();
            let sum: f32 = e.iter().sum();
            let p: Vec<f32> = e.iter().map(|x| x / sum).collect();
            let dp: Vec<f32> = (0..=i).map(|j| dot(dai, &v[j * kvs + kvh * hd..][..hd])).collect();
            let delta: f32 = p.iter().zip(&dp).map(|(a, b)| a * b).sum();
            for j in 0..=i {
                let ds = scale * p[j] * (dp[j] - delta);
                for d in 0..hd {
                    dq[i * qs + h * hd + d] += ds * k[j * kvs + kvh * hd + d];
                    dk[j * kvs + kvh * hd + d] += ds * qi[d];
                    dv[j * kvs + kvh * hd + d] += p[j] * dai[d];
                }
            }
        }
    }
    (dq, dk, dv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{read_buffer_f32, storage_buffer, uniform_buffer, zeroed_buffer};
    use crate::kernels::backward::finite_diff;
    use crate::kernels::{attention, test_util::*, Step};

    /// Every row from position 0, and the last rows after cached ones
    /// (`pos0` > 0): their gradients equal the full backward's for those rows,
    /// since earlier rows never see later ones.
    /// On CPU adapters both ways of reading keys (subgroup broadcasts, and
    /// each invocation's own loads); ragged rows (13, 21, 70 and 40 are not
    /// multiples of 8) and head_dim 80 (20 vec4s, not a multiple of 8).
    #[test]
    fn attention_backward_matches_reference() {
        for ctx in [crate::testing::gpu(), crate::testing::gpu_without_subgroups()] {
            attention_backward_matches_reference_on(&ctx);
        }
    }

    fn attention_backward_matches_reference_on(ctx: &std::sync::Arc<GpuContext>) {
        let ctx = ctx.clone();
        let shapes = [
            (AttentionShape { n_heads: 6, n_kv_heads: 2, head_dim: 80 }, 13usize, 0usize),
            (AttentionShape { n_heads: 9, n_kv_heads: 3, head_dim: 64 }, 70, 0),
            (AttentionShape { n_heads: 9, n_kv_heads: 3, head_dim: 64 }, 40, 39),
            (AttentionShape { n_heads: 6, n_kv_heads: 2, head_dim: 80 }, 21, 17),
        ];
        for (s, t, pos0) in shapes {
            let (qs, kvs) = (s.n_heads * s.head_dim, s.n_kv_heads * s.head_dim);
            let n = t - pos0;
            let q: Vec<f32> = random(t * qs, 61).iter().map(|v| v * 3.0).collect();
            let (k, v, da) = (random(t * kvs, 62), random(t * kvs, 63), random(t * qs, 64));
            let step = uniform_buffer(&ctx, "step", &Step::new(n, pos0));
            let [qb, dab] = [&q, &da].map(|x| storage_buffer(&ctx, "in", &x[pos0 * qs..]));
            let [kb, vb] = [&k, &v].map(|x| storage_buffer(&ctx, "in", x));
            let f = |n: usize| zeroed_buffer(&ctx, "out", (n * 4) as u64);
            let (probs, dscores, dq, dk, dv) = (f(s.n_heads * n * t), f(s.n_heads * n * t), f(n * qs), f(n * kvs), f(n * kvs));
            let bufs = AttentionBuffers { q: &qb, k: &kb, v: &vb, da: &dab, probs: &probs, dscores: &dscores, dq: &dq, dk: &dk, dv: &dv };
            let call = call(&ctx, s, &step, &bufs);
            let mut plan = Vec::new();
            call.plan(n as u32, &mut plan);
            crate::kernels::run_plan(&ctx, &plan);
            let (wq, wk, wv) = reference(s, &q, &k, &v, &da);
            // Sums of T products after a softmax: 1e-5 relative to the magnitude.
            for (name, buf, want) in [("dq", &dq, &wq[pos0 * qs..]), ("dk", &dk, &wk[pos0 * kvs..]), ("dv", &dv, &wv[pos0 * kvs..])] {
                let got = read_buffer_f32(&ctx, buf, 0, want.len()).unwrap();
                let err = max_err(&got, want);
                assert!(err < 1e-5, "{name} t={t} pos0={pos0}: {err}");
            }
        }
    }

    #[test]
    fn attention_backward_reference_matches_finite_differences() {
        let s = AttentionShape { n_heads: 4, n_kv_heads: 2, head_dim: 8 };
        let t = 5;
        let (qs, kvs) = (s.n_heads * s.head_dim, s.n_kv_heads * s.head_dim);
        let q: Vec<f32> = random(t * qs, 65).iter().map(|v| v * 2.0).collect();
        let (k, v, da) = (random(t * kvs, 66), random(t * kvs, 67), random(t * qs, 68));
        let (dq, dk, dv) = reference(s, &q, &k, &v, &da);
        let fwd = |q: &[f32], k: &[f32], v: &[f32]| attention::reference(s, q, k, v, 0);
        assert!(finite_diff::check(|x| fwd(x, &k, &v), &q, &da, &dq, 1e-3) < 1e-3, "dq");
        assert!(finite_diff::check(|x| fwd(&q, x, &v), &k, &da, &dk, 1e-3) < 1e-3, "dk");
        assert!(finite_diff::check(|x| fwd(&q, &k, x), &v, &da, &dv, 1e-3) < 1e-3, "dv");
    }
}
