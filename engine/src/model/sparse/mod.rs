//! Sparse decoding: per-layer active lists of MLP neurons and attention heads
//! on the GPU, weights stored per unit (each neuron's [gate row | up row] and
//! down-projection column, each head's query rows and output-projection
//! columns, contiguous), and the gather kernels that read only active units.
//! Prefill stays dense; one-token forwards (decoding) run sparse.
//!
//! MLP masks are fixed lists (from attribution scores or given) or a
//! per-token threshold rule (`threshold`: CETT or CATS); head masks are fixed
//! lists. A fixed MLP mask that decodes a second token is compacted: the
//! active neurons' weights are copied into dense matrices, and the tokens
//! after it run the dense linear kernels over k/ffn of the weights (on
//! lavapipe, the whole MLP in one dispatch: `kernels::fused_mlp`). Masks that
//! change every token (oracle mode) keep the gather kernels. The modes that
//! choose masks live in `modes`, the files in `files`.

pub mod files;
pub mod inputs;
pub mod modes;

pub use files::{MaskFile, ModelId, Rule, Thresholds};
pub use super::Site;
pub use inputs::InputThresholds;
pub use modes::{oracle_step, set_prompt_mask, PromptTarget, Ratios};

use super::{Config, GpuModel, Weights};
use crate::attribution::{Metric, Scores};
use crate::error::{Result, SiftError};
use crate::gpu::{read_buffer_u32, storage_buffer, zeroed_buffer, GpuContext};
use crate::kernels::attention::{self, AttentionCall, AttentionIo, AttentionShape};
use crate::kernels::cats_mlp::{self, CatsMlpCall, CatsMlpSpec};
use crate::kernels::compact::{compact_heads, compact_mlp, width_for, CompactHeads, CompactMlp, DownInputs, HeadSources, MlpSources};
use crate::kernels::fused_mlp::{self, FusedMlpCall, FusedMlpSpec, OutputProjection};
use crate::kernels::rope;
use crate::kernels::linear::{LinearCall, LinearOptions, Output, QkvOut};
use crate::kernels::prepared_linear::{NormSpec, PreparedLinear, SwiGluSpec};
use crate::kernels::sparse::{self, ActiveList, RowsMode, SelectOut, ThresholdRule};
use crate::kernels::{run_calls, Call, Dispatch, KernelFamily};

/// Units per layer for an activation ratio: ceil(ar * n), at least 1.
pub fn active_count(ar: f64, n: usize) -> Result<usize> {
    if !(ar > 0.0 && ar <= 1.0) {
        return Err(SiftError::InvalidInput(format!("the activation ratio must be in (0, 1], not {ar}")));
    }
    Ok(((ar * n as f64).ceil() as usize).clamp(1, n))
}

/// How decoding picks MLP neurons.
#[derive(Clone, Debug, PartialEq)]
pub enum MlpMask {
    Dense,
    /// The same lists for every token, with these counts per layer.
    Fixed(Vec<usize>),
    /// Chosen per token by a threshold rule.
    Threshold(ThresholdRule),
}

/// One layer's sparse dispatches; `None` parts run dense.
pub(crate) struct SparseLayer {
    heads: Option<HeadCalls>,
    mlp: MlpCalls,
}

/// A layer's attention with its head mask compacted: only the active heads'
/// queries, attention and output columns are computed.
struct HeadCalls {
    /// The attention norm, then the active heads' query rows and every key
    /// and value row in one projection.
    qkv: PreparedLinear,
    rope: Call,
    attention: AttentionCall,
    /// Compacted W_o, added to the residual; None where the fused MLP
    /// dispatch adds it (`kernels::fused_mlp::OutputProjection`).
    o: Option<LinearCall>,
}

/// The active heads of every layer and their compacted weights.
struct HeadMask {
    /// Per layer: the KV head of each active head, in list order (so its
    /// length is the layer's active head count).
    kv_heads: Vec<Vec<u32>>,
    compact: Vec<CompactHeads>,
}

enum MlpCalls {
    Dense,
    /// Gate|up of the listed neurons, down (two passes).
    Fixed([Call; 3]),
    /// A fixed mask compacted: the dense norm and gate|up, then SwiGLU and
    /// down, over the active neurons only.
    Compact(PreparedLinear, PreparedLinear),
    /// The same in one dispatch (`kernels::fused_mlp`), with the attention's
    /// output projection first where the heads are compacted too.
    Fused(FusedMlpCall),
    /// After the dense gate|up and SwiGLU: select, down (two passes).
    Cett([Call; 3]),
    /// Gate of every neuron, select, up of the kept ones, down (two passes).
    Cats([Call; 5]),
    /// The same in one dispatch, from per-neuron 4-bit weights (`kernels::cats_mlp`).
    CatsFused(CatsMlpCall),
}

impl MlpCalls {
    /// Whether the MLP's dispatch adds the compacted heads' output
    /// projection, so that the heads have none of their own.
    fn adds_output_projection(&self) -> bool {
        matches!(self, MlpCalls::Fused(call) if call.with_output_projection())
    }
}

