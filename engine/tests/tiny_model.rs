//! The GPU forward against the CPU reference on a tiny random Llama, loaded
//! from disk the way users load models: an HF directory (F32 safetensors, NeoX
//! RoPE) and GGUF files with Q8_0 and Q4_1 matrices (interleaved RoPE).

use sift_engine::kernels::rope::RopeStyle;
use sift_engine::kernels::KernelFamily;
use sift_engine::loader::quant::GgmlType;
use sift_engine::model::{self, CpuModel, GpuModel, Logits, ModelOptions, UnitBytes};
use sift_engine::testing::{gguf_bytes, gguf_bytes_with, gpu, q4_k_m_mix, random_weights, tiny_config, tiny_kquant_config, write_hf_dir};

/// A directory for a test's model files, removed when dropped.
fn scratch_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("sift-tiny-").tempdir().unwrap()
}

/// Largest |gpu - cpu| relative to the logits' spread.
fn rel_err(gpu: &[f32], cpu: &[f32]) -> f32 {
    let scale = cpu.iter().fold(0.0f32, |a, v| a.max(v.abs())).max(1.0);
    gpu.iter().zip(cpu).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max) / scale
}

// Same f16-rounded weights on both sides; the only differences are f32
// summation order and exp/rsqrt ulps, ~1e-6 of the logit range. 1e-4 would
// still flag a single wrong element in any kernel.
const TOL: f32 = 1e-4;

fn check(path: &std::path::Path) {
    // Both kernel families: GPUs run the cooperative one, CPU adapters the other.
    for family in [KernelFamily::Cooperative, KernelFamily::RowPerInvocation] {
        check_family(path, family);
    }
}

fn check_family(path: &std::path::Path, family: KernelFamily) {
    let mut loaded = model::load(path).expect("tiny model loads");
    loaded.weights.round_matrices_to_f16();
    let c = &loaded.config;
    let mut gpu_model = GpuModel::with_family(gpu(), c, &loaded.weights, 256, family).unwrap();
    let mut cpu = CpuModel::new(c, &loaded.weights, 256);
    let prompt: Vec<u32> = (0..24).map(|i| (i * 37 + 5) as u32 % c.vocab_size as u32).collect();
    let g = gpu_model.forward(&prompt, Logits::All).unwrap();
    let r = cpu.forward(&prompt);
    assert!(rel_err(&g, &r) < TOL, "{} {family:?}: prefill {}", path.display(), rel_err(&g, &r));
    let mut next = sift_engine::sampling::argmax(&r[r.len() - c.vocab_size..]);
    for step in 0..24 {
        let g = gpu_model.forward(&[next], Logits::Last).unwrap();
        let r = cpu.forward(&[next]);
        assert!(rel_err(&g, &r) < TOL, "{} {family:?}: decode step {step}: {}", path.display(), rel_err(&g, &r));
        next = sift_engine::sampling::argmax(&r);
    }
    assert_eq!(gpu_model.position(), 48);
}

#[test]
fn hf_safetensors_model_matches_cpu_reference() {
    let c = tiny_config(RopeStyle::Neox);
    let scratch = scratch_dir();
    let dir = scratch.path().join("hf");
    write_hf_dir(&dir, &c, &random_weights(&c, 1, false)).unwrap();
    check(&dir);
}

#[test]
fn gguf_q8_0_and_q4_1_models_match_cpu_reference() {
    let c = tiny_config(RopeStyle::Interleaved);
    let scratch = scratch_dir();
    for (ty, tied) in [(GgmlType::Q8_0, true), (GgmlType::Q4_1, false)] {
        let path = scratch.path().join(format!("{ty:?}.gguf"));
        std::fs::write(&path, gguf_bytes(&c, &random_weights(&c, 2, tied), ty)).unwrap();
        check(&path);
    }
}

/// A `Q4_K_M`-style mix (Q4_K, Q5_0, Q6_K) through both kernel families.
#[test]
fn gguf_k_quant_model_matches_cpu_reference() {
    let c = tiny_kquant_config();
    let scratch = scratch_dir();
    let path = scratch.path().join("q4_k_m.gguf");
    std::fs::write(&path, gguf_bytes_with(&c, &random_weights(&c, 5, true), q4_k_m_mix)).unwrap();
    check(&path);
}

