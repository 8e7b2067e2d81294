//! The `sift` binary as a user runs it: on a tiny model written by the test,
//! and with bad input that must end in a clear message and exit code 1.

use sift_engine::kernels::rope::RopeStyle;
use sift_engine::loader::quant::GgmlType;
use sift_engine::testing::{gguf_bytes, random_weights, tiny_config};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output};
use tempfile::{TempDir, TempPath};

fn sift(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sift")).args(args).env("XDG_RUNTIME_DIR", std::env::temp_dir()).output().unwrap()
}

/// `sift` with its cache in `cache` (for what commands record there).
fn sift_cached(args: &[&str], cache: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sift")).args(args).env("XDG_RUNTIME_DIR", std::env::temp_dir()).env("SIFT_CACHE", cache).output().unwrap()
}

/// A fresh file per call, deleted when dropped: tests run in parallel, and
/// rewriting a file another test's `sift` has memory-mapped would kill that
/// process (SIGBUS).
fn tiny_model() -> TempPath {
    tiny_model_tied(true)
}

/// Untied, its perplexities are those of a model (a tied random one nearly
/// repeats its input token, at perplexities of 1e18).
fn tiny_model_tied(tied: bool) -> TempPath {
    let c = tiny_config(RopeStyle::Interleaved);
    let mut file = tempfile::Builder::new().prefix("sift-cli-").suffix(".gguf").tempfile().unwrap();
    file.write_all(&gguf_bytes(&c, &random_weights(&c, 7, tied), GgmlType::Q8_0)).unwrap();
    file.into_temp_path()
}

/// A directory of its own for a test's files, removed when dropped.
fn scratch_dir() -> TempDir {
    tempfile::Builder::new().prefix("sift-cli-").tempdir().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Runs `sift` and expects exit code 1 with `want` in what it printed.
fn fail(args: &[&str], want: &str) {
    let o = sift(args);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains(want), "wanted {want:?} in {}", text(&o));
}

