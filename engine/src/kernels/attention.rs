//! Causal grouped-query attention over the KV cache: on GPUs `attention.wgsl`
//! (one workgroup per query head and token, online softmax over key tiles);
//! on CPU adapters, `attention_rows.wgsl` for prefill (one invocation per head
//! and token, no barriers; `attention_rows_group.wgsl`, every head of a KV
//! group in one invocation, where subgroups of 8 share the loads) and
//! `attention_keys.wgsl` for decode (8 invocations per head and token
//! sharing its keys).

use super::{Call, Dispatch, Grid};
use crate::kernels::linear::MATVEC_MAX_TOKENS;
use crate::kernels::KernelFamily;
use crate::gpu::{storage_buffer, uniform_buffer, Binding, GpuContext, Kernel};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n_heads: u32,
    n_kv_heads: u32,
    head_dim: u32,
    scale: f32,
}

pub const MAX_HEAD_DIM: usize = 256;

/// The shape, softmax scale and step every attention kernel reads, forward
/// and backward ([`params_buffer`] fills them).
const ATTENTION_PARAMS: &str = include_str!("../../../shaders/attention_params.wgsl");

/// How `attention_rows.wgsl` reads each key and value: every invocation
/// all of it, or an eighth each, shared through subgroup broadcasts.
pub(crate) const ROWS_KEYS: &str = include_str!("../../../shaders/attention_rows_keys.wgsl");
pub(crate) const ROWS_KEYS_SUBGROUP: &str = include_str!("../../../shaders/attention_rows_keys_subgroup.wgsl");

/// The bindings the three forward kernels share.
const ATTENTION_COMMON: &str = include_str!("../../../shaders/attention_common.wgsl");

/// An attention kernel's source (a backward one) after the shared parameters.
pub(crate) fn with_params(body: &str) -> String {
    format!("{ATTENTION_PARAMS}\n{body}")
}

/// A forward kernel's source with the shared parameters and bindings.
pub(crate) fn source(body: &str) -> String {
    with_params(&format!("{ATTENTION_COMMON}\n{body}"))
}

#[derive(Clone, Copy, Debug)]
pub struct AttentionShape {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

/// lavapipe ends an invocation after this many loop iterations, all loops
/// together (gallivm's loop limiter); kernels must stay below it.
pub const MAX_LOOP_ITERATIONS: usize = 65535;

/// Keys `attention_rows.wgsl` can visit within the loop budget, with margin
/// for the loops outside the key loop.
pub fn rows_max_keys(head_dim: usize) -> usize {
    (MAX_LOOP_ITERATIONS - 2 * head_dim) / (1 + head_dim / 4)
}

/// Keys `attention_keys.wgsl` can visit: each invocation walks an eighth of them.
pub fn keys_max_keys(head_dim: usize) -> usize {
    8 * rows_max_keys(head_dim)
}

/// Each head's slice of `attention_rows_group.wgsl`'s arrays: head_dim / 4
/// vec4s rounded up to the 8 a subgroup loads at once.
fn group_stride4(head_dim: usize) -> usize {
    (head_dim / 4).div_ceil(8) * 8
}

/// Keys `attention_rows_group.wgsl` can visit within the loop budget: per
/// key, its loop and, unless the driver unrolls them, the key and value
/// loops (an iteration per 8 vec4s, and one per head inside each) and the
/// softmax's loop over the heads; margin for the loops outside.
pub fn group_max_keys(head_dim: usize, group: usize) -> usize {
    let chunks = group_stride4(head_dim) / 8;
    (MAX_LOOP_ITERATIONS - 4 * group * head_dim) / (1 + 2 * chunks * (1 + group) + group)
}

/// The query heads per KV head, where `attention_rows_group.wgsl` runs:
/// subgroups of 8, the heads in order with each KV head's group together
/// (not a compacted list), and the group's arrays within 64 vec4s.
fn grouped_heads(ctx: &GpuContext, s: AttentionShape, kv_head: &[u32]) -> Option<usize> {
    let group = kv_head.len() / s.n_kv_heads;
    let in_order = group > 0 && kv_head.len() == group * s.n_kv_heads && kv_head.iter().enumerate().all(|(i, &h)| h as usize == i / group);
    (ctx.has_subgroups_of_8() && in_order && group <= 8 && group * group_stride4(s.head_dim) <= 64).then_some(group)
}

/// One CPU-adapter kernel and the most keys its loop budget allows.
struct Bounded {
    call: Call,
    max_keys: usize,
}

/// Attention bound to its buffers; on CPU adapters it takes their kernels
/// while the key count fits their loop budget.
pub struct AttentionCall {
    cooperative: Call,
    /// CPU adapters: prefill (`attention_rows.wgsl`) and decode (`attention_keys.wgsl`).
    cpu: Option<(Bounded, Bounded)>,
}

impl AttentionCall {
    /// Dispatch for `n_tokens` queries after `pos0` cached positions.
    pub fn plan<'a>(&'a self, label: &'static str, n_tokens: u32, pos0: usize, out: &mut Vec<Dispatch<'a>>) {
        if let Some((prefill, decode)) = &self.cpu {
            let kernel = if n_tokens <= MATVEC_MAX_TOKENS { decode } else { prefill };
            if pos0 + n_tokens as usize <= kernel.max_keys {
                return kernel.call.plan(label, n_tokens, out);
            }
        }
        self.cooperative.plan(label, n_tokens, out)
    }
}

