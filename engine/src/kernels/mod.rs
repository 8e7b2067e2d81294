//! One launcher per WGSL kernel in `shaders/`: its parameter struct, its
//! bind-group layout (through [`Kernel::get`]), its grid, and a test against a
//! plain Rust reference on random inputs.
//!
//! Every kernel reads the per-forward [`Step`] uniform (how many tokens, at which
//! position), so bind groups are built once per model and a forward pass only
//! writes 16 bytes before recording its dispatches.

pub mod attention;
pub mod backward;
pub mod cats_mlp;
pub mod column_groups;
pub mod compact;
pub mod embedding;
pub mod fused_mlp;
pub mod input_zero;
pub mod linear;
pub mod packed;
pub mod peak_flops;
pub mod prepared_linear;
pub mod rmsnorm;
pub mod rope;
pub mod scale_units;
pub mod scores;
pub mod sparse;
pub mod stream_read;
pub mod swiglu;

use crate::gpu::{GpuContext, Kernel};
use std::sync::Arc;

/// Per-forward values shared by every kernel: token count and first position.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Step {
    pub n_tokens: u32,
    pub pos0: u32,
    pub _pad: [u32; 2],
}

impl Step {
    pub fn new(n_tokens: usize, pos0: usize) -> Self {
        Step {
            n_tokens: n_tokens as u32,
            pos0: pos0 as u32,
            _pad: [0; 2],
        }
    }
}

/// Which family of kernels runs the heavy operations (linear layers, attention).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelFamily {
    /// CPU-style on software adapters, cooperative on GPUs.
    Auto,
    /// Workgroups cooperate through shared memory and barriers: GPUs.
    Cooperative,
    /// Each invocation computes a register block on its own, no barriers: CPU
    /// adapters such as lavapipe, where a barrier is a costly context switch.
    RowPerInvocation,
}

impl KernelFamily {
    pub fn is_cpu_style(self, ctx: &GpuContext) -> bool {
        match self {
            // SIFT_KERNELS=gpu|cpu overrides the choice (comparisons, debugging).
            KernelFamily::Auto => match std::env::var("SIFT_KERNELS").as_deref() {
                Ok("gpu") => false,
                Ok("cpu") => true,
                _ => ctx.is_software(),
            },
            KernelFamily::Cooperative => false,
            KernelFamily::RowPerInvocation => true,
        }
    }
}

/// Workgroup grid as a function of the number of tokens in this forward.
pub type Grid = Box<dyn Fn(u32) -> [u32; 3] + Send + Sync>;

/// A kernel bound to its buffers, ready to record for any token count.
pub struct Call {
    pub kernel: Arc<Kernel>,
    pub group: wgpu::BindGroup,
    pub grid: Grid,
}

impl Call {
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>, n_tokens: u32) {
        self.kernel.dispatch(pass, &self.group, (self.grid)(n_tokens));
    }

    pub fn plan<'a>(&'a self, label: &'static str, n_tokens: u32, out: &mut Vec<Dispatch<'a>>) {
        out.push(Dispatch { label, kernel: &self.kernel, group: &self.group, grid: (self.grid)(n_tokens), weight_bytes: 0 });
    }
}

/// One recorded dispatch, labelled with its role in the model ("q", "attention"…),
/// so a forward can run in one pass or, for profiling, one timed pass each.
pub struct Dispatch<'a> {
    pub label: &'static str,
    pub kernel: &'a Kernel,
    pub group: &'a wgpu::BindGroup,
    pub grid: [u32; 3],
    /// Bytes of weight matrix it reads (linear layers; 0 for the rest), for
    /// the bench's roofline.
    pub weight_bytes: u64,
}

impl Dispatch<'_> {
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.kernel.dispatch(pass, self.group, self.grid);
    }
}

/// Times dispatches with timestamp queries, each in a compute pass of its
/// own, and sums the seconds by label: the per-kernel profiles of a forward
/// (`GpuModel::profile`) and of an attribution pass.
pub struct DispatchTimer {
    queries: wgpu::QuerySet,
    resolved: wgpu::Buffer,
    labels: Vec<&'static str>,
}

impl DispatchTimer {
    /// Room for `capacity` dispatches; None where the adapter has no
    /// timestamp queries.
    pub fn new(ctx: &GpuContext, capacity: usize) -> Option<DispatchTimer> {
        if !ctx.features.contains(wgpu::Features::TIMESTAMP_QUERY) {
            return None;
        }
        let count = 2 * capacity.max(1) as u32;
        let queries = ctx.device.create_query_set(&wgpu::QuerySetDescriptor { label: Some("profile"), ty: wgpu::QueryType::Timestamp, count });
        let resolved = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("timestamps"),
            size: 8 * count as u64,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        Some(DispatchTimer { queries, resolved, labels: Vec::with_capacity(capacity) })
    }

