//! The sparse-decoding options `generate` (and later `eval`) share, and
//! setting the mask they ask for on a loaded model.

use crate::common::{model_path, Loaded, ModelArgs};
use anyhow::{bail, Context, Result};
use sift_engine::attribution::{Attributor, Metric, DEFAULT_IG_STEPS};
use sift_engine::model::sparse::{self, InputThresholds, MaskFile, MlpMask, PromptTarget, Ratios, Thresholds};
use sift_engine::model::Config;
use std::path::PathBuf;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sparsity {
    /// Dense decoding.
    Off,
    /// Attribution over the prompt once, then the same mask for every generated token.
    Prompt,
    /// The paper's per-token protocol: a dense forward and backward before
    /// every token picks its mask (slower than dense; for accuracy studies).
    Oracle,
    /// A per-token threshold rule with per-layer thresholds from --thresholds
    /// (CETT: |h_i| * ||W_down[:, i]|| < eps; CATS: |silu(gate_i)| < t).
    Threshold,
    /// The fixed mask in --mask (written earlier with --save-mask).
    File,
    /// The fastest setting `sift frontier` measured for the loaded model whose
    /// continuation perplexity stays within 3% of dense; dense when none is
    /// faster than dense (the case for the default model on a CPU adapter) or
    /// none was measured. It says which it chose.
    Auto,
}

/// Which units the activation ratio applies to.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Units {
    /// MLP neurons only; every attention head runs.
    Mlp,
    /// MLP neurons and attention heads, both at --ar (the paper's single AR:
    /// heads weigh 1/3, the MLP 2/3).
    Both,
}

#[derive(clap::Args, Clone, Debug)]
pub struct SparsityArgs {
    /// Sparse decoding mode.
    #[arg(long, value_enum, default_value_t = Sparsity::Off)]
    pub sparsity: Sparsity,
    /// Activation ratio: the fraction of units kept in every layer, in (0, 1].
    #[arg(long, default_value_t = 0.3)]
    pub ar: f64,
    /// Which units --ar masks.
    #[arg(long, value_enum, default_value_t = Units::Mlp)]
    pub units: Units,
    /// Attribution metric that ranks units: magnitude, gxo, snip, fisher, ig, corrected-gxo.
    #[arg(long, default_value = "corrected-gxo")]
    pub metric: String,
    /// What prompt mode attributes: `next` (log p of the greedy next token,
    /// the last prompt token's units) or `tokens` (the prompt's own
    /// next-token log-probabilities, every prompt token's units).
    #[arg(long, default_value = "next", value_parser = clap::builder::PossibleValuesParser::new(PromptTarget::ALL.map(PromptTarget::name)))]
    pub prompt_target: String,
    /// Thresholds file for --sparsity threshold (from `sift calibrate`: CETT
    /// on h; or `sift calibrate-rule`: rules on h, or on the gate, which skip
    /// the dropped neurons' up rows and W_down columns).
    #[arg(long)]
    pub thresholds: Option<PathBuf>,
    /// Mask file for --sparsity file.
    #[arg(long)]
    pub mask: Option<PathBuf>,
    /// Write the mask chosen in prompt mode to this file (JSON).
    #[arg(long)]
    pub save_mask: Option<PathBuf>,
    /// Integrated Gradients steps, for --metric ig (each costs two partial
    /// forward and backward passes per layer).
    #[arg(long, default_value_t = DEFAULT_IG_STEPS)]
    pub ig_steps: usize,
}

impl SparsityArgs {
    /// Dense decoding, every other option at its default.
    pub fn off() -> SparsityArgs {
        SparsityArgs {
            sparsity: Sparsity::Off,
            ar: 0.3,
            units: Units::Mlp,
            metric: "corrected-gxo".into(),
            prompt_target: PromptTarget::Next.name().into(),
            thresholds: None,
            mask: None,
            save_mask: None,
            ig_steps: DEFAULT_IG_STEPS,
        }
    }

