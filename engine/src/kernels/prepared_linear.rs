//! A linear layer and the elementwise step that prepares its input: the
//! RMSNorm before q/k/v and gate|up, SwiGLU before down. A decode step runs
//! both in one dispatch, the matvec computing the step on its input as it
//! loads it (`linear_input_norm.wgsl`, `linear_input_swiglu.wgsl`), since
//! every dispatch has a fixed cost. Otherwise (prefill, and the attribution
//! pass, which reads the prepared values) the step writes its output and the
//! layer reads that.

use super::linear::{FusedInput, LinearCall, Matrix, Output, MATVEC_MAX_TOKENS};
use super::{rmsnorm, swiglu, Call, Dispatch, KernelFamily};
use crate::gpu::GpuContext;

/// Weights up to which a fused step pays on CPU adapters where each
/// invocation computes it on the whole input (measured on lavapipe: dense
/// q/k/v, 553k weights, breaks even).
const CPU_FUSE_MAX_WEIGHTS: usize = 1 << 19;

/// Whether fusing a step into `w`'s matvec saves time on this adapter. The
/// CPU-style kernels on 8-wide subgroups compute it once per input
/// (`linear_block_subgroup.wgsl`), so there it always pays.
fn fusing_pays(ctx: &GpuContext, kind: KernelFamily, w: &Matrix) -> bool {
    !kind.is_cpu_style(ctx) || w.rows * w.cols <= CPU_FUSE_MAX_WEIGHTS || ctx.has_subgroups_of_8()
}

pub struct PreparedLinear {
    /// The step alone: its input -> its output.
    pub prepare: Call,
    /// The step's kernel role in profiles: "rmsnorm" or "swiglu".
    prepare_label: &'static str,
    /// The step's output -> the layer's outputs.
    pub linear: LinearCall,
    /// The step's input -> the layer's outputs, in one dispatch, where it is used.
    fused: Option<LinearCall>,
}

/// The norm's width, input and output buffers, weight and epsilon.
pub struct NormSpec<'a> {
    pub dim: usize,
    pub x: &'a wgpu::Buffer,
    pub xn: &'a wgpu::Buffer,
    pub weight: &'a wgpu::Buffer,
    pub eps: f32,
}

/// SwiGLU's width (neurons), its input ([gate | up] per token) and output.
pub struct SwiGluSpec<'a> {
    pub width: usize,
    pub gate_up: &'a wgpu::Buffer,
    pub h: &'a wgpu::Buffer,
}

impl PreparedLinear {
    /// RMSNorm then the layer. `fuse`: build the fused dispatch too, where it pays.
    pub fn norm(ctx: &GpuContext, norm: &NormSpec, w: &Matrix, step: &wgpu::Buffer, out: Output, kind: KernelFamily, fuse: bool) -> PreparedLinear {
        let fused = FusedInput::Norm { weight: norm.weight, eps: norm.eps };
        PreparedLinear {
            prepare: rmsnorm::call(ctx, norm.dim, norm.eps, step, norm.x, norm.weight, norm.xn),
            prepare_label: "rmsnorm",
            linear: LinearCall::build_for(ctx, w, step, norm.xn, out, kind),
            fused: (fuse && fusing_pays(ctx, kind, w)).then(|| LinearCall::fused(ctx, w, step, norm.x, out, fused, kind)),
        }
    }

    /// SwiGLU then the layer. `fuse`: build the fused dispatch too, where it pays.
    pub fn swiglu(ctx: &GpuContext, act: &SwiGluSpec, w: &Matrix, step: &wgpu::Buffer, out: Output, kind: KernelFamily, fuse: bool) -> PreparedLinear {
        PreparedLinear {
            prepare: swiglu::call(ctx, act.width, step, act.gate_up, act.h),
            prepare_label: "swiglu",
            linear: LinearCall::build_for(ctx, w, step, act.h, out, kind),
            fused: (fuse && fusing_pays(ctx, kind, w)).then(|| LinearCall::fused(ctx, w, step, act.gate_up, out, FusedInput::SwiGlu, kind)),
        }
    }

    /// Whether a forward over `n` tokens leaves queries and keys rotated
    /// (the call that runs took a RoPE along, `LinearCall::rotates`).
    pub fn rotates(&self, n: u32) -> bool {
        match &self.fused {
            Some(f) if n <= MATVEC_MAX_TOKENS => f.rotates(),
            _ => self.linear.rotates(),
        }
    }

    /// The step and the layer over `n` tokens, fused when built and `n` is
    /// small enough for the matvec.
    pub fn plan<'a>(&'a self, label: &'static str, n: u32, out: &mut Vec<Dispatch<'a>>) {
        match &self.fused {
            Some(f) if n <= MATVEC_MAX_TOKENS => f.plan(label, n, out),
            _ => {
                self.prepare.plan(self.prepare_label, n, out);
                self.linear.plan(label, n, out);
            }
        }
    }
}
