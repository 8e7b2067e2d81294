//! Sparse decoding of the MLP: per-layer lists of active neurons on the GPU,
//! weights stored per neuron ([gate row | up row], and the down projection's
//! column as a row), and the gather kernels that read only active neurons.
//! Prefill stays dense; one-token forwards (decoding) run sparse.

use super::{Config, GpuModel, Weights};
use crate::attribution::{Metric, Scores};
use crate::error::{Result, SiftError};
use crate::gpu::{read_buffer_u32, storage_buffer, zeroed_buffer, GpuContext};
use crate::kernels::{run_calls, sparse, Call};

pub(crate) struct SparseMlp {
    gate_up: Vec<wgpu::Buffer>,
    down_t: Vec<wgpu::Buffer>,
    /// [layers, ffn]: the first `count` entries of each layer are its active neurons.
    pub index: wgpu::Buffer,
    /// [layers, ffn]: 1 where a neuron is active (for display).
    pub bitmap: wgpu::Buffer,
    h: wgpu::Buffer,
    partial: wgpu::Buffer,
    /// Per layer [gate_up, down slices, down sum] bound for `count` active neurons.
    pub calls: Vec<[Call; 3]>,
    pub count: usize,
    /// Masks apply to decoding only while on.
    pub on: bool,
}

/// Active neurons per layer for an activation ratio: ceil(ar * n), at least 1.
pub fn active_count(ar: f64, n: usize) -> Result<usize> {
    if !(ar > 0.0 && ar <= 1.0) {
        return Err(SiftError::InvalidInput(format!("the activation ratio must be in (0, 1], not {ar}")));
    }
    Ok(((ar * n as f64).ceil() as usize).clamp(1, n))
}

impl SparseMlp {
    fn new(ctx: &GpuContext, c: &Config, w: &Weights) -> Result<SparseMlp> {
        let (d, f) = (c.dim, c.ffn_dim);
        let bytes = (f * 2 * d * 2) as u64;
        if bytes > ctx.max_binding_bytes() {
            return Err(SiftError::InvalidInput(format!("a layer's MLP ({} MiB) exceeds this adapter's binding limit for sparse decoding", bytes >> 20)));
        }
        let h16 = |v: f32| half::f16::from_f32(v);
        let mut gate_up = Vec::new();
        let mut down_t = Vec::new();
        for l in &w.layers {
            let packed: Vec<half::f16> = (0..f).flat_map(|i| l.w_gate[i * d..(i + 1) * d].iter().chain(&l.w_up[i * d..(i + 1) * d]).map(|&v| h16(v))).collect();
            let t: Vec<half::f16> = crate::attribution::transposed::transpose(&l.w_down, d, f, 0).into_iter().map(h16).collect();
            gate_up.push(storage_buffer(ctx, "sparse gate_up", &packed));
            down_t.push(storage_buffer(ctx, "sparse down^T", &t));
        }
        let all: Vec<u32> = (0..c.n_layers).flat_map(|_| 0..f as u32).collect();
        Ok(SparseMlp {
            gate_up,
            down_t,
            index: storage_buffer(ctx, "active neurons", &all),
            bitmap: storage_buffer(ctx, "active bitmap", &vec![1u32; c.n_layers * f]),
            h: zeroed_buffer(ctx, "sparse h", (f * 4) as u64),
            partial: zeroed_buffer(ctx, "sparse down slices", sparse::down_scratch_bytes(d)),
            calls: Vec::new(),
            count: 0,
            on: false,
        })
    }
}

impl GpuModel {
    /// Uploads the per-neuron weight layouts sparse decoding reads (about one
    /// more copy of the MLP weights). Masks are set with the `set_mlp_mask*` methods.
    pub fn enable_sparse_mlp(&mut self, weights: &Weights) -> Result<()> {
        if self.sparse.is_none() {
            self.sparse = Some(SparseMlp::new(&self.ctx, &self.config, weights)?);
        }
        Ok(())
    }

    fn sparse_mut(&mut self) -> Result<&mut SparseMlp> {
        self.sparse.as_mut().ok_or_else(|| SiftError::InvalidInput("sparse decoding is not enabled on this model (enable_sparse_mlp)".into()))
    }

    fn bind_sparse(&mut self, count: usize) {
        let (ctx, c) = (self.ctx.clone(), self.config.clone());
        let (xn, x) = (self.act.xn.clone(), self.act.x.clone());
        let s = self.sparse.as_mut().expect("checked");
        s.calls = (0..c.n_layers)
            .map(|l| {
                let off = l * c.ffn_dim;
                let [down, reduce] = sparse::down(&ctx, c.dim, off, count, &s.h, &s.down_t[l], &s.index, &s.partial, &x);
                [sparse::gate_up(&ctx, c.dim, off, count, &xn, &s.gate_up[l], &s.index, &s.h), down, reduce]
            })
            .collect();
        s.count = count;
        s.on = true;
    }

