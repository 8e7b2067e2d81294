//! The attribution pass on the GPU for up to `capacity` tokens: a forward that
//! keeps every layer's inputs and unit outputs, then the backward from the
//! targeted log-probabilities to every head and neuron output, scoring each
//! layer as soon as its gradients exist. The pass has its own KV cache, so a
//! run can start after `pos0` tokens that an earlier run left there (their
//! rows are then constants: nothing flows back into them). All bind groups
//! are built once per capacity; a run writes a few uniforms and records.

use super::transposed::Transposed;
use crate::gpu::{uniform_buffer, zeroed_buffer, GpuContext};
use crate::kernels::attention::AttentionShape;
use crate::kernels::backward::{self, attention::AttentionBackward};
use crate::kernels::linear::{LinearCall, LinearOptions};
use crate::kernels::scores::{self, ScoresCall, Units};
use crate::kernels::{embedding, rmsnorm, rope, scale_units, Call, Dispatch, DispatchTimer, Step};
use crate::model::gpu::{LayerCalls, LayerIo, ModelParams};
use crate::model::Config;

/// One layer's saved activations and gradients, [capacity, width] each, and
/// its dense KV cache.
pub(super) struct LayerBuffers {
    pub k_cache: wgpu::Buffer,
    pub v_cache: wgpu::Buffer,
    pub x_in: wgpu::Buffer,
    pub q: wgpu::Buffer,
    pub heads: wgpu::Buffer,
    pub x_mid: wgpu::Buffer,
    pub gate_up: wgpu::Buffer,
    pub neurons: wgpu::Buffer,
    pub head_grads: wgpu::Buffer,
    pub neuron_grads: wgpu::Buffer,
}

/// The model's layer forward on this pass's saved buffers, plus the unit
/// scaling an intervention inserts after the heads and after the neurons.
struct LayerForward {
    calls: LayerCalls,
    scale_heads: Call,
    scale_neurons: Call,
}

struct LayerBackward {
    down: LinearCall,
    swiglu: Call,
    gate_up: LinearCall,
    ffn_norm: Call,
    o: LinearCall,
    neuron_scores: ScoresCall,
    head_scores: ScoresCall,
    neuron_ig: ScoresCall,
    head_ig: ScoresCall,
    attention: AttentionBackward,
    rope: Call,
    q: LinearCall,
    k: LinearCall,
    v: LinearCall,
    attn_norm: Call,
}

/// Scratch and shared buffers of the pass.
pub(super) struct PassBuffers {
    pub step: wgpu::Buffer,
    pub step_one: wgpu::Buffer,
    /// Rows t >= t0 get the unit factors (scale_units, swiglu backward).
    pub scaling: wgpu::Buffer,
    /// Rows scored and the Integrated Gradients step weight.
    pub range: wgpu::Buffer,
    pub tokens: wgpu::Buffer,
    pub targets: wgpu::Buffer,
    /// [rows, 2]: log p of each row's target (f32 bits) and the target id.
    pub info: wgpu::Buffer,
    /// Per-unit factors [layers, ffn] and [layers, heads]; 1 = unchanged.
    pub neuron_factors: wgpu::Buffer,
    pub head_factors: wgpu::Buffer,
    /// Scores [slot, layer, unit].
    pub neuron_scores: wgpu::Buffer,
    pub head_scores: wgpu::Buffer,
    x: wgpu::Buffer,
    xn: wgpu::Buffer,
    x_final: wgpu::Buffer,
    x_last: wgpu::Buffer,
    dxf: wgpu::Buffer,
    dxf_last: wgpu::Buffer,
}

/// How a run ends its forward: logits of every row or of the last only.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Rows {
    All,
    Last,
}

/// Heads or MLP neurons.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum UnitKind {
    Heads,
    Neurons,
}

/// Which units the forward multiplies by their factors.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Scaled {
    None,
    /// One kind of unit in one layer (an Integrated Gradients step).
    Layer(usize, UnitKind),
    All,
}

