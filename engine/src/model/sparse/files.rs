//! The files sparse decoding reads and writes, as JSON: per-layer thresholds
//! for the `threshold` mode (made by calibration) and explicit masks. Both
//! name the model they were made for, and are refused by any other.

use crate::error::{Result, SiftError};
use crate::kernels::sparse::ThresholdRule;
use crate::model::{Architecture, Config, GpuModel};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Which model a file belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelId {
    /// `Weights::fingerprint` of the model.
    pub fingerprint: String,
    pub n_layers: usize,
    pub ffn_dim: usize,
    pub n_heads: usize,
    /// The model family (files written before it was recorded are Llama's).
    #[serde(default = "llama")]
    pub architecture: String,
}

fn llama() -> String {
    Architecture::Llama.name().into()
}

impl ModelId {
    pub fn of(model: &GpuModel) -> ModelId {
        let c = &model.config;
        ModelId { fingerprint: model.fingerprint.clone(), n_layers: c.n_layers, ffn_dim: c.ffn_dim, n_heads: c.n_heads, architecture: c.architecture.name().into() }
    }

    /// Refuses a file made for a model of another shape: all a model's
    /// metadata tells, so this runs before the model loads.
    pub fn check_shape(&self, c: &Config, what: &str) -> Result<()> {
        if self.architecture != c.architecture.name() {
            return Err(SiftError::InvalidInput(format!("this {what} is for a {} model; the model is a {} one", self.architecture, c.architecture.name())));
        }
        if (self.n_layers, self.ffn_dim, self.n_heads) != (c.n_layers, c.ffn_dim, c.n_heads) {
            return Err(SiftError::InvalidInput(format!(
                "this {what} is for a model with {} layers, {} MLP neurons and {} heads per layer; the model has {}, {} and {}",
                self.n_layers, self.ffn_dim, self.n_heads, c.n_layers, c.ffn_dim, c.n_heads
            )));
        }
        Ok(())
    }

    pub(super) fn check(&self, model: &GpuModel, what: &str) -> Result<()> {
        let mine = ModelId::of(model);
        self.check_shape(&model.config, what)?;
        if self.fingerprint != mine.fingerprint {
            return Err(SiftError::InvalidInput(format!(
                "this {what} was made for another model (fingerprint {}; the loaded model's is {})",
                self.fingerprint, mine.fingerprint
            )));
        }
        Ok(())
    }
}

/// The dynamic rule a thresholds file is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rule {
    /// The Sparsing Law: drop neuron i when |h_i| * ||W_down[:, i]|| < eps_layer.
    Cett,
    /// CATS: drop neuron i when |silu(gate_i)| * w_i < t_layer, with w = 1
    /// (CATS itself) or per-neuron weights from the file (`rule_calibration`:
    /// e.g. E|up_i| ||W_down[:, i]||, which estimates CETT's |h_i| ||W_down[:, i]||
    /// from the gate alone, so that the up row and W_down column of a dropped
    /// neuron need not be read).
    Cats,
    /// Drop neuron i when |h_i| * w_i < eps_layer, with per-neuron weights w
    /// from the file (`rule_calibration`: e.g. the expected |dF/dh_i|, which
    /// makes the rule a GxO estimate without a backward pass).
    Weighted,
}

impl Rule {
    pub(crate) fn kernel_rule(self) -> ThresholdRule {
        match self {
            Rule::Cett => ThresholdRule::Cett,
            Rule::Cats => ThresholdRule::Cats,
            // The CETT kernel, reading the file's weights for ||W_down[:, i]||.
            Rule::Weighted => ThresholdRule::Cett,
        }
    }
}

/// Per-layer thresholds for the `threshold` mode.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Thresholds {
    pub format: String,
    pub model: ModelId,
    pub rule: Rule,
    /// One threshold per layer.
    pub thresholds: Vec<f32>,
    /// How they were made (calibration settings and results), for people.
    #[serde(default)]
    pub calibration: serde_json::Value,
    /// `Weighted` and `Cats` (where it has them): the per-neuron weights, [layers, ffn].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<Vec<f32>>,
}

const THRESHOLDS_FORMAT: &str = "sift-thresholds-1";
const MASK_FORMAT: &str = "sift-mask-1";

impl Thresholds {
    pub fn new(model: &GpuModel, rule: Rule, thresholds: Vec<f32>, calibration: serde_json::Value) -> Thresholds {
        Thresholds { format: THRESHOLDS_FORMAT.into(), model: ModelId::of(model), rule, thresholds, calibration, weights: None }
    }

    /// A rule with per-neuron weights: `Weighted` keeps neuron i when
    /// |h_i| * weights[i] >= its layer's threshold, `Cats` when |silu(gate_i)| * weights[i] is.
    pub fn weighted(model: &GpuModel, rule: Rule, weights: Vec<f32>, thresholds: Vec<f32>, calibration: serde_json::Value) -> Thresholds {
        Thresholds { weights: Some(weights), ..Thresholds::new(model, rule, thresholds, calibration) }
    }

