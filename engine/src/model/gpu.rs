//! The dense forward pass on the GPU. All bind groups are built once; a forward
//! writes the 16-byte step uniform, records every layer's dispatches into one
//! compute pass, and reads back only the logits it was asked for.

use super::{Config, Weights};
use crate::error::{Result, SiftError};
use crate::gpu::{format_bytes, read_buffer_f32, storage_buffer, uniform_buffer, zeroed_buffer, GpuContext};
use crate::kernels::linear::{FusedRope, LinearCall, LinearOptions, Matrix, Output, QkvOut, INTERLEAVE_ROWS};
use crate::kernels::prepared_linear::{NormSpec, PreparedLinear, SwiGluSpec};
use crate::kernels::{attention, embedding, linear, rmsnorm, rope, Call, Dispatch, DispatchTimer, KernelFamily, Step};
use crate::roofline::Footprint;
use std::sync::Arc;

/// Which logits a forward returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token's row: generation.
    Last,
    /// Every token's row: perplexity and scoring.
    All,
}

/// One layer's forward dispatches, bound to its buffers (the dense forward
/// and the attribution pass build theirs the same way, on different buffers).
pub(crate) struct LayerCalls {
    /// The attention norm, then queries to `q` and keys and values to the KV
    /// cache in one projection.
    pub qkv: PreparedLinear,
    /// RoPE on the queries and the new cache rows of keys, where `qkv` does
    /// not rotate them itself.
    pub rope: Call,
    pub attention: attention::AttentionCall,
    pub o: LinearCall,
    /// The MLP norm, then the gate and up projections fused into one matrix [gate; up].
    pub gate_up: PreparedLinear,
    /// SwiGLU, then the down projection.
    pub down: PreparedLinear,
}

/// The buffers a layer's forward reads and writes: the residual stream `x`,
/// its normed copy `xn`, queries, head outputs, gate|up and neuron outputs,
/// and the KV cache (the model's own, or the attribution pass's).
#[derive(Clone, Copy)]
pub(crate) struct LayerIo<'a> {
    pub x: &'a wgpu::Buffer,
    pub xn: &'a wgpu::Buffer,
    pub q: &'a wgpu::Buffer,
    pub heads: &'a wgpu::Buffer,
    pub gate_up: &'a wgpu::Buffer,
    pub neurons: &'a wgpu::Buffer,
    pub k_cache: &'a wgpu::Buffer,
    pub v_cache: &'a wgpu::Buffer,
}

/// The RoPE a q/k/v projection may apply as it stores (interleaved pairs
/// only; `kernels::linear::FusedRope`).
pub(crate) fn fused_rope<'a>(c: &Config, table: &'a wgpu::Buffer) -> Option<FusedRope<'a>> {
    (c.rope_style == rope::RopeStyle::Interleaved).then_some(FusedRope { table, head_dim: c.head_dim, rot_dim: c.rot_dim })
}

/// The q/k/v projection over `n` tokens, then RoPE unless the projection
/// rotated queries and keys as it stored them.
pub(crate) fn plan_qkv_rope<'a>(qkv: &'a PreparedLinear, rope: &'a Call, label: &'static str, n: u32, out: &mut Vec<Dispatch<'a>>) {
    qkv.plan(label, n, out);
    if !qkv.rotates(n) {
        rope.plan("rope", n, out);
    }
}

