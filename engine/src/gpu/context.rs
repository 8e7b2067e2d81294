//! Adapter selection and device creation. We ask the device for exactly the limits
//! and optional features the adapter really has, so the same code runs on a
//! discrete GPU, an integrated one, and Mesa lavapipe (software Vulkan).

use crate::error::{Result, SiftError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// How the user asked for an adapter (`--adapter NAME`, `--backend vulkan`).
#[derive(Clone, Debug, Default)]
pub struct AdapterRequest {
    /// Case-insensitive substring of the adapter name.
    pub name: Option<String>,
    /// Backend name: vulkan, metal, dx12, gl.
    pub backend: Option<String>,
    /// Open the device without subgroup operations, so that kernels take
    /// their portable path (tests of both paths, comparisons).
    pub no_subgroups: bool,
}

/// One line of `sift adapters`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub software: bool,
    pub driver: String,
    pub max_storage_binding_mib: u64,
    pub shader_f16: bool,
    pub subgroup: bool,
    pub timestamp_query: bool,
}

pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    pub(crate) kernels: Mutex<HashMap<String, Arc<super::Kernel>>>,
    /// Bytes of storage buffers created through the buffer helpers.
    allocated: std::sync::atomic::AtomicU64,
    /// The first error the device reported outside an error scope, and its
    /// loss: every later wait and readback fails with them (see [`GpuContext::check`]).
    faults: Arc<Mutex<Faults>>,
}

/// A byte count for people: "512 B", "3.0 KiB", "1.5 GiB".
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let (mut value, mut unit) = (bytes as f64 / 1024.0, 0);
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// What went wrong on a device, kept for [`GpuContext::check`].
#[derive(Default)]
struct Faults {
    /// The first uncaptured error.
    error: Option<String>,
    /// The device's loss, which explains every error after it.
    lost: Option<String>,
}

/// Records the device's uncaptured errors and its loss instead of wgpu's
/// default, which panics: a command then ends with the message, and the
/// Studio shows it and stays usable.
fn watch(device: &wgpu::Device) -> Arc<Mutex<Faults>> {
    let faults: Arc<Mutex<Faults>> = Arc::default();
    let f = faults.clone();
    device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
        let message = match &e {
            wgpu::Error::OutOfMemory { .. } => "the GPU ran out of memory".to_string(),
            // "Validation Error\n\nCaused by:\n  In X\n    Y" on one line.
            other => other.to_string().lines().map(str::trim).filter(|l| !l.is_empty() && *l != "Caused by:").collect::<Vec<_>>().join(": "),
        };
        let mut faults = f.lock().unwrap_or_else(|e| e.into_inner());
        if faults.error.is_none() {
            log::error!("GPU error: {message}");
            faults.error = Some(message);
        }
    }));
    let f = faults.clone();
    device.set_device_lost_callback(move |reason, message| {
        let why = if message.is_empty() { String::new() } else { format!(": {message}") };
        let message = format!("the GPU device was lost ({reason:?}){why}");
        log::error!("{message}");
        f.lock().unwrap_or_else(|e| e.into_inner()).lost.get_or_insert(message);
    });
    faults
}

fn parse_backends(name: Option<&str>) -> Result<wgpu::Backends> {
    Ok(match name.map(|s| s.to_ascii_lowercase()) {
        None => wgpu::Backends::PRIMARY | wgpu::Backends::GL,
        Some(s) => match s.as_str() {
            "vulkan" | "vk" => wgpu::Backends::VULKAN,
            "metal" => wgpu::Backends::METAL,
            "dx12" | "d3d12" => wgpu::Backends::DX12,
            "gl" | "opengl" | "gles" => wgpu::Backends::GL,
            other => {
                return Err(SiftError::InvalidInput(format!(
                    "unknown backend '{other}' (use vulkan, metal, dx12 or gl)"
                )))
            }
        },
    })
}

fn instance() -> wgpu::Instance {
    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle())
}

fn is_software(info: &wgpu::AdapterInfo) -> bool {
    info.device_type == wgpu::DeviceType::Cpu
        || info.name.to_ascii_lowercase().contains("llvmpipe")
        || info.name.to_ascii_lowercase().contains("swiftshader")
}

pub fn describe_adapter(adapter: &wgpu::Adapter) -> AdapterSummary {
    let info = adapter.get_info();
    let f = adapter.features();
    AdapterSummary {
        software: is_software(&info),
        name: info.name.clone(),
        backend: format!("{:?}", info.backend).to_lowercase(),
        device_type: format!("{:?}", info.device_type),
        driver: format!("{} {}", info.driver, info.driver_info).trim().to_string(),
        max_storage_binding_mib: adapter.limits().max_storage_buffer_binding_size >> 20,
        shader_f16: f.contains(wgpu::Features::SHADER_F16),
        subgroup: f.contains(wgpu::Features::SUBGROUP),
        timestamp_query: f.contains(wgpu::Features::TIMESTAMP_QUERY),
    }
}

fn enumerate(backends: wgpu::Backends) -> Vec<wgpu::Adapter> {
    pollster::block_on(instance().enumerate_adapters(backends))
        .into_iter()
        // Compute shaders need storage buffers; a GL adapter without them is useless here.
        .filter(|a| a.limits().max_storage_buffers_per_shader_stage >= 8)
        .collect()
}

