//! An RMSNorm and the linear layer that reads it (q/k/v, gate/up). On GPUs a
//! decode step runs both in one dispatch: the matvec normalises its input as
//! it loads it (`linear_input_norm.wgsl`), since every dispatch costs
//! microseconds of latency there. Otherwise (prefill, CPU adapters, the
//! attribution pass) the norm writes its output and the layer reads that.

use super::linear::{FusedNorm, LinearCall, Matrix, Output, MATVEC_MAX_TOKENS};
use super::{rmsnorm, Call, Dispatch, KernelFamily};
use crate::gpu::GpuContext;

pub struct NormLinear {
    /// x -> xn.
    pub norm: Call,
    /// xn -> the layer's outputs.
    pub linear: LinearCall,
    /// x -> the outputs in one dispatch, where it is used.
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

impl NormLinear {
    /// `fuse`: allow the fused dispatch (it is built on GPU families only).
    pub fn new(ctx: &GpuContext, norm: &NormSpec, w: &Matrix, step: &wgpu::Buffer, out: Output, kind: KernelFamily, fuse: bool) -> NormLinear {
        let fused = (fuse && !kind.is_cpu_style(ctx)).then(|| LinearCall::normed(ctx, w, step, norm.x, out, FusedNorm { weight: norm.weight, eps: norm.eps }, kind));
        NormLinear {
            norm: rmsnorm::call(ctx, norm.dim, norm.eps, step, norm.x, norm.weight, norm.xn),
            linear: LinearCall::build_for(ctx, w, step, norm.xn, out, kind),
            fused,
        }
    }

    /// The norm and the layer over `n` tokens.
    pub fn plan<'a>(&'a self, label: &'static str, n: u32, out: &mut Vec<Dispatch<'a>>) {
        match &self.fused {
            Some(f) if n <= MATVEC_MAX_TOKENS => f.plan(label, n, out),
            _ => {
                self.norm.plan("rmsnorm", n, out);
                self.linear.plan(label, n, out);
            }
        }
    }
}