pub(crate) struct SparseDecoding {
    /// Per layer, f16 per neuron: [gate row | up row], and W_down^T.
    gate_up: Vec<wgpu::Buffer>,
    down_t: Vec<wgpu::Buffer>,
    /// Per layer, f16: W_q and W_o^T, what head masks are compacted from.
    wq: Vec<wgpu::Buffer>,
    /// [Wk; Wv], f16: the keys and values that head-masked layers still
    /// compute in full, fused after their compacted query rows.
    w_kv: Vec<wgpu::Buffer>,
    /// The identity list of [Wk; Wv]'s rows, for that compaction.
    kv_rows: wgpu::Buffer,
    kv_rows_count: wgpu::Buffer,
    wo_t: Vec<wgpu::Buffer>,
    /// Per layer, where gate rules run in one dispatch: W_down's columns per
    /// neuron in 4 bits (`kernels::cats_mlp::neuron_weights`); else empty.
    cats_neurons: Vec<wgpu::Buffer>,
    /// That dispatch's arrival counter and per-workgroup kept counts.
    cats_arrivals: wgpu::Buffer,
    /// [layers, ffn]: ||W_down[:, i]||, for the CETT rule.
    down_norms: wgpu::Buffer,
    /// [layers, ffn]: a weighted rule's per-neuron weights, read in place of
    /// `down_norms` while it is set.
    rule_weights: Option<wgpu::Buffer>,
    ones: wgpu::Buffer,
    /// [layers, ffn]: the first counts[l] entries of layer l are its active neurons.
    index: wgpu::Buffer,
    counts: wgpu::Buffer,
    /// [layers, ffn]: 1 where a neuron is active (for display).
    bitmap: wgpu::Buffer,
    /// [layers, q_dim]: the query rows (head_dim per active head) of each layer.
    head_rows: wgpu::Buffer,
    head_counts: wgpu::Buffer,
    /// [layers, heads]: 1 where a head is active.
    head_bitmap: wgpu::Buffer,
    thresholds: wgpu::Buffer,
    gate: wgpu::Buffer,
    h: wgpu::Buffer,
    partial: wgpu::Buffer,
    mlp: MlpMask,
    /// One-token forwards run with the current fixed MLP mask.
    fixed_steps: usize,
    /// The current fixed MLP mask compacted, per layer, once it is reused.
    compact: Option<Vec<CompactMlp>>,
    /// [2 * width_for(ffn)]: the compacted layer's gate|up outputs.
    compact_gate_up: wgpu::Buffer,
    /// When heads are masked.
    heads: Option<HeadMask>,
    layers: Vec<SparseLayer>,
    /// The threshold rule also zeroes neurons in batched forwards (prefill,
    /// perplexity), one call per layer.
    every_token: bool,
    zero: Vec<Call>,
}

fn to_f16(v: &[f32]) -> Vec<half::f16> {
    v.iter().map(|&x| half::f16::from_f32(x)).collect()
}

impl SparseDecoding {
    fn new(ctx: &GpuContext, c: &Config, w: &Weights, family: KernelFamily) -> Result<SparseDecoding> {
        let (d, f, l) = (c.dim, c.ffn_dim, c.n_layers);
        let bytes = (f * 2 * d * 2) as u64;
        if bytes > ctx.max_binding_bytes() {
            return Err(SiftError::InvalidInput(format!("a layer's MLP ({} MiB) exceeds this adapter's binding limit for sparse decoding", bytes >> 20)));
        }
        if !d.is_multiple_of(8) {
            return Err(SiftError::InvalidInput(format!("sparse decoding needs a model width divisible by 8, not {d}")));
        }
        let transpose = crate::attribution::transposed::transpose;
        let mut s = SparseDecoding {
            gate_up: Vec::new(),
            down_t: Vec::new(),
            wq: Vec::new(),
            w_kv: Vec::new(),
            kv_rows: storage_buffer(ctx, "kv rows", &(0..2 * c.kv_dim() as u32).collect::<Vec<_>>()),
            kv_rows_count: storage_buffer(ctx, "kv row count", &[2 * c.kv_dim() as u32]),
            wo_t: Vec::new(),
            cats_neurons: Vec::new(),
            cats_arrivals: zeroed_buffer(ctx, "gate rule arrivals", (4 * (1 + sparse::MAX_DOWN_SLICES)) as u64),
            down_norms: zeroed_buffer(ctx, "down norms", 4),
            rule_weights: None,
            ones: storage_buffer(ctx, "ones", &vec![1.0f32; l * f]),
            index: storage_buffer(ctx, "active neurons", &vec![0u32; l * f]),
            counts: zeroed_buffer(ctx, "active counts", (l * 4) as u64),
            bitmap: storage_buffer(ctx, "active bitmap", &vec![1u32; l * f]),
            head_rows: storage_buffer(ctx, "active query rows", &vec![0u32; l * c.q_dim()]),
            head_counts: zeroed_buffer(ctx, "active query row counts", (l * 4) as u64),
            head_bitmap: storage_buffer(ctx, "active heads", &vec![1u32; l * c.n_heads]),
            thresholds: zeroed_buffer(ctx, "thresholds", (l * 4) as u64),
            gate: zeroed_buffer(ctx, "sparse gate", (f * 4) as u64),
            h: zeroed_buffer(ctx, "sparse h", (width_for(f) * 4) as u64),
            partial: zeroed_buffer(ctx, "sparse down slices", sparse::down_scratch_bytes(d)),
            mlp: MlpMask::Dense,
            fixed_steps: 0,
            compact: None,
            compact_gate_up: zeroed_buffer(ctx, "compact gate_up out", (2 * width_for(f) * 4) as u64),
            heads: None,
            layers: Vec::new(),
            every_token: false,
            zero: Vec::new(),
        };
        let mut norms = Vec::with_capacity(l * f);
        for lw in &w.layers {
            let packed: Vec<f32> = (0..f).flat_map(|i| lw.w_gate[i * d..(i + 1) * d].iter().chain(&lw.w_up[i * d..(i + 1) * d]).copied()).collect();
            let down_t = transpose(&lw.w_down, d, f, 0);
            norms.extend(down_t.chunks(d).map(|col| col.iter().map(|v| v * v).sum::<f32>().sqrt()));
            s.gate_up.push(storage_buffer(ctx, "sparse gate_up", &to_f16(&packed)));
            s.down_t.push(storage_buffer(ctx, "sparse down^T", &to_f16(&down_t)));
            s.wq.push(storage_buffer(ctx, "sparse wq", &to_f16(&lw.wq)));
            s.w_kv.push(storage_buffer(ctx, "sparse w_kv", &to_f16(&[lw.wk.as_slice(), &lw.wv].concat())));
            s.wo_t.push(storage_buffer(ctx, "sparse wo^T", &to_f16(&transpose(&lw.wo, d, c.q_dim(), 0))));
        }
        s.down_norms = storage_buffer(ctx, "down norms", &norms);
        if cats_mlp::runs_on(ctx, family, d, f) {
            // Every layer or none (a model mixing 4-bit and other MLPs keeps the gather kernels).
            let layers: Option<Vec<Vec<u32>>> = w.layers.iter().map(|lw| cats_mlp::neuron_weights(&lw.w_down, d, f)).collect();
            s.cats_neurons = layers.map_or_else(Vec::new, |ls| ls.iter().map(|words| storage_buffer(ctx, "per-neuron W_down", words)).collect());
        }
        Ok(s)
    }