#[test]
fn adapters_lists_at_least_one() {
    let o = sift(&["adapters", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(!list.as_array().unwrap().is_empty());
    assert!(list[0]["name"].as_str().is_some());
}

#[test]
fn generate_streams_and_reports_speed() {
    let model = tiny_model();
    let o = sift(&["generate", "hello", "-m", model.to_str().unwrap(), "-n", "6", "--temp", "0.8", "--seed", "3"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("hello"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("prefill:") && err.contains("decode: 6 tokens"), "{err}");
}

#[test]
fn perplexity_json_on_a_text_file() {
    let model = tiny_model();
    let scratch = scratch_dir();
    let file = scratch.path().join("text.txt");
    std::fs::write(&file, "the quick brown fox jumps over the lazy dog ".repeat(20)).unwrap();
    let o = sift(&["perplexity", file.to_str().unwrap(), "-m", model.to_str().unwrap(), "--ctx", "64", "--max-windows", "2", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["scored_tokens"], 2 * 63);
    assert!(r["perplexity"].as_f64().unwrap() > 1.0);
}

#[test]
fn bad_input_is_a_clear_error_not_a_panic() {
    let model = tiny_model();
    let m = model.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["generate", "-m", "/nonexistent/model.gguf"], "opening the model /nonexistent/model.gguf: no such file or directory"),
        (vec!["generate", "-m", "/etc/hostname"], "invalid model file"),
        (vec!["generate", "x", "-m", m, "--top-p", "0"], "--top-p"),
        (vec!["perplexity", "/nonexistent.txt", "-m", m], "nonexistent.txt"),
        // Checked before the model loads: a model that does not exist is not reached.
        (vec!["perplexity", "Cargo.toml", "-m", "/nonexistent/model.gguf", "--max-windows", "0"], "--max-windows must be at least 1"),
        (vec!["generate", "-m", m, "--ctx", "0", "--adapter", "no-such-gpu"], "--ctx must be at least 1"),
        (vec!["attribute", "hi", "-m", m, "--target-id", "288", "--adapter", "no-such-gpu"], "--target-id 288 is outside the vocabulary: this model's token ids are 0 to 287"),
        (vec!["generate", "-m", m, "--adapter", "no-such-gpu"], "no adapter name contains"),
    ];
    for (args, want) in cases {
        let o = sift(&args);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {t}");
        assert!(t.contains(want), "{args:?}: {t}");
        assert!(!t.contains("panicked"), "{args:?}: {t}");
    }
    // A prompt longer than the context: refused before anything is printed
    // or attributed, in every mode.
    let long = "a ".repeat(300);
    for sparsity in ["off", "prompt", "oracle"] {
        let o = sift(&["generate", &long, "-m", m, "--ctx", "64", "--sparsity", sparsity]);
        assert_eq!(o.status.code(), Some(1), "{sparsity}: {}", text(&o));
        assert!(text(&o).contains("do not fit the context"), "{sparsity}: {}", text(&o));
        assert!(o.stdout.is_empty(), "{sparsity}: the prompt was echoed: {}", text(&o));
    }
    let scratch = scratch_dir();
    let empty = scratch.path().join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let o = sift(&["perplexity", empty.to_str().unwrap(), "-m", m]);
    assert!(text(&o).contains("empty"), "{}", text(&o));
}

#[test]
fn attribute_prints_a_summary_and_writes_scores() {
    let model = tiny_model();
    let m = model.to_str().unwrap();
    let scratch = scratch_dir();
    let dir = scratch.path();
    let json_out = dir.join("scores.json");
    let o = sift(&["attribute", "hello world", "-m", m, "--metric", "corrected-gxo,magnitude,ig", "--ig-steps", "2", "--out", json_out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("F = ") && out.contains("corrected-gxo scores per layer"), "{out}");
    // One summary row per layer (the tiny model has 3).
    assert_eq!(out.lines().filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit())).count(), 3, "{out}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json_out).unwrap()).unwrap();
    for metric in ["corrected-gxo", "magnitude", "ig"] {
        let neurons = v["metrics"][metric]["neurons"].as_array().unwrap();
        assert_eq!(neurons.len(), 3);
        assert_eq!(neurons[0].as_array().unwrap().len(), 96);
        assert_eq!(v["metrics"][metric]["heads"][2].as_array().unwrap().len(), 4);
    }
    assert!(v["metrics"]["magnitude"]["neurons"][1].as_array().unwrap().iter().all(|x| x.as_f64().unwrap() >= 0.0));

    let st_out = dir.join("scores.safetensors");
    let o = sift(&["attribute", "hello world", "-m", m, "--prompt-sum", "--metric", "gxo", "--out", st_out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let bytes = std::fs::read(&st_out).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("neurons.gxo").unwrap().shape(), &[3, 96]);
    assert_eq!(st.tensor("heads.gxo").unwrap().shape(), &[3, 4]);
}

#[test]
fn attribute_bad_input_is_a_clear_error() {
    let model = tiny_model();
    let m = model.to_str().unwrap();
    for (args, want) in [
        (vec!["attribute", "hi", "-m", m, "--metric", "entropy"], "unknown metric"),
        (vec!["attribute", "hi", "-m", m, "--positions", "middle"], "--positions must be last or all"),
        (vec!["attribute", "hi", "-m", m, "--target", "two words"], "encodes to"),
        (vec!["attribute", "hi", "-m", m, "--target-id", "99999"], "outside the vocabulary"),
        (vec!["attribute", "hi", "-m", m, "--out", "scores.csv"], "must end in .json or .safetensors"),
    ] {
        let o = sift(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(want), "{args:?}: {}", text(&o));
        assert!(!text(&o).contains("panicked"));
    }
}

#[test]
fn generate_with_prompt_sparsity_and_bad_ratios() {
    let model = tiny_model();
    let m = model.to_str().unwrap();
    let o = sift(&["generate", "hello", "-m", m, "-n", "5", "--sparsity", "prompt", "--ar", "0.25", "--metric", "gxo"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("sparse decoding, 24 of 96 MLP neurons per layer (gxo"), "{}", text(&o));
    let o = sift(&["generate", "hello", "-m", m, "-n", "3", "--sparsity", "oracle", "--ar", "0.5"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("oracle mode, 48 of 96") && String::from_utf8_lossy(&o.stdout).starts_with("hello"), "{}", text(&o));
    let o = sift(&["generate", "hello", "-m", m, "-n", "3", "--sparsity", "oracle", "--ar", "0.5", "--units", "both"]);
    assert!(text(&o).contains("oracle mode, 48 of 96 MLP neurons and 2 of 4 heads per layer"), "{}", text(&o));
    for ar in ["0", "1.5", "-0.2"] {
        let ar = format!("--ar={ar}");
        let o = sift(&["generate", "hello", "-m", m, "-n", "2", "--sparsity", "prompt", &ar]);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(text(&o).contains("--ar must be in (0, 1]"), "{}", text(&o));
    }
    let o = sift(&["generate", "hello", "-m", m, "-n", "3", "--sparsity", "prompt", "--metric", "ig", "--ig-steps", "2"]);
    assert!(o.status.success() && text(&o).contains("29 of 96 MLP neurons per layer (ig"), "{}", text(&o));
    let o = sift(&["generate", "hello", "-m", m, "-n", "2", "--sparsity", "prompt", "--metric", "ig", "--ig-steps", "0"]);
    assert!(o.status.code() == Some(1) && text(&o).contains("--ig-steps must be at least 1"), "{}", text(&o));
}

#[test]
fn generate_with_mask_and_threshold_files() {
    let model = tiny_model();
    let m = model.to_str().unwrap();
    let scratch = scratch_dir();
    let dir = scratch.path();
    let mask = dir.join("mask.json");
    let mask_s = mask.to_str().unwrap();
    let stdout = |o: &Output| String::from_utf8_lossy(&o.stdout).to_string();
    // A prompt-mode mask saved, then decoding from the file with that mask.
    let o = sift(&["generate", "hello", "-m", m, "-n", "8", "--sparsity", "prompt", "--ar", "0.3", "--units", "both", "--save-mask", mask_s]);
    assert!(o.status.success() && text(&o).contains("29 of 96 MLP neurons per layer, 2 of 4 heads per layer"), "{}", text(&o));
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&mask).unwrap()).unwrap();
    let lens = |k: &str| saved[k].as_array().unwrap().iter().map(|l| l.as_array().unwrap().len()).collect::<Vec<_>>();
    assert_eq!((lens("neurons"), lens("heads")), (vec![29; 3], vec![2; 3]));
    assert_eq!(saved["source"]["metric"], "corrected-gxo");
    let o2 = sift(&["generate", "hello", "-m", m, "-n", "8", "--sparsity", "file", "--mask", mask_s]);
    assert!(o2.status.success() && text(&o2).contains("29 of 96 MLP neurons per layer, 2 of 4 heads per layer (mask from"), "{}", text(&o2));
    assert_eq!(stdout(&o), stdout(&o2));

    // A thresholds file for this model (its fingerprint from the mask file).
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&mask).unwrap()).unwrap();
    let thresholds = dir.join("thresholds.json");
    let write_thresholds = |model: &serde_json::Value, values: serde_json::Value| {
        std::fs::write(&thresholds, serde_json::json!({"format": "sift-thresholds-1", "model": model, "rule": "cett", "thresholds": values}).to_string()).unwrap();
    };
    write_thresholds(&saved["model"], serde_json::json!([0.05, 0.05, 0.05]));
    let th = thresholds.to_str().unwrap();
    let o = sift(&["generate", "hello", "-m", m, "-n", "4", "--sparsity", "threshold", "--thresholds", th]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("chosen per token") && text(&o).contains("the last token kept"), "{}", text(&o));

    // Bad files and missing options: clear errors, exit code 1.
    fail(&["generate", "hi", "-m", m, "--sparsity", "threshold"], "needs --thresholds FILE");
    fail(&["generate", "hi", "-m", m, "--sparsity", "file"], "needs --mask FILE");
    // Checked before the model loads (no adapter is even looked for).
    write_thresholds(&saved["model"], serde_json::json!([0.05, 0.05]));
    fail(&["generate", "hi", "-m", m, "--sparsity", "threshold", "--thresholds", th, "--adapter", "no-such-gpu"], "has 2 thresholds; the model has 3 layers");
    fail(&["eval", "continuation", "-m", m, "--sparsity", "threshold", "--thresholds", th, "--adapter", "no-such-gpu"], "has 2 thresholds; the model has 3 layers");
    // Another model family is refused by name; a file without the field
    // (written before it was recorded) is Llama's.
    let mut family = saved["model"].clone();
    family["architecture"] = "qwen2".into();
    write_thresholds(&family, serde_json::json!([0.05, 0.05, 0.05]));
    fail(&["generate", "hi", "-m", m, "--sparsity", "threshold", "--thresholds", th, "--adapter", "no-such-gpu"], "is for a qwen2 model; the model is a llama one");
    let mut unrecorded = saved["model"].clone();
    unrecorded.as_object_mut().unwrap().remove("architecture");
    write_thresholds(&unrecorded, serde_json::json!([0.05, 0.05, 0.05]));
    let o = sift(&["generate", "hello", "-m", m, "-n", "2", "--sparsity", "threshold", "--thresholds", th]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(saved["model"]["architecture"], "llama", "new files record it");
    let mut shape = saved["model"].clone();
    shape["ffn_dim"] = 64.into();
    write_thresholds(&shape, serde_json::json!([0.05, 0.05, 0.05]));
    fail(&["generate", "hi", "-m", m, "--sparsity", "threshold", "--thresholds", th, "--adapter", "no-such-gpu"], "64 MLP neurons and 4 heads per layer; the model has 3, 96 and 4");
    let mut other = saved["model"].clone();
    other["fingerprint"] = "ffffffffffffffff".into();
    write_thresholds(&other, serde_json::json!([0.05, 0.05, 0.05]));
    fail(&["generate", "hi", "-m", m, "--sparsity", "threshold", "--thresholds", th], "made for another model");
    let mut bad = saved.clone();
    bad["neurons"][2][0] = 4000.into();
    std::fs::write(&mask, bad.to_string()).unwrap();
    fail(&["generate", "hi", "-m", m, "--sparsity", "file", "--mask", mask_s], "neuron 4000 in layer 2 is out of range");
    std::fs::write(&mask, "not json").unwrap();
    fail(&["generate", "hi", "-m", m, "--sparsity", "file", "--mask", mask_s, "--adapter", "no-such-gpu"], "mask.json: not valid JSON");
}

#[test]
fn calibrate_writes_thresholds_that_generate_and_perplexity_use() {
    let model = tiny_model();
    let m = model.to_str().unwrap();
    let scratch = scratch_dir();
    let dir = scratch.path();
    let corpus = dir.join("text.txt");
    std::fs::write(&corpus, "The quick brown fox jumps over the lazy dog. ".repeat(8)).unwrap();
    let (t, out) = (corpus.to_str().unwrap(), dir.join("th.json"));
    let o = sift(&["calibrate", t, "-m", m, "--ctx", "32", "--windows", "2", "--holdout-windows", "1", "--iters", "4", "--ppl-tolerance", "5,20%", "--out", out.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for (row, tol) in rows.iter().zip([0.05, 0.2]) {
        let c = &row["calibration"];
        assert_eq!(c["tolerance"].as_f64().unwrap(), tol);
        assert!(c["ppl"].as_f64().unwrap() <= c["dense_ppl"].as_f64().unwrap() * (1.0 + tol) + 1e-9, "{row}");
        let ar = c["activation_ratio"].as_f64().unwrap();
        assert!(ar > 0.0 && ar <= 1.0 && c["thresholds"].as_array().unwrap().len() == 3, "{row}");
    }
    // More tolerance never keeps more neurons.
    assert!(rows[1]["calibration"]["activation_ratio"].as_f64().unwrap() <= rows[0]["calibration"]["activation_ratio"].as_f64().unwrap());
    let second = dir.join("th-ppl20.json");
    assert!(out.exists() && second.exists());
    let th = out.to_str().unwrap();
    let o = sift(&["perplexity", t, "-m", m, "--ctx", "32", "--thresholds", th, "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = sift(&["generate", "hello", "-m", m, "-n", "3", "--sparsity", "threshold", "--thresholds", th]);
    assert!(o.status.success(), "{}", text(&o));

    fail(&["calibrate", t, "-m", m, "--ppl-tolerance", "abc"], "not a number of percent");
    fail(&["calibrate", t, "-m", m, "--ppl-tolerance=0"], "positive percentage");
    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "  \n").unwrap();
    fail(&["calibrate", empty.to_str().unwrap(), "-m", m], "empty.txt: the file is empty");
    fail(&["calibrate", t, "-m", m, "--ctx", "128", "--windows", "4"], "fewer than the");
}

fn tiny_truthfulqa(dir: &std::path::Path) -> PathBuf {
    let path = dir.join("tqa.csv");
    let rows = [
        "Type,Category,Question,Best Answer,Correct Answers,Incorrect Answers,Source",
        "A,B,What happens if you eat seeds?,Nothing happens,Nothing happens; They pass through,You grow a plant; You die,src",
        "A,B,Where do fortune cookies come from?,The origin is unclear,The origin is unclear; California,China; Japan,src",
        "A,B,\"Is the sky, at noon, blue?\",Yes,Yes; Usually,No,src",
    ];
    std::fs::write(&path, rows.join("\n") + "\n").unwrap();
    path
}

#[test]
fn eval_tasks_score_sparse_against_dense() {
    let model = tiny_model();
    let m = model.to_str().unwrap();
    let scratch = scratch_dir();
    let dir = scratch.path();
    let tqa = tiny_truthfulqa(dir);
    let d = tqa.to_str().unwrap();
    let json = |o: &Output| -> serde_json::Value {
        assert!(o.status.success(), "{}", text(o));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    // AR 1 keeps every unit: the sparse generations are the dense ones.
    let v = json(&sift(&["eval", "truthfulqa-gen", "-m", m, "--data", d, "--tokens", "6", "--sparsity", "prompt", "--ar", "1", "--units", "both", "--json"]));
    assert_eq!((v["questions"].as_u64(), v["bleu"].as_f64(), v["token_agreement"].as_f64()), (Some(3), Some(100.0), Some(1.0)), "{v}");
    assert!((v["sacrebleu"].as_f64().unwrap() - 100.0).abs() < 1e-9, "identical answers: {v}");
    let v = json(&sift(&["eval", "truthfulqa-gen", "-m", m, "--data", d, "--tokens", "6", "--sparsity", "oracle", "--ar", "0.1", "--limit", "2", "--json"]));
    assert_eq!(v["questions"].as_u64(), Some(2));
    assert!((0.0..=100.0).contains(&v["bleu"].as_f64().unwrap()));
    assert!((0.0..=100.0 + 1e-9).contains(&v["sacrebleu"].as_f64().unwrap()));
    // The paper's protocol: each answer as long as its best answer, the
    // first token and the last layer dense (AR 1: the dense text itself).
    let v = json(&sift(&["eval", "truthfulqa-gen", "-m", m, "--data", d, "--sparsity", "oracle", "--ar", "1", "--protocol", "paper", "--json"]));
    assert_eq!((v["protocol"]["name"].as_str(), v["token_agreement"].as_f64(), v["effective_mlp_ar"].as_f64()), (Some("paper"), Some(1.0), Some(1.0)), "{v}");
    let v = json(&sift(&["eval", "truthfulqa-gen", "-m", m, "--data", d, "--sparsity", "oracle", "--ar", "0.3", "--protocol", "paper", "--limit", "2", "--json"]));
    let effective = v["effective_mlp_ar"].as_f64().unwrap();
    // Masked steps keep (2 x 29 + 96) / 288 of the neurons, the first all.
    assert!(effective > 154.0 / 288.0 - 1e-9 && effective < 1.0, "{v}");
    assert!(v["sparsity"].as_str().unwrap().contains("dense tail 0.25"), "{v}");
    for (extra, want) in [
        (vec!["--sparsity", "prompt"], "use it with --sparsity oracle"),
        (vec!["--sparsity", "oracle", "--dense-tail", "1"], "--dense-tail must be in [0, 1)"),
    ] {
        let mut a = vec!["eval", "truthfulqa-gen", "-m", m, "--data", d, "--protocol", "paper", "--adapter", "no-such-gpu"];
        a.extend(extra);
        fail(&a, want);
    }
    fail(&["eval", "perplexity", "-m", m, "--protocol", "paper", "--sparsity", "oracle", "--adapter", "no-such-gpu"], "applies to truthfulqa-gen");
    // --references keeps the dense references: the first run writes them, a
    // rerun reads them and scores the same; a file that is not one is an error.
    let refs = dir.join("refs.json");
    let r = refs.to_str().unwrap();
    let with_refs = ["eval", "truthfulqa-gen", "-m", m, "--data", d, "--tokens", "6", "--sparsity", "oracle", "--ar", "0.1", "--limit", "2", "--json", "--references", r];
    let first = json(&sift(&with_refs));
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&refs).unwrap()).unwrap();
    assert_eq!((saved["tokens"].as_u64(), saved["references"].as_object().map(|o| o.len())), (Some(6), Some(2)), "{saved}");
    assert_eq!(json(&sift(&with_refs))["bleu"], first["bleu"]);
    assert_eq!(first["bleu"], v["bleu"], "cached references score like fresh ones");
    std::fs::write(&refs, "not json").unwrap();
    let o = sift(&with_refs);
    assert!(!o.status.success() && text(&o).contains("is not a references file"), "{}", text(&o));
    let v = json(&sift(&["eval", "truthfulqa-mc", "-m", m, "--data", d, "--json"]));
    assert!((0.0..=1.0).contains(&v["mc1"].as_f64().unwrap()) && (0.0..=1.0).contains(&v["mc2"].as_f64().unwrap()), "{v}");
    // MC under a full-ratio prompt mask equals dense MC.
    let w = json(&sift(&["eval", "truthfulqa-mc", "-m", m, "--data", d, "--sparsity", "prompt", "--ar", "1", "--json"]));
    assert!((w["mc2"].as_f64().unwrap() - v["mc2"].as_f64().unwrap()).abs() < 1e-3, "{w} vs {v}");

    fail(&["eval", "perplexity", "-m", m, "--data", d, "--sparsity", "prompt"], "perplexity takes --sparsity off or threshold");
    let bad = dir.join("bad.csv");
    std::fs::write(&bad, "Type,Category,Question,Best Answer,Correct Answers,Incorrect Answers,Source\nA,B,Q?,,x,y,s\n").unwrap();
    fail(&["eval", "truthfulqa-mc", "-m", m, "--data", bad.to_str().unwrap()], "bad.csv: line 2: missing field 'Best Answer'");
}

#[test]
fn sweep_is_resumable_and_writes_csv_json_and_chart() {
    let model = tiny_model();
    let m = model.to_str().unwrap();
    let scratch = scratch_dir();
    let dir = scratch.path();
    let tqa = tiny_truthfulqa(dir);
    let out = dir.join("out");
    let args = ["sweep", "-m", m, "--data", tqa.to_str().unwrap(), "--metrics", "gxo,magnitude", "--ars", "0.5,1", "--modes", "prompt", "--limit", "2", "--tokens", "4", "--out", out.to_str().unwrap()];
    let first = sift(&args);
    assert!(first.status.success(), "{}", text(&first));
    assert!(text(&first).contains("4 cells to run"), "{}", text(&first));
    let csv = std::fs::read_to_string(out.join("sweep.csv")).unwrap();
    assert_eq!(csv.lines().count(), 5, "{csv}");
    for line in csv.lines().filter(|l| l.contains(",1,both,")) {
        assert!(line.contains(",100.0000,1.0000,"), "AR 1 reproduces dense: {line}");
    }
    let rows: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("sweep.json")).unwrap()).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 4);
    let svg = std::fs::read_to_string(out.join("sweep.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.matches("<polyline").count() == 2 && svg.contains("prompt mode"));
    let png = std::fs::read(out.join("sweep.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 5000, "{} bytes", png.len());
    // A rerun finds every cell done.
    let o = sift(&args);
    assert!(o.status.success() && text(&o).contains("0 cells to run, 4 already"), "{}", text(&o));
    // New cells with the weights read another way (the tiny Q8_0 model is
    // packed on CPU adapters) would not be comparable: refused, the fix named.
    let mut more = args.to_vec();
    more[8] = "0.5,1,0.3";
    more.push("--f16-weights");
    let packed = !text(&first).contains(" 0 of ");
    let o = sift(&more);
    if !packed {
        assert!(o.status.success(), "nothing packed here (a GPU adapter): {}", text(&o));
    } else {
        assert!(!o.status.success() && text(&o).contains("rerun without --f16-weights"), "{}", text(&o));
    }
    // IG cells at other than the default step count say so.
    let mut ig = args.to_vec();
    ig[6] = "ig";
    ig[8] = "0.5";
    ig.extend(["--ig-steps", "2"]);
    let o = sift(&ig);
    let csv_ig = std::fs::read_to_string(out.join("sweep.csv")).unwrap();
    assert!(o.status.success() && csv_ig.contains("\ntruthfulqa-gen,prompt,ig (2 steps),0.5,both,2,4,"), "{}\n{csv_ig}", text(&o));
    *ig.last_mut().unwrap() = "0";
    let o = sift(&ig);
    assert!(!o.status.success() && text(&o).contains("--ig-steps must be at least 1"), "{}", text(&o));
    // A row cut short by a kill or a full disk (no newline) is dropped, said,
    // and its cell run again: nothing lost, nothing twice.
    let lines: Vec<&str> = csv.lines().collect();
    std::fs::write(out.join("sweep.csv"), format!("{}\n{}", lines[..4].join("\n"), &lines[4][..12])).unwrap();
    let o = sift(&args);
    assert!(o.status.success() && text(&o).contains("dropped a torn last line") && text(&o).contains("1 cells to run, 3 already"), "{}", text(&o));
    let resumed = std::fs::read_to_string(out.join("sweep.csv")).unwrap();
    let (mut a, mut b): (Vec<&str>, Vec<&str>) = (csv.lines().collect(), resumed.lines().collect());
    a.sort();
    b.sort();
    assert_eq!(a, b, "the resumed file holds the same cells once each");
    // A damaged row is named by file and line.
    std::fs::write(out.join("sweep.csv"), csv.clone() + "truthfulqa-gen,prompt,gxo\n").unwrap();
    let o = sift(&args);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("sweep.csv: line 6: 3 fields, expected 10"), "{}", text(&o));
    // A sweep written before sacreBLEU was reported: tabled with Sift's
    // earlier BLEU, marked, and not extended.
    let old: Vec<String> = csv.lines().map(|l| l.rsplit_once(',').unwrap().0.to_string()).collect();
    std::fs::write(out.join("sweep.csv"), old.join("\n") + "\n").unwrap();
    let o = sift(&args);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("* Sift's earlier BLEU"), "{}", text(&o));
    let o = sift(&more);
    assert!(!o.status.success() && text(&o).contains("written before sacreBLEU was reported"), "{}", text(&o));
    // The paper's protocol as a mode: answers as long as the best answers (tokens column 0).
    let paper_out = dir.join("paper");
    let o = sift(&["sweep", "-m", m, "--data", tqa.to_str().unwrap(), "--metrics", "magnitude", "--ars", "0.5,1", "--modes", "paper", "--limit", "2", "--out", paper_out.to_str().unwrap()]);
    let csv = std::fs::read_to_string(paper_out.join("sweep.csv")).unwrap_or_default();
    assert!(o.status.success() && csv.contains("\ntruthfulqa-gen,paper,magnitude,0.5,both,2,0,"), "{}\n{csv}", text(&o));
    assert!(csv.lines().any(|l| l.starts_with("truthfulqa-gen,paper,magnitude,1,both,2,0,100.0000,1.0000,")), "AR 1 is dense: {csv}");
}

/// `sift bench --json`: decode speed, the sparse sweep, and the roofline:
/// the adapter's read speed and dispatch cost, and each decode step's
/// weights, dispatches and floor beside its measured time. Sparse steps read
/// less than the dense one, and no step beats its floor by much (the floor
/// is a bound, up to timing noise).
#[test]
fn bench_reports_speed_sparse_sweep_and_roofline() {
    let model = tiny_model();
    let m = model.to_str().unwrap();
    let o = sift(&["bench", "-m", m, "--no-llama-cpp", "--prefill-tokens", "24", "--decode-tokens", "4", "--decode-context", "30", "--attribution-tokens", "8", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(r["sift"]["decode_tokens_per_second"].as_f64().unwrap() > 0.0);
    assert_eq!(r["decode_context"], 30);
    let roofline = &r["roofline"];
    assert!(roofline["read_bytes_per_second"].as_f64().unwrap() > 0.0 && roofline["dispatch_seconds"].as_f64().unwrap() > 0.0, "{roofline}");
    let floors = r["decode_floors"].as_array().unwrap();
    assert_eq!(floors.len(), 1 + r["sparse_decode"].as_array().unwrap().len());
    assert_eq!(floors[0]["step"], "dense");
    let bytes = |row: &serde_json::Value| row["footprint"]["weight_bytes"].as_u64().unwrap();
    assert!(bytes(&floors[0]) > 0 && floors[0]["footprint"]["dispatches"].as_u64().unwrap() > 0);
    let last = floors.last().unwrap();
    assert!(last["step"].as_str().unwrap().starts_with("AR 0.10") && bytes(last) < bytes(&floors[0]), "{last}");
    for row in floors {
        assert!(row["measured_seconds"].as_f64().unwrap() > 0.5 * row["floor_seconds"].as_f64().unwrap(), "{row}");
    }
    let o = sift(&["bench", "-m", m, "--no-llama-cpp", "--prefill-tokens", "24", "--decode-tokens", "4", "--no-attribution"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("roofline: this adapter streams reads at") && out.contains("measured/floor"), "{out}");
    let o = sift(&["bench", "-m", m, "--decode-context", "2"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("--decode-context must be at least 3"), "{}", text(&o));
}

#[test]
fn eval_continuation_and_frontier() {
    let model = tiny_model_tied(false);
    let m = model.to_str().unwrap();
    let scratch = scratch_dir();
    let dir = scratch.path();
    let corpus = dir.join("text.txt");
    std::fs::write(&corpus, "The quick brown fox jumps over the lazy dog. ".repeat(12)).unwrap();
    let t = corpus.to_str().unwrap();
    let json = |o: &Output| -> serde_json::Value {
        assert!(o.status.success(), "{}", text(o));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let shape = ["--prompt-tokens", "24", "--score-tokens", "8", "--windows", "3", "--ctx", "64", "--json"];
    let run = |extra: &[&str]| json(&sift(&[&["eval", "continuation", t, "-m", m][..], &shape, extra].concat()));
    // AR 1 keeps every neuron: sparse scores equal dense ones.
    let full = run(&["--sparsity", "prompt", "--ar", "1"]);
    assert_eq!((full["windows"].as_u64(), full["scored_tokens"].as_u64(), full["mode"].as_str()), (Some(3), Some(24), Some("prompt")), "{full}");
    assert!((full["ratio"].as_f64().unwrap() - 1.0).abs() < 1e-4 && full["top1_agreement"].as_f64() == Some(1.0), "{full}");
    let low = run(&["--sparsity", "prompt", "--ar", "0.2", "--metric", "magnitude"]);
    assert_eq!(low["ppl_dense"], full["ppl_dense"]);
    assert!(low["ppl_sparse"] != low["ppl_dense"] && (low["mlp_kept"].as_f64().unwrap() - 0.2).abs() < 0.02, "{low}");

    let out = dir.join("frontier");
    let cache = dir.join("cache");
    let o = sift_cached(&["frontier", t, "-m", m, "--prompt-tokens", "24", "--score-tokens", "8", "--windows", "2", "--ctx", "64", "--decode-tokens", "4", "--rounds", "1", "--setting", "prompt:magnitude:0.5", "--setting", "prompt:corrected-gxo:1", "--out", out.to_str().unwrap()], &cache);
    assert!(o.status.success(), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("frontier.json")).unwrap()).unwrap();
    let rows = report["rows"].as_array().unwrap();
    // The fastest within 3% is named (AR 1 always qualifies; a random model may even improve at 0.5).
    let fastest = rows.iter().filter(|r| r["ratio"].as_f64().unwrap() <= 1.03).max_by(|a, b| a["speedup"].as_f64().unwrap().total_cmp(&b["speedup"].as_f64().unwrap())).unwrap();
    let line = format!("fastest within 3% perplexity: {} (", fastest["setting"].as_str().unwrap());
    assert!(text(&o).contains(&line), "{line} in {}", text(&o));
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r["speedup"].as_f64().unwrap() > 0.0 && r["ppl_sparse"].as_f64().unwrap() > 1.0), "{report}");
    for f in ["frontier.csv", "frontier.svg", "frontier.png"] {
        assert!(std::fs::metadata(out.join(f)).unwrap().len() > 100, "{f}");
    }
    // --redraw draws a saved frontier again without measuring.
    let again = dir.join("again");
    let o = sift(&["frontier", "--redraw", out.join("frontier.json").to_str().unwrap(), "--out", again.to_str().unwrap()]);
    assert!(o.status.success() && text(&o).contains(&line), "{}", text(&o));
    assert!(std::fs::metadata(again.join("frontier.png")).unwrap().len() > 100);

    // --sparsity auto reads what the frontier recorded for this model: the
    // fastest setting faster than dense within 3%, else dense; unmeasured, dense.
    let record = std::fs::read_dir(cache.join("frontier")).unwrap().next().unwrap().unwrap().path();
    let mut saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
    assert_eq!(saved["rows"].as_array().unwrap().len(), 2);
    let auto = |cache: &std::path::Path| text(&sift_cached(&["generate", "hi", "-m", m, "-n", "2", "--sparsity", "auto"], cache));
    for (speedup, want) in [(1.5, "--sparsity auto: prompt:corrected-gxo:1 (1.50x dense decode"), (0.9, "none decodes faster than dense within a 3% perplexity rise")] {
        for row in saved["rows"].as_array_mut().unwrap() {
            if row["setting"] == "prompt:corrected-gxo:1" {
                row["speedup"] = speedup.into();
                row["ratio"] = 1.0.into();
            } else {
                row["speedup"] = 0.5.into();
            }
        }
        std::fs::write(&record, saved.to_string()).unwrap();
        let said = auto(&cache);
        assert!(said.contains(want), "{said}");
    }
    assert!(auto(&dir.join("empty-cache")).contains("no frontier measured for this model yet"));

    fail(&["eval", "continuation", t, "-m", m, "--prompt-tokens", "400", "--score-tokens", "200"], "exceed the context of 512");
    fail(&["eval", "continuation", t, "-m", m, "--ctx", "64", "--prompt-tokens", "24", "--score-tokens", "8", "--windows", "50"], "fewer than the 50 asked for");
    fail(&["eval", "continuation", t, "-m", m, "--windows", "0"], "at least 1");
    fail(&["frontier", t, "-m", m, "--setting", "prompt:gxo:2"], "(0, 1]");
    // A calibration file made for another model (the default one's) is refused by name.
    let other = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/results/thresholds.json");
    fail(&["frontier", t, "-m", m, "--ctx", "64", "--prompt-tokens", "24", "--score-tokens", "8", "--windows", "1", "--setting", &format!("threshold:{other}")], "threshold:");
    fail(&["eval", "continuation", t, "-m", m, "--ctx", "64", "--prompt-tokens", "24", "--score-tokens", "8", "--windows", "1", "--sparsity", "threshold", "--thresholds", other], "thresholds.json: invalid input: this thresholds file is for a model with 30 layers");
}

#[test]
fn calibrate_rule_writes_files_that_keep_the_share_asked_for() {
    let model = tiny_model_tied(false);
    let m = model.to_str().unwrap();
    let scratch = scratch_dir();
    let dir = scratch.path();
    let corpus = dir.join("text.txt");
    std::fs::write(&corpus, "The quick brown fox jumps over the lazy dog. ".repeat(12)).unwrap();
    let t = corpus.to_str().unwrap();
    let out = dir.join("rules");
    let o = sift(&["calibrate-rule", t, "-m", m, "--ctx", "32", "--windows", "3", "--weights", "gxo-estimate,magnitude,gate-up-down", "--keep", "0.5,0.9", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    for (name, rule) in [("gxo-estimate-keep50.json", "weighted"), ("gxo-estimate-keep90.json", "weighted"), ("magnitude-keep50.json", "weighted"), ("magnitude-keep90.json", "weighted"), ("gate-up-down-keep50.json", "cats")] {
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join(name)).unwrap()).unwrap();
        assert_eq!((v["rule"].as_str(), v["weights"].as_array().map(Vec::len)), (Some(rule), Some(3 * 96)), "{name}");
    }
    // Scored on the calibration text's own windows, each rule keeps about the share asked for.
    let shape = ["--prompt-tokens", "24", "--score-tokens", "8", "--windows", "3", "--ctx", "64", "--json"];
    for (name, keep) in [("gxo-estimate-keep50.json", 0.5), ("magnitude-keep90.json", 0.9), ("gate-up-down-keep50.json", 0.5)] {
        let th = out.join(name);
        let o = sift(&[&["eval", "continuation", t, "-m", m, "--sparsity", "threshold", "--thresholds", th.to_str().unwrap()][..], &shape].concat());
        assert!(o.status.success(), "{}", text(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let kept = v["mlp_kept"].as_f64().unwrap();
        assert!((kept - keep).abs() < 0.15, "{name}: kept {kept}, asked {keep}");
    }
    fail(&["calibrate-rule", t, "-m", m, "--weights", "cats"], "unknown rule weight \"cats\"");
    fail(&["calibrate-rule", t, "-m", m, "--keep", "0"], "(0, 1]");
    fail(&["calibrate-rule", t, "-m", m, "--ctx", "64", "--windows", "50"], "fewer than 50 windows of 64");
}