    /// Keeps, in every layer, the ceil(ar * ffn) neurons that `metric` scores
    /// highest; selected on the GPU, the scores never leave it.
    pub fn set_mlp_mask_from_scores(&mut self, scores: &Scores, metric: Metric, ar: f64) -> Result<()> {
        scores.check(metric)?;
        let c = self.config.clone();
        if scores.n_layers != c.n_layers || scores.n_neurons != c.ffn_dim {
            return Err(SiftError::InvalidInput("these scores were computed for another model".into()));
        }
        let k = active_count(ar, c.ffn_dim)?;
        let ctx = self.ctx.clone();
        let s = self.sparse_mut()?;
        let offset = (scores.neuron_offset(metric) / 4) as usize;
        let select = sparse::select_top(&ctx, c.ffn_dim, c.n_layers, k, offset, &scores.neurons, &s.index, &s.bitmap);
        run_calls(&ctx, &[&select], 1);
        self.bind_sparse(k);
        Ok(())
    }

    /// Sets the active neurons explicitly: the same number in every layer.
    pub fn set_mlp_mask(&mut self, active: &[Vec<u32>]) -> Result<()> {
        let c = self.config.clone();
        if active.len() != c.n_layers {
            return Err(SiftError::InvalidInput(format!("a mask needs {} layers, not {}", c.n_layers, active.len())));
        }
        let k = active[0].len();
        let mut index = vec![0u32; c.n_layers * c.ffn_dim];
        let mut bitmap = vec![0u32; c.n_layers * c.ffn_dim];
        for (l, ids) in active.iter().enumerate() {
            if ids.len() != k || k == 0 {
                return Err(SiftError::InvalidInput("every layer of a mask needs the same, non-zero number of active neurons".into()));
            }
            for (a, &i) in ids.iter().enumerate() {
                if i as usize >= c.ffn_dim {
                    return Err(SiftError::InvalidInput(format!("neuron {i} in layer {l} is out of range (the MLP has {})", c.ffn_dim)));
                }
                if bitmap[l * c.ffn_dim + i as usize] == 1 {
                    return Err(SiftError::InvalidInput(format!("neuron {i} appears twice in layer {l}")));
                }
                bitmap[l * c.ffn_dim + i as usize] = 1;
                index[l * c.ffn_dim + a] = i;
            }
        }
        let q = self.ctx.queue.clone();
        let s = self.sparse_mut()?;
        q.write_buffer(&s.index, 0, bytemuck::cast_slice(&index));
        q.write_buffer(&s.bitmap, 0, bytemuck::cast_slice(&bitmap));
        self.bind_sparse(k);
        Ok(())
    }

    /// The active neurons per layer, read back from the GPU (sorted by id).
    pub fn read_mlp_mask(&self) -> Result<Option<Vec<Vec<u32>>>> {
        let Some(s) = self.sparse.as_ref().filter(|s| s.on) else { return Ok(None) };
        let f = self.config.ffn_dim;
        let all = read_buffer_u32(&self.ctx, &s.index, 0, self.config.n_layers * f)?;
        Ok(Some(
            all.chunks(f)
                .map(|l| {
                    let mut ids = l[..s.count].to_vec();
                    ids.sort_unstable();
                    ids
                })
                .collect(),
        ))
    }

    /// The [layers, ffn] bitmap of active neurons (1 = active), for display.
    pub fn mlp_mask_bitmap(&self) -> Option<&wgpu::Buffer> {
        self.sparse.as_ref().filter(|s| s.on).map(|s| &s.bitmap)
    }

    /// Active neurons per layer, when a mask is on.
    pub fn active_neurons(&self) -> Option<usize> {
        self.sparse.as_ref().filter(|s| s.on).map(|s| s.count)
    }

    /// Back to dense decoding (the sparse weights stay uploaded).
    pub fn disable_sparsity(&mut self) {
        if let Some(s) = &mut self.sparse {
            s.on = false;
        }
    }
}

/// `prompt` mode: attribution once over the prompt (F = the prompt's own
/// next-token log-probabilities, every position scored; a one-token prompt
/// uses its greedy next token), then the top `ar` of MLP neurons per layer by
/// `metric`, fixed for the whole generation. Leaves the prompt in the KV cache.
pub fn set_prompt_mask(model: &mut GpuModel, attributor: &mut crate::attribution::Attributor, prompt: &[u32], metric: Metric, ar: f64) -> Result<Scores> {
    use crate::attribution::{AttributeOptions, Positions, Target};
    active_count(ar, model.config.ffn_dim)?;
    let target = if prompt.len() >= 2 { Target::Prompt } else { Target::Next };
    let opts = AttributeOptions::for_metric(metric, Positions::All);
    let scores = attributor.attribute(model, prompt, &target, &opts)?;
    model.set_mlp_mask_from_scores(&scores, metric, ar)?;
    Ok(scores)
}

/// `oracle` mode, one step (the paper's per-token protocol): a dense forward
/// and backward over `tokens` with F = log p of the dense model's greedy next
/// token, the top `ar` of the last token's MLP neurons by `metric`, then the
/// last token run again with only those. Returns its logits. Slower than
/// dense decoding by design: an accuracy reference, not a fast path.
pub fn oracle_step(model: &mut GpuModel, attributor: &mut crate::attribution::Attributor, tokens: &[u32], metric: Metric, ar: f64) -> Result<Vec<f32>> {
    use crate::attribution::{AttributeOptions, Positions, Target};
    active_count(ar, model.config.ffn_dim)?;
    let opts = AttributeOptions::for_metric(metric, Positions::Last);
    let scores = attributor.attribute(model, tokens, &Target::Next, &opts)?;
    model.set_mlp_mask_from_scores(&scores, metric, ar)?;
    model.rewind(tokens.len() - 1)?;
    model.forward(&tokens[tokens.len() - 1..], super::Logits::Last)
}