    fn on(&self) -> bool {
        self.mlp != MlpMask::Dense || self.heads.is_some()
    }

    /// A new MLP mask: any compaction of the old one is dropped.
    fn set_mlp(&mut self, mask: MlpMask) {
        self.mlp = mask;
        self.fixed_steps = 0;
        self.compact = None;
    }
}

impl GpuModel {
    /// Uploads the per-unit weight layouts sparse decoding reads (about one
    /// more copy of the MLP and attention weights). Masks are set with the
    /// `set_*_mask*` methods.
    pub fn enable_sparse(&mut self, weights: &Weights) -> Result<()> {
        if self.sparse.is_none() {
            self.sparse = Some(SparseDecoding::new(&self.ctx, &self.config, weights, self.params.family)?);
        }
        Ok(())
    }

    fn sparse_mut(&mut self) -> Result<&mut SparseDecoding> {
        self.sparse.as_mut().ok_or_else(sparse_not_enabled)
    }

    /// Rebuilds every layer's sparse calls for the current masks.
    fn bind_sparse(&mut self) {
        let (ctx, c) = (self.ctx.clone(), self.config.clone());
        let (x, xn, heads, neurons, q) = (self.act.x.clone(), self.act.xn.clone(), self.act.heads.clone(), self.act.neurons.clone(), self.act.q.clone());
        let (gate_up, step, family) = (self.act.gate_up.clone(), self.step_all.clone(), self.params.family);
        let (layer_params, rope_table) = (&self.params.layers, &self.params.rope_table);
        let s = self.sparse.as_mut().expect("checked");
        // What a threshold rule multiplies its values by: the file's weights,
        // else CETT's ||W_down[:, i]|| or CATS's 1.
        let rule_norms = match (&s.rule_weights, &s.mlp) {
            (Some(w), _) => w,
            (None, MlpMask::Threshold(ThresholdRule::Cats)) => &s.ones,
            (None, _) => &s.down_norms,
        };
        s.zero = match s.mlp {
            MlpMask::Threshold(rule) => (0..c.n_layers).map(|l| sparse::threshold_zero(&ctx, c.ffn_dim, l, rule, &step, &neurons, &gate_up, rule_norms, &s.thresholds)).collect(),
            _ => Vec::new(),
        };
        let (d, f) = (c.dim, c.ffn_dim);
        s.layers = (0..c.n_layers)
            .map(|l| {
                let neurons_list = ActiveList { index: &s.index, counts: &s.counts, index_offset: l * f, layer: l, max_count: f };
                let select = |values: &wgpu::Buffer| {
                    let out = SelectOut { index: &s.index, counts: &s.counts, bitmap: &s.bitmap, compact: &s.h };
                    sparse::threshold_select(&ctx, f, l, values, rule_norms, &s.thresholds, out)
                };
                let down = || sparse::down(&ctx, d, neurons_list, &s.h, &s.down_t[l], &s.partial, &x);
                // A fused MLP takes the compacted heads' output projection too.
                let o_for_mlp = s.heads.as_ref().map(|h| &h.compact[l].o).filter(|o| OutputProjection::fits(o, d)).map(|o| OutputProjection { heads: &heads, o });
                let mlp = match &s.mlp {
                    MlpMask::Dense => MlpCalls::Dense,
                    MlpMask::Fixed(_) if s.compact.is_some() => {
                        let m = &s.compact.as_ref().expect("checked")[l];
                        let plain = LinearOptions::default();
                        let weight = &layer_params[l].ffn_norm;
                        let two_dispatches = |gate_up_out, act: SwiGluSpec| {
                            let norm = NormSpec { dim: d, x: &x, xn: &xn, weight, eps: c.rms_eps };
                            let gate_up = PreparedLinear::norm(&ctx, &norm, &m.gate_up, &step, gate_up_out, family, true);
                            let down = PreparedLinear::swiglu(&ctx, &act, &m.down, &step, Output::One(&x, LinearOptions { accumulate: true, ..plain }), family, true);
                            MlpCalls::Compact(gate_up, down)
                        };
                        match &m.inputs {
                            DownInputs::Fused(state) => {
                                let spec = FusedMlpSpec { dim: d, eps: c.rms_eps, x: &x, norm_weight: weight, gate_up: &m.gate_up, down: &m.down, state, o: o_for_mlp };
                                MlpCalls::Fused(fused_mlp::call(&ctx, &spec))
                            }
                            // A grouped down reads its inputs at their slots.
                            DownInputs::Slots(slots) => two_dispatches(slots.gate_up_output(), SwiGluSpec { width: slots.count, gate_up: &slots.gate_up, h: &s.h }),
                            DownInputs::Columns => two_dispatches(Output::One(&s.compact_gate_up, plain), SwiGluSpec { width: m.width, gate_up: &s.compact_gate_up, h: &s.h }),
                        }
                    }
                    MlpMask::Fixed(max) => {
                        let list = ActiveList { max_count: max[l], ..neurons_list };
                        let [dn, reduce] = sparse::down(&ctx, d, list, &s.h, &s.down_t[l], &s.partial, &x);
                        MlpCalls::Fixed([sparse::rows(&ctx, d, RowsMode::GateUp, list, &xn, &s.gate_up[l], &s.h), dn, reduce])
                    }
                    MlpMask::Threshold(ThresholdRule::Cett) => {
                        let [dn, reduce] = down();
                        MlpCalls::Cett([select(&neurons), dn, reduce])
                    }
                    MlpMask::Threshold(ThresholdRule::Cats) if !s.cats_neurons.is_empty() && layer_params[l].w_gate_up.q4().is_some() => {
                        let spec = CatsMlpSpec {
                            layer: l,
                            dim: d,
                            ffn: f,
                            eps: c.rms_eps,
                            threads: fused_mlp::threads(),
                            x: &x,
                            norm_weight: &layer_params[l].ffn_norm,
                            gate_up: &layer_params[l].w_gate_up,
                            neurons: &s.cats_neurons[l],
                            partial: &s.partial,
                            arrivals: &s.cats_arrivals,
                            rule_weights: rule_norms,
                            thresholds: &s.thresholds,
                            bitmap: &s.bitmap,
                            counts: &s.counts,
                        };
                        MlpCalls::CatsFused(cats_mlp::call(&ctx, &spec))
                    }
                    MlpMask::Threshold(ThresholdRule::Cats) => {
                        let [dn, reduce] = down();
                        let gate = sparse::rows(&ctx, d, RowsMode::Gate, neurons_list, &xn, &s.gate_up[l], &s.gate);
                        let up = sparse::rows(&ctx, d, RowsMode::Up, neurons_list, &xn, &s.gate_up[l], &s.h);
                        MlpCalls::Cats([gate, select(&s.gate), up, dn, reduce])
                    }
                };
                let o_in_mlp = mlp.adds_output_projection();
                let heads = s.heads.as_ref().map(|h| {
                    let (cache, compact, kv_heads) = (&layer_params[l], &h.compact[l], &h.kv_heads[l]);
                    let plain = LinearOptions::default();
                    let qkv_out = QkvOut { q: &q, q_rows: compact.width, k_cache: &cache.k_cache, v_cache: &cache.v_cache, kv_rows: c.kv_dim(), rope: super::gpu::fused_rope(&c, rope_table) };
                    let rope_shape = rope::RopeShape { n_heads: kv_heads.len(), head_dim: c.head_dim, rot_dim: c.rot_dim, style: c.rope_style };
                    let keys = rope::Keys { buffer: &cache.k_cache, n_heads: c.n_kv_heads, rows_from_pos: true };
                    let shape = AttentionShape { n_heads: c.n_heads, n_kv_heads: c.n_kv_heads, head_dim: c.head_dim };
                    HeadCalls {
                        qkv: PreparedLinear::norm(&ctx, &NormSpec { dim: d, x: &x, xn: &xn, weight: &cache.attn_norm, eps: c.rms_eps }, &compact.qkv, &step, Output::Qkv(&qkv_out), family, true),
                        rope: rope::call(&ctx, &rope_shape, &q, &keys, &step, rope_table),
                        attention: attention::call_heads(&ctx, shape, kv_heads, &step, &AttentionIo { q: &q, k: &cache.k_cache, v: &cache.v_cache, out: &heads }, family),
                        o: (!o_in_mlp).then(|| LinearCall::with_family(&ctx, &compact.o, &step, &heads, &x, LinearOptions { accumulate: true, ..plain }, family)),
                    }
                });
                SparseLayer { heads, mlp }
            })
            .collect();
    }