    /// Records `d` in its own timed pass.
    pub fn record(&mut self, enc: &mut wgpu::CommandEncoder, d: &Dispatch) {
        let i = self.labels.len() as u32;
        assert!(2 * i + 1 < self.queries.count(), "DispatchTimer: more dispatches than its capacity");
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(d.label),
            timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                query_set: &self.queries,
                beginning_of_pass_write_index: Some(2 * i),
                end_of_pass_write_index: Some(2 * i + 1),
            }),
        });
        d.record(&mut pass);
        self.labels.push(d.label);
    }

    /// Resolves the timestamps into `enc` (record this last), submits it and
    /// returns the seconds per label, in the order labels first ran.
    pub fn finish(self, ctx: &GpuContext, mut enc: wgpu::CommandEncoder) -> crate::Result<Vec<(&'static str, f64)>> {
        let n = self.labels.len();
        if n > 0 {
            enc.resolve_query_set(&self.queries, 0..2 * n as u32, &self.resolved, 0);
        }
        ctx.queue.submit([enc.finish()]);
        if n == 0 {
            return Ok(vec![]);
        }
        let raw = crate::gpu::read_buffer_u32(ctx, &self.resolved, 0, 4 * n)?;
        let period = ctx.queue.get_timestamp_period() as f64 * 1e-9;
        let ts = |j: usize| raw[2 * j] as u64 | (raw[2 * j + 1] as u64) << 32;
        let mut totals: Vec<(&'static str, f64)> = Vec::new();
        for (i, label) in self.labels.iter().enumerate() {
            let secs = ts(2 * i + 1).saturating_sub(ts(2 * i)) as f64 * period;
            match totals.iter_mut().find(|(l, _)| l == label) {
                Some(t) => t.1 += secs,
                None => totals.push((label, secs)),
            }
        }
        Ok(totals)
    }
}

/// Spreads `groups` workgroups over x and y so neither exceeds the 65535 limit.
pub fn spread(groups: u32) -> [u32; 2] {
    const MAX: u32 = 65535;
    if groups <= MAX {
        [groups, 1]
    } else {
        [MAX, groups.div_ceil(MAX)]
    }
}

/// Records planned dispatches in one compute pass and submits them.
pub fn run_plan(ctx: &GpuContext, plan: &[Dispatch]) {
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        plan.iter().for_each(|d| d.record(&mut pass));
    }
    ctx.queue.submit([enc.finish()]);
}

/// Records a list of calls in one compute pass and submits it.
pub fn run_calls(ctx: &GpuContext, calls: &[&Call], n_tokens: u32) {
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        for c in calls {
            c.record(&mut pass, n_tokens);
        }
    }
    ctx.queue.submit([enc.finish()]);
}

#[cfg(test)]
pub(crate) mod test_util {
    use rand::{Rng, SeedableRng};

    pub fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    /// Random weights through GGUF's Q4_1 and back: what a Q4_1 model loads.
    pub fn q4_1_weights(n: usize, seed: u64) -> Vec<f32> {
        use crate::loader::quant::{dequantize, quantize, GgmlType};
        dequantize(GgmlType::Q4_1, &quantize(GgmlType::Q4_1, &random(n, seed)), n)
    }

    /// The same through Q8_0.
    pub fn q8_0_weights(n: usize, seed: u64) -> Vec<f32> {
        use crate::loader::quant::{dequantize, quantize, GgmlType};
        dequantize(GgmlType::Q8_0, &quantize(GgmlType::Q8_0, &random(n, seed)), n)
    }

    /// Max |a - b| / (1 + |b|): absolute near zero, relative for large values.
    pub fn max_err(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
            .fold(0.0, f32::max)
    }
}

