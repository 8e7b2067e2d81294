//! The dense forward pass on the GPU. All bind groups are built once; a forward
//! writes the 16-byte step uniform, records every layer's dispatches into one
//! compute pass, and reads back only the logits it was asked for.

use super::{Config, Weights};
use crate::error::{Result, SiftError};
use crate::gpu::{read_buffer_f32, storage_buffer, uniform_buffer, zeroed_buffer, GpuContext};
use crate::kernels::linear::{LinearCall, LinearOptions, Matrix};
use crate::kernels::{attention, embedding, rmsnorm, rope, swiglu, Call, Step};
use std::sync::Arc;

/// Which logits a forward returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token's row: generation.
    Last,
    /// Every token's row: perplexity and scoring.
    All,
}

struct LayerCalls {
    attn_norm: Call,
    q: LinearCall,
    k: LinearCall,
    v: LinearCall,
    rope_q: Call,
    rope_k: Call,
    attention: Call,
    o: LinearCall,
    ffn_norm: Call,
    gate: LinearCall,
    up: LinearCall,
    swiglu: Call,
    down: LinearCall,
}

/// GPU buffers that a forward fills, sized for `max_batch` tokens.
struct Activations {
    tokens: wgpu::Buffer,
    x: wgpu::Buffer,
    xn: wgpu::Buffer,
    x_last: wgpu::Buffer,
    logits: wgpu::Buffer,
}

pub struct GpuModel {
    pub ctx: Arc<GpuContext>,
    pub config: Config,
    pub max_ctx: usize,
    pub max_batch: usize,
    /// Tokens already in the KV cache.
    pos: usize,
    step_all: wgpu::Buffer,
    step_one: wgpu::Buffer,
    act: Activations,
    embed: Vec<Call>,
    layers: Vec<LayerCalls>,
    out_norm: Call,
    lm_head_all: LinearCall,
    lm_head_last: LinearCall,
    weight_bytes: u64,
    // Kept alive for the bind groups that reference them.
    _buffers: Vec<wgpu::Buffer>,
    _matrices: Vec<Matrix>,
}