    /// Keeps, in every layer, the ceil(ar * ffn) neurons that `metric` scores
    /// highest; selected on the GPU, the scores never leave it.
    pub fn set_mlp_mask_from_scores(&mut self, scores: &Scores, metric: Metric, ar: f64) -> Result<()> {
        self.check_scores(scores, metric)?;
        let c = self.config.clone();
        let k = active_count(ar, c.ffn_dim)?;
        let ctx = self.ctx.clone();
        let s = self.sparse_mut()?;
        let offset = (scores.neuron_offset(metric) / 4) as usize;
        let select = sparse::select_top(&ctx, c.ffn_dim, c.n_layers, k, offset, &scores.neurons, &s.index, &s.bitmap);
        run_calls(&ctx, &[&select], 1);
        ctx.queue.write_buffer(&s.counts, 0, bytemuck::cast_slice(&vec![k as u32; c.n_layers]));
        s.set_mlp(MlpMask::Fixed(vec![k; c.n_layers]));
        self.bind_sparse();
        Ok(())
    }

    /// Keeps, in every layer, the ceil(ar * heads) heads that `metric`
    /// scores highest (a few numbers per layer, selected on the CPU).
    pub fn set_head_mask_from_scores(&mut self, scores: &Scores, metric: Metric, ar: f64) -> Result<()> {
        self.check_scores(scores, metric)?;
        let k = active_count(ar, self.config.n_heads)?;
        let flat: Vec<f32> = scores.read_heads(&self.ctx, metric)?.concat();
        self.set_head_mask(&sparse::select_top_reference(&flat, self.config.n_heads, k))
    }

