//! GPU faults end in errors, not panics or hangs: a model or context over the
//! device's binding limit is refused before upload with the sizes involved,
//! and a device lost while decoding ends the decode with its reason.

use sift_engine::gpu::GpuContext;
use sift_engine::kernels::rope::RopeStyle;
use sift_engine::model::{GpuModel, Logits};
use sift_engine::testing::{random_weights, tiny_config};
use sift_engine::wgpu;
use std::sync::Arc;
use std::time::Duration;

/// A device of its own (tests destroy theirs) on the test adapter, with the
/// storage-binding and buffer limits lowered to `max_binding` bytes.
fn device_with_binding_limit(max_binding: Option<u32>) -> Arc<GpuContext> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter = pollster::block_on(instance.request_adapter(&Default::default())).expect("tests need a wgpu adapter (lavapipe is enough)");
    let mut limits = adapter.limits();
    if let Some(max) = max_binding {
        limits.max_storage_buffer_binding_size = max.into();
        limits.max_buffer_size = max.into();
    }
    let features = adapter.features() & GpuContext::wanted_features();
    let descriptor = wgpu::DeviceDescriptor { required_limits: limits, required_features: features, ..Default::default() };
    let (device, queue) = pollster::block_on(adapter.request_device(&descriptor)).expect("a device with lowered limits opens");
    GpuContext::from_device(adapter.get_info(), device, queue)
}

/// Runs `f` on another thread and fails the test if it takes over a minute:
/// a fault must end in an error, never a hang.
fn within_a_minute<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(60)).expect("finished within a minute, without a panic")
}

#[test]
fn a_model_over_the_binding_limit_is_refused_with_its_sizes() {
    let c = tiny_config(RopeStyle::Interleaved);
    let w = random_weights(&c, 1, true);
    // The KV cache of 64 tokens is 64 x 32 x 4 = 8 KiB per layer.
    let ctx = device_with_binding_limit(Some(4096));
    let err = GpuModel::new(ctx.clone(), &c, &w, 64).err().expect("refused").to_string();
    assert!(err.contains("64-token KV cache takes 8.0 KiB") && err.contains("limit of 4.0 KiB") && err.contains("--ctx"), "{err}");
    // One token's logits (288 x 4 bytes) do not fit 1 KiB, whatever the context.
    let ctx_small = device_with_binding_limit(Some(1024));
    let err = GpuModel::new(ctx_small.clone(), &c, &w, 4).err().expect("refused").to_string();
    assert!(err.contains("widest activation row takes 1.1 KiB") && err.contains("limit of 1.0 KiB"), "{err}");
    // Refused before anything was uploaded.
    assert_eq!(ctx.allocated_bytes() + ctx_small.allocated_bytes(), 0);
}

#[test]
fn a_model_within_lowered_limits_runs_split_and_agrees() {
    let c = tiny_config(RopeStyle::Interleaved);
    let w = random_weights(&c, 1, true);
    let prompt = [3u32, 17, 42, 5];
    let logits = |ctx: Arc<GpuContext>| GpuModel::new(ctx, &c, &w, 16).and_then(|mut m| m.forward(&prompt, Logits::Last)).expect("runs");
    let full = logits(device_with_binding_limit(None));
    // 16 KiB: each matrix is split into several bindings.
    let split = logits(device_with_binding_limit(Some(16 << 10)));
    let diff = full.iter().zip(&split).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(diff < 1e-4, "logits differ by {diff} when split");
}

#[test]
fn a_lost_device_ends_decoding_with_an_error() {
    let result = within_a_minute(|| {
        let c = tiny_config(RopeStyle::Interleaved);
        let w = random_weights(&c, 1, true);
        let ctx = device_with_binding_limit(None);
        let mut model = GpuModel::new(ctx.clone(), &c, &w, 64).expect("loads");
        model.forward(&[1, 2, 3], Logits::Last).expect("decodes before the loss");
        ctx.device.destroy();
        let first = model.forward(&[4], Logits::Last).map(|_| ()).map_err(|e| e.to_string());
        // And every later call too: nothing computed after the loss is returned.
        let second = model.forward(&[5], Logits::Last).map(|_| ()).map_err(|e| e.to_string());
        (first, second)
    });
    for r in [result.0, result.1] {
        let err = r.expect_err("decoding on a lost device fails");
        assert!(err.contains("GPU") && err.contains("lost"), "{err}");
    }
}
