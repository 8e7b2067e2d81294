//! Attribution: how much each MLP neuron and attention head contributes to a
//! target log-probability F, from one GPU backward pass (DESIGN.md, "Sparse
//! activation: definitions"). The scores stay on the GPU for the sparse
//! execution and the app; reading them back is only for output.
//!
//! `pass` records the forward that keeps activations and the backward that
//! scores each layer, `transposed` holds the weight copies the backward
//! multiplies by, and `cpu` is the plain-Rust reference the tests check against.

pub mod cpu;
mod ig_memo;
mod pass;
pub(crate) mod transposed;

use crate::error::{Result, SiftError};
use crate::gpu::{read_buffer_f32, read_buffer_u32, zeroed_buffer, GpuContext};
use crate::kernels::backward::log_softmax::{GREEDY, NONE};
use crate::kernels::scores::{self, ScoreRange};
use crate::kernels::{attention, Step};
use crate::model::{Config, GpuModel, Weights};
use ig_memo::{IgKey, IgMemo, IgScores};
use pass::{Op, Pass, Rows, Scaled, UnitKind};
use std::sync::Arc;
use transposed::Transposed;

/// Attribution metrics (DESIGN.md). For neuron i with output x_i and gradient
/// g_i = dF/dx_i; heads use the L2 norm over the head for |x| and the mean over
/// the head of g*x for GxO.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Metric {
    /// |x_i|
    Magnitude,
    /// g_i x_i: about the drop in F when the unit is removed.
    Gxo,
    /// |g_i x_i|
    Snip,
    /// (g_i x_i)^2
    Fisher,
    /// x_i times the gradient averaged while the unit's layer is scaled from 0 to 1.
    IntegratedGradients,
    /// g_i x_i + 0.5 |x_i| ||g_layer||_2: GxO plus half the bound on the
    /// error that removing other units of the layer adds (the paper's correction).
    CorrectedGxo,
}

impl Metric {
    pub const ALL: [Metric; 6] = [Metric::Magnitude, Metric::Gxo, Metric::Snip, Metric::Fisher, Metric::IntegratedGradients, Metric::CorrectedGxo];

    pub fn name(self) -> &'static str {
        match self {
            Metric::Magnitude => "magnitude",
            Metric::Gxo => "gxo",
            Metric::Snip => "snip",
            Metric::Fisher => "fisher",
            Metric::IntegratedGradients => "ig",
            Metric::CorrectedGxo => "corrected-gxo",
        }
    }

    pub fn parse(s: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.name() == s)
    }

    fn slot(self) -> usize {
        match self {
            Metric::Magnitude => scores::SLOT_MAGNITUDE,
            Metric::Gxo => scores::SLOT_GXO,
            Metric::Snip => scores::SLOT_SNIP,
            Metric::Fisher => scores::SLOT_FISHER,
            Metric::IntegratedGradients => scores::SLOT_INTEGRATED_GRADIENTS,
            Metric::CorrectedGxo => scores::SLOT_CORRECTED_GXO,
        }
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What F is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// log p of the model's own greedy next token after the prompt (the paper's F).
    Next,
    /// log p of this token as the next one after the prompt.
    Token(u32),
    /// The sum of the prompt's next-token log-probabilities, log p(t_{i+1} | t_0..t_i).
    Prompt,
    /// A sum of log p(token) at chosen positions: (position, token) predicted there.
    Terms(Vec<(usize, u32)>),
}

/// Which tokens' unit outputs are scored (their per-token scores summed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Positions {
    /// The last token only: the units that produce the next token (per-token masks).
    Last,
    /// Every prompt token (prompt-level masks).
    All,
}

#[derive(Clone, Debug, Default)]
pub struct AttributeOptions {
    /// Default: `Last` for `Next`/`Token`, `All` for `Prompt`/`Terms`.
    pub positions: Option<Positions>,
    /// Integrated Gradients steps; None skips IG (it costs 2 * `steps`
    /// partial passes per layer: heads and neurons are scaled apart).
    pub ig_steps: Option<usize>,
}

/// Integrated Gradients steps when none are given.
pub const DEFAULT_IG_STEPS: usize = 20;