    fn check_scores(&self, scores: &Scores, metric: Metric) -> Result<()> {
        scores.check(metric)?;
        let c = &self.config;
        if scores.n_layers != c.n_layers || scores.n_neurons != c.ffn_dim || scores.n_heads != c.n_heads {
            return Err(SiftError::InvalidInput("these scores were computed for another model".into()));
        }
        Ok(())
    }

    /// Sets the active neurons of every layer explicitly (at least one each).
    pub fn set_mlp_mask(&mut self, active: &[Vec<u32>]) -> Result<()> {
        let (l, f) = (self.config.n_layers, self.config.ffn_dim);
        let (index, bitmap, counts) = pack_lists(active, l, f, "neuron")?;
        let q = self.ctx.queue.clone();
        let s = self.sparse_mut()?;
        q.write_buffer(&s.index, 0, bytemuck::cast_slice(&index));
        q.write_buffer(&s.bitmap, 0, bytemuck::cast_slice(&bitmap));
        q.write_buffer(&s.counts, 0, bytemuck::cast_slice(&counts));
        s.set_mlp(MlpMask::Fixed(counts.iter().map(|&k| k as usize).collect()));
        self.bind_sparse();
        Ok(())
    }

    /// Sets the active attention heads of every layer explicitly (at least one each).
    pub fn set_head_mask(&mut self, active: &[Vec<u32>]) -> Result<()> {
        let c = self.config.clone();
        let (_, bitmap, _) = pack_lists(active, c.n_layers, c.n_heads, "head")?;
        let (rows, _, row_counts) = pack_lists(&expand_heads(active, c.head_dim), c.n_layers, c.q_dim(), "query row")?;
        let (ctx, interleaved) = (self.ctx.clone(), self.params.family == KernelFamily::RowPerInvocation);
        let q = self.ctx.queue.clone();
        let s = self.sparse.as_mut().ok_or_else(sparse_not_enabled)?;
        let dense = &self.params.layers;
        // W_o's 4-bit blocks run along its columns, the heads' query rows:
        // whole heads are whole blocks when head_dim is a multiple of 32.
        let whole_blocks = c.head_dim.is_multiple_of(crate::kernels::packed::BLOCK);
        q.write_buffer(&s.head_rows, 0, bytemuck::cast_slice(&rows));
        q.write_buffer(&s.head_counts, 0, bytemuck::cast_slice(&row_counts));
        q.write_buffer(&s.head_bitmap, 0, bytemuck::cast_slice(&bitmap));
        let layers: Vec<HeadSources> = (0..c.n_layers)
            .map(|l| {
                let rows = row_counts[l] as usize;
                let active = ActiveList { index: &s.head_rows, counts: &s.head_counts, index_offset: l * c.q_dim(), layer: l, max_count: rows };
                HeadSources { active, count: rows, wq: &s.wq[l], w_kv: &s.w_kv[l], wo_t: &s.wo_t[l], dense_qkv: Some(&dense[l].w_qkv), dense_o: whole_blocks.then_some(&dense[l].wo) }
            })
            .collect();
        let kv = ActiveList { index: &s.kv_rows, counts: &s.kv_rows_count, index_offset: 0, layer: 0, max_count: 2 * c.kv_dim() };
        let compact = compact_heads(&ctx, c.dim, interleaved, kv, &layers);
        let group = (c.n_heads / c.n_kv_heads) as u32;
        let kv_heads = active.iter().map(|ids| ids.iter().map(|&h| h / group).collect()).collect();
        s.heads = Some(HeadMask { kv_heads, compact });
        self.bind_sparse();
        Ok(())
    }