    /// A setting as `sift frontier --setting` writes it: `prompt:METRIC:AR`
    /// with options `mlp` or `both` and `next` or `tokens`,
    /// `oracle:METRIC:AR[:both]`, `threshold:FILE`, or `off`. Checked as the
    /// command-line options are.
    pub fn parse_setting(spec: &str) -> Result<SparsityArgs> {
        let parts: Vec<&str> = spec.split(':').collect();
        let mut args = SparsityArgs::off();
        match parts.as_slice() {
            ["off"] => {}
            [mode @ ("prompt" | "oracle"), metric, ar, options @ ..] => {
                args.sparsity = if *mode == "prompt" { Sparsity::Prompt } else { Sparsity::Oracle };
                args.metric = metric.to_string();
                args.ar = ar.parse().with_context(|| format!("{spec}: {ar:?} is not an activation ratio"))?;
                for &o in options {
                    match o {
                        "mlp" => args.units = Units::Mlp,
                        "both" => args.units = Units::Both,
                        "next" | "tokens" if *mode == "prompt" => args.prompt_target = o.to_string(),
                        _ => bail!("{spec}: options are mlp or both, and for prompt mode next or tokens, not {o:?}"),
                    }
                }
            }
            ["threshold", file @ ..] if !file.is_empty() => {
                args.sparsity = Sparsity::Threshold;
                args.thresholds = Some(PathBuf::from(file.join(":")));
            }
            _ => bail!("unknown setting {spec:?}: use prompt:METRIC:AR[:both][:tokens], oracle:METRIC:AR[:both], threshold:FILE or off"),
        }
        args.validate().with_context(|| spec.to_string())?;
        Ok(args)
    }

    pub fn metric(&self) -> Result<Metric> {
        Metric::parse(&self.metric).with_context(|| format!("unknown metric {:?}; use one of magnitude, gxo, snip, fisher, ig, corrected-gxo", self.metric))
    }

    pub fn prompt_target(&self) -> Result<PromptTarget> {
        PromptTarget::parse(&self.prompt_target).with_context(|| format!("unknown prompt target {:?}; use next or tokens", self.prompt_target))
    }

    pub fn ratios(&self) -> Result<Ratios> {
        if !(self.ar > 0.0 && self.ar <= 1.0) {
            bail!("--ar must be in (0, 1], not {}", self.ar);
        }
        Ok(match self.units {
            Units::Mlp => Ratios::mlp(self.ar),
            Units::Both => Ratios::both(self.ar),
        })
    }

    /// Checks the options fit together before anything is loaded.
    pub fn validate(&self) -> Result<()> {
        self.metric()?;
        self.ratios()?;
        match self.sparsity {
            Sparsity::Threshold if self.thresholds.is_none() => bail!("--sparsity threshold needs --thresholds FILE (made by `sift calibrate`)"),
            Sparsity::File if self.mask.is_none() => bail!("--sparsity file needs --mask FILE (written with --save-mask)"),
            _ => {}
        }
        if self.ig_steps == 0 {
            bail!("--ig-steps must be at least 1");
        }
        if self.save_mask.is_some() && self.sparsity != Sparsity::Prompt {
            bail!("--save-mask saves the mask of --sparsity prompt");
        }
        Ok(())
    }

    /// [`SparsityArgs::validate`], and what else can be checked before the
    /// model loads: the thresholds or mask file is read, and refused if it
    /// was made for a model of another shape (from the model's metadata).
    pub fn check_before_load(&self, model: &ModelArgs) -> Result<()> {
        self.validate()?;
        let config = || -> Result<Config> { Ok(sift_engine::model::read_config(&model_path(model)?)?) };
        let (path, checked) = match (self.sparsity, &self.thresholds, &self.mask) {
            (Sparsity::Threshold, Some(path), _) if InputThresholds::is_input_file(path) => (path, InputThresholds::load(path)?.check_shape(&config()?)),
            (Sparsity::Threshold, Some(path), _) => (path, Thresholds::load(path)?.check_shape(&config()?)),
            (Sparsity::File, _, Some(path)) => (path, MaskFile::load(path)?.model.check_shape(&config()?, "mask file")),
            _ => return Ok(()),
        };
        checked.with_context(|| path.display().to_string())
    }

