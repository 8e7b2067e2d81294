//! A compiled WGSL kernel and its bind-group layout. Every kernel follows one
//! convention: bindings are numbered in order, uniforms first, then storage.
//!
//! On CPU adapters the uniforms are bound as read-only storage buffers
//! instead (`reads_params_from_storage`): Mesa's lavapipe (22.x, Debian 12's) treats a
//! uniform that decides a branch or a loop's trip count as a constant to
//! inline, and unless its first dispatch shrinks the shader by half it then
//! recompiles the pipeline at every dispatch, with no cache of the results.
//! Storage loads are never inlined.

use super::GpuContext;
use std::sync::Arc;

#[derive(Clone, Copy, Debug)]
pub enum Binding {
    Uniform,
    ReadOnly,
    ReadWrite,
}

pub struct Kernel {
    pub name: String,
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

/// Whether this context's kernels read their uniforms from read-only storage
/// bindings (see the module's note): on CPU adapters. On lavapipe that costs
/// nothing measurable, once the linear kernels copy their parameters into
/// private variables (`linear_common.wgsl`).
fn reads_params_from_storage(ctx: &GpuContext) -> bool {
    ctx.is_software()
}

/// A kernel's source with its uniforms declared as read-only storage, as CPU
/// adapters compile it.
pub fn params_in_storage(source: &str) -> String {
    source.replace("var<uniform>", "var<storage, read>")
}

impl Kernel {
    /// Compiles once per context; later calls return the cached kernel.
    pub fn get(ctx: &GpuContext, name: &str, source: &str, bindings: &[Binding]) -> Arc<Kernel> {
        Self::specialized(ctx, name, source, bindings, &[])
    }

    /// Like [`Kernel::get`] with values for the shader's `override` constants:
    /// loop bounds known at pipeline creation let the driver unroll them.
    pub fn specialized(ctx: &GpuContext, name: &str, source: &str, bindings: &[Binding], constants: &[(&str, f64)]) -> Arc<Kernel> {
        let key = constants.iter().fold(name.to_string(), |k, (c, v)| format!("{k} {c}={v}"));
        let mut cache = ctx.kernels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = cache.get(&key) {
            return k.clone();
        }
        let storage_params = reads_params_from_storage(ctx);
        let entries: Vec<wgpu::BindGroupLayoutEntry> = bindings
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupLayoutEntry {
                binding: i as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: match b {
                        Binding::Uniform if storage_params => wgpu::BufferBindingType::Storage { read_only: true },
                        Binding::Uniform => wgpu::BufferBindingType::Uniform,
                        Binding::ReadOnly => wgpu::BufferBindingType::Storage { read_only: true },
                        Binding::ReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
        let layout = ctx.device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(name),
            entries: &entries,
        });
        let pipeline_layout = ctx.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(name),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let source = if storage_params { params_in_storage(source) } else { source.to_string() };
        let desc = wgpu::ShaderModuleDescriptor {
            label: Some(name),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        };
        // Our kernels clamp or guard every index against parameters the host
        // validates (model shapes, batch and context sizes), so wgpu's injected
        // bounds checks are redundant; they cost 1.7x in prefill on lavapipe.
        // Drivers with robust buffer access still bound every access.
        // SIFT_CHECKED_SHADERS=1 restores wgpu's checks for debugging a kernel.
        let module = if std::env::var_os("SIFT_CHECKED_SHADERS").is_some() {
            ctx.device.create_shader_module(desc)
        } else {
            // SAFETY: see above; every kernel is bounds-safe by construction and
            // tested against a CPU reference with ragged sizes.
            unsafe { ctx.device.create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked()) }
        };
        let pipeline = ctx.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(name),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some("main"),
            compilation_options: wgpu::PipelineCompilationOptions { constants, ..Default::default() },
            cache: None,
        });
        let kernel = Arc::new(Kernel { name: name.to_string(), pipeline, layout });
        cache.insert(key, kernel.clone());
        kernel
    }

    pub fn bind(&self, ctx: &GpuContext, buffers: &[&wgpu::Buffer]) -> wgpu::BindGroup {
        let entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&self.name),
            layout: &self.layout,
            entries: &entries,
        })
    }

    pub fn dispatch(&self, pass: &mut wgpu::ComputePass<'_>, group: &wgpu::BindGroup, workgroups: [u32; 3]) {
        if workgroups.contains(&0) {
            return;
        }
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, group, &[]);
        pass.dispatch_workgroups(workgroups[0], workgroups[1], workgroups[2]);
    }
}
