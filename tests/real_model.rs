//! The real default model against llama.cpp, through the golden fixtures that
//! `tests/fixtures/make_golden.py` writes with llama-cpp-python.

use sift_e2e::{data_dir, fixtures_dir, golden, ids, real_model};
use sift_engine::model::Logits;
use sift_engine::perplexity::{nll, perplexity};
use sift_engine::sampling::argmax;

fn wikitext() -> String {
    let path = data_dir().join("wikitext2-test.txt");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn tokenizer_from_gguf_matches_llama_cpp() {
    let g = golden();
    let m = real_model().lock().unwrap_or_else(|e| e.into_inner());
    assert_eq!(m.tokenizer.encode(g["story_prompt"].as_str().unwrap()).unwrap(), ids(&g["story_prompt_tokens"]));
    let text = wikitext();
    let range = &g["wiki_chars"];
    let chars: String = text.chars().skip(range[0].as_u64().unwrap() as usize).take((range[1].as_u64().unwrap() - range[0].as_u64().unwrap()) as usize).collect();
    let want = ids(&g["wiki_prompt_tokens"]);
    assert_eq!(m.tokenizer.encode(&chars).unwrap()[..want.len()], want[..]);
    let ppl = &g["perplexity"];
    let all = m.tokenizer.encode(&text).unwrap();
    assert_eq!(all.len() as u64, ppl["total_tokens"].as_u64().unwrap(), "whole-file token count");
    assert_eq!(all[..16], ids(&ppl["first_tokens"])[..]);
}

#[test]
fn greedy_generation_matches_llama_cpp_token_for_token() {
    let g = golden();
    let mut m = real_model().lock().unwrap_or_else(|e| e.into_inner());
    m.model.reset();
    let mut logits = m.model.forward(&ids(&g["story_prompt_tokens"]), Logits::Last).unwrap();
    let mut out = vec![];
    for _ in 0..32 {
        let t = argmax(&logits);
        out.push(t);
        logits = m.model.forward(&[t], Logits::Last).unwrap();
    }
    assert_eq!(out, ids(&g["story_greedy_tokens"]), "ours: {:?}", m.tokenizer.decode(&out));
}

fn log_softmax(l: &[f32]) -> Vec<f64> {
    let z = nll(l, 0) + l[0] as f64; // log-sum-exp
    l.iter().map(|&v| v as f64 - z).collect()
}

#[test]
fn logits_agree_with_llama_cpp_top1_and_kl() {
    let g = golden();
    let vocab = g["vocab_size"].as_u64().unwrap() as usize;
    let bytes = std::fs::read(fixtures_dir().join("smollm2_wikitext_logits.f16")).unwrap();
    let reference: Vec<f32> = bytes.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect();
    let positions: Vec<usize> = g["wiki_positions"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    assert_eq!(reference.len(), positions.len() * vocab);
    let mut m = real_model().lock().unwrap_or_else(|e| e.into_inner());
    m.model.reset();
    let logits = m.model.forward(&ids(&g["wiki_prompt_tokens"]), Logits::All).unwrap();
    let mut kls = vec![];
    for (i, &pos) in positions.iter().enumerate() {
        let ours = &logits[pos * vocab..(pos + 1) * vocab];
        let theirs = &reference[i * vocab..(i + 1) * vocab];
        assert_eq!(argmax(ours), argmax(theirs), "top-1 differs at position {pos}");
        let (p, q) = (log_softmax(theirs), log_softmax(ours));
        let kl: f64 = p.iter().zip(&q).map(|(lp, lq)| lp.exp() * (lp - lq)).sum();
        kls.push(kl);
    }
    let max = kls.iter().cloned().fold(0.0, f64::max);
    eprintln!("KL(llama.cpp || sift) per position: {kls:.5?}");
    // Same Q4_1 weights; llama.cpp quantizes activations to 8 bits, we keep f32
    // activations and f16 weights. Measured ~1e-3; a wrong kernel gives > 0.1.
    assert!(max < 0.02, "max KL {max}");
}

#[test]
fn perplexity_within_one_percent_of_llama_cpp() {
    let g = golden();
    let p = &g["perplexity"];
    let mut m = real_model().lock().unwrap_or_else(|e| e.into_inner());
    let tokens = m.tokenizer.encode(&wikitext()).unwrap();
    let r = perplexity(&mut m.model, &tokens, 512, Some(8), |_, _| {}).unwrap();
    let reference = p["value"].as_f64().unwrap();
    eprintln!("sift perplexity {:.4} vs llama.cpp {reference:.4} over {} tokens", r.perplexity, r.scored_tokens);
    assert_eq!(r.scored_tokens as u64, p["scored_tokens"].as_u64().unwrap());
    assert!((r.perplexity / reference - 1.0).abs() < 0.01, "{} vs {reference}", r.perplexity);
}

/// The default model's vocabulary under each GGUF pre-tokenizer Sift reads,
/// against llama.cpp (`tests/fixtures/make_pretokenizer_tokens.py`).
#[test]
fn pre_tokenizers_split_as_llama_cpp() {
    use sift_engine::loader::gguf::{GgufFile, Value};
    use sift_engine::tokenizer::Tokenizer;
    let fixture: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures_dir().join("pretokenizer_tokens.json")).unwrap()).unwrap();
    let mut file = GgufFile::open(&sift_engine::default_model::path().unwrap()).unwrap();
    let wiki: String = wikitext().chars().take(fixture["wiki_chars"].as_u64().unwrap() as usize).collect();
    let hard = fixture["hard"].as_array().unwrap();
    for case in fixture["cases"].as_array().unwrap() {
        let pre = case["pre"].as_str().unwrap();
        file.metadata.insert("tokenizer.ggml.pre".into(), Value::Str(pre.into()));
        let tok = Tokenizer::from_gguf(&file).unwrap();
        assert_eq!(tok.encode_plain(&wiki).unwrap(), ids(&case["wiki_tokens"]), "{pre}: WikiText");
        for (text, want) in hard.iter().zip(case["hard"].as_array().unwrap()) {
            assert_eq!(tok.encode_plain(text.as_str().unwrap()).unwrap(), ids(want), "{pre}: {text}");
        }
    }
}
