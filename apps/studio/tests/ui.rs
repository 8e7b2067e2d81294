//! Sift Studio driven as a person would, through egui_kittest, with the real
//! engine on a tiny random model (lavapipe where there is no GPU): the slider
//! sets the AR of the next generation, the prompt target reaches it too, the
//! mask view has one row per layer,
//! Stop stops, and a bad model file's error and a lost GPU device show in
//! the window.

use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use sift_engine::gpu::AdapterRequest;
use sift_engine::kernels::rope::RopeStyle;
use sift_engine::loader::quant::GgmlType;
use sift_engine::model::sparse::PromptTarget;
use sift_engine::testing::{gguf_bytes, random_weights, tiny_config};
use sift_studio::app::StudioApp;
use sift_studio::worker::{Mode, Worker};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A model file, deleted when dropped (keep it until the app has loaded it).
fn tiny_model() -> tempfile::TempPath {
    let c = tiny_config(RopeStyle::Neox);
    let mut file = tempfile::Builder::new().prefix("sift-studio-").suffix(".gguf").tempfile().unwrap();
    file.write_all(&gguf_bytes(&c, &random_weights(&c, 21, true), GgmlType::Q8_0)).unwrap();
    file.into_temp_path()
}

fn studio(model: PathBuf) -> Harness<'static, StudioApp> {
    // SAFETY: set before any thread of this test reads the environment.
    unsafe { std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir()) };
    let worker = Worker::spawn(None, AdapterRequest::default(), || {});
    let app = StudioApp::new(worker, Some(model));
    // A random model's byte tokens can make invalid UTF-8, shown as U+FFFD,
    // which the bundled fonts draw as a box (as the app does).
    Harness::builder().with_size(egui::vec2(1280.0, 800.0)).allow_missing_glyphs().build_ui_state(|ui, app: &mut StudioApp| app.ui(ui), app)
}

/// Steps the UI until `done` holds (the worker runs meanwhile).
fn wait(h: &mut Harness<'static, StudioApp>, what: &str, done: impl Fn(&StudioApp) -> bool) {
    let t = Instant::now();
    while !done(h.state()) {
        assert!(t.elapsed() < Duration::from_secs(120), "timed out waiting for {what}; status {:?}, error {:?}", h.state().status, h.state().error);
        std::thread::sleep(Duration::from_millis(20));
        h.step();
    }
    h.step();
}

use eframe::egui;

