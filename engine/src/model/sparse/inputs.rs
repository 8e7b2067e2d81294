//! TEAL's rule: magnitude thresholds on the input of every linear layer of a
//! block. Per layer and site, an input element below the site's threshold is
//! zeroed, so the projection after it needs none of that element's column:
//!
//! - `attn`: the normed residual before q/k/v;
//! - `o`: the heads' outputs before W_o;
//! - `mlp`: the normed residual before gate|up;
//! - `down`: the neuron outputs h before W_down (CETT's rule with weight 1).
//!
//! This module runs the rule exactly (the dense kernels after a zeroing
//! dispatch per site), as the reference for quality: it reads every weight,
//! so it is slower than dense. The thresholds come from calibration text
//! (`rule_calibration::InputStats`), one file per share kept.

use super::files::{read_json, write_json, ModelId};
use crate::error::{Result, SiftError};
use crate::gpu::{read_buffer_u32, storage_buffer, GpuContext};
use crate::kernels::{input_zero, Call};
use crate::model::{Config, GpuModel, Site};
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::path::Path;

/// Per-layer thresholds on |input| for each site (0 keeps every element).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InputThresholds {
    pub format: String,
    pub model: ModelId,
    pub attn: Vec<f32>,
    pub o: Vec<f32>,
    pub mlp: Vec<f32>,
    pub down: Vec<f32>,
    /// How they were made (calibration settings and results), for people.
    #[serde(default)]
    pub calibration: serde_json::Value,
}

const FORMAT: &str = "sift-input-thresholds-1";

impl InputThresholds {
    pub fn new(model: &GpuModel, sites: [Vec<f32>; 4], calibration: serde_json::Value) -> InputThresholds {
        let [attn, o, mlp, down] = sites;
        InputThresholds { format: FORMAT.into(), model: ModelId::of(model), attn, o, mlp, down, calibration }
    }

    pub fn site(&self, s: Site) -> &[f32] {
        match s {
            Site::Attn => &self.attn,
            Site::O => &self.o,
            Site::Mlp => &self.mlp,
            Site::Down => &self.down,
        }
    }

    /// Whether `path` holds this kind of file (its "format" field), so that
    /// one `threshold` setting can take either kind.
    pub fn is_input_file(path: &Path) -> bool {
        std::fs::read_to_string(path).ok().and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok()).and_then(|v| v.get("format")?.as_str().map(|f| f == FORMAT)).unwrap_or(false)
    }

    pub fn load(path: &Path) -> Result<InputThresholds> {
        let t: InputThresholds = read_json(path, FORMAT)?;
        for s in Site::ALL {
            if let Some((l, v)) = t.site(s).iter().enumerate().find(|(_, v)| !(v.is_finite() && **v >= 0.0)) {
                return Err(SiftError::bad_data(path, format!("the {} threshold of layer {l} is {v}; thresholds must be finite and not negative", s.name())));
            }
        }
        Ok(t)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        write_json(path, self, true)
    }

    /// Refuses a file for a model of another shape, before the model loads.
    pub fn check_shape(&self, c: &Config) -> Result<()> {
        self.model.check_shape(c, "input thresholds file")?;
        for s in Site::ALL {
            if self.site(s).len() != c.n_layers {
                return Err(SiftError::InvalidInput(format!("the input thresholds file has {} {} thresholds; the model has {} layers", self.site(s).len(), s.name(), c.n_layers)));
            }
        }
        Ok(())
    }

    pub fn check(&self, model: &GpuModel) -> Result<()> {
        self.check_shape(&model.config)?;
        self.model.check(model, "input thresholds file")
    }

    /// The thresholds as the kernel reads them: [site][layer].
    fn flat(&self) -> Vec<f32> {
        Site::ALL.iter().flat_map(|&s| self.site(s).iter().copied()).collect()
    }
}