impl LayerCalls {
    /// Keys and values go to the layer's KV cache rows pos0 .. pos0 + n.
    /// `fuse`: decode runs each norm and SwiGLU inside the projection after
    /// it, leaving `xn` and `neurons` unwritten (see `kernels::prepared_linear`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(ctx: &GpuContext, c: &Config, p: &LayerParams, rope_table: &wgpu::Buffer, step: &wgpu::Buffer, io: &LayerIo, family: KernelFamily, fuse: bool) -> LayerCalls {
        let plain = LinearOptions::default();
        let residual = LinearOptions { accumulate: true, ..plain };
        let rope_shape = rope::RopeShape { n_heads: c.n_heads, head_dim: c.head_dim, rot_dim: c.rot_dim, style: c.rope_style };
        let keys = rope::Keys { buffer: io.k_cache, n_heads: c.n_kv_heads, rows_from_pos: true };
        let att_shape = attention::AttentionShape { n_heads: c.n_heads, n_kv_heads: c.n_kv_heads, head_dim: c.head_dim };
        let norm = |weight| NormSpec { dim: c.dim, x: io.x, xn: io.xn, weight, eps: c.rms_eps };
        let qkv_out = QkvOut { q: io.q, q_rows: c.q_dim(), k_cache: io.k_cache, v_cache: io.v_cache, kv_rows: c.kv_dim(), rope: fused_rope(c, rope_table) };
        let swiglu = SwiGluSpec { width: c.ffn_dim, gate_up: io.gate_up, h: io.neurons };
        LayerCalls {
            qkv: PreparedLinear::norm(ctx, &norm(&p.attn_norm), &p.w_qkv, step, Output::Qkv(&qkv_out), family, fuse),
            rope: rope::call(ctx, &rope_shape, io.q, &keys, step, rope_table),
            attention: attention::call(ctx, att_shape, step, &attention::AttentionIo { q: io.q, k: io.k_cache, v: io.v_cache, out: io.heads }, family),
            o: LinearCall::with_family(ctx, &p.wo, step, io.heads, io.x, residual, family),
            gate_up: PreparedLinear::norm(ctx, &norm(&p.ffn_norm), &p.w_gate_up, step, Output::One(io.gate_up, plain), family, fuse),
            down: PreparedLinear::swiglu(ctx, &swiglu, &p.w_down, step, Output::One(io.x, residual), family, fuse),
        }
    }

    /// RMSNorm, q/k/v, RoPE and attention over `n` tokens after `pos0`
    /// cached ones: everything up to the head outputs.
    pub fn plan_attention<'a>(&'a self, n: u32, pos0: usize, out: &mut Vec<Dispatch<'a>>) {
        plan_qkv_rope(&self.qkv, &self.rope, "qkv", n, out);
        self.attention.plan("attention", n, pos0, out);
    }

    /// The dense MLP, its norm included.
    /// `zero`: a threshold rule applied to the neuron outputs before the down projection.
    pub fn plan_mlp<'a>(&'a self, n: u32, zero: Option<&'a Call>, out: &mut Vec<Dispatch<'a>>) {
        let Some(z) = zero else {
            self.gate_up.plan("gate_up", n, out);
            self.down.plan("down", n, out);
            return;
        };
        self.plan_neurons(n, out);
        z.plan("threshold_zero", n, out);
        self.down.linear.plan("down", n, out);
    }

    /// The whole layer with each projection's input zeroed by TEAL's rule
    /// first (`model::sparse::inputs`): the norms and SwiGLU write their
    /// outputs, so nothing is fused.
    pub fn plan_with_input_rule<'a>(&'a self, n: u32, pos0: usize, zero: &'a [Call; 4], out: &mut Vec<Dispatch<'a>>) {
        let [attn, o, mlp, down] = zero;
        self.qkv.prepare.plan("rmsnorm", n, out);
        attn.plan("input_zero", n, out);
        self.qkv.linear.plan("qkv", n, out);
        if !self.qkv.linear.rotates() {
            self.rope.plan("rope", n, out);
        }
        self.attention.plan("attention", n, pos0, out);
        o.plan("input_zero", n, out);
        self.o.plan("o", n, out);
        self.gate_up.prepare.plan("rmsnorm", n, out);
        mlp.plan("input_zero", n, out);
        self.gate_up.linear.plan("gate_up", n, out);
        self.down.prepare.plan("swiglu", n, out);
        down.plan("input_zero", n, out);
        self.down.linear.plan("down", n, out);
    }

    /// The MLP norm, the gate|up projection and SwiGLU: the neuron outputs
    /// written out (the down projection after them is `down.linear`).
    pub fn plan_neurons<'a>(&'a self, n: u32, out: &mut Vec<Dispatch<'a>>) {
        self.gate_up.plan("gate_up", n, out);
        self.down.prepare.plan("swiglu", n, out);
    }
}