    /// `threshold` mode: every decoded token keeps the neurons its rule
    /// passes, with the file's per-layer thresholds (checked against this model).
    pub fn set_threshold_mask(&mut self, thresholds: &Thresholds) -> Result<()> {
        thresholds.check(self)?;
        let (q, ctx) = (self.ctx.queue.clone(), self.ctx.clone());
        let s = self.sparse_mut()?;
        q.write_buffer(&s.thresholds, 0, bytemuck::cast_slice(&thresholds.thresholds));
        s.rule_weights = thresholds.weights.as_ref().map(|w| storage_buffer(&ctx, "rule weights", w));
        s.set_mlp(MlpMask::Threshold(thresholds.rule.kernel_rule()));
        self.bind_sparse();
        Ok(())
    }

    /// Like [`GpuModel::set_threshold_mask`], and batched forwards (prefill,
    /// perplexity) apply the rule too, as the Sparsing Law measures it; by
    /// default only decoding is sparse. `disable_sparsity` ends both.
    pub fn set_threshold_mask_every_token(&mut self, thresholds: &Thresholds) -> Result<()> {
        self.set_threshold_mask(thresholds)?;
        self.sparse_mut()?.every_token = true;
        Ok(())
    }

    /// The zeroing call of layer `l` for a batched forward, when the threshold applies to every token.
    pub(crate) fn threshold_zero(&self, l: usize, n: u32) -> Option<&Call> {
        self.sparse.as_ref().filter(|s| n > 1 && s.every_token && matches!(s.mlp, MlpMask::Threshold(_))).and_then(|s| s.zero.get(l))
    }

    /// The MLP mask in use.
    pub fn mlp_mask(&self) -> MlpMask {
        self.sparse.as_ref().map_or(MlpMask::Dense, |s| s.mlp.clone())
    }

    /// The active neurons per layer, read back from the GPU (sorted by id):
    /// the fixed mask, or the last decoded token's under a threshold rule.
    pub fn read_mlp_mask(&self) -> Result<Option<Vec<Vec<u32>>>> {
        let Some(s) = self.sparse.as_ref().filter(|s| s.mlp != MlpMask::Dense) else { return Ok(None) };
        let (l, f) = (self.config.n_layers, self.config.ffn_dim);
        // The one-dispatch gate rule marks its neurons in the bitmap only.
        if self.gate_rule_fused_layers() > 0 {
            let bits = read_buffer_u32(&self.ctx, &s.bitmap, 0, l * f)?;
            return Ok(Some(bits.chunks(f).map(|b| (0..f as u32).filter(|&i| b[i as usize] == 1).collect()).collect()));
        }
        read_lists(&self.ctx, &s.index, &s.counts, l, f, 1).map(Some)
    }

    /// The active heads per layer, when heads are masked.
    pub fn read_head_mask(&self) -> Result<Option<Vec<Vec<u32>>>> {
        let Some(s) = self.sparse.as_ref().filter(|s| s.heads.is_some()) else { return Ok(None) };
        read_lists(&self.ctx, &s.head_rows, &s.head_counts, self.config.n_layers, self.config.q_dim(), self.config.head_dim).map(Some)
    }

    /// The [layers, ffn] bitmap of active neurons (1 = active), for display.
    pub fn mlp_mask_bitmap(&self) -> Option<&wgpu::Buffer> {
        self.sparse.as_ref().filter(|s| s.mlp != MlpMask::Dense).map(|s| &s.bitmap)
    }

    /// The [layers, heads] bitmap of active heads, for display.
    pub fn head_mask_bitmap(&self) -> Option<&wgpu::Buffer> {
        self.sparse.as_ref().filter(|s| s.heads.is_some()).map(|s| &s.head_bitmap)
    }

    /// Fractions of MLP neurons and of heads active (1.0 where dense): for a
    /// threshold rule, the last decoded token's (a small readback); for
    /// TEAL's rule, the share of the blocks' projection weights its inputs
    /// let the forwards since the last call read.
    pub fn active_fractions(&self) -> Result<(f64, f64)> {
        let c = &self.config;
        // TEAL's rule: the share of the projections' weights it read.
        if let Some(share) = self.input_share_read()? {
            return Ok((share, 1.0));
        }
        let Some(s) = self.sparse.as_ref() else { return Ok((1.0, 1.0)) };
        let mean = |counts: &[usize], n: usize| counts.iter().sum::<usize>() as f64 / (counts.len() * n) as f64;
        let mlp = match &s.mlp {
            MlpMask::Dense => 1.0,
            MlpMask::Fixed(k) => mean(k, c.ffn_dim),
            MlpMask::Threshold(_) => mean(&read_buffer_u32(&self.ctx, &s.counts, 0, c.n_layers)?.iter().map(|&k| k as usize).collect::<Vec<_>>(), c.ffn_dim),
        };
        let heads = s.heads.as_ref().map_or(1.0, |h| mean(&h.kv_heads.iter().map(Vec::len).collect::<Vec<_>>(), c.n_heads));
        Ok((mlp, heads))
    }