/// The rule set on a model: its zeroing dispatches, per layer in site order.
pub(crate) struct InputRule {
    pub calls: Vec<[Call; 4]>,
    /// Batched forwards (prefill, perplexity) apply it too; else only one-token forwards.
    every_token: bool,
    /// [site][layer]: elements kept since the last [`GpuModel::input_share_read`].
    kept: wgpu::Buffer,
    tokens: Cell<u64>,
    _thresholds: wgpu::Buffer,
}

impl InputRule {
    fn new(ctx: &GpuContext, c: &Config, t: &InputThresholds, step_all: &wgpu::Buffer, step_one: &wgpu::Buffer, io: [&wgpu::Buffer; 3], every_token: bool) -> InputRule {
        let [xn, heads, neurons] = io;
        let thresholds = storage_buffer(ctx, "input thresholds", &t.flat());
        let kept = storage_buffer(ctx, "inputs kept", &vec![0u32; 4 * c.n_layers]);
        let step = if every_token { step_all } else { step_one };
        let calls = (0..c.n_layers)
            .map(|l| {
                Site::ALL.map(|s| {
                    let v = match s {
                        Site::Attn | Site::Mlp => xn,
                        Site::O => heads,
                        Site::Down => neurons,
                    };
                    // [site][layer], sites in their declared order (Site::ALL).
                    let index = s as usize * c.n_layers + l;
                    input_zero::call(ctx, s.width(c), index, step, v, &thresholds, &kept)
                })
            })
            .collect();
        InputRule { calls, every_token, kept, tokens: Cell::new(0), _thresholds: thresholds }
    }

    /// Whether a forward over `n` tokens runs the rule (and counts its tokens).
    pub fn applies(&self, n: u32) -> bool {
        let on = n == 1 || self.every_token;
        if on {
            self.tokens.set(self.tokens.get() + n as u64);
        }
        on
    }
}

impl GpuModel {
    /// Runs TEAL's rule from `t` on one-token forwards (decoding); with
    /// `every_token`, on batched forwards too. `disable_sparsity` ends it.
    /// Other sparse modes are cleared: the rule runs alone.
    pub fn set_input_rule(&mut self, t: &InputThresholds, every_token: bool) -> Result<()> {
        t.check(self)?;
        self.disable_sparsity();
        let io = [&self.act.xn, &self.act.heads, &self.act.neurons];
        self.inputs = Some(InputRule::new(&self.ctx, &self.config, t, &self.step_all, &self.step_one, io, every_token));
        Ok(())
    }

    /// Whether TEAL's rule is set.
    pub fn has_input_rule(&self) -> bool {
        self.inputs.is_some()
    }

    /// The rule's calls for a forward over `n` tokens, if it runs.
    pub(crate) fn input_rule(&self, n: u32) -> Option<&InputRule> {
        self.inputs.as_ref().filter(|r| r.applies(n))
    }

    /// The share of the blocks' projection weights the rule let the forwards
    /// since the last call read (kept input elements weighted by the rows of
    /// their projection), and resets the count; None without the rule.
    pub fn input_share_read(&self) -> Result<Option<f64>> {
        let Some(r) = &self.inputs else { return Ok(None) };
        let c = &self.config;
        let kept = read_buffer_u32(&self.ctx, &r.kept, 0, 4 * c.n_layers)?;
        self.ctx.queue.write_buffer(&r.kept, 0, bytemuck::cast_slice(&vec![0u32; kept.len()]));
        let tokens = r.tokens.replace(0) as f64;
        let (mut read, mut all) = (0.0, 0.0);
        for (i, s) in Site::ALL.iter().enumerate() {
            let k: u64 = kept[i * c.n_layers..(i + 1) * c.n_layers].iter().map(|&k| k as u64).sum();
            read += k as f64 * s.rows(c) as f64;
            all += tokens * (c.n_layers * s.width(c) * s.rows(c)) as f64;
        }
        Ok(Some(if all > 0.0 { read / all } else { 1.0 }))
    }
}