/// Scores of every neuron and head, on the GPU: buffers [slot, layer, unit]
/// with one slot per metric.
pub struct Scores {
    pub n_layers: usize,
    pub n_neurons: usize,
    pub n_heads: usize,
    pub tokens: usize,
    pub positions: Positions,
    /// F for the attributed prompt.
    pub log_prob: f32,
    /// The token F scores at the last position, when it is a single one
    /// (`Next` resolves to the greedy token).
    pub target_token: Option<u32>,
    pub has_integrated_gradients: bool,
    pub neurons: wgpu::Buffer,
    pub heads: wgpu::Buffer,
}

impl Scores {
    /// Byte offset of `metric`'s [layers, n_neurons] block in `neurons`.
    pub fn neuron_offset(&self, metric: Metric) -> u64 {
        (metric.slot() * self.n_layers * self.n_neurons * 4) as u64
    }

    /// Byte offset of `metric`'s [layers, n_heads] block in `heads`.
    pub fn head_offset(&self, metric: Metric) -> u64 {
        (metric.slot() * self.n_layers * self.n_heads * 4) as u64
    }

    pub(crate) fn check(&self, metric: Metric) -> Result<()> {
        if metric == Metric::IntegratedGradients && !self.has_integrated_gradients {
            return Err(SiftError::InvalidInput("integrated gradients were not computed for these scores (ask for ig steps)".into()));
        }
        Ok(())
    }

    /// Per layer, one score per neuron (a readback: for output and tests).
    pub fn read_neurons(&self, ctx: &GpuContext, metric: Metric) -> Result<Vec<Vec<f32>>> {
        self.check(metric)?;
        let n = self.n_layers * self.n_neurons;
        let flat = read_buffer_f32(ctx, &self.neurons, metric.slot() * n, n)?;
        Ok(flat.chunks(self.n_neurons).map(<[f32]>::to_vec).collect())
    }

    /// Per layer, one score per head.
    pub fn read_heads(&self, ctx: &GpuContext, metric: Metric) -> Result<Vec<Vec<f32>>> {
        self.check(metric)?;
        let n = self.n_layers * self.n_heads;
        let flat = read_buffer_f32(ctx, &self.heads, metric.slot() * n, n)?;
        Ok(flat.chunks(self.n_heads).map(<[f32]>::to_vec).collect())
    }
}

/// One layer's unit outputs and their gradients from the last attribution,
/// [tokens, width] each.
pub struct LayerTrace {
    pub heads: Vec<f32>,
    pub head_grads: Vec<f32>,
    pub neurons: Vec<f32>,
    pub neuron_grads: Vec<f32>,
}

/// Per-unit multipliers for a forward: 0 deactivates a unit. Applied to tokens
/// from `from_token` on.
#[derive(Clone, Debug)]
pub struct UnitFactors {
    /// [layers * ffn_dim]
    pub neurons: Vec<f32>,
    /// [layers * n_heads]
    pub heads: Vec<f32>,
    pub from_token: usize,
}

impl UnitFactors {
    pub fn ones(c: &Config) -> UnitFactors {
        UnitFactors { neurons: vec![1.0; c.n_layers * c.ffn_dim], heads: vec![1.0; c.n_layers * c.n_heads], from_token: 0 }
    }
}

/// Runs attribution passes for one [`GpuModel`]. Holds transposed weights
/// (one more copy of the matrices) and buffers for the longest prompt so far.
pub struct Attributor {
    ctx: Arc<GpuContext>,
    config: Config,
    model_id: u64,
    transposed: Transposed,
    pass: Option<Pass>,
    /// Rows the last pass ran (the new tokens only, when it reused cached ones).
    last_rows: usize,
    /// Whether the last pass ran backward (not [`Attributor::trace_forward`]).
    last_backward: bool,
    /// The tokens whose dense keys and values the pass's KV cache holds.
    cached: Vec<u32>,
    ig_memo: IgMemo,
    /// Integrated Gradients steps of [`Attributor::options_for`].
    ig_steps: usize,
    /// Whether passes time each dispatch ([`Attributor::set_profiling`]),
    /// and the last timed pass's GPU seconds per kernel role.
    profiling: bool,
    last_profile: Option<Vec<(&'static str, f64)>>,
}

/// The rows a target touches, resolved against a prompt.
struct ResolvedTarget {
    targets: Vec<u32>,
    rows: Rows,
}

impl Attributor {
    pub fn new(model: &GpuModel, weights: &Weights) -> Result<Attributor> {
        let c = &model.config;
        if !c.head_dim.is_multiple_of(4) || c.head_dim > attention::MAX_HEAD_DIM {
            return Err(SiftError::InvalidInput(format!("attribution needs a head dimension that is a multiple of 4 up to 256, not {}", c.head_dim)));
        }
        let interleaved = model.params.family == crate::kernels::KernelFamily::RowPerInvocation;
        let transposed = Transposed::upload(&model.ctx, c, weights, interleaved);
        Ok(Attributor { ctx: model.ctx.clone(), config: c.clone(), model_id: model.id, transposed, pass: None, last_rows: 0, last_backward: false, cached: Vec::new(), ig_memo: IgMemo::default(), ig_steps: DEFAULT_IG_STEPS, profiling: false, last_profile: None })
    }