#[test]
fn slider_sets_the_ar_of_the_next_generation_and_masks_have_a_row_per_layer() {
    let model = tiny_model();
    let mut h = studio(model.to_path_buf());
    wait(&mut h, "the model", |a| a.info.is_some());
    let layers = h.state().info.as_ref().unwrap().n_layers;
    assert_eq!(layers, 3);
    for l in 0..layers {
        h.get_by_label(&format!("layer {l}"));
    }
    assert!(h.query_by_label(&format!("layer {layers}")).is_none());
    // Nothing decoded yet: no active share or savings to report.
    h.get_by_label("MLP neurons active: –");
    h.get_by_label("saved per token: –");
    // This test is about the slider and the speed ratio: sparse runs alone.
    h.state_mut().compare = false;

    h.state_mut().controls.max_tokens = 4;
    h.get_by_role_and_label(egui::accesskit::Role::Slider, "activation ratio").set_value_accesskit(0.55);
    h.step();
    assert!((h.state().controls.ar - 0.55).abs() < 1e-9, "the slider moved the AR: {}", h.state().controls.ar);
    h.get_by_label("Generate").click();
    h.step();
    let req = h.state().last_request.clone().expect("a generation was sent");
    assert!((req.ar - 0.55).abs() < 1e-9 && req.mode == Mode::Prompt);
    wait(&mut h, "the generation", |a| !a.generating);
    assert!(h.state().error.is_none(), "{:?}", h.state().error);
    assert!(h.state().status.contains("finished"), "{}", h.state().status);
    // ceil(0.55 * 96) = 53 of 96 neurons per layer were active.
    assert!((h.state().stats.mlp_active - 53.0 / 96.0).abs() < 1e-9, "{}", h.state().stats.mlp_active);
    h.get_by_label("MLP neurons active: 55%");
    assert!(h.query_by_label("saved per token: –").is_none(), "savings are shown once tokens are decoded");
    // 43 neurons a layer skipped, 3 x 64 weights each, read as the dense step
    // reads them: packed 8 bits on CPU adapters (36 bytes a block of 32), f16 elsewhere.
    let per_weight = if h.state().info.as_ref().unwrap().adapter.contains("software") { 36.0 / 32.0 } else { 2.0 };
    let skipped = (layers * 43 * 3 * 64) as f64 * per_weight;
    h.get_by_label(&format!("weights not read: {}", indicatif::HumanBytes(skipped as u64)));

    // A second generation takes the slider's new value, and the prompt target chosen.
    assert_eq!(req.prompt_target, PromptTarget::Next, "the default prompt target");
    h.get_by_label("prompt target");
    h.state_mut().controls.prompt_target = PromptTarget::Tokens;
    h.get_by_role_and_label(egui::accesskit::Role::Slider, "activation ratio").set_value_accesskit(0.2);
    h.step();
    h.get_by_label("Generate").click();
    h.step();
    assert!((h.state().last_request.as_ref().unwrap().ar - 0.2).abs() < 1e-9);
    assert_eq!(h.state().last_request.as_ref().unwrap().prompt_target, PromptTarget::Tokens);
    wait(&mut h, "the second generation", |a| !a.generating);
    assert!((h.state().stats.mlp_active - 20.0 / 96.0).abs() < 1e-9, "{}", h.state().stats.mlp_active);
    // No dense run yet to compare the speed with; after one, the ratio of
    // the two decode rates.
    h.get_by_label("vs dense: generate once in dense mode to compare");
    h.state_mut().controls.mode = Mode::Dense;
    h.get_by_label("Generate").click();
    h.step();
    wait(&mut h, "the dense generation", |a| !a.generating);
    let dense = h.state().dense_tokens_per_second.expect("the dense rate is kept");
    assert_eq!(dense, h.state().stats.tokens_per_second);
    assert!(h.query_by_label_contains("vs dense").is_none(), "a dense run is not compared with itself");
    h.state_mut().controls.mode = Mode::Prompt;
    h.get_by_label("Generate").click();
    h.step();
    wait(&mut h, "the sparse generation", |a| !a.generating);
    h.get_by_label(&format!("vs dense: {:.2}x", h.state().stats.tokens_per_second / dense));
    for l in 0..layers {
        h.get_by_label(&format!("layer {l}"));
    }
}

#[test]
fn stop_stops_the_generation() {
    let model = tiny_model();
    let mut h = studio(model.to_path_buf());
    wait(&mut h, "the model", |a| a.info.is_some());
    h.state_mut().controls.max_tokens = 200;
    h.state_mut().controls.mode = Mode::Oracle;
    h.get_by_label("Generate").click();
    h.step();
    assert!(h.state().generating);
    h.get_by_label("Stop").click();
    h.step();
    wait(&mut h, "the stop", |a| !a.generating);
    assert!(h.state().status.contains("finished: stopped"), "{}", h.state().status);
    assert!(h.state().stats.generated < 200);
}

#[test]
fn a_bad_model_file_shows_its_error_in_the_window() {
    let scratch = tempfile::Builder::new().prefix("sift-studio-").tempdir().unwrap();
    let bad = scratch.path().join("bad.gguf");
    std::fs::write(&bad, b"GGUF\x03\x00\x00\x00 truncated").unwrap();
    let mut h = studio(bad.clone());
    wait(&mut h, "the error", |a| a.error.is_some());
    let shown = h.query_all_by_label_contains("Error:").next().is_some();
    assert!(shown, "the error is drawn in the window");
    assert!(h.state().error.as_ref().unwrap().contains("bad.gguf"), "{:?}", h.state().error);
    assert!(h.state().info.is_none());
    // The window still works: a good model loads after.
    let good = tiny_model();
    h.state_mut().model_path = good.display().to_string();
    h.get_by_label("Load").click();
    h.step();
    wait(&mut h, "the good model", |a| a.info.is_some());
    assert!(h.query_all_by_label_contains("Error:").next().is_none());
}