/// A recorded step: a dispatch, or a buffer copy/clear between passes.
pub(super) enum Op<'a> {
    Run(Dispatch<'a>),
    Copy { src: &'a wgpu::Buffer, src_offset: u64, dst: &'a wgpu::Buffer, dst_offset: u64, bytes: u64 },
    Clear(&'a wgpu::Buffer),
}

pub(super) struct Pass {
    pub capacity: usize,
    pub b: PassBuffers,
    pub layers: Vec<LayerBuffers>,
    embed: Vec<Call>,
    forward: Vec<LayerForward>,
    backward: Vec<LayerBackward>,
    out_norm: Call,
    lm_all: LinearCall,
    lm_last: LinearCall,
    lsm_all: Call,
    lsm_last: Call,
    lm_t_all: LinearCall,
    lm_t_last: LinearCall,
    out_norm_backward: Call,
    dim: usize,
    // Kept for the bind groups that use them.
    _scratch: Vec<wgpu::Buffer>,
}

impl Pass {
    pub fn new(ctx: &GpuContext, c: &Config, m: &ModelParams, t: &Transposed, capacity: usize) -> Pass {
        let fam = m.family;
        let f32s = |n: usize| (n * 4) as u64;
        let buf = |name: &str, n: usize| zeroed_buffer(ctx, name, f32s(n));
        let (cap, l_count) = (capacity, c.n_layers);
        let ones = |n: usize| crate::gpu::storage_buffer(ctx, "unit factors", &vec![1.0f32; n]);
        let b = PassBuffers {
            step: uniform_buffer(ctx, "attribution step", &Step::new(cap, 0)),
            step_one: uniform_buffer(ctx, "attribution step one", &Step::new(1, 0)),
            scaling: uniform_buffer(ctx, "scaling", &[0u32; 4]),
            range: uniform_buffer(ctx, "score range", &scores::ScoreRange { t0: 0, t1: 0, ig_weight: 0.0, _pad: 0 }),
            tokens: buf("attribution tokens", cap),
            targets: buf("targets", cap),
            info: buf("target info", 2 * cap),
            neuron_factors: ones(l_count * c.ffn_dim),
            head_factors: ones(l_count * c.n_heads),
            neuron_scores: buf("neuron scores", scores::SLOTS * l_count * c.ffn_dim),
            head_scores: buf("head scores", scores::SLOTS * l_count * c.n_heads),
            x: buf("x", cap * c.dim),
            xn: buf("xn", cap * c.dim),
            x_final: buf("x final", cap * c.dim),
            x_last: buf("x last", c.dim),
            dxf: buf("d x final", cap * c.dim),
            dxf_last: buf("d x final last", c.dim),
        };
        let logits = buf("logits", cap * c.vocab_size);
        let dlogits = buf("d logits", cap * t.padded_vocab);
        let dx = buf("d x", cap * c.dim);
        let dxn = buf("d xn", cap * c.dim);
        let dgate_up = buf("d gate_up", cap * 2 * c.ffn_dim);
        let (dq, dk, dv) = (buf("dq", cap * c.q_dim()), buf("dk", cap * c.kv_dim()), buf("dv", cap * c.kv_dim()));
        let probs = buf("attention probs", c.n_heads * cap * cap);
        let dscores = buf("attention dscores", c.n_heads * cap * cap);
        let norms = buf("grad norms", cap);

        let layers: Vec<LayerBuffers> = (0..l_count)
            .map(|_| LayerBuffers {
                k_cache: buf("pass k cache", cap * c.kv_dim()),
                v_cache: buf("pass v cache", cap * c.kv_dim()),
                x_in: buf("x in", cap * c.dim),
                q: buf("q", cap * c.q_dim()),
                heads: buf("heads", cap * c.q_dim()),
                x_mid: buf("x mid", cap * c.dim),
                gate_up: buf("gate_up", cap * 2 * c.ffn_dim),
                neurons: buf("neurons", cap * c.ffn_dim),
                head_grads: buf("head grads", cap * c.q_dim()),
                neuron_grads: buf("neuron grads", cap * c.ffn_dim),
            })
            .collect();

        let plain = LinearOptions::default();
        let acc = LinearOptions { accumulate: true, ..plain };
        let lin = |w, step, x, y, o| LinearCall::with_family(ctx, w, step, x, y, o, fam);
        let rope_shape = rope::RopeShape { n_heads: c.n_heads, head_dim: c.head_dim, rot_dim: c.rot_dim, style: c.rope_style };
        let att_shape = AttentionShape { n_heads: c.n_heads, n_kv_heads: c.n_kv_heads, head_dim: c.head_dim };
        let neuron_units = Units { n_units: c.ffn_dim, unit_dim: 1 };
        let head_units = Units { n_units: c.n_heads, unit_dim: c.head_dim };
        let (s, eps) = (&b.step, c.rms_eps);

        let forward = m
            .layers
            .iter()
            .zip(&layers)
            .enumerate()
            .map(|(l, (p, lb))| {
                let io = LayerIo { x: &b.x, xn: &b.xn, q: &lb.q, heads: &lb.heads, gate_up: &lb.gate_up, neurons: &lb.neurons, k_cache: &lb.k_cache, v_cache: &lb.v_cache };
                LayerForward {
                    // Norms stay separate dispatches here, so `xn` is always written.
                    calls: LayerCalls::new(ctx, c, p, &m.rope_table, s, &io, fam, false),
                    scale_heads: scale_units::call(ctx, c.q_dim(), c.head_dim, l * c.n_heads, s, &b.scaling, &b.head_factors, &lb.heads),
                    scale_neurons: scale_units::call(ctx, c.ffn_dim, 1, l * c.ffn_dim, s, &b.scaling, &b.neuron_factors, &lb.neurons),
                }
            })
            .collect();

        let backward = m
            .layers
            .iter()
            .zip(&layers)
            .zip(&t.layers)
            .enumerate()
            .map(|(l, ((p, lb), tl))| {
                let score = |units, integrated, x, g, out| scores::call(ctx, units, l, l_count, integrated, &b.range, x, g, &norms, out);
                let att_bufs = backward::attention::AttentionBuffers {
                    q: &lb.q,
                    k: &lb.k_cache,
                    v: &lb.v_cache,
                    da: &lb.head_grads,
                    probs: &probs,
                    dscores: &dscores,
                    dq: &dq,
                    dk: &dk,
                    dv: &dv,
                };
                LayerBackward {
                    down: lin(&tl.w_down, s, &dx, &lb.neuron_grads, plain),
                    swiglu: backward::swiglu::call(ctx, c.ffn_dim, l * c.ffn_dim, s, &b.scaling, &lb.gate_up, &lb.neuron_grads, &b.neuron_factors, &dgate_up),
                    gate_up: lin(&tl.w_gate_up, s, &dgate_up, &dxn, plain),
                    ffn_norm: backward::rmsnorm::call(ctx, c.dim, eps, true, s, &lb.x_mid, &p.ffn_norm, &dxn, &dx),
                    o: lin(&tl.wo, s, &dx, &lb.head_grads, plain),
                    neuron_scores: score(neuron_units, false, &lb.neurons, &lb.neuron_grads, &b.neuron_scores),
                    head_scores: score(head_units, false, &lb.heads, &lb.head_grads, &b.head_scores),
                    neuron_ig: score(neuron_units, true, &lb.neurons, &lb.neuron_grads, &b.neuron_scores),
                    head_ig: score(head_units, true, &lb.heads, &lb.head_grads, &b.head_scores),
                    attention: backward::attention::call(ctx, att_shape, s, &att_bufs),
                    rope: rope::call_inverse(ctx, &rope_shape, &dq, &rope::Keys { buffer: &dk, n_heads: c.n_kv_heads, rows_from_pos: false }, s, &m.rope_table),
                    q: lin(&tl.wq, s, &dq, &dxn, plain),
                    k: lin(&tl.wk, s, &dk, &dxn, acc),
                    v: lin(&tl.wv, s, &dv, &dxn, acc),
                    attn_norm: backward::rmsnorm::call(ctx, c.dim, eps, true, s, &lb.x_in, &p.attn_norm, &dxn, &dx),
                }
            })
            .collect();

        let one = &b.step_one;
        let (v, pv) = (c.vocab_size, t.padded_vocab);
        Pass {
            capacity,
            embed: embedding::calls(ctx, &m.embed, s, &b.tokens, &b.x),
            forward,
            backward,
            out_norm: rmsnorm::call(ctx, c.dim, eps, s, &b.x, &m.out_norm, &b.xn),
            lm_all: lin(m.lm_head(), s, &b.xn, &logits, plain),
            lm_last: lin(m.lm_head(), one, &b.x_last, &logits, plain),
            lsm_all: backward::log_softmax::call(ctx, v, pv, s, &logits, &b.targets, &dlogits, &b.info),
            lsm_last: backward::log_softmax::call(ctx, v, pv, one, &logits, &b.targets, &dlogits, &b.info),
            lm_t_all: lin(&t.lm_head, s, &dlogits, &b.dxf, plain),
            lm_t_last: lin(&t.lm_head, one, &dlogits, &b.dxf_last, plain),
            out_norm_backward: backward::rmsnorm::call(ctx, c.dim, eps, false, s, &b.x_final, &m.out_norm, &b.dxf, &dx),
            dim: c.dim,
            b,
            layers,
            _scratch: vec![logits, dlogits, dx, dxn, dgate_up, dq, dk, dv, probs, dscores, norms],
        }
    }

    /// The forward over `n` tokens after `pos0` cached ones, from layer
    /// `from` (0: from the embedding; otherwise from that layer's saved
    /// input), with the log-softmax backward at its end (it also yields the
    /// targeted log-probabilities).
    pub fn plan_forward<'a>(&'a self, n: u32, pos0: usize, from: usize, rows: Rows, scaled: Scaled, ops: &mut Vec<Op<'a>>) {
        let row_bytes = (self.dim * 4) as u64;
        let rows_bytes = n as u64 * row_bytes;
        let copy = |src, dst, ops: &mut Vec<Op<'a>>| ops.push(Op::Copy { src, src_offset: 0, dst, dst_offset: 0, bytes: rows_bytes });
        let mut run = Vec::new();
        if from == 0 {
            self.embed.iter().for_each(|e| e.plan("embedding", n, &mut run));
        } else {
            copy(&self.layers[from].x_in, &self.b.x, ops);
        }
        flush(&mut run, ops);
        for (l, (f, lb)) in self.forward.iter().zip(&self.layers).enumerate().skip(from) {
            let scale = |kind| scaled == Scaled::All || scaled == Scaled::Layer(l, kind);
            let lc = &f.calls;
            copy(&self.b.x, &lb.x_in, ops);
            lc.plan_attention(n, pos0, &mut run);
            if scale(UnitKind::Heads) {
                f.scale_heads.plan("scale_units", n, &mut run);
            }
            lc.o.plan("o", n, &mut run);
            flush(&mut run, ops);
            copy(&self.b.x, &lb.x_mid, ops);
            lc.plan_neurons(n, &mut run);
            if scale(UnitKind::Neurons) {
                f.scale_neurons.plan("scale_units", n, &mut run);
            }
            lc.down.linear.plan("down", n, &mut run);
            flush(&mut run, ops);
        }
        copy(&self.b.x, &self.b.x_final, ops);
        self.out_norm.plan("rmsnorm", n, &mut run);
        match rows {
            Rows::All => {
                self.lm_all.plan("lm_head", n, &mut run);
                self.lsm_all.plan("log_softmax_backward", n, &mut run);
            }
            Rows::Last => {
                flush(&mut run, ops);
                ops.push(Op::Copy { src: &self.b.xn, src_offset: (n as u64 - 1) * row_bytes, dst: &self.b.x_last, dst_offset: 0, bytes: row_bytes });
                self.lm_last.plan("lm_head", 1, &mut run);
                self.lsm_last.plan("log_softmax_backward", 1, &mut run);
            }
        }
        flush(&mut run, ops);
    }

    /// Copies the first `tokens` rows of this pass's KV cache into the
    /// model's, so decoding can continue after the attributed prompt.
    pub fn plan_cache_copy<'a>(&'a self, model: &'a ModelParams, tokens: usize, kv_dim: usize, ops: &mut Vec<Op<'a>>) {
        let bytes = (tokens * kv_dim * 4) as u64;
        for (lb, p) in self.layers.iter().zip(&model.layers) {
            ops.push(Op::Copy { src: &lb.k_cache, src_offset: 0, dst: &p.k_cache, dst_offset: 0, bytes });
            ops.push(Op::Copy { src: &lb.v_cache, src_offset: 0, dst: &p.v_cache, dst_offset: 0, bytes });
        }
    }

    /// The backward after [`Pass::plan_forward`], down to layer `stop`'s head
    /// gradients. With `integrated`, it scores only that kind of unit of layer
    /// `stop`, as one Integrated Gradients step; otherwise every layer gets
    /// the gradient metrics.
    pub fn plan_backward<'a>(&'a self, n: u32, stop: usize, rows: Rows, integrated: Option<UnitKind>, ops: &mut Vec<Op<'a>>) {
        let row_bytes = (self.dim * 4) as u64;
        let mut run = Vec::new();
        match rows {
            Rows::All => self.lm_t_all.plan("lm_head_backward", n, &mut run),
            Rows::Last => {
                self.lm_t_last.plan("lm_head_backward", 1, &mut run);
                flush(&mut run, ops);
                ops.push(Op::Clear(&self.b.dxf));
                ops.push(Op::Copy { src: &self.b.dxf_last, src_offset: 0, dst: &self.b.dxf, dst_offset: (n as u64 - 1) * row_bytes, bytes: row_bytes });
            }
        }
        self.out_norm_backward.plan("rmsnorm_backward", n, &mut run);
        for (l, bw) in self.backward.iter().enumerate().skip(stop).rev() {
            bw.down.plan("down_backward", n, &mut run);
            bw.swiglu.plan("swiglu_backward", n, &mut run);
            bw.gate_up.plan("gate_up_backward", n, &mut run);
            bw.ffn_norm.plan("rmsnorm_backward", n, &mut run);
            bw.o.plan("o_backward", n, &mut run);
            let scored: &[&ScoresCall] = match integrated {
                None => &[&bw.neuron_scores, &bw.head_scores],
                Some(_) if l != stop => &[],
                Some(UnitKind::Neurons) => &[&bw.neuron_ig],
                Some(UnitKind::Heads) => &[&bw.head_ig],
            };
            for sc in scored {
                sc.norm.plan("scores", n, &mut run);
                sc.scores.plan("scores", n, &mut run);
            }
            if l == stop {
                break;
            }
            bw.attention.plan(n, &mut run);
            bw.rope.plan("rope_backward", n, &mut run);
            bw.q.plan("qkv_backward", n, &mut run);
            bw.k.plan("qkv_backward", n, &mut run);
            bw.v.plan("qkv_backward", n, &mut run);
            bw.attn_norm.plan("rmsnorm_backward", n, &mut run);
        }
        flush(&mut run, ops);
    }
}

