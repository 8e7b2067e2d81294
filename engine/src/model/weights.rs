//! Model weights as f32 on the CPU, every tensor shape-checked against the config.

use super::Config;
use crate::error::{Result, SiftError};
use crate::loader::TensorSource;

pub struct LayerWeights {
    pub attn_norm: Vec<f32>,
    /// [q_dim, dim]
    pub wq: Vec<f32>,
    /// [kv_dim, dim]
    pub wk: Vec<f32>,
    pub wv: Vec<f32>,
    /// [dim, q_dim]
    pub wo: Vec<f32>,
    pub ffn_norm: Vec<f32>,
    /// [ffn_dim, dim]
    pub w_gate: Vec<f32>,
    pub w_up: Vec<f32>,
    /// [dim, ffn_dim]
    pub w_down: Vec<f32>,
}

pub struct Weights {
    /// [vocab, dim]
    pub embed: Vec<f32>,
    pub layers: Vec<LayerWeights>,
    pub out_norm: Vec<f32>,
    /// [vocab, dim]; None when tied to the embedding.
    pub lm_head: Option<Vec<f32>>,
}

impl Weights {
    /// A short hash of the norm weights and the first embedding rows: tells
    /// models of the same shape apart (a fine-tune changes its norms), so a
    /// calibration or mask file made for one is refused by another.
    pub fn fingerprint(&self) -> String {
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        let norms = self.layers.iter().flat_map(|l| l.attn_norm.iter().chain(&l.ffn_norm));
        for v in self.out_norm.iter().chain(norms).chain(self.embed.iter().take(4096)) {
            for b in v.to_bits().to_le_bytes() {
                hash = (hash ^ b as u64).wrapping_mul(0x0100_0000_01b3);
            }
        }
        format!("{hash:016x}")
    }
}

fn fetch(src: &dyn TensorSource, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    fetch_optional(src, name, shape)?.ok_or_else(|| SiftError::MissingTensor(name.to_string()))
}

fn fetch_optional(src: &dyn TensorSource, name: &str, shape: &[usize]) -> Result<Option<Vec<f32>>> {
    let Some(t) = src.tensor(name)? else { return Ok(None) };
    // Norm vectors may be stored as [n] or [1, n].
    let squeezed: Vec<usize> = t.shape.iter().copied().filter(|&d| d != 1).collect();
    let want: Vec<usize> = shape.iter().copied().filter(|&d| d != 1).collect();
    if squeezed != want {
        return Err(SiftError::ShapeMismatch {
            name: name.to_string(),
            got: t.shape,
            expected: shape.to_vec(),
        });
    }
    Ok(Some(t.data))
}

impl Weights {
    pub fn load(src: &dyn TensorSource, c: &Config) -> Result<Weights> {
        let (d, q, kv, f) = (c.dim, c.q_dim(), c.kv_dim(), c.ffn_dim);
        let layers = (0..c.n_layers)
            .map(|i| {
                let n = |part: &str| format!("blk.{i}.{part}.weight");
                Ok(LayerWeights {
                    attn_norm: fetch(src, &n("attn_norm"), &[d])?,
                    wq: fetch(src, &n("attn_q"), &[q, d])?,
                    wk: fetch(src, &n("attn_k"), &[kv, d])?,
                    wv: fetch(src, &n("attn_v"), &[kv, d])?,
                    wo: fetch(src, &n("attn_output"), &[d, q])?,
                    ffn_norm: fetch(src, &n("ffn_norm"), &[d])?,
                    w_gate: fetch(src, &n("ffn_gate"), &[f, d])?,
                    w_up: fetch(src, &n("ffn_up"), &[f, d])?,
                    w_down: fetch(src, &n("ffn_down"), &[d, f])?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let lm_head = fetch_optional(src, "output.weight", &[c.vocab_size, d])?;
        Ok(Weights {
            embed: fetch(src, "token_embd.weight", &[c.vocab_size, d])?,
            layers,
            out_norm: fetch(src, "output_norm.weight", &[d])?,
            lm_head,
        })
    }

    /// Every matrix rounded through f16, as the GPU stores them: lets tests
    /// compare GPU and CPU on identical weights.
    pub fn round_matrices_to_f16(&mut self) {
        let r = |v: &mut Vec<f32>| v.iter_mut().for_each(|x| *x = half::f16::from_f32(*x).to_f32());
        r(&mut self.embed);
        if let Some(h) = &mut self.lm_head {
            r(h);
        }
        for l in &mut self.layers {
            for m in [&mut l.wq, &mut l.wk, &mut l.wv, &mut l.wo, &mut l.w_gate, &mut l.w_up, &mut l.w_down] {
                r(m);
            }
        }
    }
}
