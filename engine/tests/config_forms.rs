//! Nothing in a checkpoint that changes the math is ignored: every config
//! form current and recent `transformers` versions write for Llama (RoPE
//! base under `rope_parameters`, RoPE scaling types, biases, sliding window,
//! partial rotary, untied heads) and the GGUF keys and tensors that carry the
//! same facts are implemented or refused by name, and a tensor the model
//! would not read is refused rather than dropped.

use sift_engine::kernels::rope::RopeStyle;
use sift_engine::loader::gguf::Value;
use sift_engine::loader::quant::GgmlType;
use sift_engine::model::{self, Config};
use sift_engine::testing::{gguf_bytes_plus, random_weights, tiny_config, write_hf_dir};
use std::path::Path;

/// A tiny HF directory whose config.json is edited by `edit`.
fn hf_dir(edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) -> tempfile::TempDir {
    let c = tiny_config(RopeStyle::Neox);
    let dir = tempfile::Builder::new().prefix("sift-config-").tempdir().unwrap();
    write_hf_dir(dir.path(), &c, &random_weights(&c, 3, true)).unwrap();
    let path = dir.path().join("config.json");
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(json.as_object_mut().unwrap());
    std::fs::write(&path, json.to_string()).unwrap();
    dir
}

fn config(dir: &Path) -> Config {
    let from_metadata = model::read_config(dir).unwrap_or_else(|e| panic!("{e}"));
    let loaded = model::load(dir).unwrap_or_else(|e| panic!("{e}")).config;
    assert_eq!(from_metadata.rope_theta, loaded.rope_theta);
    loaded
}

fn refused(dir: &Path) -> String {
    let e = model::load(dir).err().expect("refused").to_string();
    assert_eq!(model::read_config(dir).err().map(|e| e.to_string()).unwrap_or_else(|| e.clone()), e, "read_config refuses the same way");
    e
}

#[test]
fn rope_base_is_read_from_rope_parameters_as_transformers_5_writes_it() {
    let dir = hf_dir(|j| {
        j.remove("rope_theta");
        j.insert("rope_parameters".into(), serde_json::json!({"rope_theta": 100000.0, "rope_type": "default"}));
    });
    let c = config(dir.path());
    assert_eq!((c.rope_theta, c.rope_freq_divisors.is_none()), (100000.0, true));
    // And the older top-level form.
    let dir = hf_dir(|j| {
        j.insert("rope_theta".into(), 500000.0.into());
    });
    assert_eq!(config(dir.path()).rope_theta, 500000.0);
}