    pub fn load(path: &Path) -> Result<Thresholds> {
        let t: Thresholds = read_json(path, THRESHOLDS_FORMAT)?;
        if let Some((l, v)) = t.thresholds.iter().enumerate().find(|(_, v)| !(v.is_finite() && **v >= 0.0)) {
            return Err(SiftError::bad_data(path, format!("the threshold of layer {l} is {v}; thresholds must be finite and not negative")));
        }
        match (t.rule, &t.weights) {
            (Rule::Weighted, None) => return Err(SiftError::bad_data(path, "a weighted rule needs its per-neuron weights")),
            (Rule::Weighted | Rule::Cats, Some(w)) => {
                if let Some((i, v)) = w.iter().enumerate().find(|(_, v)| !(v.is_finite() && **v >= 0.0)) {
                    return Err(SiftError::bad_data(path, format!("weight {i} is {v}; weights must be finite and not negative")));
                }
            }
            (_, Some(_)) => return Err(SiftError::bad_data(path, format!("a {:?} rule takes no per-neuron weights", t.rule))),
            _ => {}
        }
        Ok(t)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        // A weight per neuron: one line, not one line a number.
        let pretty = self.weights.is_none();
        write_json(path, self, pretty)
    }

    /// Refuses thresholds made for another model or with the wrong layer count.
    pub fn check(&self, model: &GpuModel) -> Result<()> {
        self.check_shape(&model.config)?;
        self.model.check(model, "thresholds file")
    }

    /// What [`Thresholds::check`] can tell from the model's metadata alone
    /// (before it loads): its shape, and a threshold per layer and a weight per neuron.
    pub fn check_shape(&self, c: &Config) -> Result<()> {
        self.model.check_shape(c, "thresholds file")?;
        if self.thresholds.len() != c.n_layers {
            return Err(SiftError::InvalidInput(format!("the thresholds file has {} thresholds; the model has {} layers", self.thresholds.len(), c.n_layers)));
        }
        let neurons = c.n_layers * c.ffn_dim;
        if let Some(w) = self.weights.as_ref().filter(|w| w.len() != neurons) {
            return Err(SiftError::InvalidInput(format!("the thresholds file has {} neuron weights; the model has {neurons} neurons", w.len())));
        }
        Ok(())
    }
}

/// Explicit masks: active neuron and head ids per layer (either may be absent: dense).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MaskFile {
    pub format: String,
    pub model: ModelId,
    pub neurons: Option<Vec<Vec<u32>>>,
    pub heads: Option<Vec<Vec<u32>>>,
    /// How the mask was chosen, for people.
    #[serde(default)]
    pub source: serde_json::Value,
}

impl MaskFile {
    /// The masks the model decodes with now.
    pub fn from_model(model: &GpuModel, source: serde_json::Value) -> Result<MaskFile> {
        Ok(MaskFile { format: MASK_FORMAT.into(), model: ModelId::of(model), neurons: model.read_mlp_mask()?, heads: model.read_head_mask()?, source })
    }

    pub fn load(path: &Path) -> Result<MaskFile> {
        read_json(path, MASK_FORMAT)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        write_json(path, self, true)
    }

    /// Sets these masks on `model` (ids are checked there).
    pub fn apply(&self, model: &mut GpuModel) -> Result<()> {
        self.model.check(model, "mask file")?;
        model.disable_sparsity();
        if let Some(n) = &self.neurons {
            model.set_mlp_mask(n)?;
            // A mask file decodes whole generations.
            model.compact_mlp_mask();
        }
        if let Some(h) = &self.heads {
            model.set_head_mask(h)?;
        }
        Ok(())
    }
}

pub(super) fn read_json<T: serde::de::DeserializeOwned>(path: &Path, format: &str) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| SiftError::io(path, e))?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| SiftError::bad_data(path, format!("not valid JSON: {e}")))?;
    match value.get("format").and_then(|f| f.as_str()) {
        Some(f) if f == format => {}
        Some(f) => return Err(SiftError::bad_data(path, format!("format is '{f}', expected '{format}'"))),
        None => return Err(SiftError::bad_data(path, format!("not a {format} file (no \"format\" field)"))),
    }
    serde_json::from_value(value).map_err(|e| SiftError::bad_data(path, e.to_string()))
}

pub(super) fn write_json<T: Serialize>(path: &Path, value: &T, pretty: bool) -> Result<()> {
    let text = if pretty { serde_json::to_string_pretty(value) } else { serde_json::to_string(value) };
    let text = text.map_err(|e| SiftError::InvalidInput(e.to_string()))?;
    crate::output::write_atomic(path, (text + "\n").as_bytes())
}