/// Every adapter usable for compute, best first.
pub fn list_adapters(backend: Option<&str>) -> Result<Vec<AdapterSummary>> {
    let mut adapters = enumerate(parse_backends(backend)?);
    adapters.sort_by_key(|a| rank(&a.get_info()));
    Ok(adapters.iter().map(describe_adapter).collect())
}

fn rank(info: &wgpu::AdapterInfo) -> u8 {
    match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

const NO_ADAPTER_HELP: &str = "install a Vulkan driver; on a machine without a GPU, \
     Mesa's software driver works: `sudo apt-get install mesa-vulkan-drivers`";

impl GpuContext {
    /// Picks an adapter (hardware before software) and opens a device on it.
    pub fn new(request: &AdapterRequest) -> Result<Arc<GpuContext>> {
        let mut adapters = enumerate(parse_backends(request.backend.as_deref())?);
        if adapters.is_empty() {
            return Err(SiftError::NoAdapter(NO_ADAPTER_HELP.into()));
        }
        adapters.sort_by_key(|a| rank(&a.get_info()));
        let adapter = match &request.name {
            None => adapters.remove(0),
            Some(want) => {
                let want_lc = want.to_lowercase();
                let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
                let pos = names
                    .iter()
                    .position(|n| n.to_lowercase().contains(&want_lc))
                    .ok_or_else(|| {
                        SiftError::NoAdapter(format!(
                            "no adapter name contains '{want}'; available: {}",
                            names.join(", ")
                        ))
                    })?;
                adapters.remove(pos)
            }
        };
        let mut features = Self::wanted_features();
        // SIFT_NO_SUBGROUPS=1 does the same from outside (comparisons).
        if request.no_subgroups || std::env::var_os("SIFT_NO_SUBGROUPS").is_some() {
            features.remove(wgpu::Features::SUBGROUP);
        }
        Self::open(adapter, features)
    }

    pub fn from_adapter(adapter: wgpu::Adapter) -> Result<Arc<GpuContext>> {
        Self::open(adapter, Self::wanted_features())
    }

    /// A device with those of `wanted` the adapter has.
    fn open(adapter: wgpu::Adapter, wanted: wgpu::Features) -> Result<Arc<GpuContext>> {
        let info = adapter.get_info();
        let features = adapter.features() & wanted;
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("sift"),
            required_features: features,
            required_limits: limits,
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| SiftError::Gpu(format!("cannot open device on '{}': {e}", info.name)))?;
        log::info!("adapter: {} ({:?}, {:?})", info.name, info.backend, info.device_type);
        Ok(Self::from_device(info, device, queue))
    }

    /// The features Sift uses when an adapter has them; a device shared with
    /// a renderer should be opened with these and the adapter's own limits.
    pub fn wanted_features() -> wgpu::Features {
        wgpu::Features::SHADER_F16 | wgpu::Features::SUBGROUP | wgpu::Features::TIMESTAMP_QUERY
    }

    /// Runs on a device opened elsewhere (the desktop app shares its
    /// renderer's device), with whatever limits and features it was opened with.
    pub fn from_device(info: wgpu::AdapterInfo, device: wgpu::Device, queue: wgpu::Queue) -> Arc<GpuContext> {
        let (limits, features) = (device.limits(), device.features() & Self::wanted_features());
        let faults = watch(&device);
        Arc::new(GpuContext { device, queue, info, limits, features, kernels: Mutex::new(HashMap::new()), allocated: Default::default(), faults })
    }

    pub(crate) fn count_allocation(&self, bytes: u64) {
        self.allocated.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Storage bytes Sift has allocated on this device (weights, caches,
    /// scratch; buffers live as long as their model, so this is the peak).
    pub fn allocated_bytes(&self) -> u64 {
        self.allocated.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn is_software(&self) -> bool {
        is_software(&self.info)
    }

    /// Whether a workgroup of 8 invocations is exactly one subgroup (lavapipe
    /// at 256 bits), so that the CPU-style kernels can share loads through
    /// subgroup broadcasts.
    pub fn has_subgroups_of_8(&self) -> bool {
        self.features.contains(wgpu::Features::SUBGROUP) && self.info.subgroup_min_size == 8 && self.info.subgroup_max_size == 8
    }

    /// Largest storage binding in bytes; tensors above it are split by rows.
    pub fn max_binding_bytes(&self) -> u64 {
        self.limits.max_storage_buffer_binding_size.min(self.limits.max_buffer_size)
    }

    pub fn describe(&self) -> String {
        format!(
            "{} ({:?}, {}{})",
            self.info.name,
            self.info.backend,
            format!("{:?}", self.info.device_type).to_lowercase(),
            if self.is_software() { ", software" } else { "" }
        )
    }

    /// The device's loss or its first uncaptured error, if any: once the
    /// device has failed, nothing it computes can be trusted.
    pub fn check(&self) -> Result<()> {
        let faults = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        match faults.lost.as_ref().or(faults.error.as_ref()) {
            Some(message) => Err(SiftError::Gpu(message.clone())),
            None => Ok(()),
        }
    }

    /// Waits for all submitted work (polling also reports a lost device).
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| SiftError::Gpu(format!("device poll failed: {e}")))?;
        self.check()
    }
}