/// GPU buffers that a forward fills, sized for `max_batch` tokens.
pub(crate) struct Activations {
    tokens: wgpu::Buffer,
    pub x: wgpu::Buffer,
    pub xn: wgpu::Buffer,
    x_last: wgpu::Buffer,
    logits: wgpu::Buffer,
    /// Queries, head outputs and MLP neuron outputs ([tokens, width]).
    pub q: wgpu::Buffer,
    pub heads: wgpu::Buffer,
    pub neurons: wgpu::Buffer,
    /// [tokens, gate | up]
    pub gate_up: wgpu::Buffer,
}

/// One layer's weights and KV cache on the GPU (the attribution pass runs on
/// the same ones).
pub(crate) struct LayerParams {
    pub attn_norm: wgpu::Buffer,
    pub ffn_norm: wgpu::Buffer,
    /// Query, key and value projections fused into one matrix [q; k; v].
    pub w_qkv: Matrix,
    pub wo: Matrix,
    /// Gate and up projections fused into one matrix [gate; up].
    pub w_gate_up: Matrix,
    pub w_down: Matrix,
    pub k_cache: wgpu::Buffer,
    pub v_cache: wgpu::Buffer,
}

/// Everything on the GPU that is not a scratch buffer.
pub(crate) struct ModelParams {
    pub embed: Matrix,
    pub lm_head: Option<Matrix>,
    pub out_norm: wgpu::Buffer,
    pub rope_table: wgpu::Buffer,
    pub layers: Vec<LayerParams>,
    /// The kernel family resolved for this adapter (never Auto).
    pub family: KernelFamily,
}

impl ModelParams {
    pub fn lm_head(&self) -> &Matrix {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }
}

pub struct GpuModel {
    pub ctx: Arc<GpuContext>,
    pub config: Config,
    pub max_ctx: usize,
    pub max_batch: usize,
    /// Tokens already in the KV cache.
    pos: usize,
    pub(crate) step_all: wgpu::Buffer,
    pub(crate) step_one: wgpu::Buffer,
    pub(crate) act: Activations,
    embed: Vec<Call>,
    layers: Vec<LayerCalls>,
    out_norm: Call,
    lm_head_all: LinearCall,
    lm_head_last: LinearCall,
    weight_bytes: u64,
    pub(crate) params: ModelParams,
    /// Tells models apart (an attribution pass belongs to one model).
    pub(crate) id: u64,
    /// `Weights::fingerprint` of the uploaded weights.
    pub fingerprint: String,
    /// Sparse decoding, once enabled.
    pub(crate) sparse: Option<super::sparse::SparseDecoding>,
    /// TEAL's rule on the projections' inputs, once set.
    pub(crate) inputs: Option<super::sparse::inputs::InputRule>,
    // Kept alive for the bind groups that reference them.
    _buffers: Vec<wgpu::Buffer>,
}

/// Bytes of weights per unit of a layer, as a dense decode step reads them
/// ([`GpuModel::unit_read_bytes`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UnitBytes {
    pub neuron: f64,
    pub head: f64,
}

/// Choices made when a model is uploaded.
#[derive(Clone, Copy, Debug)]
pub struct ModelOptions {
    pub family: KernelFamily,
    /// On CPU adapters, matrices that 4 or 8 bits reproduce exactly (loaded
    /// from Q4_1 or Q8_0) are read packed (`kernels::packed`); false keeps
    /// f16 only.
    pub packed: bool,
}

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions { family: KernelFamily::Auto, packed: true }
    }
}