fn flush<'a>(run: &mut Vec<Dispatch<'a>>, ops: &mut Vec<Op<'a>>) {
    ops.extend(run.drain(..).map(Op::Run));
}

/// Like [`submit`], each dispatch in a timed pass of its own: GPU seconds per
/// kernel role (None without timestamp queries).
pub(super) fn submit_timed(ctx: &GpuContext, ops: &[Op]) -> crate::Result<Option<Vec<(&'static str, f64)>>> {
    let runs = ops.iter().filter(|o| matches!(o, Op::Run(_))).count();
    let Some(mut timer) = DispatchTimer::new(ctx, runs) else {
        submit(ctx, ops);
        return Ok(None);
    };
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    for op in ops {
        match op {
            Op::Run(d) => timer.record(&mut enc, d),
            Op::Copy { src, src_offset, dst, dst_offset, bytes } => enc.copy_buffer_to_buffer(src, *src_offset, dst, *dst_offset, *bytes),
            Op::Clear(b) => enc.clear_buffer(b, 0, None),
        }
    }
    timer.finish(ctx, enc).map(Some)
}

/// Records `ops` (consecutive dispatches in one compute pass) and submits.
pub(super) fn submit(ctx: &GpuContext, ops: &[Op]) {
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    let mut i = 0;
    while i < ops.len() {
        match &ops[i] {
            Op::Run(_) => {
                let mut pass = enc.begin_compute_pass(&Default::default());
                while let Some(Op::Run(d)) = ops.get(i) {
                    d.record(&mut pass);
                    i += 1;
                }
                continue;
            }
            Op::Copy { src, src_offset, dst, dst_offset, bytes } => enc.copy_buffer_to_buffer(src, *src_offset, dst, *dst_offset, *bytes),
            Op::Clear(b) => enc.clear_buffer(b, 0, None),
        }
        i += 1;
    }
    ctx.queue.submit([enc.finish()]);
}