/// A GPU device lost under the app (here destroyed on purpose) ends the
/// generation with the reason in the window, never a hang or a panic, and the
/// controls stay usable.
#[test]
fn a_lost_device_shows_its_error_and_the_window_stays_usable() {
    // SAFETY: set before any thread of this test reads the environment.
    unsafe { std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir()) };
    let model = tiny_model();
    let ctx = sift_engine::gpu::GpuContext::new(&AdapterRequest::default()).expect("a device of the test's own");
    let worker = Worker::spawn(Some(ctx.clone()), AdapterRequest::default(), || {});
    let app = StudioApp::new(worker, Some(model.to_path_buf()));
    let mut h = Harness::builder().with_size(egui::vec2(1280.0, 800.0)).allow_missing_glyphs().build_ui_state(|ui, app: &mut StudioApp| app.ui(ui), app);
    wait(&mut h, "the model", |a| a.info.is_some());
    ctx.device.destroy();
    h.state_mut().controls.mode = Mode::Dense;
    h.get_by_label("Generate").click();
    h.step();
    wait(&mut h, "the error", |a| a.error.is_some() && !a.generating);
    let error = h.state().error.clone().unwrap();
    assert!(error.contains("GPU") && error.contains("lost"), "{error}");
    assert!(h.query_all_by_label_contains("Error:").next().is_some(), "the error is drawn in the window");
    // Still a working window: Generate can be pressed again and says the same.
    h.get_by_label("Generate").click();
    h.step();
    wait(&mut h, "the second answer", |a| !a.generating);
    assert!(h.state().error.as_ref().is_some_and(|e| e.contains("lost")), "{:?}", h.state().error);
}

/// Compare with dense (on by default): a sparse Generate runs the dense
/// generation of the same prompt first, then shows both texts side by side,
/// with how many tokens agree and the first divergent token marked; a
/// second sparse run of the same prompt reuses that dense text.
#[test]
fn sparse_runs_beside_dense_with_the_first_divergent_token_marked() {
    // Untied: a tied random model repeats its input token whatever the mask.
    let c = tiny_config(RopeStyle::Neox);
    let mut file = tempfile::Builder::new().prefix("sift-studio-").suffix(".gguf").tempfile().unwrap();
    file.write_all(&gguf_bytes(&c, &random_weights(&c, 23, false), GgmlType::Q8_0)).unwrap();
    let model = file.into_temp_path();
    let mut h = studio(model.to_path_buf());
    wait(&mut h, "the model", |a| a.info.is_some());
    assert!(h.state().compare, "comparing with dense is the default");
    h.state_mut().controls.max_tokens = 10;
    h.state_mut().controls.ar = 0.05;
    h.state_mut().controls.heads = true;
    h.get_by_label("Generate").click();
    h.step();
    assert_eq!(h.state().last_request.as_ref().unwrap().mode, Mode::Dense, "the dense generation runs first");
    wait(&mut h, "the dense then the sparse generation", |a| !a.generating && a.last_request.as_ref().is_some_and(|r| r.mode == Mode::Prompt));
    assert!(h.state().error.is_none(), "{:?}", h.state().error);
    let dense: Vec<u32> = h.state().dense_reference.as_ref().expect("the dense text is kept").tokens.iter().map(|t| t.0).collect();
    let sparse: Vec<u32> = h.state().tokens.iter().map(|t| t.0).collect();
    assert_eq!((dense.len(), sparse.len()), (10, 10));
    let parted = dense.iter().zip(&sparse).position(|(a, b)| a != b).expect("at AR 0.05 the texts part");
    let agree = dense.iter().zip(&sparse).filter(|(a, b)| a == b).count();
    h.get_by_label("dense");
    h.get_by_label("sparse: prompt, corrected-gxo, AR 0.05 +heads");
    h.get_by_label(&format!("agrees with dense: {agree}/10 tokens"));
    h.get_by_label(&format!("first divergence: token {}", parted + 1));
    // Both texts are drawn, each after the prompt.
    let text = |tokens: &[(u32, String)]| format!("Once upon a time{}", tokens.iter().map(|t| t.1.as_str()).collect::<String>());
    let (dense_text, sparse_text) = (text(&h.state().dense_reference.as_ref().unwrap().tokens), text(&h.state().tokens));
    h.get_by_label(&dense_text);
    h.get_by_label(&sparse_text);
    // The marked token is the first that differs.
    let c = h.state().comparison().unwrap();
    assert_eq!(c.first_divergence(), Some(parted));
    let job = c.sparse_text("Once upon a time");
    assert_ne!(job.sections[parted + 1].format.background, job.sections[1].format.background, "the first divergent token is highlighted");

    // Again at another ratio: the dense text is reused, not regenerated.
    h.state_mut().controls.ar = 0.9;
    h.get_by_label("Generate").click();
    h.step();
    assert_eq!(h.state().last_request.as_ref().unwrap().mode, Mode::Prompt, "no second dense run");
    wait(&mut h, "the second sparse generation", |a| !a.generating);
    h.get_by_label("sparse: prompt, corrected-gxo, AR 0.90 +heads");
}