/// One layer's K (or V) cache of `max_ctx` tokens, in bytes.
fn kv_cache_bytes(c: &Config, max_ctx: usize) -> u64 {
    (max_ctx * c.kv_dim() * 4) as u64
}

/// One token's widest activation row (logits, gate|up or queries), in bytes.
fn widest_row_bytes(c: &Config) -> u64 {
    c.vocab_size.max(2 * c.ffn_dim).max(c.q_dim()) as u64 * 4
}

/// Refuses, before anything is uploaded, a model or context one of whose
/// buffers cannot be bound on this adapter, naming the buffer and the sizes:
/// a layer's KV cache, one token's widest activation row (the logits), the
/// RoPE table, and the smallest piece a weight matrix is split into (one row,
/// or a block of 64 rows where the rows are interleaved).
fn check_bindings(c: &Config, max_ctx: usize, interleaved: bool, max_bind: u64) -> Result<()> {
    let widest_cols = c.dim.max(c.q_dim()).max(c.ffn_dim) as u64;
    let matrix_piece = widest_cols * 2 * if interleaved { INTERLEAVE_ROWS as u64 } else { 1 };
    let needs = [
        (format!("a {max_ctx}-token KV cache"), kv_cache_bytes(c, max_ctx), "; use a smaller --ctx"),
        (format!("a {max_ctx}-position RoPE table"), (max_ctx * c.rot_dim / 2 * 8) as u64, "; use a smaller --ctx"),
        ("one token's widest activation row".to_string(), widest_row_bytes(c), ""),
        (format!("a piece of a weight matrix ({widest_cols} columns)"), matrix_piece, ""),
    ];
    match needs.into_iter().find(|(_, bytes, _)| *bytes > max_bind) {
        Some((what, bytes, hint)) => Err(SiftError::InvalidInput(format!(
            "the model does not fit this adapter: {what} takes {}, over its storage-binding limit of {}{hint}",
            format_bytes(bytes),
            format_bytes(max_bind)
        ))),
        None => Ok(()),
    }
}

impl GpuModel {
    /// Uploads weights (matrices as f16, and packed in 4, 5 or 8 bits where that
    /// is exact and the adapter is a CPU) and builds every kernel call.
    /// `max_ctx` bounds the KV cache; prompts beyond it are refused.
    pub fn new(ctx: Arc<GpuContext>, config: &Config, weights: &Weights, max_ctx: usize) -> Result<GpuModel> {
        Self::with_options(ctx, config, weights, max_ctx, ModelOptions::default())
    }

    /// Like [`GpuModel::new`] with an explicit kernel family (tests run both).
    pub fn with_family(ctx: Arc<GpuContext>, config: &Config, weights: &Weights, max_ctx: usize, family: KernelFamily) -> Result<GpuModel> {
        Self::with_options(ctx, config, weights, max_ctx, ModelOptions { family, ..Default::default() })
    }