    /// Bytes of the transposed weights on the GPU.
    pub fn weight_bytes(&self) -> u64 {
        self.transposed.bytes
    }

    /// The longest prompt one pass takes: bounded by the KV cache, by the
    /// binding limit on logits and on the [heads, T, T] attention scratch, and
    /// on software adapters by the loop budget of the scoring kernel.
    pub fn max_tokens(&self, model: &GpuModel) -> usize {
        let c = &self.config;
        let bind = self.ctx.max_binding_bytes() as usize;
        let by_logits = bind / (4 * self.transposed.padded_vocab);
        let by_probs = ((bind / (4 * c.n_heads)) as f64).sqrt() as usize;
        let mut n = model.max_ctx.min(by_logits).min(by_probs).min(1024);
        if self.ctx.is_software() {
            n = n.min((attention::MAX_LOOP_ITERATIONS - 1024) / c.head_dim);
        }
        n
    }

    fn check_model(&self, model: &GpuModel) -> Result<()> {
        if model.id != self.model_id {
            return Err(SiftError::InvalidInput("this attributor was made for another model".into()));
        }
        Ok(())
    }

    fn resolve(&self, model: &GpuModel, tokens: &[u32], target: &Target) -> Result<ResolvedTarget> {
        let (n, vocab) = (tokens.len(), self.config.vocab_size);
        if n == 0 {
            return Err(SiftError::InvalidInput("attribution needs a non-empty prompt".into()));
        }
        let max = self.max_tokens(model);
        if n > max {
            return Err(SiftError::InvalidInput(format!("a {n}-token prompt is longer than the {max} tokens attribution supports here")));
        }
        let check_token = |t: u32| {
            if t as usize >= vocab {
                Err(SiftError::InvalidInput(format!("token id {t} is outside the vocabulary (size {vocab})")))
            } else {
                Ok(t)
            }
        };
        for &t in tokens {
            check_token(t)?;
        }
        let mut targets = vec![NONE; n];
        let rows = match target {
            Target::Next => {
                targets[n - 1] = GREEDY;
                Rows::Last
            }
            Target::Token(t) => {
                targets[n - 1] = check_token(*t)?;
                Rows::Last
            }
            Target::Prompt => {
                if n < 2 {
                    return Err(SiftError::InvalidInput("the prompt target needs at least two tokens".into()));
                }
                targets[..n - 1].copy_from_slice(&tokens[1..]);
                Rows::All
            }
            Target::Terms(terms) => {
                if terms.is_empty() {
                    return Err(SiftError::InvalidInput("no target terms given".into()));
                }
                for &(pos, t) in terms {
                    if pos >= n {
                        return Err(SiftError::InvalidInput(format!("target position {pos} is outside the {n}-token prompt")));
                    }
                    if targets[pos] != NONE {
                        return Err(SiftError::InvalidInput(format!("position {pos} is targeted twice")));
                    }
                    targets[pos] = check_token(t)?;
                }
                if terms.iter().all(|&(p, _)| p == n - 1) { Rows::Last } else { Rows::All }
            }
        };
        Ok(ResolvedTarget { targets, rows })
    }

    /// Forgets the tokens the last pass ran, so the next one runs every token,
    /// and the Integrated Gradients already computed (a benchmark of a full
    /// pass, for one).
    pub fn forget_cached_tokens(&mut self) {
        self.cached.clear();
        self.ig_memo = IgMemo::default();
    }

    /// Sets the Integrated Gradients steps of [`Attributor::options_for`]
    /// (the sparse modes use it); at least 1.
    pub fn set_ig_steps(&mut self, steps: usize) -> Result<()> {
        if steps == 0 {
            return Err(SiftError::InvalidInput("integrated gradients need at least one step".into()));
        }
        self.ig_steps = steps;
        Ok(())
    }