#[test]
fn rope_scaling_linear_and_llama3_are_applied() {
    let dir = hf_dir(|j| {
        j.insert("rope_scaling".into(), serde_json::json!({"type": "linear", "factor": 4.0}));
    });
    assert_eq!(config(dir.path()).rope_freq_divisors, Some(vec![4.0; 8]));
    // Llama 3.2's settings, with an original context short enough that the
    // tiny model's 8 frequencies span all three bands.
    let dir = hf_dir(|j| {
        j.insert(
            "rope_parameters".into(),
            serde_json::json!({"rope_type": "llama3", "rope_theta": 10000.0, "factor": 32.0, "low_freq_factor": 1.0,
                               "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
        );
    });
    let d = config(dir.path()).rope_freq_divisors.expect("llama3 divisors");
    // Wavelength 2 pi 10000^(i/8) (6.3, 19.9, 62.8, 198.7, ...): below
    // 64/4 = 16 kept (i = 0), above 64 divided by the factor (i >= 3),
    // between: 1 / ((1 - s) / 32 + s) with s = (64 / wavelength - 1) / 3.
    let wavelen = |i: usize| 2.0 * std::f64::consts::PI * 10000f64.powf(i as f64 / 8.0);
    let between = |i: usize| {
        let s = (64.0 / wavelen(i) - 1.0) / 3.0;
        (1.0 / ((1.0 - s) / 32.0 + s)) as f32
    };
    let want = [1.0, between(1), between(2), 32.0, 32.0, 32.0, 32.0, 32.0];
    for (i, (got, want)) in d.iter().zip(want).enumerate() {
        assert!((got - want).abs() <= want * 1e-6, "frequency {i}: {got} vs {want}");
    }
    assert!(want[1] > 1.0 && want[2] > want[1] && want[2] < 32.0, "two frequencies in the smooth band: {want:?}");
}

/// The GPU forward decodes with the scaled table, as the CPU reference
/// does, and the scaling changes the logits.
#[test]
fn scaled_rope_reaches_the_gpu_forward() {
    use sift_engine::model::{CpuModel, GpuModel, Logits};
    let logits = |dir: &Path| {
        let mut m = model::load(dir).unwrap();
        m.weights.round_matrices_to_f16();
        let prompt: Vec<u32> = (0..40).map(|i| (i * 29 + 3) % 288).collect();
        let gpu = GpuModel::new(sift_engine::testing::gpu(), &m.config, &m.weights, 64).unwrap().forward(&prompt, Logits::Last).unwrap();
        let cpu = CpuModel::new(&m.config, &m.weights, 64).forward(&prompt);
        let cpu_last = cpu[cpu.len() - m.config.vocab_size..].to_vec();
        let err = gpu.iter().zip(&cpu_last).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(err < 1e-3, "GPU and CPU differ by {err}");
        gpu
    };
    let plain = logits(hf_dir(|_| {}).path());
    let scaled = logits(hf_dir(|j| {
        j.insert("rope_scaling".into(), serde_json::json!({"type": "linear", "factor": 8.0}));
    }).path());
    let moved = plain.iter().zip(&scaled).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(moved > 1e-2, "linear scaling moved the logits by only {moved}");
}

/// An edit of a config.json, and what the refusal it causes must say.
type ConfigEdit = (Box<dyn FnOnce(&mut serde_json::Map<String, serde_json::Value>)>, &'static str);

#[test]
fn what_sift_does_not_compute_is_refused_by_name() {
    let cases: Vec<ConfigEdit> = vec![
        (Box::new(|j| { j.insert("rope_scaling".into(), serde_json::json!({"rope_type": "yarn", "factor": 4.0})); }), "RoPE scaling type 'yarn' is not supported"),
        (Box::new(|j| { j.insert("rope_parameters".into(), serde_json::json!({"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0})); }), "RoPE scaling type 'dynamic' is not supported"),
        (Box::new(|j| { j.insert("rope_scaling".into(), serde_json::json!({"rope_type": "linear"})); }), "needs a positive 'factor'"),
        (Box::new(|j| { j.insert("attention_bias".into(), true.into()); }), "'attention_bias: true'"),
        (Box::new(|j| { j.insert("mlp_bias".into(), true.into()); }), "'mlp_bias: true'"),
        (Box::new(|j| { j.insert("sliding_window".into(), 64.into()); }), "sliding-window attention (window 64)"),
    ];
    for (edit, want) in cases {
        let dir = hf_dir(edit);
        let e = refused(dir.path());
        assert!(e.contains(want) && e.contains("config.json"), "wanted {want:?}: {e}");
    }
    // A sliding window as long as the context changes nothing; neither does
    // one that use_sliding_window turns off.
    let dir = hf_dir(|j| {
        j.insert("sliding_window".into(), 256.into());
    });
    config(dir.path());
    let dir = hf_dir(|j| {
        j.insert("sliding_window".into(), 64.into());
        j.insert("use_sliding_window".into(), false.into());
    });
    config(dir.path());
    // Partial rotary: the rotated width follows the factor.
    let dir = hf_dir(|j| {
        j.insert("partial_rotary_factor".into(), 0.5.into());
    });
    assert_eq!(config(dir.path()).rot_dim, 8);
}

#[test]
fn an_untied_config_without_its_head_is_refused() {
    let dir = hf_dir(|j| {
        j.insert("tie_word_embeddings".into(), false.into());
    });
    let e = model::load(dir.path()).err().expect("refused").to_string();
    assert!(e.contains("tie_word_embeddings: false") && e.contains("lm_head.weight"), "{e}");
}

/// One extra tensor (here q's bias, as a checkpoint with attention biases
/// has): refused by name in a safetensors directory and in a GGUF file.
#[test]
fn a_tensor_the_model_would_not_read_is_refused() {
    use safetensors::tensor::TensorView;
    let dir = hf_dir(|_| {});
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let bias = vec![0u8; 64 * 4];
    let mut views: Vec<(String, TensorView)> = st.tensors();
    views.push(("model.layers.1.self_attn.q_proj.bias".into(), TensorView::new(safetensors::Dtype::F32, vec![64], &bias).unwrap()));
    safetensors::serialize_to_file(views, None, &path).unwrap();
    let e = model::load(dir.path()).err().expect("refused").to_string();
    assert!(e.contains("tensor 'model.layers.1.self_attn.q_proj.bias'") && e.contains("not used"), "{e}");

    let c = tiny_config(RopeStyle::Interleaved);
    let w = random_weights(&c, 4, true);
    let extra = ("blk.1.attn_q.bias".to_string(), vec![64], GgmlType::F32, vec![0u8; 64 * 4]);
    let e = load_gguf(&gguf_bytes_plus(&c, &w, |_| GgmlType::Q8_0, vec![], vec![extra])).expect_err("refused");
    assert!(e.contains("tensor 'blk.1.attn_q.bias'") && e.contains("not used"), "{e}");
}

fn load_gguf(bytes: &[u8]) -> Result<Config, String> {
    let file = tempfile::Builder::new().suffix(".gguf").tempfile().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    model::load(file.path()).map(|m| m.config).map_err(|e| e.to_string())
}

#[test]
fn gguf_rope_scaling_is_read_or_refused() {
    let c = tiny_config(RopeStyle::Interleaved);
    let w = random_weights(&c, 5, true);
    let gguf = |metadata: Vec<(&str, Value)>, tensors| gguf_bytes_plus(&c, &w, |_| GgmlType::Q8_0, metadata, tensors);
    // Llama 3 files carry their scaling as the rope_freqs tensor.
    let factors: Vec<f32> = (0..8).map(|i| 1.0 + i as f32).collect();
    let rope_freqs = ("rope_freqs.weight".to_string(), vec![8], GgmlType::F32, factors.iter().flat_map(|f| f.to_le_bytes()).collect());
    assert_eq!(load_gguf(&gguf(vec![], vec![rope_freqs])).unwrap().rope_freq_divisors, Some(factors));
    let linear = vec![("llama.rope.scaling.type", Value::Str("linear".into())), ("llama.rope.scaling.factor", Value::F32(2.0))];
    assert_eq!(load_gguf(&gguf(linear, vec![])).unwrap().rope_freq_divisors, Some(vec![2.0; 8]));
    let e = load_gguf(&gguf(vec![("llama.rope.scaling.type", Value::Str("yarn".into()))], vec![])).unwrap_err();
    assert!(e.contains("RoPE scaling type 'yarn' is not supported"), "{e}");
    let short = ("rope_freqs.weight".to_string(), vec![4], GgmlType::F32, vec![0u8; 16]);
    let e = load_gguf(&gguf(vec![], vec![short])).unwrap_err();
    assert!(e.contains("4 frequency factors") && e.contains("needs 8"), "{e}");
}