    pub fn with_options(ctx: Arc<GpuContext>, config: &Config, weights: &Weights, max_ctx: usize, options: ModelOptions) -> Result<GpuModel> {
        let family = options.family;
        let c = config.clone();
        if max_ctx == 0 {
            return Err(SiftError::InvalidInput("context size must be positive".into()));
        }
        // lavapipe's loop limiter (see kernels::attention::MAX_LOOP_ITERATIONS)
        // bounds the cooperative attention kernel to about 9000 keys.
        if ctx.is_software() && max_ctx > 8192 {
            return Err(SiftError::InvalidInput(format!(
                "a context of {max_ctx} tokens exceeds the 8192 supported on software adapters; use a smaller --ctx"
            )));
        }
        let max_bind = ctx.max_binding_bytes();
        let kv_bytes = kv_cache_bytes(&c, max_ctx);
        let interleaved = family.is_cpu_style(&ctx);
        check_bindings(&c, max_ctx, interleaved, max_bind)?;
        // Out of memory while uploading is an error with the sizes, not a
        // panic; validation errors past check_bindings are caught the same way.
        let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        // Largest batch whose logits and MLP activations fit one binding.
        let max_batch = (max_bind / widest_row_bytes(&c)).clamp(1, 128) as usize;

        let f32_bytes = |n: usize| (n * 4) as u64;
        let b = max_batch;
        let act = Activations {
            tokens: zeroed_buffer(&ctx, "tokens", f32_bytes(b)),
            x: zeroed_buffer(&ctx, "x", f32_bytes(b * c.dim)),
            xn: zeroed_buffer(&ctx, "xn", f32_bytes(b * c.dim)),
            x_last: zeroed_buffer(&ctx, "x_last", f32_bytes(c.dim)),
            logits: zeroed_buffer(&ctx, "logits", f32_bytes(b * c.vocab_size)),
            q: zeroed_buffer(&ctx, "q", f32_bytes(b * c.q_dim())),
            heads: zeroed_buffer(&ctx, "att", f32_bytes(b * c.q_dim())),
            neurons: zeroed_buffer(&ctx, "h", f32_bytes(b * c.ffn_dim)),
            gate_up: zeroed_buffer(&ctx, "gate_up", f32_bytes(b * 2 * c.ffn_dim)),
        };
        let step_all = uniform_buffer(&ctx, "step", &Step::new(0, 0));
        let step_one = uniform_buffer(&ctx, "step one", &Step::new(1, 0));
        let rope_table = storage_buffer(&ctx, "rope table", &c.rope_table(max_ctx));

        let buffers = vec![];
        let mut weight_bytes = 0u64;
        let family = if interleaved { KernelFamily::RowPerInvocation } else { KernelFamily::Cooperative };
        let mut upload = |name: &str, data: &[f32], rows: usize, cols: usize| {
            let m = Matrix::upload_as(&ctx, name, data, rows, cols, interleaved, options.packed);
            weight_bytes += m.bytes();
            m
        };

        let embed_m = upload("embed", &weights.embed, c.vocab_size, c.dim);
        let plain = LinearOptions::default();

        let mut params_layers = Vec::with_capacity(c.n_layers);
        for (i, lw) in weights.layers.iter().enumerate() {
            params_layers.push(LayerParams {
                attn_norm: storage_buffer(&ctx, "attn_norm", &lw.attn_norm),
                ffn_norm: storage_buffer(&ctx, "ffn_norm", &lw.ffn_norm),
                w_qkv: upload("w_qkv", &[lw.wq.as_slice(), &lw.wk, &lw.wv].concat(), c.q_dim() + 2 * c.kv_dim(), c.dim),
                wo: upload("wo", &lw.wo, c.dim, c.q_dim()),
                // One dispatch instead of two: dispatches have a fixed cost.
                w_gate_up: upload("w_gate_up", &[lw.w_gate.as_slice(), lw.w_up.as_slice()].concat(), 2 * c.ffn_dim, c.dim),
                w_down: upload("w_down", &lw.w_down, c.dim, c.ffn_dim),
                k_cache: zeroed_buffer(&ctx, &format!("k cache {i}"), kv_bytes),
                v_cache: zeroed_buffer(&ctx, &format!("v cache {i}"), kv_bytes),
            });
        }
        let lm_head_own = weights.lm_head.as_ref().map(|w| upload("lm_head", w, c.vocab_size, c.dim));
        let params = ModelParams {
            embed: embed_m,
            lm_head: lm_head_own,
            out_norm: storage_buffer(&ctx, "output_norm", &weights.out_norm),
            rope_table,
            layers: params_layers,
            family,
        };
        let layers = params
            .layers
            .iter()
            .map(|p| {
                let io = LayerIo { x: &act.x, xn: &act.xn, q: &act.q, heads: &act.heads, gate_up: &act.gate_up, neurons: &act.neurons, k_cache: &p.k_cache, v_cache: &p.v_cache };
                LayerCalls::new(&ctx, &c, p, &params.rope_table, &step_all, &io, family, true)
            })
            .collect();
        let out_norm = rmsnorm::call(&ctx, c.dim, c.rms_eps, &step_all, &act.x, &params.out_norm, &act.xn);
        let embed = embedding::calls(&ctx, &params.embed, &step_all, &act.tokens, &act.x);
        let lm_head_all = LinearCall::with_family(&ctx, params.lm_head(), &step_all, &act.xn, &act.logits, plain, family);
        let lm_head_last = LinearCall::with_family(&ctx, params.lm_head(), &step_one, &act.x_last, &act.logits, plain, family);
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(SiftError::Gpu(format!(
                "the model does not fit this adapter's memory: uploading {} of weights, caches and scratch failed ({e})",
                format_bytes(ctx.allocated_bytes())
            )));
        }
        ctx.check()?;
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