impl GpuModel {
    /// Uploads weights (matrices as f16) and builds every kernel call.
    /// `max_ctx` bounds the KV cache; prompts beyond it are refused.
    pub fn new(ctx: Arc<GpuContext>, config: &Config, weights: &Weights, max_ctx: usize) -> Result<GpuModel> {
        let c = config.clone();
        if max_ctx == 0 {
            return Err(SiftError::InvalidInput("context size must be positive".into()));
        }
        let max_bind = ctx.max_binding_bytes();
        let kv_bytes = (max_ctx * c.kv_dim() * 4) as u64;
        if kv_bytes > max_bind {
            return Err(SiftError::InvalidInput(format!(
                "a {max_ctx}-token KV cache ({} MiB per layer) exceeds this adapter's {} MiB binding limit; use a smaller --ctx",
                kv_bytes >> 20,
                max_bind >> 20
            )));
        }
        // Largest batch whose logits and MLP activations fit one binding.
        let widest = c.vocab_size.max(c.ffn_dim).max(c.q_dim()) as u64 * 4;
        let max_batch = (max_bind / widest).clamp(1, 128) as usize;

        let f32_bytes = |n: usize| (n * 4) as u64;
        let b = max_batch;
        let act = Activations {
            tokens: zeroed_buffer(&ctx, "tokens", f32_bytes(b)),
            x: zeroed_buffer(&ctx, "x", f32_bytes(b * c.dim)),
            xn: zeroed_buffer(&ctx, "xn", f32_bytes(b * c.dim)),
            x_last: zeroed_buffer(&ctx, "x_last", f32_bytes(c.dim)),
            logits: zeroed_buffer(&ctx, "logits", f32_bytes(b * c.vocab_size)),
        };
        let q = zeroed_buffer(&ctx, "q", f32_bytes(b * c.q_dim()));
        let att = zeroed_buffer(&ctx, "att", f32_bytes(b * c.q_dim()));
        let gate = zeroed_buffer(&ctx, "gate", f32_bytes(b * c.ffn_dim));
        let up = zeroed_buffer(&ctx, "up", f32_bytes(b * c.ffn_dim));
        let h = zeroed_buffer(&ctx, "h", f32_bytes(b * c.ffn_dim));
        let step_all = uniform_buffer(&ctx, "step", &Step::new(0, 0));
        let step_one = uniform_buffer(&ctx, "step one", &Step::new(1, 0));
        let rope_table = storage_buffer(&ctx, "rope table", &rope::table(c.rope_theta, c.rot_dim, max_ctx));

        let mut buffers = vec![q.clone(), att.clone(), gate.clone(), up.clone(), h.clone(), rope_table.clone()];
        let mut matrices = Vec::new();
        let mut weight_bytes = 0u64;
        let mut upload = |name: &str, data: &[f32], rows: usize, cols: usize| {
            let m = Matrix::upload(&ctx, name, data, rows, cols);
            weight_bytes += m.bytes();
            m
        };

        let embed_m = upload("embed", &weights.embed, c.vocab_size, c.dim);
        let embed = embedding::calls(&ctx, &embed_m, &step_all, &act.tokens, &act.x);
        let att_shape = attention::AttentionShape { n_heads: c.n_heads, n_kv_heads: c.n_kv_heads, head_dim: c.head_dim };
        let rope_shape = |n_heads| rope::RopeShape { n_heads, head_dim: c.head_dim, rot_dim: c.rot_dim, style: c.rope_style };
        let plain = LinearOptions::default();
        let residual = LinearOptions { accumulate: true, ..plain };
        let cache_write = LinearOptions { y_row_from_pos: true, ..plain };

        let mut layers = Vec::with_capacity(c.n_layers);
        for (i, lw) in weights.layers.iter().enumerate() {
            let norm1 = storage_buffer(&ctx, "attn_norm", &lw.attn_norm);
            let norm2 = storage_buffer(&ctx, "ffn_norm", &lw.ffn_norm);
            let k_cache = zeroed_buffer(&ctx, &format!("k cache {i}"), kv_bytes);
            let v_cache = zeroed_buffer(&ctx, &format!("v cache {i}"), kv_bytes);
            let wq = upload("wq", &lw.wq, c.q_dim(), c.dim);
            let wk = upload("wk", &lw.wk, c.kv_dim(), c.dim);
            let wv = upload("wv", &lw.wv, c.kv_dim(), c.dim);
            let wo = upload("wo", &lw.wo, c.dim, c.q_dim());
            let wg = upload("w_gate", &lw.w_gate, c.ffn_dim, c.dim);
            let wu = upload("w_up", &lw.w_up, c.ffn_dim, c.dim);
            let wd = upload("w_down", &lw.w_down, c.dim, c.ffn_dim);
            layers.push(LayerCalls {
                attn_norm: rmsnorm::call(&ctx, c.dim, c.rms_eps, &step_all, &act.x, &norm1, &act.xn),
                q: LinearCall::new(&ctx, &wq, &step_all, &act.xn, &q, plain),
                k: LinearCall::new(&ctx, &wk, &step_all, &act.xn, &k_cache, cache_write),
                v: LinearCall::new(&ctx, &wv, &step_all, &act.xn, &v_cache, cache_write),
                rope_q: rope::call(&ctx, &rope_shape(c.n_heads), false, &step_all, &rope_table, &q),
                rope_k: rope::call(&ctx, &rope_shape(c.n_kv_heads), true, &step_all, &rope_table, &k_cache),
                attention: attention::call(&ctx, att_shape, &step_all, &q, &k_cache, &v_cache, &att),
                o: LinearCall::new(&ctx, &wo, &step_all, &att, &act.x, residual),
                ffn_norm: rmsnorm::call(&ctx, c.dim, c.rms_eps, &step_all, &act.x, &norm2, &act.xn),
                gate: LinearCall::new(&ctx, &wg, &step_all, &act.xn, &gate, plain),
                up: LinearCall::new(&ctx, &wu, &step_all, &act.xn, &up, plain),
                swiglu: swiglu::call(&ctx, c.ffn_dim, &step_all, &gate, &up, &h),
                down: LinearCall::new(&ctx, &wd, &step_all, &h, &act.x, residual),
            });
            buffers.extend([norm1, norm2, k_cache, v_cache]);
            matrices.extend([wq, wk, wv, wo, wg, wu, wd]);
        }
        let out_norm_w = storage_buffer(&ctx, "output_norm", &weights.out_norm);
        let out_norm = rmsnorm::call(&ctx, c.dim, c.rms_eps, &step_all, &act.x, &out_norm_w, &act.xn);
        buffers.push(out_norm_w);
        let lm_head_own = weights.lm_head.as_ref().map(|w| upload("lm_head", w, c.vocab_size, c.dim));
        let lm_head = lm_head_own.as_ref().unwrap_or(&embed_m);
        let lm_head_all = LinearCall::new(&ctx, lm_head, &step_all, &act.xn, &act.logits, plain);
        let lm_head_last = LinearCall::new(&ctx, lm_head, &step_one, &act.x_last, &act.logits, plain);
        matrices.push(embed_m);
        matrices.extend(lm_head_own);

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
            _buffers: buffers,
            _matrices: matrices,
        })
    }

    /// Tokens in the KV cache.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Forgets the cached sequence (the cache contents are simply overwritten).
    pub fn reset(&mut self) {
        self.pos = 0;
    }

    /// Bytes of weights on the GPU.
    pub fn weight_bytes(&self) -> u64 {
        self.weight_bytes
    }

    /// Appends `tokens` to the sequence. Returns logits of the last token
    /// ([vocab]) or of every token ([tokens, vocab]).
    pub fn forward(&mut self, tokens: &[u32], logits: Logits) -> Result<Vec<f32>> {
        let c = &self.config;
        if tokens.is_empty() {
            return Err(SiftError::InvalidInput("empty token sequence".into()));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= c.vocab_size) {
            return Err(SiftError::InvalidInput(format!("token id {bad} is outside the vocabulary (size {})", c.vocab_size)));
        }
        if self.pos + tokens.len() > self.max_ctx {
            return Err(SiftError::InvalidInput(format!(
                "{} tokens do not fit the context: {} already used of {} (raise --ctx, up to the model's {})",
                tokens.len(),
                self.pos,
                self.max_ctx,
                c.context_length
            )));
        }
        let mut out = Vec::with_capacity(if logits == Logits::All { tokens.len() * c.vocab_size } else { c.vocab_size });
        let chunks: Vec<&[u32]> = tokens.chunks(self.max_batch).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let last_chunk = i + 1 == chunks.len();
            let want = match logits {
                Logits::All => Some(Logits::All),
                Logits::Last if last_chunk => Some(Logits::Last),
                Logits::Last => None,
            };
            self.run_chunk(chunk, want)?;
            match want {
                Some(Logits::All) => out.extend(read_buffer_f32(&self.ctx, &self.act.logits, 0, chunk.len() * c.vocab_size)?),
                Some(Logits::Last) => out.extend(read_buffer_f32(&self.ctx, &self.act.logits, 0, c.vocab_size)?),
                None => {}
            }
            self.pos += chunk.len();
        }
        Ok(out)
    }

    fn run_chunk(&self, tokens: &[u32], logits: Option<Logits>) -> Result<()> {
        let n = tokens.len() as u32;
        let q = &self.ctx.queue;
        q.write_buffer(&self.act.tokens, 0, bytemuck::cast_slice(tokens));
        q.write_buffer(&self.step_all, 0, bytemuck::bytes_of(&Step::new(tokens.len(), self.pos)));
        q.write_buffer(&self.step_one, 0, bytemuck::bytes_of(&Step::new(1, self.pos)));
        let mut enc = self.ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            for e in &self.embed {
                e.record(&mut pass, n);
            }
            for l in &self.layers {
                l.attn_norm.record(&mut pass, n);
                l.q.record(&mut pass, n);
                l.k.record(&mut pass, n);
                l.v.record(&mut pass, n);
                l.rope_q.record(&mut pass, n);
                l.rope_k.record(&mut pass, n);
                l.attention.record(&mut pass, n);
                l.o.record(&mut pass, n);
                l.ffn_norm.record(&mut pass, n);
                l.gate.record(&mut pass, n);
                l.up.record(&mut pass, n);
                l.swiglu.record(&mut pass, n);
                l.down.record(&mut pass, n);
            }
            if logits.is_some() {
                self.out_norm.record(&mut pass, n);
            }
            if logits == Some(Logits::All) {
                self.lm_head_all.record(&mut pass, n);
            }
        }
        if logits == Some(Logits::Last) {
            let row = 4 * self.config.dim as u64;
            enc.copy_buffer_to_buffer(&self.act.xn, (n as u64 - 1) * row, &self.act.x_last, 0, row);
            let mut pass = enc.begin_compute_pass(&Default::default());
            self.lm_head_last.record(&mut pass, 1);
        }
        q.submit([enc.finish()]);
        Ok(())
    }
}