/// The shape and softmax scale every attention kernel reads (forward and backward).
pub(crate) fn params_buffer(ctx: &GpuContext, s: AttentionShape) -> wgpu::Buffer {
    let params = Params {
        n_heads: s.n_heads as u32,
        n_kv_heads: s.n_kv_heads as u32,
        head_dim: s.head_dim as u32,
        scale: 1.0 / (s.head_dim as f32).sqrt(),
    };
    uniform_buffer(ctx, "attention params", &params)
}

/// Attention's buffers: queries [n_tokens, heads * hd], the KV caches and the head outputs.
#[derive(Clone, Copy)]
pub struct AttentionIo<'a> {
    pub q: &'a wgpu::Buffer,
    pub k: &'a wgpu::Buffer,
    pub v: &'a wgpu::Buffer,
    pub out: &'a wgpu::Buffer,
}

/// Attention over every head, each group of n_heads / n_kv_heads sharing a KV head.
pub fn call(ctx: &GpuContext, s: AttentionShape, step: &wgpu::Buffer, io: &AttentionIo, kind: KernelFamily) -> AttentionCall {
    assert!(s.n_heads.is_multiple_of(s.n_kv_heads));
    let group = s.n_heads / s.n_kv_heads;
    let kv_head: Vec<u32> = (0..s.n_heads).map(|h| (h / group) as u32).collect();
    call_heads(ctx, s, &kv_head, step, io, kind)
}

/// Attention over a list of query heads: `q` and `out` hold `kv_head.len()`
/// heads (`s.n_heads` is ignored), head i reading KV head `kv_head[i]`. This
/// runs a compacted head mask: only the active heads' queries exist.
pub fn call_heads(ctx: &GpuContext, s: AttentionShape, kv_head: &[u32], step: &wgpu::Buffer, io: &AttentionIo, kind: KernelFamily) -> AttentionCall {
    assert!(s.head_dim <= MAX_HEAD_DIM && kv_head.iter().all(|&h| (h as usize) < s.n_kv_heads));
    let s = AttentionShape { n_heads: kv_head.len(), ..s };
    let layout = [Binding::Uniform, Binding::Uniform, Binding::ReadOnly, Binding::ReadOnly, Binding::ReadOnly, Binding::ReadWrite, Binding::ReadOnly];
    let params = params_buffer(ctx, s);
    let group = grouped_heads(ctx, s, kv_head);
    let kv_head = storage_buffer(ctx, "attention kv heads", kv_head);
    let heads = s.n_heads as u32;
    let buffers = [&params, step, io.q, io.k, io.v, io.out, &kv_head];
    let cpu = kind.is_cpu_style(ctx).then(|| {
        let hd4 = [("HEAD_DIM4", (s.head_dim / 4) as f64)];
        let decode = Kernel::specialized(ctx, "attention_keys", &source(include_str!("../../../shaders/attention_keys.wgsl")), &layout, &hd4);
        let (prefill, max_keys) = match group {
            // Every head of a KV group in one invocation, sharing its keys and values.
            Some(g) => {
                let kv_heads = s.n_kv_heads as u32;
                let constants = [("HEAD_DIM4", (s.head_dim / 4) as f64), ("GROUP", g as f64), ("STRIDE4", group_stride4(s.head_dim) as f64)];
                let kernel = Kernel::specialized(ctx, "attention_rows_group", &source(include_str!("../../../shaders/attention_rows_group.wgsl")), &layout, &constants);
                let grid: Grid = Box::new(move |n| [n.div_ceil(8), kv_heads, 1]);
                (Call { group: kernel.bind(ctx, &buffers), kernel, grid }, group_max_keys(s.head_dim, g))
            }
            None => {
                let (keys, keys_name) = if ctx.has_subgroups_of_8() { (ROWS_KEYS_SUBGROUP, "_subgroup") } else { (ROWS_KEYS, "") };
                let rows_src = source(&format!("{}\n{keys}", include_str!("../../../shaders/attention_rows.wgsl")));
                let kernel = Kernel::specialized(ctx, &format!("attention_rows{keys_name}"), &rows_src, &layout, &hd4);
                let grid: Grid = Box::new(move |n| [n.div_ceil(8), heads, 1]);
                (Call { group: kernel.bind(ctx, &buffers), kernel, grid }, rows_max_keys(s.head_dim))
            }
        };
        let decode = Call {
            group: decode.bind(ctx, &buffers),
            kernel: decode,
            grid: Box::new(move |n| [heads, n, 1]),
        };
        (Bounded { call: prefill, max_keys }, Bounded { call: decode, max_keys: keys_max_keys(s.head_dim) })
    });
    let kernel = Kernel::get(ctx, "attention", &source(include_str!("../../../shaders/attention.wgsl")), &layout);
    AttentionCall {
        cooperative: Call {
            group: kernel.bind(ctx, &buffers),
            kernel,
            grid: Box::new(move |n| [heads, n, 1]),
        },
        cpu,
    }
}