        Ok(GpuModel {
            ctx,
            config: c,
            max_ctx,
            max_batch,
            pos: 0,
            step_all,
            step_one,
            act,
            embed,
            layers,
            out_norm,
            lm_head_all,
            lm_head_last,
            weight_bytes,
            params,
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            fingerprint: weights.fingerprint(),
            sparse: None,
            inputs: None,
            _buffers: buffers,
        })
    }

    /// Runs one decode-sized and one prefill-sized forward so the driver
    /// compiles every pipeline now (lavapipe compiles on first use) rather than
    /// inside the first timed generation. Leaves the cache empty.
    pub fn warm_up(&mut self) -> Result<()> {
        let n = (linear::MATVEC_MAX_TOKENS as usize + 1).min(self.max_ctx).min(self.max_batch);
        self.reset();
        self.forward(&vec![0; n], Logits::Last)?;
        self.reset();
        self.forward(&[0], Logits::Last)?;
        self.reset();
        Ok(())
    }

    /// Tokens in the KV cache.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Forgets the cached sequence (the cache contents are simply overwritten).
    pub fn reset(&mut self) {
        self.pos = 0;
    }

    /// Forgets every token after the first `pos` (the cache keeps the rest).
    pub fn rewind(&mut self, pos: usize) -> Result<()> {
        if pos > self.pos {
            return Err(SiftError::InvalidInput(format!("cannot rewind to {pos}: only {} tokens are cached", self.pos)));
        }
        self.pos = pos;
        Ok(())
    }

    /// After the attribution pass filled the KV cache with `pos` tokens.
    pub(crate) fn set_position(&mut self, pos: usize) {
        self.pos = pos;
    }

    /// Bytes of weights on the GPU (as f16).
    pub fn weight_bytes(&self) -> u64 {
        self.weight_bytes
    }

    /// The weights' fingerprint, marked when some are read packed: results
    /// that depend on exact numerics (cached dense references, sweeps) are
    /// comparable only under the same key.
    pub fn numerics_key(&self) -> String {
        match self.packed_matrices().0 {
            0 => self.fingerprint.clone(),
            _ => format!("{} (packed 4/8-bit weights)", self.fingerprint),
        }
    }

    /// Bytes of weights a dense decode step reads for one MLP neuron (its
    /// gate and up rows and its W_down column) and for one attention head
    /// (its query rows and W_o columns; keys and values are computed for
    /// every head), averaged over the layers: what masking a unit spares.
    pub fn unit_read_bytes(&self) -> UnitBytes {
        let c = &self.config;
        let layers = &self.params.layers;
        let q_share = c.q_dim() as f64 / (c.q_dim() + 2 * c.kv_dim()) as f64;
        let mean = |per_layer: &dyn Fn(&LayerParams) -> f64| layers.iter().map(per_layer).sum::<f64>() / layers.len() as f64;
        UnitBytes {
            neuron: mean(&|l| (l.w_gate_up.matvec_bytes() + l.w_down.matvec_bytes()) as f64) / c.ffn_dim as f64,
            head: mean(&|l| l.w_qkv.matvec_bytes() as f64 * q_share + l.wo.matvec_bytes() as f64) / c.n_heads as f64,
        }
    }

    /// Weight matrices that also have a packed 4- or 8-bit copy, of all of them.
    pub fn packed_matrices(&self) -> (usize, usize) {
        let p = &self.params;
        let all: Vec<&Matrix> = p.layers.iter().flat_map(|l| [&l.w_qkv, &l.wo, &l.w_gate_up, &l.w_down]).chain(p.lm_head.as_ref()).chain([&p.embed]).collect();
        (all.iter().filter(|m| m.packed.is_some()).count(), all.len())
    }

    /// Whether `n` more tokens fit the KV cache: callers check a prompt
    /// before they print or attribute anything.
    pub fn check_fits(&self, n: usize) -> Result<()> {
        if self.pos + n > self.max_ctx {
            return Err(SiftError::InvalidInput(format!(
                "{n} tokens do not fit the context: {} already used of {} (raise --ctx, up to the model's {})",
                self.pos, self.max_ctx, self.config.context_length
            )));
        }
        Ok(())
    }

    /// Appends `tokens` to the sequence. Returns logits of the last token
    /// ([vocab]) or of every token ([tokens, vocab]).
    pub fn forward(&mut self, tokens: &[u32], logits: Logits) -> Result<Vec<f32>> {
        let (c, vocab) = (&self.config, self.config.vocab_size);
        if tokens.is_empty() {
            return Err(SiftError::InvalidInput("empty token sequence".into()));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= c.vocab_size) {
            return Err(SiftError::InvalidInput(format!("token id {bad} is outside the vocabulary (size {})", c.vocab_size)));
        }
        self.check_fits(tokens.len())?;
        let mut out = Vec::with_capacity(if logits == Logits::All { tokens.len() * c.vocab_size } else { c.vocab_size });
        let chunks: Vec<&[u32]> = tokens.chunks(self.max_batch).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let last_chunk = i + 1 == chunks.len();
            let want = match logits {
                Logits::All => Some(Logits::All),
                Logits::Last if last_chunk => Some(Logits::Last),
                Logits::Last => None,
            };
            self.before_forward(chunk.len());
            self.run_chunk(chunk, want)?;
            match want {
                Some(Logits::All) => out.extend(read_buffer_f32(&self.ctx, &self.act.logits, 0, chunk.len() * vocab)?),
                Some(Logits::Last) => out.extend(read_buffer_f32(&self.ctx, &self.act.logits, 0, vocab)?),
                None => {}
            }
            self.pos += chunk.len();
        }
        Ok(out)
    }

    /// Every dispatch of one forward over `n` tokens, in order, split where
    /// the last row of the normed activations is copied out for the lm-head.
    fn plan(&self, n: u32, logits: Option<Logits>) -> (Vec<Dispatch<'_>>, Vec<Dispatch<'_>>) {
        let mut main = Vec::new();
        for e in &self.embed {
            e.plan("embedding", n, &mut main);
        }
        let inputs = self.input_rule(n);
        for (i, l) in self.layers.iter().enumerate() {
            if let Some(rule) = inputs {
                l.plan_with_input_rule(n, self.pos, &rule.calls[i], &mut main);
                continue;
            }
            let Some(sparse) = self.sparse_layer(i, n) else {
                l.plan_attention(n, self.pos, &mut main);
                l.o.plan("o", n, &mut main);
                l.plan_mlp(n, self.threshold_zero(i, n), &mut main);
                continue;
            };
            if !sparse.plan_attention(self.pos, &mut main) {
                l.plan_attention(n, self.pos, &mut main);
                l.o.plan("o", n, &mut main);
            }
            if !sparse.plan_mlp(l, &mut main) {
                l.plan_mlp(n, None, &mut main);
            }
        }
        if logits.is_some() {
            self.out_norm.plan("rmsnorm", n, &mut main);
        }
        let mut tail = Vec::new();
        match logits {
            Some(Logits::All) => self.lm_head_all.plan("lm_head", n, &mut main),
            Some(Logits::Last) => self.lm_head_last.plan("lm_head", 1, &mut tail),
            None => {}
        }
        (main, tail)
    }

    /// The kernel family this model runs (resolved for its adapter).
    pub fn kernel_family(&self) -> KernelFamily {
        self.params.family
    }

    /// What one decode step reads of the weights, and its dispatches, as
    /// the current masks plan it (compacted ones included).
    pub fn decode_footprint(&self) -> Footprint {
        let (main, tail) = self.plan(1, Some(Logits::Last));
        // Empty grids are skipped when recorded.
        let run: Vec<_> = main.iter().chain(&tail).filter(|d| !d.grid.contains(&0)).collect();
        Footprint { weight_bytes: run.iter().map(|d| d.weight_bytes).sum(), dispatches: run.len() }
    }

    fn write_step(&self, tokens: &[u32]) {
        let q = &self.ctx.queue;
        q.write_buffer(&self.act.tokens, 0, bytemuck::cast_slice(tokens));
        q.write_buffer(&self.step_all, 0, bytemuck::bytes_of(&Step::new(tokens.len(), self.pos)));
        q.write_buffer(&self.step_one, 0, bytemuck::bytes_of(&Step::new(1, self.pos)));
    }

    /// Copies the last token's normed row to the lm-head input.
    fn copy_last_row(&self, enc: &mut wgpu::CommandEncoder, n: u32) {
        let row = 4 * self.config.dim as u64;
        enc.copy_buffer_to_buffer(&self.act.xn, (n as u64 - 1) * row, &self.act.x_last, 0, row);
    }

    fn run_chunk(&self, tokens: &[u32], logits: Option<Logits>) -> Result<()> {
        let n = tokens.len() as u32;
        self.write_step(tokens);
        let (main, tail) = self.plan(n, logits);
        let mut enc = self.ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            main.iter().for_each(|d| d.record(&mut pass));
        }
        if logits == Some(Logits::Last) {
            self.copy_last_row(&mut enc, n);
            let mut pass = enc.begin_compute_pass(&Default::default());
            tail.iter().for_each(|d| d.record(&mut pass));
        }
        self.ctx.queue.submit([enc.finish()]);
        Ok(())
    }

    /// GPU time per kernel role (seconds) of one forward over `tokens`
    /// appended to the sequence, measured with timestamp queries around each
    /// dispatch. None when the adapter has no timestamp queries.
    pub fn profile(&mut self, tokens: &[u32]) -> Result<Option<Vec<(&'static str, f64)>>> {
        if !self.ctx.features.contains(wgpu::Features::TIMESTAMP_QUERY) {
            return Ok(None);
        }
        let n = tokens.len() as u32;
        if n == 0 || self.pos + tokens.len() > self.max_ctx || tokens.len() > self.max_batch {
            return Err(SiftError::InvalidInput("profile: tokens must be a non-empty batch that fits the context".into()));
        }
        self.write_step(tokens);
        let (main, tail) = self.plan(n, Some(Logits::Last));
        let Some(mut timer) = DispatchTimer::new(&self.ctx, main.len() + tail.len()) else { return Ok(None) };
        let mut enc = self.ctx.device.create_command_encoder(&Default::default());
        main.iter().for_each(|d| timer.record(&mut enc, d));
        self.copy_last_row(&mut enc, n);
        tail.iter().for_each(|d| timer.record(&mut enc, d));
        let totals = timer.finish(&self.ctx, enc)?;
        self.pos += tokens.len();
        Ok(Some(totals))
    }
}