/// A model that requires BOS gets windows of BOS and ctx - 1 text tokens,
/// each scored after its first position (DESIGN.md's protocol).
#[test]
fn perplexity_windows_start_with_bos_when_asked() {
    use sift_engine::perplexity::{perplexity, perplexity_with_bos};
    let c = tiny_config(RopeStyle::Neox);
    let mut m = GpuModel::new(gpu(), &c, &random_weights(&c, 6, true), 32).unwrap();
    let text: Vec<u32> = (0..100).map(|i| (i * 7 + 3) as u32 % 256).collect();
    let bos = 256;
    let with = perplexity_with_bos(&mut m, &text, 16, Some(4), Some(bos), |_, _| ()).unwrap();
    let spelled: Vec<u32> = text.chunks(15).take(4).flat_map(|w| std::iter::once(bos).chain(w.iter().copied())).collect();
    let by_hand = perplexity(&mut m, &spelled, 16, None, |_, _| ()).unwrap();
    assert!(with.bos && !by_hand.bos);
    assert_eq!((with.windows, with.scored_tokens), (4, 60));
    assert!((with.perplexity - by_hand.perplexity).abs() < 1e-9 * by_hand.perplexity, "{} vs {}", with.perplexity, by_hand.perplexity);
    let e = perplexity(&mut m, &text, 16, Some(0), |_, _| ()).unwrap_err().to_string();
    assert!(e.contains("--max-windows must be at least 1"), "{e}");
}

#[test]
fn long_prefill_crosses_batch_chunks() {
    let c = tiny_config(RopeStyle::Neox);
    let mut w = random_weights(&c, 3, true);
    w.round_matrices_to_f16();
    for family in [KernelFamily::Cooperative, KernelFamily::RowPerInvocation] {
        let mut gpu_model = GpuModel::with_family(gpu(), &c, &w, 256, family).unwrap();
        assert!(gpu_model.max_batch < 200, "test needs a prompt longer than one batch");
        let prompt: Vec<u32> = (0..200).map(|i| (i * 13 + 1) as u32 % c.vocab_size as u32).collect();
        let g = gpu_model.forward(&prompt, Logits::All).unwrap();
        let r = CpuModel::new(&c, &w, 256).forward(&prompt);
        assert!(rel_err(&g, &r) < TOL, "{family:?}: {}", rel_err(&g, &r));
    }
}

#[test]
fn bad_inputs_are_clear_errors() {
    let c = tiny_config(RopeStyle::Neox);
    let w = random_weights(&c, 4, true);
    let mut m = GpuModel::new(gpu(), &c, &w, 32).unwrap();
    let e = m.forward(&[], Logits::Last).unwrap_err().to_string();
    assert!(e.contains("empty"), "{e}");
    let e = m.forward(&[c.vocab_size as u32], Logits::Last).unwrap_err().to_string();
    assert!(e.contains("outside the vocabulary"), "{e}");
    let e = m.forward(&[1; 33], Logits::Last).unwrap_err().to_string();
    assert!(e.contains("do not fit the context"), "{e}");
    assert_eq!(m.position(), 0, "a refused forward must not advance the cache");
}

/// What masking a unit spares, as a dense decode step reads it: 2 bytes a
/// weight in f16; from Q4_1, read packed, 20 bytes a block of 32 (16 of
/// quants, a d and an m). A neuron is its gate and up rows and W_down column
/// (3 x dim weights), a head its query rows and W_o columns (2 x head_dim x
/// dim); keys and values are computed for every head.
#[test]
fn unit_read_bytes_follow_how_the_weights_are_read() {
    let c = tiny_config(RopeStyle::Interleaved);
    let dir = scratch_dir();
    let path = dir.path().join("q4_1.gguf");
    std::fs::write(&path, gguf_bytes(&c, &random_weights(&c, 3, true), GgmlType::Q4_1)).unwrap();
    let loaded = model::load(&path).unwrap();
    let (neuron_weights, head_weights) = ((3 * c.dim) as f64, (2 * c.head_dim * c.dim) as f64);
    for packed in [false, true] {
        let options = ModelOptions { family: KernelFamily::RowPerInvocation, packed };
        let m = GpuModel::with_options(gpu(), &loaded.config, &loaded.weights, 16, options).unwrap();
        // Packed copies exist on CPU adapters only (the interleaved layout).
        let read_packed = m.packed_matrices().0 > 0;
        if gpu().is_software() {
            assert_eq!(read_packed, packed);
        }
        let per_weight = if read_packed { 20.0 / 32.0 } else { 2.0 };
        assert_eq!(m.unit_read_bytes(), UnitBytes { neuron: neuron_weights * per_weight, head: head_weights * per_weight }, "packed: {packed}");
    }
}