/// Plain causal attention: q [n_tokens, heads*hd], caches [>= pos0+n_tokens, kv_heads*hd].
pub fn reference(s: AttentionShape, q: &[f32], k: &[f32], v: &[f32], pos0: usize) -> Vec<f32> {
    let hd = s.head_dim;
    let kv_stride = s.n_kv_heads * hd;
    let n_tokens = q.len() / (s.n_heads * hd);
    let group = s.n_heads / s.n_kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut out = vec![0.0f32; q.len()];
    for t in 0..n_tokens {
        let n_keys = pos0 + t + 1;
        for h in 0..s.n_heads {
            let kvh = h / group;
            let qr = &q[(t * s.n_heads + h) * hd..][..hd];
            let scores: Vec<f32> = (0..n_keys)
                .map(|j| qr.iter().zip(&k[j * kv_stride + kvh * hd..][..hd]).map(|(a, b)| a * b).sum::<f32>() * scale)
                .collect();
            let m = scores.iter().cloned().fold(f32::MIN, f32::max);
            let e: Vec<f32> = scores.iter().map(|s| (s - m).exp()).collect();
            let sum: f32 = e.iter().sum();
            let o = &mut out[(t * s.n_heads + h) * hd..][..hd];
            for (j, ej) in e.iter().enumerate() {
                let vr = &v[j * kv_stride + kvh * hd..][..hd];
                for d in 0..hd {
                    o[d] += ej / sum * vr[d];
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{read_buffer_f32, storage_buffer, zeroed_buffer};
    use crate::kernels::{test_util::*, Step};

    /// Both families, and on CPU adapters both ways of reading keys and
    /// values in prefill (subgroup broadcasts, or each invocation's own loads).
    #[test]
    fn attention_matches_reference_prefill_and_decode() {
        for ctx in [crate::testing::gpu(), crate::testing::gpu_without_subgroups()] {
            attention_matches_reference_on(&ctx);
        }
    }

    fn attention_matches_reference_on(ctx: &std::sync::Arc<GpuContext>) {
        let ctx = ctx.clone();
        // head_dim 80 (> 64, not a power of two) and 150 keys (several tiles, ragged).
        let odd = AttentionShape { n_heads: 6, n_kv_heads: 2, head_dim: 80 };
        let smollm = AttentionShape { n_heads: 9, n_kv_heads: 3, head_dim: 64 };
        // Grouped prefill (attention_rows_group.wgsl, on subgroups of 8): head_dim 40
        // (10 vec4s, not a multiple of 8) in groups of 2, one head per KV head, and
        // SmolLM2's groups of 3 near their loop budget.
        let pairs = AttentionShape { n_heads: 4, n_kv_heads: 2, head_dim: 40 };
        let mha = AttentionShape { n_heads: 4, n_kv_heads: 4, head_dim: 64 };
        let near = super::group_max_keys(64, 3) - 16;
        let cases = [(odd, 20usize, 0usize), (odd, 1, 149), (odd, 5, 70), (odd, 13, 3), (smollm, 128, 384), (smollm, 1, 511), (smollm, 3, 2100), (smollm, 2, 4000), (odd, 1, 2), (smollm, 4, 0), (smollm, 1, 20000), (pairs, 37, 5), (mha, 20, 0), (smollm, 13, near)];
        for (kind, &(s, t, pos0)) in [KernelFamily::Cooperative, KernelFamily::RowPerInvocation]
            .iter()
            .flat_map(|k| cases.iter().map(move |c| (*k, c)))
        {
            let q: Vec<f32> = random(t * s.n_heads * s.head_dim, 11).iter().map(|v| v * 3.0).collect();
            let k = random((pos0 + t) * s.n_kv_heads * s.head_dim, 12);
            let v = random((pos0 + t) * s.n_kv_heads * s.head_dim, 13);
            let step = uniform_buffer(&ctx, "step", &Step::new(t, pos0));
            let (qb, kb, vb) = (storage_buffer(&ctx, "q", &q), storage_buffer(&ctx, "k", &k), storage_buffer(&ctx, "v", &v));
            let out = zeroed_buffer(&ctx, "out", (q.len() * 4) as u64);
            let att = call(&ctx, s, &step, &AttentionIo { q: &qb, k: &kb, v: &vb, out: &out }, kind);
            let mut plan = Vec::new();
            att.plan("attention", t as u32, pos0, &mut plan);
            // The grouped kernel runs where it should (so this test covers it).
            let grouped = kind.is_cpu_style(&ctx) && ctx.has_subgroups_of_8() && t as u32 > MATVEC_MAX_TOKENS && (s.n_heads / s.n_kv_heads) * group_stride4(s.head_dim) <= 64 && pos0 + t <= group_max_keys(s.head_dim, s.n_heads / s.n_kv_heads);
            assert_eq!(plan[0].kernel.name == "attention_rows_group", grouped, "{kind:?} {s:?} t={t} pos0={pos0}: {}", plan[0].kernel.name);
            crate::kernels::run_plan(&ctx, &plan);
            let got = read_buffer_f32(&ctx, &out, 0, q.len()).unwrap();
            // Online vs two-pass softmax differ by rounding only: 1e-5.
            let err = max_err(&got, &reference(s, &q, &k, &v, pos0));
            assert!(err < 1e-5, "{kind:?} t={t} pos0={pos0}: {err}");
        }
    }

    /// A compacted head list: the listed heads' queries in list order give
    /// the full attention's outputs of those heads, on their own KV heads.
    #[test]
    fn attention_over_a_head_list_matches_those_heads_of_the_reference() {
        let ctx = crate::testing::gpu();
        let s = AttentionShape { n_heads: 9, n_kv_heads: 3, head_dim: 64 };
        let (list, hd) = ([7usize, 0, 4, 5], s.head_dim);
        let kv_head: Vec<u32> = list.iter().map(|&h| (h / 3) as u32).collect();
        for kind in [KernelFamily::Cooperative, KernelFamily::RowPerInvocation] {
            for (t, pos0) in [(1usize, 300usize), (3, 20), (2, 3)] {
                let q = random(t * s.n_heads * hd, 21);
                let (k, v) = (random((pos0 + t) * s.n_kv_heads * hd, 22), random((pos0 + t) * s.n_kv_heads * hd, 23));
                let pick = |full: &[f32]| -> Vec<f32> { (0..t).flat_map(|ti| list.iter().flat_map(move |&h| full[(ti * s.n_heads + h) * hd..][..hd].to_vec())).collect() };
                let step = uniform_buffer(&ctx, "step", &Step::new(t, pos0));
                let (qb, kb, vb) = (storage_buffer(&ctx, "q", &pick(&q)), storage_buffer(&ctx, "k", &k), storage_buffer(&ctx, "v", &v));
                let out = zeroed_buffer(&ctx, "out", (t * list.len() * hd * 4) as u64);
                let att = call_heads(&ctx, s, &kv_head, &step, &AttentionIo { q: &qb, k: &kb, v: &vb, out: &out }, kind);
                let mut plan = Vec::new();
                att.plan("attention", t as u32, pos0, &mut plan);
                crate::kernels::run_plan(&ctx, &plan);
                let got = read_buffer_f32(&ctx, &out, 0, t * list.len() * hd).unwrap();
                let err = max_err(&got, &pick(&reference(s, &q, &k, &v, pos0)));
                assert!(err < 1e-5, "{kind:?} t={t} pos0={pos0}: {err}");
            }
        }
    }
}