    /// Scores `positions`, computing Integrated Gradients (this attributor's
    /// steps) only when `metric` needs them.
    pub fn options_for(&self, metric: Metric, positions: Positions) -> AttributeOptions {
        AttributeOptions { positions: Some(positions), ig_steps: (metric == Metric::IntegratedGradients).then_some(self.ig_steps) }
    }

    /// Builds a pass for `n` tokens unless the current one is large enough
    /// (a new pass starts with an empty cache).
    fn ensure_pass(&mut self, model: &GpuModel, n: usize) {
        if self.pass.as_ref().is_none_or(|p| p.capacity < n) {
            let capacity = n.next_power_of_two().max(16).min(self.max_tokens(model));
            self.pass = Some(Pass::new(&self.ctx, &self.config, &model.params, &self.transposed, capacity));
            self.cached.clear();
        }
    }

    /// Writes this run's inputs: the rows of `tokens` after the first `pos0`.
    fn prepare(&mut self, model: &GpuModel, tokens: &[u32], pos0: usize, resolved: &ResolvedTarget, factors: &UnitFactors) -> Result<()> {
        let n = tokens.len();
        self.ensure_pass(model, n);
        let c = &self.config;
        if factors.neurons.len() != c.n_layers * c.ffn_dim || factors.heads.len() != c.n_layers * c.n_heads {
            return Err(SiftError::InvalidInput(format!(
                "unit factors must cover {} layers of {} neurons and {} heads",
                c.n_layers, c.ffn_dim, c.n_heads
            )));
        }
        let b = &self.pass.as_ref().expect("built above").b;
        let q = &self.ctx.queue;
        q.write_buffer(&b.step, 0, bytemuck::bytes_of(&Step::new(n - pos0, pos0)));
        q.write_buffer(&b.tokens, 0, bytemuck::cast_slice(&tokens[pos0..]));
        let target_rows: &[u32] = if resolved.rows == Rows::Last { &resolved.targets[n - 1..] } else { &resolved.targets[pos0..] };
        q.write_buffer(&b.targets, 0, bytemuck::cast_slice(target_rows));
        q.write_buffer(&b.scaling, 0, bytemuck::cast_slice(&[factors.from_token as u32, 0, 0, 0]));
        q.write_buffer(&b.neuron_factors, 0, bytemuck::cast_slice(&factors.neurons));
        q.write_buffer(&b.head_factors, 0, bytemuck::cast_slice(&factors.heads));
        Ok(())
    }

    /// Sum of the target log-probabilities and the last row's target id.
    fn read_target(&self, n: usize, rows: Rows) -> Result<(f32, u32)> {
        let b = &self.pass.as_ref().expect("a pass ran").b;
        let count = if rows == Rows::Last { 1 } else { n };
        let info = read_buffer_u32(&self.ctx, &b.info, 0, 2 * count)?;
        let f = info.chunks(2).map(|r| f32::from_bits(r[0]) as f64).sum::<f64>() as f32;
        Ok((f, info[2 * count - 1]))
    }

    /// With `on`, each later pass's forward and backward (not Integrated
    /// Gradients' steps) times every dispatch, for [`Attributor::last_profile`];
    /// a pass takes longer so.
    pub fn set_profiling(&mut self, on: bool) {
        self.profiling = on;
    }