    /// Whether the model must keep its CPU weights (to upload sparse layouts).
    pub fn needs_weights(&self) -> bool {
        self.sparsity != Sparsity::Off
    }
}

/// Uploads the sparse layouts; returns an attributor when the mode needs one.
pub fn prepare(m: &mut Loaded, args: &SparsityArgs) -> Result<Option<Attributor>> {
    if args.sparsity == Sparsity::Off {
        return Ok(None);
    }
    let weights = m.weights.take().context("the model's weights were not kept for sparse decoding")?;
    m.model.enable_sparse(&weights)?;
    if !matches!(args.sparsity, Sparsity::Prompt | Sparsity::Oracle) {
        return Ok(None);
    }
    let mut attributor = Attributor::new(&m.model, &weights)?;
    attributor.set_ig_steps(args.ig_steps)?;
    Ok(Some(attributor))
}

/// Sets the mask for `prompt` mode, a thresholds file or a mask file, and
/// says what was set. Prompt mode leaves the prompt in the KV cache.
pub fn set_mask(m: &mut Loaded, attributor: Option<&mut Attributor>, ids: &[u32], args: &SparsityArgs) -> Result<String> {
    let t = std::time::Instant::now();
    let what = match args.sparsity {
        Sparsity::Off | Sparsity::Oracle => return Ok(String::new()),
        Sparsity::Auto => bail!("--sparsity auto is resolved for the loaded model first (auto::resolve)"),
        Sparsity::Prompt => {
            let attributor = attributor.context("prompt mode needs an attributor")?;
            let (metric, ratios, target) = (args.metric()?, args.ratios()?, args.prompt_target()?);
            sparse::set_prompt_mask(&mut m.model, attributor, ids, metric, ratios, target)?;
            if let Some(path) = &args.save_mask {
                let source = serde_json::json!({ "mode": "prompt", "target": target.name(), "metric": metric.name(), "mlp_ar": ratios.mlp, "head_ar": ratios.heads });
                MaskFile::from_model(&m.model, source)?.save(path)?;
            }
            format!("{metric}, attribution over the prompt: {:.0} ms", t.elapsed().as_secs_f64() * 1e3)
        }
        Sparsity::Threshold if InputThresholds::is_input_file(args.thresholds.as_ref().expect("validated")) => {
            let path = args.thresholds.as_ref().expect("validated");
            m.model.set_input_rule(&InputThresholds::load(path)?, false).with_context(|| format!("{}", path.display()))?;
            format!("TEAL's thresholds on every projection's input from {}, chosen per token", path.display())
        }
        Sparsity::Threshold => {
            let path = args.thresholds.as_ref().expect("validated");
            let th = Thresholds::load(path)?;
            m.model.set_threshold_mask(&th).with_context(|| format!("{}", path.display()))?;
            format!("{:?} thresholds from {}, chosen per token", th.rule, path.display())
        }
        Sparsity::File => {
            let path = args.mask.as_ref().expect("validated");
            MaskFile::load(path)?.apply(&mut m.model).with_context(|| format!("{}", path.display()))?;
            format!("mask from {}", path.display())
        }
    };
    Ok(what)
}

/// "461 of 1536 MLP neurons per layer, 2 of 9 heads" for the masks now set.
pub fn describe_masks(m: &Loaded) -> Result<String> {
    let c = &m.model.config;
    if m.model.has_input_rule() {
        return Ok("the blocks' projection inputs chosen per token".into());
    }
    let (mlp, heads) = m.model.active_fractions()?;
    let mut s = match m.model.mlp_mask() {
        MlpMask::Fixed(k) if k.iter().all(|&n| n == k[0]) => format!("{} of {} MLP neurons per layer", k[0], c.ffn_dim),
        MlpMask::Threshold(_) => format!("MLP neurons chosen per token by the threshold rule (of {})", c.ffn_dim),
        _ => format!("{:.0}% of {} MLP neurons per layer", mlp * 100.0, c.ffn_dim),
    };
    if heads < 1.0 {
        s += &format!(", {:.0} of {} heads per layer", heads * c.n_heads as f64, c.n_heads);
    }
    Ok(s)
}