    /// Back to dense decoding (the sparse weights stay uploaded).
    pub fn disable_sparsity(&mut self) {
        self.inputs = None;
        if let Some(s) = &mut self.sparse {
            s.set_mlp(MlpMask::Dense);
            s.heads = None;
            s.every_token = false;
            s.layers.clear();
            s.zero.clear();
        }
    }

    /// Heads back to dense, the MLP mask unchanged.
    pub fn clear_head_mask(&mut self) {
        if let Some(s) = &mut self.sparse {
            s.heads = None;
            self.bind_sparse();
        }
    }

    /// Whether decoding runs the current fixed MLP mask compacted (from its
    /// second token on).
    pub fn mlp_mask_compacted(&self) -> bool {
        self.sparse.as_ref().is_some_and(|s| s.compact.is_some())
    }

    /// Layers whose compacted W_down kept the model's 4 bits, in groups
    /// (`kernels::column_groups`), rather than f16 columns.
    pub fn mlp_mask_grouped_layers(&self) -> usize {
        self.compacted_layers_where(CompactMlp::grouped)
    }

    /// Layers of the compacted MLP mask that run in one dispatch
    /// (`kernels::fused_mlp`).
    pub fn mlp_mask_fused_layers(&self) -> usize {
        self.compacted_layers_where(CompactMlp::fused)
    }

    /// Layers whose gate rule runs in one dispatch from per-neuron 4-bit
    /// weights (`kernels::cats_mlp`).
    pub fn gate_rule_fused_layers(&self) -> usize {
        self.sparse.as_ref().map_or(0, |s| s.layers.iter().filter(|l| matches!(l.mlp, MlpCalls::CatsFused(_))).count())
    }

    /// Layers whose fused MLP dispatch also adds the compacted heads' output
    /// projection (`kernels::fused_mlp::OutputProjection`).
    pub fn output_projection_fused_layers(&self) -> usize {
        self.sparse.as_ref().map_or(0, |s| s.layers.iter().filter(|l| l.mlp.adds_output_projection()).count())
    }

    /// Layers of the compacted MLP mask (none before compaction) for which `pred` holds.
    fn compacted_layers_where(&self, pred: impl Fn(&CompactMlp) -> bool) -> usize {
        self.sparse.as_ref().and_then(|s| s.compact.as_ref()).map_or(0, |layers| layers.iter().filter(|m| pred(m)).count())
    }

    /// Before a forward of `n` tokens: a fixed MLP mask that already decoded
    /// a token is compacted for the tokens after it. Per-token masks (oracle
    /// mode) are replaced before they are reused, so they never pay for it.
    pub(crate) fn before_forward(&mut self, n: usize) {
        let Some(s) = self.sparse.as_mut() else { return };
        if n != 1 || !matches!(s.mlp, MlpMask::Fixed(_)) || s.compact.is_some() {
            return;
        }
        s.fixed_steps += 1;
        if s.fixed_steps >= 2 {
            self.compact_mlp_mask();
        }
    }

    /// Copies the active neurons' weights of the current fixed MLP mask into
    /// dense matrices now, so that every token it decodes runs compacted
    /// (prompt mode and mask files, whose masks decode many tokens). Other
    /// fixed masks are compacted when they decode their second token; other
    /// masks are left as they are.
    pub fn compact_mlp_mask(&mut self) {
        let Some(s) = self.sparse.as_mut() else { return };
        let MlpMask::Fixed(counts) = &s.mlp else { return };
        if s.compact.is_some() {
            return;
        }
        let (ctx, c) = (&self.ctx, &self.config);
        let interleaved = self.params.family == KernelFamily::RowPerInvocation;
        // W_down keeps its 4 bits through groups planned from the lists
        // (kernels::column_groups); if they cannot be read back, it is f16.
        let lists = interleaved.then(|| read_buffer_u32(ctx, &s.index, 0, c.n_layers * c.ffn_dim).ok()).flatten();
        let layers: Vec<MlpSources> = (0..c.n_layers)
            .map(|l| {
                let active = ActiveList { index: &s.index, counts: &s.counts, index_offset: l * c.ffn_dim, layer: l, max_count: counts[l] };
                let dense_down = lists.as_ref().map(|all| (&self.params.layers[l].w_down, &all[l * c.ffn_dim..(l + 1) * c.ffn_dim]));
                MlpSources { active, count: counts[l], gate_up: &s.gate_up[l], down_t: &s.down_t[l], dense_gate_up: Some(&self.params.layers[l].w_gate_up), dense_down }
            })
            .collect();
        let fused_threads = fused_mlp::runs_on(ctx, self.params.family).then(fused_mlp::threads);
        let compact = compact_mlp(ctx, c.dim, interleaved, fused_threads, &layers);
        s.compact = Some(compact);
        self.bind_sparse();
    }