    /// GPU seconds per kernel role of the last timed pass (None before one,
    /// or where the adapter has no timestamp queries).
    pub fn last_profile(&self) -> Option<&[(&'static str, f64)]> {
        self.last_profile.as_deref()
    }

    /// Attributes F (`target`) over `tokens`: the model's KV cache then holds
    /// the prompt (dense), so decoding can continue from it.
    ///
    /// When only the last token is scored (`Positions::Last`, a `Next` or
    /// `Token` target, no Integrated Gradients), tokens that an earlier call
    /// already ran are not run again: their keys and values stay in the pass's
    /// cache and only the new ones go forward and back. The scores are the
    /// same, since no earlier token depends on a later one. This makes the
    /// oracle protocol one token per step instead of the whole sequence.
    pub fn attribute(&mut self, model: &mut GpuModel, tokens: &[u32], target: &Target, opts: &AttributeOptions) -> Result<Scores> {
        self.attribute_with_progress(model, tokens, target, opts, &mut |_, _| {})
    }

    /// Like [`Attributor::attribute`], calling `progress(done, total)` after
    /// each Integrated Gradients layer (the long part).
    pub fn attribute_with_progress(
        &mut self,
        model: &mut GpuModel,
        tokens: &[u32],
        target: &Target,
        opts: &AttributeOptions,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Scores> {
        self.check_model(model)?;
        let resolved = self.resolve(model, tokens, target)?;
        if opts.ig_steps == Some(0) {
            return Err(SiftError::InvalidInput("integrated gradients need at least one step".into()));
        }
        let c = self.config.clone();
        let positions = opts.positions.unwrap_or(if resolved.rows == Rows::Last { Positions::Last } else { Positions::All });
        let n = tokens.len();
        self.ensure_pass(model, n);
        // Integrated Gradients moves only the scored units, so one scored row
        // needs only that row too (IgRows::LastAlone).
        let reusable = positions == Positions::Last && resolved.rows == Rows::Last;
        let common = self.cached.iter().zip(tokens).take_while(|(a, b)| a == b).count();
        let pos0 = if reusable { common.min(n - 1) } else { 0 };
        self.prepare(model, tokens, pos0, &resolved, &UnitFactors::ones(&c))?;
        // Until this pass completes, its cache holds nothing reusable.
        self.cached.clear();
        let rows = n - pos0;
        let pass = self.pass.as_ref().expect("prepared");
        let t0 = if positions == Positions::Last { rows - 1 } else { 0 };
        let q = &self.ctx.queue;
        q.write_buffer(&pass.b.range, 0, bytemuck::bytes_of(&ScoreRange { t0: t0 as u32, t1: rows as u32, ig_weight: 0.0, _pad: 0 }));
        // IG accumulates into its slot: where it starts (in floats), zeroed.
        let (neuron_slot, head_slot) = (scores::SLOT_INTEGRATED_GRADIENTS * c.n_layers * c.ffn_dim, scores::SLOT_INTEGRATED_GRADIENTS * c.n_layers * c.n_heads);
        q.write_buffer(&pass.b.neuron_scores, 4 * neuron_slot as u64, &vec![0u8; 4 * c.n_layers * c.ffn_dim]);
        q.write_buffer(&pass.b.head_scores, 4 * head_slot as u64, &vec![0u8; 4 * c.n_layers * c.n_heads]);

        let mut ops = Vec::new();
        pass.plan_forward(rows as u32, pos0, 0, resolved.rows, Scaled::None, &mut ops);
        pass.plan_backward(rows as u32, 0, resolved.rows, None, &mut ops);
        if self.profiling {
            self.last_profile = pass::submit_timed(&self.ctx, &ops)?;
        } else {
            pass::submit(&self.ctx, &ops);
        }
        let (log_prob, last_target) = self.read_target(rows, resolved.rows)?;

        // Rows the layer buffers hold for read_trace.
        let mut traced_rows = rows;
        if let Some(steps) = opts.ig_steps {
            let key = IgKey { tokens: tokens.to_vec(), targets: resolved.targets.clone(), last_position: positions == Positions::Last, steps };
            if let Some(memo) = self.ig_memo.get(&key) {
                q.write_buffer(&pass.b.neuron_scores, 4 * neuron_slot as u64, bytemuck::cast_slice(&memo.neurons));
                q.write_buffer(&pass.b.head_scores, 4 * head_slot as u64, bytemuck::cast_slice(&memo.heads));
                progress(c.n_layers, c.n_layers);
            } else {
                let ig_rows = if reusable { IgRows::LastAlone(n - 1, tokens[n - 1]) } else { IgRows::Scored { rows, pos0, t0 } };
                if reusable {
                    traced_rows = 1;
                }
                integrated_gradients(&self.ctx, &c, pass, ig_rows, resolved.rows, steps, progress);
                let neurons = read_buffer_f32(&self.ctx, &pass.b.neuron_scores, neuron_slot, c.n_layers * c.ffn_dim)?;
                let heads = read_buffer_f32(&self.ctx, &pass.b.head_scores, head_slot, c.n_layers * c.n_heads)?;
                self.ig_memo.insert(key, IgScores { neurons, heads });
            }
        }

        // Copy the scores out, so the next pass does not overwrite them, and
        // the dense keys and values into the model's cache.
        let neurons = zeroed_buffer(&self.ctx, "neuron scores", (scores::SLOTS * c.n_layers * c.ffn_dim * 4) as u64);
        let heads = zeroed_buffer(&self.ctx, "head scores", (scores::SLOTS * c.n_layers * c.n_heads * 4) as u64);
        let mut copy = vec![
            Op::Copy { src: &pass.b.neuron_scores, src_offset: 0, dst: &neurons, dst_offset: 0, bytes: neurons.size() },
            Op::Copy { src: &pass.b.head_scores, src_offset: 0, dst: &heads, dst_offset: 0, bytes: heads.size() },
        ];
        pass.plan_cache_copy(&model.params, n, c.kv_dim(), &mut copy);
        pass::submit(&self.ctx, &copy);
        model.set_position(n);
        self.last_rows = traced_rows;
        self.last_backward = true;
        self.cached = tokens.to_vec();
        let single = resolved.rows == Rows::Last;
        Ok(Scores {
            n_layers: c.n_layers,
            n_neurons: c.ffn_dim,
            n_heads: c.n_heads,
            tokens: n,
            positions,
            log_prob,
            target_token: single.then_some(last_target),
            has_integrated_gradients: opts.ig_steps.is_some(),
            neurons,
            heads,
        })
    }

    /// F for `target` with units multiplied by `factors` (0 removes a unit):
    /// a forward only. Leaves the KV cache holding the (scaled) prompt.
    pub fn log_prob(&mut self, model: &mut GpuModel, tokens: &[u32], target: &Target, factors: &UnitFactors) -> Result<f32> {
        self.check_model(model)?;
        let resolved = self.resolve(model, tokens, target)?;
        self.prepare(model, tokens, 0, &resolved, factors)?;
        // The scaled keys and values are not the dense ones.
        self.cached.clear();
        let pass = self.pass.as_ref().expect("prepared");
        let mut ops = Vec::new();
        pass.plan_forward(tokens.len() as u32, 0, 0, resolved.rows, Scaled::All, &mut ops);
        pass.plan_cache_copy(&model.params, tokens.len(), self.config.kv_dim(), &mut ops);
        pass::submit(&self.ctx, &ops);
        model.set_position(tokens.len());
        Ok(self.read_target(tokens.len(), resolved.rows)?.0)
    }

    /// Runs only the pass's forward, over every one of `tokens` (no cached
    /// prefix reused, no backward), so that [`Attributor::read_trace`] gives
    /// every row's unit outputs (and no gradients): what calibration reads,
    /// at the cost of a forward.
    pub fn trace_forward(&mut self, model: &mut GpuModel, tokens: &[u32]) -> Result<()> {
        self.check_model(model)?;
        let resolved = self.resolve(model, tokens, &Target::Next)?;
        self.prepare(model, tokens, 0, &resolved, &UnitFactors::ones(&self.config))?;
        // The pass's cache now holds these tokens' keys and values, but no
        // target or scores a later reuse could rely on.
        self.cached.clear();
        let pass = self.pass.as_ref().expect("prepared");
        let mut ops = Vec::new();
        pass.plan_forward(tokens.len() as u32, 0, 0, resolved.rows, Scaled::None, &mut ops);
        pass::submit(&self.ctx, &ops);
        self.last_rows = tokens.len();
        self.last_backward = false;
        Ok(())
    }

    /// Layer `layer`'s unit outputs and gradients from the last attribution,
    /// for the rows it ran: every token, or only the new ones when it reused
    /// cached tokens (see [`Attributor::attribute`]; [`Attributor::trace_forward`]
    /// runs them all, without gradients), or only the last when
    /// its Integrated Gradients steps ran that row alone (each layer's last
    /// step, at alpha = 1, leaves its dense outputs and gradients).
    pub fn read_trace(&self, layer: usize) -> Result<LayerTrace> {
        let (lb, n) = self.traced_layer(layer)?;
        let c = &self.config;
        let read = |b: &wgpu::Buffer, w: usize| read_buffer_f32(&self.ctx, b, 0, n * w);
        // After trace_forward there are no gradients: empty, not stale.
        let grads = |b: &wgpu::Buffer, w: usize| if self.last_backward { read(b, w) } else { Ok(Vec::new()) };
        Ok(LayerTrace {
            heads: read(&lb.heads, c.q_dim())?,
            head_grads: grads(&lb.head_grads, c.q_dim())?,
            neurons: read(&lb.neurons, c.ffn_dim)?,
            neuron_grads: grads(&lb.neuron_grads, c.ffn_dim)?,
        })
    }

    /// Layer `layer`'s buffers in the last attribution, and the rows it ran.
    fn traced_layer(&self, layer: usize) -> Result<(&pass::LayerBuffers, usize)> {
        let Some(pass) = &self.pass else {
            return Err(SiftError::InvalidInput("no attribution has run yet".into()));
        };
        let lb = pass.layers.get(layer).ok_or_else(|| SiftError::InvalidInput(format!("layer {layer} does not exist")))?;
        Ok((lb, self.last_rows))
    }

    /// Layer `layer`'s residual stream in the last attribution, before its
    /// attention and before its MLP: ([T, dim], [T, dim]).
    pub fn read_residuals(&self, layer: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        let (lb, n) = self.traced_layer(layer)?;
        let d = self.config.dim;
        Ok((read_buffer_f32(&self.ctx, &lb.x_in, 0, n * d)?, read_buffer_f32(&self.ctx, &lb.x_mid, 0, n * d)?))
    }

    /// Layer `layer`'s gate and up pre-activations from the last attribution,
    /// [rows, gate (ffn) | up (ffn)], for the rows [`Attributor::read_trace`] gives.
    pub fn read_gate_up(&self, layer: usize) -> Result<Vec<f32>> {
        let (lb, n) = self.traced_layer(layer)?;
        read_buffer_f32(&self.ctx, &lb.gate_up, 0, n * 2 * self.config.ffn_dim)
    }
}

/// The rows Integrated Gradients steps run.
#[derive(Clone, Copy)]
enum IgRows {
    /// Only the last row is scored and targeted: nothing before it depends on
    /// it, so each step runs that row (position, token) alone on the cached
    /// keys and values.
    LastAlone(usize, u32),
    /// The pass's `rows` after `pos0`, scaling rows `t0..` (the scored ones).
    Scored { rows: usize, pos0: usize, t0: usize },
}

/// Each layer's heads, then its neurons, in the scored rows, scaled from 0 to
/// 1 with everything else as is: the outputs at alpha are exactly alpha x, so
/// the step weight 1 / (steps * alpha) recovers x * mean gradient, summed into
/// the IG slots of the pass's scores.
fn integrated_gradients(ctx: &GpuContext, c: &Config, pass: &Pass, ig_rows: IgRows, target_rows: Rows, steps: usize, progress: &mut dyn FnMut(usize, usize)) {
    let q = &ctx.queue;
    // The pass starts with every factor 1 (prepare); each layer's last step
    // leaves its factors at 1 again.
    let mut factors = UnitFactors::ones(c);
    let (rows, pos0, t0) = match ig_rows {
        IgRows::LastAlone(position, token) => {
            q.write_buffer(&pass.b.step, 0, bytemuck::bytes_of(&Step::new(1, position)));
            q.write_buffer(&pass.b.tokens, 0, bytemuck::cast_slice(&[token]));
            (1, position, 0)
        }
        IgRows::Scored { rows, pos0, t0 } => (rows, pos0, t0),
    };
    q.write_buffer(&pass.b.scaling, 0, bytemuck::cast_slice(&[t0 as u32, 0, 0, 0]));
    for l in 0..c.n_layers {
        for kind in [UnitKind::Heads, UnitKind::Neurons] {
            for k in 1..=steps {
                let alpha = k as f32 / steps as f32;
                let (buffer, units, width) = match kind {
                    UnitKind::Heads => (&pass.b.head_factors, &mut factors.heads, c.n_heads),
                    UnitKind::Neurons => (&pass.b.neuron_factors, &mut factors.neurons, c.ffn_dim),
                };
                units[l * width..(l + 1) * width].fill(alpha);
                q.write_buffer(buffer, 0, bytemuck::cast_slice(units));
                let range = ScoreRange { t0: t0 as u32, t1: rows as u32, ig_weight: 1.0 / (steps as f32 * alpha), _pad: 0 };
                q.write_buffer(&pass.b.range, 0, bytemuck::bytes_of(&range));
                let mut ops = Vec::new();
                pass.plan_forward(rows as u32, pos0, l, target_rows, Scaled::Layer(l, kind), &mut ops);
                pass.plan_backward(rows as u32, l, target_rows, Some(kind), &mut ops);
                pass::submit(ctx, &ops);
            }
            // The last step (alpha = 1) left layers >= l dense again.
        }
        progress(l + 1, c.n_layers);
    }
}