#[cfg(test)]
mod shader_validation {
    /// Every WGSL file in `shaders/` parses and validates with naga, so a broken
    /// shader fails here with a readable message rather than at pipeline creation:
    /// as written (GPUs), and with its uniforms as storage (CPU adapters,
    /// `gpu::pipeline`), since the tests run on one kind of adapter only.
    #[test]
    fn every_shader_validates_with_naga() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shaders");
        let mut count = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "wgsl") {
                continue;
            }
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if name.starts_with("linear_") || name.starts_with("q8_scales_") || name.starts_with("q4_high_") || name.starts_with("q5_high_") || name.starts_with("matmul_tokens") || name.starts_with("attention_rows_keys") || ["attention_common.wgsl", "attention_params.wgsl", "one_dispatch_mlp.wgsl"].contains(&name.as_str()) {
                continue; // preludes, validated with the kernels they open
            }
            let body = std::fs::read_to_string(&path).unwrap();
            // Linear kernels are validated with each output header, the
            // matvec kernels with each input header, and those that load
            // blocks of inputs with each block header (and the 4-bit ones
            // with the nibble functions), as kernels::linear composes them.
            let sources = if body.contains("store_y(") {
                use super::linear::{Input, Store, LINEAR_BLOCK, LINEAR_BLOCK_SUBGROUP, LINEAR_COMMON, LINEAR_NIBBLES, MATMUL_TOKENS, MATMUL_TOKENS_SUBGROUP, Q4_HIGH_NONE, Q5_HIGH_BITS, Q8_SCALES_F16, Q8_SCALES_F32};
                let reads_inputs = body.contains("load_x(") || body.contains("block_inputs(");
                // The matmuls with each tokens header, like the matvecs' block headers.
                let blocks = if body.contains("block_inputs(") {
                    vec![LINEAR_BLOCK, LINEAR_BLOCK_SUBGROUP]
                } else if body.contains("token_inputs(") {
                    vec![MATMUL_TOKENS, MATMUL_TOKENS_SUBGROUP]
                } else {
                    vec![""]
                };
                let nibbles = if body.contains("linear_nibbles.wgsl") { LINEAR_NIBBLES } else { "" };
                // The 8-bit matvec with each scale decoder, the 4-bit one with each high-bits decoder.
                let decoders = if body.contains("block_scales(") {
                    vec![Q8_SCALES_F16, Q8_SCALES_F32]
                } else if body.contains("high_dot(") {
                    vec![Q4_HIGH_NONE, Q5_HIGH_BITS]
                } else {
                    vec![""]
                };
                let mut sources = vec![];
                for store in Store::ALL {
                    let (header, _, layout) = store.header();
                    let inputs: Vec<String> = if reads_inputs { Input::ALL.iter().map(|i| i.header(&mut layout.clone()).0).collect() } else { vec![String::new()] };
                    for input in &inputs {
                        for block in &blocks {
                            for decoder in &decoders {
                                sources.push(format!("{LINEAR_COMMON}\n{header}\n{input}\n{block}\n{nibbles}\n{decoder}\n{body}"));
                            }
                        }
                    }
                }
                sources
            } else if body.contains("one_dispatch_mlp.wgsl") {
                vec![super::fused_mlp::source(&body)]
            } else if body.contains("linear_nibbles.wgsl") {
                vec![format!("{}\n{body}", super::linear::LINEAR_NIBBLES)]
            } else if name == "attention_rows.wgsl" {
                use super::attention::{ROWS_KEYS, ROWS_KEYS_SUBGROUP};
                [ROWS_KEYS, ROWS_KEYS_SUBGROUP].iter().map(|keys| super::attention::source(&format!("{body}\n{keys}"))).collect()
            } else if ["attention.wgsl", "attention_keys.wgsl", "attention_rows_group.wgsl"].contains(&name.as_str()) {
                vec![super::attention::source(&body)]
            } else if name == "attention_backward_scores.wgsl" {
                use super::backward::attention::{SCORES_KEYS, SCORES_KEYS_SUBGROUP};
                [SCORES_KEYS, SCORES_KEYS_SUBGROUP].iter().map(|keys| super::attention::with_params(&format!("{body}\n{keys}"))).collect()
            } else if name.starts_with("attention_backward_keys") {
                continue; // headers, validated with the scores kernel
            } else if name.starts_with("attention_backward_") {
                vec![super::attention::with_params(&body)]
            } else {
                vec![body]
            };
            let both_forms: Vec<String> = sources.iter().flat_map(|s| [s.clone(), crate::gpu::params_in_storage(s)]).collect();
            for src in both_forms {
                let module = naga::front::wgsl::parse_str(&src).unwrap_or_else(|e| panic!("{}: {}", path.display(), e.emit_to_string(&src)));
                naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
                    .validate(&module)
                    .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
                assert!(src.contains("fn main"), "{}: kernels use the entry point `main`", path.display());
            }
            count += 1;
        }
        assert!(count >= 10, "found only {count} shaders");
    }
}