    /// The sparse calls for layer `l` of a forward over `n` tokens, if any.
    pub(crate) fn sparse_layer(&self, l: usize, n: u32) -> Option<&SparseLayer> {
        self.sparse.as_ref().filter(|s| n == 1 && s.on()).and_then(|s| s.layers.get(l))
    }
}

impl SparseLayer {
    /// Attention over the active heads only, from its norm to the residual
    /// add, at position `pos0`. False when heads are dense.
    pub fn plan_attention<'a>(&'a self, pos0: usize, out: &mut Vec<Dispatch<'a>>) -> bool {
        let Some(h) = &self.heads else { return false };
        super::gpu::plan_qkv_rope(&h.qkv, &h.rope, "sparse_qkv", 1, out);
        h.attention.plan("attention", 1, pos0, out);
        if let Some(o) = &h.o {
            o.plan("sparse_o", 1, out);
        }
        true
    }

    /// The MLP, its norm included; the CETT rule thresholds the dense
    /// layer's own neuron outputs first. False when the MLP is dense.
    pub fn plan_mlp<'a>(&'a self, dense: &'a super::gpu::LayerCalls, out: &mut Vec<Dispatch<'a>>) -> bool {
        let norm = |out: &mut Vec<Dispatch<'a>>| dense.gate_up.prepare.plan("rmsnorm", 1, out);
        let calls: &[Call] = match &self.mlp {
            MlpCalls::Dense => return false,
            MlpCalls::Compact(gate_up, down) => {
                gate_up.plan("sparse_gate_up", 1, out);
                down.plan("sparse_down", 1, out);
                return true;
            }
            // With W_o it is not the MLP alone (bench::MLP_KERNELS).
            MlpCalls::Fused(call) => {
                call.plan(if call.with_output_projection() { "fused_o_mlp" } else { "fused_mlp" }, out);
                return true;
            }
            MlpCalls::CatsFused(call) => {
                call.plan("cats_mlp", out);
                return true;
            }
            MlpCalls::Fixed(c) => {
                norm(out);
                c
            }
            MlpCalls::Cats(c) => {
                norm(out);
                c
            }
            // The rule reads every neuron: the dense norm and gate|up (fused where it can be).
            MlpCalls::Cett(c) => {
                dense.plan_neurons(1, out);
                c
            }
        };
        calls.iter().for_each(|c| c.plan("sparse_mlp", 1, out));
        true
    }
}

fn sparse_not_enabled() -> SiftError {
    SiftError::InvalidInput("sparse decoding is not enabled on this model (enable_sparse)".into())
}

/// Active lists per layer → (index [layers, width], bitmap [layers, width], counts [layers]),
/// checked: one list per layer, ids in range, none twice, none empty.
fn pack_lists(active: &[Vec<u32>], n_layers: usize, width: usize, what: &str) -> Result<(Vec<u32>, Vec<u32>, Vec<u32>)> {
    if active.len() != n_layers {
        return Err(SiftError::InvalidInput(format!("a mask needs {n_layers} layers, not {}", active.len())));
    }
    let (mut index, mut bitmap, mut counts) = (vec![0u32; n_layers * width], vec![0u32; n_layers * width], Vec::with_capacity(n_layers));
    for (l, ids) in active.iter().enumerate() {
        if ids.is_empty() {
            return Err(SiftError::InvalidInput(format!("layer {l} of the mask has no active {what}s (every layer needs at least one)")));
        }
        for (a, &i) in ids.iter().enumerate() {
            if i as usize >= width {
                return Err(SiftError::InvalidInput(format!("{what} {i} in layer {l} is out of range (the layer has {width})")));
            }
            let bit = &mut bitmap[l * width + i as usize];
            if *bit == 1 {
                return Err(SiftError::InvalidInput(format!("{what} {i} appears twice in layer {l}")));
            }
            *bit = 1;
            index[l * width + a] = i;
        }
        counts.push(ids.len() as u32);
    }
    Ok((index, bitmap, counts))
}

/// Head ids → their query rows (head_dim each).
fn expand_heads(heads: &[Vec<u32>], head_dim: usize) -> Vec<Vec<u32>> {
    let hd = head_dim as u32;
    heads.iter().map(|ids| ids.iter().flat_map(|&h| h * hd..(h + 1) * hd).collect()).collect()
}

/// Reads active lists back (sorted); `unit` > 1 folds rows into units.
fn read_lists(ctx: &GpuContext, index: &wgpu::Buffer, counts: &wgpu::Buffer, n_layers: usize, width: usize, unit: usize) -> Result<Vec<Vec<u32>>> {
    let all = read_buffer_u32(ctx, index, 0, n_layers * width)?;
    let counts = read_buffer_u32(ctx, counts, 0, n_layers)?;
    Ok(all
        .chunks(width)
        .zip(counts)
        .map(|(l, k)| {
            let mut ids: Vec<u32> = l[..(k as usize).min(width)].iter().map(|&i| i / unit as u32).collect();
            ids.sort_unstable();
            ids.dedup();
            ids
        })
        .collect())
}
