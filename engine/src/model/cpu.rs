//! The reference forward pass in plain Rust f32, composed from the kernels'
//! reference functions: the independent check for the GPU forward on small models.

use super::{Config, Site, Weights};
use crate::kernels::{attention, embedding, linear, rmsnorm, rope, swiglu};

pub struct CpuModel<'a> {
    pub config: &'a Config,
    pub weights: &'a Weights,
    rope_table: Vec<[f32; 2]>,
    /// Per layer: keys and values of every position seen so far.
    k_cache: Vec<Vec<f32>>,
    v_cache: Vec<Vec<f32>>,
}

impl<'a> CpuModel<'a> {
    pub fn new(config: &'a Config, weights: &'a Weights, max_ctx: usize) -> Self {
        CpuModel {
            rope_table: config.rope_table(max_ctx),
            k_cache: vec![Vec::new(); config.n_layers],
            v_cache: vec![Vec::new(); config.n_layers],
            config,
            weights,
        }
    }

    pub fn position(&self) -> usize {
        self.k_cache[0].len() / self.config.kv_dim()
    }

    /// Appends `tokens` after the cached ones; returns logits [tokens, vocab].
    pub fn forward(&mut self, tokens: &[u32]) -> Vec<f32> {
        self.forward_edited(tokens, &|_, _, _| {})
    }

    /// [`CpuModel::forward`] with `edit(layer, site, input)` applied to each
    /// projection's input ([tokens, width]) before the projection reads it:
    /// the reference for rules that zero inputs (`model::sparse::inputs`).
    pub fn forward_edited(&mut self, tokens: &[u32], edit: &dyn Fn(usize, Site, &mut [f32])) -> Vec<f32> {
        let c = self.config;
        let w = self.weights;
        let pos0 = self.position();
        let shape = |n_heads| rope::RopeShape { n_heads, head_dim: c.head_dim, rot_dim: c.rot_dim, style: c.rope_style };
        let att_shape = attention::AttentionShape { n_heads: c.n_heads, n_kv_heads: c.n_kv_heads, head_dim: c.head_dim };
        let mut x = embedding::reference(&w.embed, c.dim, tokens);
        for (l, lw) in w.layers.iter().enumerate() {
            let mut xn = rmsnorm::reference(&x, &lw.attn_norm, c.rms_eps);
            edit(l, Site::Attn, &mut xn);
            let mut q = linear::reference(&xn, &lw.wq, c.q_dim(), c.dim);
            let mut k = linear::reference(&xn, &lw.wk, c.kv_dim(), c.dim);
            let v = linear::reference(&xn, &lw.wv, c.kv_dim(), c.dim);
            rope::reference(&mut q, &shape(c.n_heads), pos0, &self.rope_table);
            rope::reference(&mut k, &shape(c.n_kv_heads), pos0, &self.rope_table);
            self.k_cache[l].extend(&k);
            self.v_cache[l].extend(&v);
            let mut att = attention::reference(att_shape, &q, &self.k_cache[l], &self.v_cache[l], pos0);
            edit(l, Site::O, &mut att);
            add(&mut x, &linear::reference(&att, &lw.wo, c.dim, c.q_dim()));
            let mut xn = rmsnorm::reference(&x, &lw.ffn_norm, c.rms_eps);
            edit(l, Site::Mlp, &mut xn);
            let gate = linear::reference(&xn, &lw.w_gate, c.ffn_dim, c.dim);
            let up = linear::reference(&xn, &lw.w_up, c.ffn_dim, c.dim);
            let mut h = swiglu::reference(&gate, &up);
            edit(l, Site::Down, &mut h);
            add(&mut x, &linear::reference(&h, &lw.w_down, c.dim, c.ffn_dim));
        }
        let xn = rmsnorm::reference(&x, &w.out_norm, c.rms_eps);
        linear::reference(&xn, w.lm_head.as_ref().unwrap_or(&w.embed), c.vocab_size, c.dim)
    }
}

fn add(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(a, b)| *a += b);
}
