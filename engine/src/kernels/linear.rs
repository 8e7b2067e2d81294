//! Linear layers `y = x W^T` with W stored as f16 pairs, row-major [n, k], and
//! split by rows when larger than one storage binding. Few tokens (decode) go to
//! a matrix-vector kernel, many (prefill) to a matrix-matrix one. GPUs get
//! `matvec.wgsl` (a workgroup reduces each row) and the shared-memory tiled
//! `matmul.wgsl`; CPU adapters (lavapipe) get `matvec_rows.wgsl` and
//! `matmul_rows.wgsl`, register-blocked with no barriers.

use super::{spread, Dispatch, KernelFamily};
use super::packed::Format;
use crate::gpu::{split_rows, storage_buffer, uniform_buffer, Binding, GpuContext, Kernel};
use std::ops::Range;
use std::sync::Arc;

/// Up to this many tokens the GEMV kernel is faster than the tiled one.
pub const MATVEC_MAX_TOKENS: u32 = 4;
const MATMUL_TILE: u32 = 64;
/// Parameters and step, shared by the four kernels.
pub const LINEAR_COMMON: &str = include_str!("../../../shaders/linear_common.wgsl");
/// The output headers: one buffer, or a layer's queries and KV cache rows.
const LINEAR_STORE: &str = include_str!("../../../shaders/linear_store.wgsl");
const LINEAR_STORE_QKV: &str = include_str!("../../../shaders/linear_store_qkv.wgsl");
const LINEAR_STORE_SLOTS: &str = include_str!("../../../shaders/linear_store_slots.wgsl");
/// The q/k/v output's RoPE headers: none (a dispatch of its own), or rotated
/// as stored.
const LINEAR_ROPE_NONE: &str = include_str!("../../../shaders/linear_rope_none.wgsl");
const LINEAR_ROPE_FUSED: &str = include_str!("../../../shaders/linear_rope_fused.wgsl");
/// The matvec kernels' input headers: as stored, or computed as it is loaded
/// (an RMSNorm or SwiGLU fused in). The matmul kernels read x as stored.
const LINEAR_INPUT: &str = include_str!("../../../shaders/linear_input.wgsl");
const LINEAR_INPUT_NORM: &str = include_str!("../../../shaders/linear_input_norm.wgsl");
const LINEAR_INPUT_SWIGLU: &str = include_str!("../../../shaders/linear_input_swiglu.wgsl");
/// The 4- and 5-bit matvec, and its high-bit decoders: none (Q4), or a word
/// of high bits per block (Q5).
const MATVEC_ROWS_Q4: &str = include_str!("../../../shaders/matvec_rows_q4.wgsl");
pub(crate) const Q4_HIGH_NONE: &str = include_str!("../../../shaders/q4_high_none.wgsl");
pub(crate) const Q5_HIGH_BITS: &str = include_str!("../../../shaders/q5_high_bits.wgsl");
const MATVEC_ROWS_Q8: &str = include_str!("../../../shaders/matvec_rows_q8.wgsl");
/// The 8-bit matvec's scale decoders: f16 d and m per block, or f32 per half block.
pub(crate) const Q8_SCALES_F16: &str = include_str!("../../../shaders/q8_scales_f16.wgsl");
pub(crate) const Q8_SCALES_F32: &str = include_str!("../../../shaders/q8_scales_f32.wgsl");
/// How the CPU-style matvec kernels load a block of inputs: each invocation
/// all of it, or one eighth each, shared through subgroup broadcasts.
pub const LINEAR_BLOCK: &str = include_str!("../../../shaders/linear_block.wgsl");
pub const LINEAR_BLOCK_SUBGROUP: &str = include_str!("../../../shaders/linear_block_subgroup.wgsl");
/// How the CPU-style matmuls get their 8 tokens' inputs: each invocation
/// all of them, or one token each, shared through subgroup broadcasts.
pub(crate) const MATMUL_TOKENS: &str = include_str!("../../../shaders/matmul_tokens.wgsl");
pub(crate) const MATMUL_TOKENS_SUBGROUP: &str = include_str!("../../../shaders/matmul_tokens_subgroup.wgsl");
/// The 4-bit matvecs' nibble dot product.
pub const LINEAR_NIBBLES: &str = include_str!("../../../shaders/linear_nibbles.wgsl");

pub struct MatrixChunk {
    pub buffer: wgpu::Buffer,
    pub rows: Range<usize>,
}

/// Rows per interleaved block: 8 invocations x 8 rows each.
pub const INTERLEAVE_ROWS: usize = 64;

/// A weight matrix on the GPU as f16, in row chunks that each fit one binding.
///
/// Row-major layout serves the cooperative GPU kernels. CPU adapters get the
/// lane-interleaved layout: in each block of 64 rows, row `8r + lane` is read by
/// invocation `lane` as its r-th row, and the 8 invocations' weights for the
/// same k-slice are stored side by side ([block][r][k / 8][lane] of 8 halves),
/// so a SIMD load over the lanes is contiguous (15-20% faster matvec on lavapipe).
/// There, a matrix that 4 or 8 bits reproduce exactly (one loaded from Q4_1
/// or Q8_0) also gets a packed copy (`kernels::packed`), which the kernels
/// read instead.
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub interleaved: bool,
    pub chunks: Vec<MatrixChunk>,
    /// The packed copy (one binding, interleaved only).
    pub packed: Option<Packed>,
}

pub struct Packed {
    pub format: Format,
    pub buffer: wgpu::Buffer,
}

impl Matrix {
    pub fn upload(ctx: &GpuContext, name: &str, data: &[f32], rows: usize, cols: usize, interleaved: bool) -> Matrix {
        Self::upload_as(ctx, name, data, rows, cols, interleaved, true)
    }

    /// Like [`Matrix::upload`]; `pack` false skips the packed copy.
    pub fn upload_as(ctx: &GpuContext, name: &str, data: &[f32], rows: usize, cols: usize, interleaved: bool, pack: bool) -> Matrix {
        Self::upload_inner(ctx, name, data, [rows, cols], interleaved, ctx.max_binding_bytes(), pack)
    }

    /// Like [`Matrix::upload`] with an explicit binding limit (tests force splits).
    pub fn upload_with_limit(ctx: &GpuContext, name: &str, data: &[f32], rows: usize, cols: usize, interleaved: bool, max_bytes: u64) -> Matrix {
        Self::upload_inner(ctx, name, data, [rows, cols], interleaved, max_bytes, true)
    }

    fn upload_inner(ctx: &GpuContext, name: &str, data: &[f32], [rows, cols]: [usize; 2], interleaved: bool, max_bytes: u64, pack: bool) -> Matrix {
        assert_eq!(data.len(), rows * cols, "matrix {name}: data does not match {rows}x{cols}");
        assert!(cols.is_multiple_of(8), "matrix {name}: column count {cols} must be a multiple of 8");
        let row_bytes = cols as u64 * 2;
        let ranges = if interleaved {
            // Chunks hold whole blocks.
            let block_bytes = row_bytes * INTERLEAVE_ROWS as u64;
            split_rows(rows.div_ceil(INTERLEAVE_ROWS), block_bytes, max_bytes)
                .into_iter()
                .map(|b| b.start * INTERLEAVE_ROWS..(b.end * INTERLEAVE_ROWS).min(rows))
                .collect()
        } else {
            split_rows(rows, row_bytes, max_bytes)
        };
        let chunks = ranges
            .into_iter()
            .map(|r| {
                let part = &data[r.start * cols..r.end * cols];
                let halves = if interleaved { interleave(part, r.len(), cols) } else { part.iter().map(|&v| half::f16::from_f32(v)).collect() };
                MatrixChunk {
                    buffer: storage_buffer(ctx, name, &halves),
                    rows: r,
                }
            })
            .collect::<Vec<_>>();
        let packed = (pack && interleaved && chunks.len() == 1)
            .then(|| super::packed::pack(data, rows, cols))
            .flatten()
            .filter(|(_, p)| (p.len() * 4) as u64 <= max_bytes)
            .map(|(format, p)| Packed { format, buffer: storage_buffer(ctx, name, &p) });
        Matrix { rows, cols, interleaved, chunks, packed }
    }

    /// The 4-bit copy, if the matrix has one.
    pub fn q4(&self) -> Option<&wgpu::Buffer> {
        self.packed.as_ref().filter(|p| p.format == Format::Q4).map(|p| &p.buffer)
    }

    /// Bytes of the f16 weights (the packed copy not counted).
    pub fn bytes(&self) -> u64 {
        (self.rows * self.cols * 2) as u64
    }

    /// Bytes a one-token matvec reads: the packed copy where there is one
    /// (as [`LinearCall`] binds it), else the f16 chunks.
    pub fn matvec_bytes(&self) -> u64 {
        self.packed.as_ref().map_or_else(|| self.chunks.iter().map(|c| c.buffer.size()).sum(), |p| p.buffer.size())
    }
}

/// The lane-interleaved f16 layout of a [rows, cols] matrix, rows padded with
/// zeros to whole blocks of 64.
fn interleave(data: &[f32], rows: usize, cols: usize) -> Vec<half::f16> {
    let k8 = cols / 8;
    let blocks = rows.div_ceil(INTERLEAVE_ROWS);
    let mut out = vec![half::f16::ZERO; blocks * INTERLEAVE_ROWS * cols];
    for row in 0..rows {
        let (block, rb) = (row / INTERLEAVE_ROWS, row % INTERLEAVE_ROWS);
        let (r, lane) = (rb / 8, rb % 8);
        for i in 0..k8 {
            let dst = ((block * INTERLEAVE_ROWS * k8) + (r * k8 + i) * 8 + lane) * 8;
            for j in 0..8 {
                out[dst + j] = half::f16::from_f32(data[row * cols + 8 * i + j]);
            }
        }
    }
    out
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    k: u32,
    n: u32,
    y_stride: u32,
    y_col0: u32,
    accumulate: u32,
    y_row_from_pos: u32,
    k_row0: u32,
    v_row0: u32,
    norm_eps: f32,
    /// A fused RoPE's head width (0: none) and rotated dimensions.
    rope_head_dim: u32,
    rope_dims: u32,
    _pad: u32,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct LinearOptions {
    /// y += x W^T instead of y = x W^T (residual connections).
    pub accumulate: bool,
    /// Token t writes row pos0 + t of y (a KV cache) instead of row t.
    pub y_row_from_pos: bool,
}

struct ChunkCall {
    rows: u32,
    matvec: wgpu::BindGroup,
    matmul: Option<wgpu::BindGroup>,
    /// Bytes of the weights each variant reads (packed or f16).
    matvec_bytes: u64,
    matmul_bytes: u64,
}

/// A linear layer bound to its input and output buffers.
pub struct LinearCall {
    matvec: Variant,
    /// None with a fused input: that runs for few tokens only.
    matmul: Option<Variant>,
    chunks: Vec<ChunkCall>,
    /// Queries and keys leave it rotated.
    rotates: bool,
}

/// An elementwise step fused into a matvec, computed on its input as it is
/// loaded (decode, where each dispatch saved is a fixed cost saved).
#[derive(Clone, Copy)]
pub enum FusedInput<'a> {
    /// x is the residual stream; the layer reads RMSNorm(x) with this weight and epsilon.
    Norm { weight: &'a wgpu::Buffer, eps: f32 },
    /// x is [gate | up] per token; the layer reads silu(gate) * up.
    SwiGlu,
}

/// How a matvec reads its input: the header and a kernel-name suffix.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Input {
    Stored,
    Norm,
    SwiGlu,
}

impl Input {
    #[cfg(test)]
    pub(super) const ALL: [Input; 3] = [Input::Stored, Input::Norm, Input::SwiGlu];

    /// The input header's source and kernel-name suffix. A fused norm's
    /// weight binds after the bindings in `layout`, and is pushed there.
    pub(super) fn header(self, layout: &mut Vec<Binding>) -> (String, &'static str) {
        match self {
            Input::Stored => (LINEAR_INPUT.to_string(), ""),
            Input::SwiGlu => (LINEAR_INPUT_SWIGLU.to_string(), "_swiglu"),
            Input::Norm => {
                let decl = format!("@group(0) @binding({}) var<storage, read> norm_weight: array<vec4<f32>>;", layout.len());
                layout.push(Binding::ReadOnly);
                (format!("{decl}\n{LINEAR_INPUT_NORM}"), "_norm")
            }
        }
    }
}

/// Where a linear layer writes.
#[derive(Clone, Copy)]
pub enum Output<'a> {
    One(&'a wgpu::Buffer, LinearOptions),
    Qkv(&'a QkvOut<'a>),
    /// Row o of token t to `y[t * stride + slots[o]]` (`linear_store_slots.wgsl`).
    Slots { y: &'a wgpu::Buffer, slots: &'a wgpu::Buffer, stride: usize },
}

/// A kernel with the output rows and tokens one workgroup covers.
struct Variant {
    kernel: Arc<Kernel>,
    rows: u32,
    tokens: u32,
}

impl Variant {
    fn grid(&self, rows: u32, n_tokens: u32) -> [u32; 3] {
        let row_groups = rows.div_ceil(self.rows);
        if self.tokens == 1 {
            let [x, y] = spread(row_groups);
            [x, y, n_tokens]
        } else {
            [row_groups, n_tokens.div_ceil(self.tokens), 1]
        }
    }
}

/// Where a linear layer's results go.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Store {
    /// One buffer (`linear_store.wgsl`).
    One = 0,
    /// Queries, then key and value cache rows (`linear_store_qkv.wgsl`).
    Qkv = 1,
    /// The same with RoPE applied as they are stored (`linear_rope_fused.wgsl`).
    QkvRope = 2,
    /// One buffer, each row to its slot (`linear_store_slots.wgsl`).
    Slots = 3,
}

impl Store {
    #[cfg(test)]
    pub(super) const ALL: [Store; 4] = [Store::One, Store::Qkv, Store::QkvRope, Store::Slots];

    /// The output header's source (q/k/v with its RoPE header), its
    /// kernel-name suffix, and the bindings through the outputs (and the
    /// RoPE table, which binds after them).
    pub(super) fn header(self) -> (String, &'static str, Vec<Binding>) {
        use Binding::{ReadOnly as R, ReadWrite as W, Uniform as U};
        match self {
            Store::One => (LINEAR_STORE.to_string(), "", vec![U, U, R, R, W]),
            Store::Qkv => (format!("{LINEAR_STORE_QKV}\n{LINEAR_ROPE_NONE}"), "_qkv", vec![U, U, R, R, W, W, W]),
            Store::Slots => (LINEAR_STORE_SLOTS.to_string(), "_slots", vec![U, U, R, R, W, R]),
            Store::QkvRope => {
                let decl = "@group(0) @binding(7) var<storage, read> rope_table: array<vec2<f32>>;";
                (format!("{LINEAR_STORE_QKV}\n{decl}\n{LINEAR_ROPE_FUSED}"), "_qkv_rope", vec![U, U, R, R, W, W, W, R])
            }
        }
    }
}

/// The matvec and matmul kernels for a family, output and input; with a
/// fused input only the matvec exists.
/// `packed`: the CPU-adapter kernels read the matrix's packed copy (Q8: the
/// matvec only; many tokens read the f16 weights).
fn kernels(ctx: &GpuContext, kind: KernelFamily, store: Store, input: Input, packed: Option<Format>) -> (Variant, Option<Variant>) {
    let (header, store_name, mut layout) = store.header();
    let (input_src, input_name) = input.header(&mut layout);
    let matvec = |name: &str, body: &str, rows| {
        let src = format!("{LINEAR_COMMON}\n{header}\n{input_src}\n{body}");
        Variant { kernel: Kernel::get(ctx, &format!("{name}{store_name}{input_name}"), &src, &layout), rows, tokens: 1 }
    };
    let (block_src, block_name) = if ctx.has_subgroups_of_8() { (LINEAR_BLOCK_SUBGROUP, "_subgroup") } else { (LINEAR_BLOCK, "") };
    let cpu_matvec = |name: &str, body: &str, rows| matvec(&format!("{name}{block_name}"), &format!("{block_src}\n{body}"), rows);
    let matmul = |name: &str, body: &str, rows, tokens| {
        let src = format!("{LINEAR_COMMON}\n{header}\n{body}");
        (input == Input::Stored).then(|| Variant { kernel: Kernel::get(ctx, &format!("{name}{store_name}"), &src, &layout), rows, tokens })
    };
    let (tokens_src, tokens_name) = if ctx.has_subgroups_of_8() { (MATMUL_TOKENS_SUBGROUP, "_subgroup") } else { (MATMUL_TOKENS, "") };
    let cpu_matmul = |name: &str, body: &str| matmul(&format!("{name}{tokens_name}"), &format!("{tokens_src}\n{body}"), 16 * 4, 8);
    if kind.is_cpu_style(ctx) {
        let rows = INTERLEAVE_ROWS as u32;
        let f16_matmul = || cpu_matmul("matmul_rows", include_str!("../../../shaders/matmul_rows.wgsl"));
        let nibbles = |body: &str| format!("{LINEAR_NIBBLES}\n{body}");
        match packed {
            Some(Format::Q4) => (
                cpu_matvec("matvec_rows_q4", &nibbles(&format!("{Q4_HIGH_NONE}\n{MATVEC_ROWS_Q4}")), rows),
                cpu_matmul("matmul_rows_q4", include_str!("../../../shaders/matmul_rows_q4.wgsl")),
            ),
            Some(Format::Q5) => (cpu_matvec("matvec_rows_q5", &nibbles(&format!("{Q5_HIGH_BITS}\n{MATVEC_ROWS_Q4}")), rows), f16_matmul()),
            // Compacted W_down, read in decode only.
            Some(Format::Q4Groups) => (cpu_matvec("matvec_rows_q4g", &nibbles(include_str!("../../../shaders/matvec_rows_q4g.wgsl")), rows), None),
            Some(Format::Q8) => (cpu_matvec("matvec_rows_q8", &format!("{Q8_SCALES_F16}\n{MATVEC_ROWS_Q8}"), rows), f16_matmul()),
            Some(Format::Q8Halves) => (cpu_matvec("matvec_rows_q8_halves", &format!("{Q8_SCALES_F32}\n{MATVEC_ROWS_Q8}"), rows), f16_matmul()),
            None => (cpu_matvec("matvec_rows", include_str!("../../../shaders/matvec_rows.wgsl"), rows), f16_matmul()),
        }
    } else {
        (
            matvec("matvec", include_str!("../../../shaders/matvec.wgsl"), 4),
            matmul("matmul", include_str!("../../../shaders/matmul.wgsl"), MATMUL_TILE, MATMUL_TILE),
        )
    }
}

/// The destinations of a fused [Wq; Wk; Wv] projection: queries (row t) and
/// the layer's KV cache (row pos0 + t). The matrix has `q_rows` query rows
/// (0: keys and values only), then `kv_rows` rows each for keys and values.
pub struct QkvOut<'a> {
    pub q: &'a wgpu::Buffer,
    pub q_rows: usize,
    pub k_cache: &'a wgpu::Buffer,
    pub v_cache: &'a wgpu::Buffer,
    pub kv_rows: usize,
    /// RoPE to apply as queries and keys are stored, where the kernel can
    /// (see [`LinearCall::rotates`]); the caller runs it otherwise.
    pub rope: Option<FusedRope<'a>>,
}

/// Interleaved-pair RoPE (GGUF Llama) over each head's first `rot_dim`
/// dimensions, with `kernels::rope::table`'s cos/sin table.
#[derive(Clone, Copy)]
pub struct FusedRope<'a> {
    pub table: &'a wgpu::Buffer,
    pub head_dim: usize,
    pub rot_dim: usize,
}

impl LinearCall {
    pub fn with_family(
        ctx: &GpuContext,
        w: &Matrix,
        step: &wgpu::Buffer,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
        opts: LinearOptions,
        kind: KernelFamily,
    ) -> LinearCall {
        Self::build(ctx, w, step, x, Output::One(y, opts), None, kind)
    }

    /// The layer writing to `out`.
    pub fn build_for(ctx: &GpuContext, w: &Matrix, step: &wgpu::Buffer, x: &wgpu::Buffer, out: Output, kind: KernelFamily) -> LinearCall {
        Self::build(ctx, w, step, x, out, None, kind)
    }

    /// `fused` (an RMSNorm or SwiGLU) then the layer, in one matvec per
    /// chunk: `x` is the fused step's input. Runs for at most
    /// [`MATVEC_MAX_TOKENS`] tokens.
    pub fn fused(ctx: &GpuContext, w: &Matrix, step: &wgpu::Buffer, x: &wgpu::Buffer, out: Output, fused: FusedInput, kind: KernelFamily) -> LinearCall {
        Self::build(ctx, w, step, x, out, Some(fused), kind)
    }

    fn build(ctx: &GpuContext, w: &Matrix, step: &wgpu::Buffer, x: &wgpu::Buffer, out: Output, fused: Option<FusedInput>, kind: KernelFamily) -> LinearCall {
        assert_eq!(w.interleaved, kind.is_cpu_style(ctx), "matrix layout does not match the kernel family");
        // RoPE rides along in the store of the CPU-style kernels over 8-wide
        // subgroups (matvec and matmul alike), whose rows pair up across
        // neighbouring invocations and whose every invocation stores; one
        // chunk keeps the pairs aligned.
        let rope = match out {
            Output::Qkv(o) => o.rope.filter(|_| kind.is_cpu_style(ctx) && ctx.has_subgroups_of_8() && w.chunks.len() == 1),
            Output::One(..) | Output::Slots { .. } => None,
        };
        let mut y_stride = w.rows;
        let (store, mut buffers, opts, (k_row0, v_row0)) = match out {
            Output::One(y, opts) => (Store::One, vec![y], opts, (0, 0)),
            Output::Slots { y, slots, stride } => {
                y_stride = stride;
                (Store::Slots, vec![y, slots], LinearOptions::default(), (0, 0))
            }
            Output::Qkv(o) => {
                assert_eq!(w.rows, o.q_rows + 2 * o.kv_rows, "fused qkv matrix rows");
                let mut buffers = vec![o.q, o.k_cache, o.v_cache];
                buffers.extend(rope.map(|r| r.table));
                let store = if rope.is_some() { Store::QkvRope } else { Store::Qkv };
                (store, buffers, LinearOptions::default(), (o.q_rows as u32, (o.q_rows + o.kv_rows) as u32))
            }
        };
        let (input, norm_eps) = match fused {
            None => (Input::Stored, 0.0),
            Some(FusedInput::SwiGlu) => (Input::SwiGlu, 0.0),
            Some(FusedInput::Norm { weight, eps }) => {
                buffers.push(weight);
                (Input::Norm, eps)
            }
        };
        let packed = w.packed.as_ref().filter(|_| kind.is_cpu_style(ctx));
        let (matvec, matmul) = kernels(ctx, kind, store, input, packed.map(|p| p.format));
        let q4 = packed.filter(|p| p.format == Format::Q4).map(|p| &p.buffer);
        let chunks = w
            .chunks
            .iter()
            .map(|c| {
                let params = uniform_buffer(
                    ctx,
                    "linear params",
                    &Params {
                        k: w.cols as u32,
                        n: c.rows.len() as u32,
                        y_stride: y_stride as u32,
                        y_col0: c.rows.start as u32,
                        accumulate: opts.accumulate as u32,
                        y_row_from_pos: opts.y_row_from_pos as u32,
                        k_row0,
                        v_row0,
                        norm_eps,
                        rope_head_dim: rope.map_or(0, |r| r.head_dim as u32),
                        rope_dims: rope.map_or(0, |r| r.rot_dim as u32),
                        _pad: 0,
                    },
                );
                let bind = |kernel: &Kernel, weights| {
                    let all: Vec<&wgpu::Buffer> = [&params, step, x, weights].into_iter().chain(buffers.iter().copied()).collect();
                    kernel.bind(ctx, &all)
                };
                let (matvec_weights, matmul_weights) = (packed.map_or(&c.buffer, |p| &p.buffer), q4.unwrap_or(&c.buffer));
                ChunkCall {
                    rows: c.rows.len() as u32,
                    matvec: bind(&matvec.kernel, matvec_weights),
                    matmul: matmul.as_ref().map(|m| bind(&m.kernel, matmul_weights)),
                    matvec_bytes: matvec_weights.size(),
                    matmul_bytes: matmul_weights.size(),
                }
            })
            .collect();
        LinearCall { matvec, matmul, chunks, rotates: rope.is_some() }
    }

    /// Whether queries and keys leave this call rotated (its output asked for
    /// RoPE and the kernel could fuse it).
    pub fn rotates(&self) -> bool {
        self.rotates
    }

    pub fn plan<'a>(&'a self, label: &'static str, n_tokens: u32, out: &mut Vec<Dispatch<'a>>) {
        for c in &self.chunks {
            let (variant, group, weight_bytes) = match (&self.matmul, &c.matmul) {
                (Some(matmul), Some(group)) if n_tokens > MATVEC_MAX_TOKENS => (matmul, group, c.matmul_bytes),
                _ => {
                    assert!(n_tokens <= MATVEC_MAX_TOKENS, "a linear layer with a fused input runs for at most {MATVEC_MAX_TOKENS} tokens");
                    (&self.matvec, &c.matvec, c.matvec_bytes)
                }
            };
            out.push(Dispatch { label, kernel: &variant.kernel, group, grid: variant.grid(c.rows, n_tokens), weight_bytes });
        }
    }
}

/// y[t, o] = sum_k x[t, k] w[o, k], the plain reference.
pub fn reference(x: &[f32], w: &[f32], n: usize, k: usize) -> Vec<f32> {
    let t = x.len() / k;
    let mut y = vec![0.0f32; t * n];
    for ti in 0..t {
        let xr = &x[ti * k..(ti + 1) * k];
        for o in 0..n {
            let wr = &w[o * k..(o + 1) * k];
            y[ti * n + o] = xr.iter().zip(wr).map(|(a, b)| a * b).sum();
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{read_buffer_f32, storage_buffer, uniform_buffer, zeroed_buffer};
    use crate::kernels::{test_util::*, Step};

    fn run_linear(ctx: &GpuContext, call: &LinearCall, n_tokens: u32) {
        let mut plan = Vec::new();
        call.plan("linear", n_tokens, &mut plan);
        crate::kernels::run_plan(ctx, &plan);
    }

    fn run(n_tokens: usize, n: usize, k: usize, max_bytes: u64, opts: LinearOptions, pos0: usize) -> (Vec<f32>, Vec<f32>) {
        run_kind(&crate::testing::gpu(), n_tokens, n, k, max_bytes, opts, pos0, KernelFamily::Auto)
    }

    /// The test device, and the same adapter without subgroups: the CPU-style
    /// matvecs share their input loads through subgroups where a workgroup of
    /// 8 is one (`linear_block_subgroup.wgsl`), and each invocation loads all
    /// of them elsewhere (`linear_block.wgsl`). Tests run both.
    fn both_input_paths() -> [std::sync::Arc<GpuContext>; 2] {
        let (with, without) = (crate::testing::gpu(), crate::testing::gpu_without_subgroups());
        assert!(!without.has_subgroups_of_8());
        // lavapipe at 256 bits runs a workgroup of 8 as one subgroup.
        if with.info.name.contains("llvmpipe") && with.info.name.contains("256 bits") {
            assert!(with.has_subgroups_of_8(), "lavapipe should take the subgroup path");
        }
        [with, without]
    }

    #[allow(clippy::too_many_arguments)]
    fn run_kind(
        ctx: &GpuContext,
        n_tokens: usize,
        n: usize,
        k: usize,
        max_bytes: u64,
        opts: LinearOptions,
        pos0: usize,
        kind: KernelFamily,
    ) -> (Vec<f32>, Vec<f32>) {
        let x = random(n_tokens * k, 10 + n_tokens as u64);
        let w = crate::testing::round_f16(&random(n * k, 20 + n as u64));
        let y0 = random((pos0 + n_tokens) * n, 30);
        let m = Matrix::upload_with_limit(ctx, "w", &w, n, k, kind.is_cpu_style(ctx), max_bytes);
        let step = uniform_buffer(ctx, "step", &Step::new(n_tokens, pos0));
        let xb = storage_buffer(ctx, "x", &x);
        let yb = storage_buffer(ctx, "y", &y0);
        run_linear(ctx, &LinearCall::with_family(ctx, &m, &step, &xb, &yb, opts, kind), n_tokens as u32);
        let got = read_buffer_f32(ctx, &yb, 0, y0.len()).unwrap();
        let mut want = y0.clone();
        let r = reference(&x, &w, n, k);
        let row0 = if opts.y_row_from_pos { pos0 } else { 0 };
        for t in 0..n_tokens {
            for o in 0..n {
                let idx = (row0 + t) * n + o;
                want[idx] = r[t * n + o] + if opts.accumulate { y0[idx] } else { 0.0 };
            }
        }
        (got, want)
    }

    // f32 accumulation over k <= 1536 terms of size <= 1: reordering error stays
    // below ~1e-5 relative; 1e-4 catches any wrong index or dropped term.
    const TOL: f32 = 1e-4;

    /// k covers whole blocks of 32 inputs, blocks and a tail of 8s (104,
    /// 1544), and a tail alone (8, 16, 24).
    #[test]
    fn matvec_kernels_match_reference() {
        for ctx in both_input_paths() {
            for kind in [KernelFamily::Cooperative, KernelFamily::RowPerInvocation] {
                for &(t, n, k) in &[(1, 37, 64), (1, 576, 576), (3, 130, 1536), (2, 70, 104), (1, 64, 1544), (4, 5, 8), (1, 70, 24), (2, 3, 16), (1, 8, 8192)] {
                    let (got, want) = run_kind(&ctx, t, n, k, u64::MAX, LinearOptions::default(), 0, kind);
                    assert!(max_err(&got, &want) < TOL, "{kind:?} t={t} n={n} k={k}: {}", max_err(&got, &want));
                }
                let opts = LinearOptions { accumulate: true, y_row_from_pos: true };
                let (got, want) = run_kind(&ctx, 2, 200, 32, 70 * 32 * 2, opts, 6, kind);
                assert!(max_err(&got, &want) < TOL, "{kind:?} split: {}", max_err(&got, &want));
            }
        }
    }

    /// Tokens and rows not multiples of the tiles (8 tokens, 64 rows), in
    /// both families and, for the CPU-style kernels, both ways of getting the
    /// tokens' inputs (subgroup broadcasts or each invocation's own loads).
    #[test]
    fn matmul_kernels_match_reference_with_ragged_tiles() {
        for ctx in both_input_paths() {
            for kind in [KernelFamily::Cooperative, KernelFamily::RowPerInvocation] {
                for &(t, n, k) in &[(5, 37, 24), (70, 130, 72), (129, 64, 576), (13, 3, 8), (9, 8, 8192)] {
                    let (got, want) = run_kind(&ctx, t, n, k, u64::MAX, LinearOptions::default(), 0, kind);
                    assert!(max_err(&got, &want) < TOL, "{kind:?} t={t} n={n} k={k}: {}", max_err(&got, &want));
                }
                let opts = LinearOptions { accumulate: true, y_row_from_pos: true };
                let (got, want) = run_kind(&ctx, 11, 100, 32, 13 * 32 * 2, opts, 6, kind);
                assert!(max_err(&got, &want) < TOL, "{kind:?} split: {}", max_err(&got, &want));
            }
        }
    }

    /// The fused projection writes queries to rows 0..t of q and keys/values
    /// to cache rows pos0..pos0+t, leaving every other cache row as it was.
    #[test]
    fn qkv_projection_writes_queries_and_cache_rows() {
        let ctx = crate::testing::gpu();
        let (qd, kvd, k, pos0) = (72usize, 24usize, 32usize, 5usize);
        let n = qd + 2 * kvd;
        let w = crate::testing::round_f16(&random(n * k, 21));
        for kind in [KernelFamily::Cooperative, KernelFamily::RowPerInvocation] {
            // Unsplit, and split into chunks that cut through the query and key ranges.
            for max_bytes in [u64::MAX, 80 * k as u64 * 2] {
                for (t, q_rows) in [(1usize, qd), (3, qd), (9, qd), (2, 0)] {
                    let w = if q_rows == 0 { w[qd * k..].to_vec() } else { w.clone() };
                    let m = Matrix::upload_with_limit(&ctx, "wqkv", &w, q_rows + 2 * kvd, k, kind.is_cpu_style(&ctx), max_bytes);
                    let x = random(t * k, 31);
                    let (q0, k0, v0) = (random(t * qd, 32), random((pos0 + t + 2) * kvd, 33), random((pos0 + t + 2) * kvd, 34));
                    let (qb, kb, vb) = (storage_buffer(&ctx, "q", &q0), storage_buffer(&ctx, "k", &k0), storage_buffer(&ctx, "v", &v0));
                    let step = uniform_buffer(&ctx, "step", &Step::new(t, pos0));
                    let xb = storage_buffer(&ctx, "x", &x);
                    let out = QkvOut { q: &qb, q_rows, k_cache: &kb, v_cache: &vb, kv_rows: kvd, rope: None };
                    run_linear(&ctx, &LinearCall::build_for(&ctx, &m, &step, &xb, Output::Qkv(&out), kind), t as u32);
                    let r = reference(&x, &w, m.rows, k);
                    let (mut want_q, mut want_k, mut want_v) = (q0.clone(), k0.clone(), v0.clone());
                    for ti in 0..t {
                        let row = &r[ti * m.rows..(ti + 1) * m.rows];
                        want_q[ti * qd..ti * qd + q_rows].copy_from_slice(&row[..q_rows]);
                        want_k[(pos0 + ti) * kvd..][..kvd].copy_from_slice(&row[q_rows..q_rows + kvd]);
                        want_v[(pos0 + ti) * kvd..][..kvd].copy_from_slice(&row[q_rows + kvd..]);
                    }
                    let read = |b: &wgpu::Buffer, len| read_buffer_f32(&ctx, b, 0, len).unwrap();
                    let what = format!("{kind:?} t={t} q_rows={q_rows} chunks={}", m.chunks.len());
                    assert!(max_err(&read(&qb, q0.len()), &want_q) < TOL, "{what}: queries");
                    assert!(max_err(&read(&kb, k0.len()), &want_k) < TOL, "{what}: keys");
                    assert!(max_err(&read(&vb, v0.len()), &want_v) < TOL, "{what}: values");
                }
            }
        }
    }

    /// RMSNorm fused into the matvec equals the norm then the layer, for one
    /// output (with accumulate) and for the fused qkv output, in both families
    /// and both input paths (k: three blocks of 32 and a tail of 8).
    #[test]
    fn fused_norm_matvec_equals_norm_then_linear() {
        for ctx in both_input_paths() {
            fused_norm_matvec_on(&ctx);
        }
    }

    fn fused_norm_matvec_on(ctx: &GpuContext) {
        let (k, n, eps) = (104usize, 40usize, 1e-5f32);
        let w = crate::testing::round_f16(&random(n * k, 41));
        let gain: Vec<f32> = random(k, 42).iter().map(|v| 1.0 + 0.5 * v).collect();
        let gb = storage_buffer(ctx, "gain", &gain);
        let norm = FusedInput::Norm { weight: &gb, eps };
        for kind in [KernelFamily::Cooperative, KernelFamily::RowPerInvocation] {
            let m = Matrix::upload_with_limit(ctx, "w", &w, n, k, kind.is_cpu_style(ctx), 24 * k as u64 * 2);
            for t in [1usize, 3] {
                let x: Vec<f32> = random(t * k, 43).iter().map(|v| 3.0 * v).collect();
                let want_all = reference(&super::super::rmsnorm::reference(&x, &gain, eps), &w, n, k);
                let (xb, step) = (storage_buffer(ctx, "x", &x), uniform_buffer(ctx, "step", &Step::new(t, 2)));
                // One output, accumulating.
                let y0 = random(t * n, 44);
                let yb = storage_buffer(ctx, "y", &y0);
                run_linear(ctx, &LinearCall::fused(ctx, &m, &step, &xb, Output::One(&yb, LinearOptions { accumulate: true, ..Default::default() }), norm, kind), t as u32);
                let want: Vec<f32> = want_all.iter().zip(&y0).map(|(a, b)| a + b).collect();
                assert!(max_err(&read_buffer_f32(ctx, &yb, 0, t * n).unwrap(), &want) < TOL, "{kind:?} t={t} one output");
                // Queries, keys and values (16 + 12 + 12 rows), cache rows 2..2+t.
                let (q, kc, vc) = (zeroed_buffer(ctx, "q", (t * 16 * 4) as u64), zeroed_buffer(ctx, "k", ((2 + t) * 12 * 4) as u64), zeroed_buffer(ctx, "v", ((2 + t) * 12 * 4) as u64));
                let out = QkvOut { q: &q, q_rows: 16, k_cache: &kc, v_cache: &vc, kv_rows: 12, rope: None };
                run_linear(ctx, &LinearCall::fused(ctx, &m, &step, &xb, Output::Qkv(&out), norm, kind), t as u32);
                let rows = |lo: usize, hi: usize| -> Vec<f32> { (0..t).flat_map(|ti| want_all[ti * n + lo..ti * n + hi].to_vec()).collect() };
                assert!(max_err(&read_buffer_f32(ctx, &q, 0, t * 16).unwrap(), &rows(0, 16)) < TOL, "{kind:?} t={t} queries");
                assert!(max_err(&read_buffer_f32(ctx, &kc, 2 * 12, t * 12).unwrap(), &rows(16, 28)) < TOL, "{kind:?} t={t} keys");
                assert!(max_err(&read_buffer_f32(ctx, &vc, 2 * 12, t * 12).unwrap(), &rows(28, 40)) < TOL, "{kind:?} t={t} values");
            }
        }
    }

    /// RoPE fused into the q/k/v matvec's store equals the projection then
    /// rope.wgsl's rotation, for f16 and 4-bit weights, full and partial
    /// rotary widths, and a last block of rows with padding. It fuses only on
    /// the CPU-style kernels over 8-wide subgroups; elsewhere the call says
    /// so and leaves the rotation to the caller.
    #[test]
    fn fused_rope_qkv_equals_projection_then_rope() {
        use super::super::rope::{self, RopeShape, RopeStyle};
        let (k, head_dim, q_heads, kv_heads, pos0, eps) = (96usize, 8usize, 3usize, 2usize, 5usize, 1e-5f32);
        let (q_rows, kv_rows) = (q_heads * head_dim, kv_heads * head_dim);
        let n = q_rows + 2 * kv_rows;
        let gain: Vec<f32> = random(k, 72).iter().map(|v| 1.0 + 0.5 * v).collect();
        for ctx in both_input_paths() {
            let gb = storage_buffer(&ctx, "gain", &gain);
            for (weights, packed) in [(crate::testing::round_f16(&random(n * k, 70)), false), (q4_1_weights(n * k, 71), true)] {
                for kind in [KernelFamily::Cooperative, KernelFamily::RowPerInvocation] {
                    let m = Matrix::upload(&ctx, "w", &weights, n, k, kind.is_cpu_style(&ctx));
                    assert_eq!(m.packed.is_some(), packed && kind.is_cpu_style(&ctx));
                    for rot_dim in [head_dim, head_dim / 2] {
                        let tab = rope::table(10000.0, rot_dim, 64);
                        let table = storage_buffer(&ctx, "table", &tab);
                        for t in [1usize, 3] {
                            let x: Vec<f32> = random(t * k, 73).iter().map(|v| 3.0 * v).collect();
                            let step = uniform_buffer(&ctx, "step", &Step::new(t, pos0));
                            let (xb, q) = (storage_buffer(&ctx, "x", &x), zeroed_buffer(&ctx, "q", (t * q_rows * 4) as u64));
                            let (kc, vc) = (zeroed_buffer(&ctx, "k", ((pos0 + t) * kv_rows * 4) as u64), zeroed_buffer(&ctx, "v", ((pos0 + t) * kv_rows * 4) as u64));
                            let rope_spec = FusedRope { table: &table, head_dim, rot_dim };
                            let out = QkvOut { q: &q, q_rows, k_cache: &kc, v_cache: &vc, kv_rows, rope: Some(rope_spec) };
                            let call = LinearCall::fused(&ctx, &m, &step, &xb, Output::Qkv(&out), FusedInput::Norm { weight: &gb, eps }, kind);
                            assert_eq!(call.rotates(), kind.is_cpu_style(&ctx) && ctx.has_subgroups_of_8(), "{kind:?}");
                            run_linear(&ctx, &call, t as u32);
                            // The cooperative kernels read f16 weights.
                            let w_read = if m.packed.is_some() { weights.clone() } else { crate::testing::round_f16(&weights) };
                            let all = reference(&super::super::rmsnorm::reference(&x, &gain, eps), &w_read, n, k);
                            let rows = |lo: usize, hi: usize| -> Vec<f32> { (0..t).flat_map(|ti| all[ti * n + lo..ti * n + hi].to_vec()).collect() };
                            let (mut want_q, mut want_k, want_v) = (rows(0, q_rows), rows(q_rows, q_rows + kv_rows), rows(q_rows + kv_rows, n));
                            if call.rotates() {
                                let shape = RopeShape { n_heads: q_heads, head_dim, rot_dim, style: RopeStyle::Interleaved };
                                rope::reference(&mut want_q, &shape, pos0, &tab);
                                rope::reference(&mut want_k, &RopeShape { n_heads: kv_heads, ..shape }, pos0, &tab);
                            }
                            let what = format!("{kind:?} packed={packed} rot_dim={rot_dim} t={t}");
                            assert!(max_err(&read_buffer_f32(&ctx, &q, 0, t * q_rows).unwrap(), &want_q) < TOL, "{what}: queries");
                            assert!(max_err(&read_buffer_f32(&ctx, &kc, pos0 * kv_rows, t * kv_rows).unwrap(), &want_k) < TOL, "{what}: keys");
                            assert!(max_err(&read_buffer_f32(&ctx, &vc, pos0 * kv_rows, t * kv_rows).unwrap(), &want_v) < TOL, "{what}: values");
                        }
                    }
                }
            }
        }
    }

    /// RoPE in the store of a q/k/v projection without a fused input (the
    /// prefill matmul, 9 and 20 tokens: ragged token tiles, f16 and 4-bit
    /// weights) equals the projection then rope.wgsl's rotation; it rotates
    /// only on the CPU-style kernels over 8-wide subgroups.
    #[test]
    fn rope_in_the_matmul_store_equals_projection_then_rope() {
        use super::super::rope::{self, RopeShape, RopeStyle};
        let (k, head_dim, q_heads, kv_heads, pos0) = (96usize, 8usize, 3usize, 2usize, 5usize);
        let (q_rows, kv_rows) = (q_heads * head_dim, kv_heads * head_dim);
        let n = q_rows + 2 * kv_rows;
        for ctx in both_input_paths() {
            for (weights, packed) in [(crate::testing::round_f16(&random(n * k, 80)), false), (q4_1_weights(n * k, 81), true)] {
                for kind in [KernelFamily::Cooperative, KernelFamily::RowPerInvocation] {
                    let m = Matrix::upload(&ctx, "w", &weights, n, k, kind.is_cpu_style(&ctx));
                    let tab = rope::table(10000.0, head_dim, 64);
                    let table = storage_buffer(&ctx, "table", &tab);
                    for t in [9usize, 20] {
                        let x = random(t * k, 82);
                        let step = uniform_buffer(&ctx, "step", &Step::new(t, pos0));
                        let (xb, q) = (storage_buffer(&ctx, "x", &x), zeroed_buffer(&ctx, "q", (t * q_rows * 4) as u64));
                        let (kc, vc) = (zeroed_buffer(&ctx, "k", ((pos0 + t) * kv_rows * 4) as u64), zeroed_buffer(&ctx, "v", ((pos0 + t) * kv_rows * 4) as u64));
                        let out = QkvOut { q: &q, q_rows, k_cache: &kc, v_cache: &vc, kv_rows, rope: Some(FusedRope { table: &table, head_dim, rot_dim: head_dim }) };
                        let call = LinearCall::build_for(&ctx, &m, &step, &xb, Output::Qkv(&out), kind);
                        assert_eq!(call.rotates(), kind.is_cpu_style(&ctx) && ctx.has_subgroups_of_8(), "{kind:?}");
                        run_linear(&ctx, &call, t as u32);
                        // The matmuls read the packed weights where there are some, else f16.
                        let w_read = if m.packed.is_some() { weights.clone() } else { crate::testing::round_f16(&weights) };
                        let all = reference(&x, &w_read, n, k);
                        let rows = |lo: usize, hi: usize| -> Vec<f32> { (0..t).flat_map(|ti| all[ti * n + lo..ti * n + hi].to_vec()).collect() };
                        let (mut want_q, mut want_k, want_v) = (rows(0, q_rows), rows(q_rows, q_rows + kv_rows), rows(q_rows + kv_rows, n));
                        if call.rotates() {
                            let shape = RopeShape { n_heads: q_heads, head_dim, rot_dim: head_dim, style: RopeStyle::Interleaved };
                            rope::reference(&mut want_q, &shape, pos0, &tab);
                            rope::reference(&mut want_k, &RopeShape { n_heads: kv_heads, ..shape }, pos0, &tab);
                        }
                        let what = format!("{kind:?} packed={packed} t={t}");
                        assert!(max_err(&read_buffer_f32(&ctx, &q, 0, t * q_rows).unwrap(), &want_q) < TOL, "{what}: queries");
                        assert!(max_err(&read_buffer_f32(&ctx, &kc, pos0 * kv_rows, t * kv_rows).unwrap(), &want_k) < TOL, "{what}: keys");
                        assert!(max_err(&read_buffer_f32(&ctx, &vc, pos0 * kv_rows, t * kv_rows).unwrap(), &want_v) < TOL, "{what}: values");
                    }
                }
            }
        }
    }

    /// SwiGLU fused into the matvec equals SwiGLU then the layer, in both
    /// families, over a split matrix (two chunks) and several tokens.
    #[test]
    fn fused_swiglu_matvec_equals_swiglu_then_linear() {
        for ctx in both_input_paths() {
            fused_swiglu_matvec_on(&ctx);
        }
    }

    fn fused_swiglu_matvec_on(ctx: &GpuContext) {
        let (k, n) = (72usize, 130usize);
        let w = crate::testing::round_f16(&random(n * k, 51));
        for kind in [KernelFamily::Cooperative, KernelFamily::RowPerInvocation] {
            let m = Matrix::upload_with_limit(ctx, "w", &w, n, k, kind.is_cpu_style(ctx), 64 * k as u64 * 2);
            assert!(m.chunks.len() > 1, "the test needs a split matrix");
            for t in [1usize, 4] {
                // Gates over the range where SiLU bends; rows of [gate | up].
                let gate_up: Vec<f32> = random(t * 2 * k, 52).iter().map(|v| 4.0 * v).collect();
                let h: Vec<f32> = gate_up.chunks(2 * k).flat_map(|row| super::super::swiglu::reference(&row[..k], &row[k..])).collect();
                let y0 = random(t * n, 53);
                let want: Vec<f32> = reference(&h, &w, n, k).iter().zip(&y0).map(|(a, b)| a + b).collect();
                let (xb, yb, step) = (storage_buffer(ctx, "gate_up", &gate_up), storage_buffer(ctx, "y", &y0), uniform_buffer(ctx, "step", &Step::new(t, 0)));
                let opts = LinearOptions { accumulate: true, ..Default::default() };
                run_linear(ctx, &LinearCall::fused(ctx, &m, &step, &xb, Output::One(&yb, opts), FusedInput::SwiGlu, kind), t as u32);
                let err = max_err(&read_buffer_f32(ctx, &yb, 0, t * n).unwrap(), &want);
                assert!(err < TOL, "{kind:?} t={t}: {err}");
            }
        }
    }

    /// The packed kernels (CPU adapters, a matrix loaded from Q4_1 or Q8_0)
    /// equal the reference on the same weights: the matvec as stored, with a
    /// fused norm and with a fused SwiGLU, and many tokens (9 and 20, ragged
    /// token tiles: the 4-bit matmul, or the f16 one for Q8), over ragged
    /// blocks of rows; with the inputs shared through subgroups where the
    /// adapter allows, and loaded by every invocation.
    #[test]
    fn packed_kernels_match_reference() {
        for ctx in both_input_paths() {
            packed_kernels_match_reference_on(&ctx);
        }
    }

    fn packed_kernels_match_reference_on(ctx: &GpuContext) {
        let kind = KernelFamily::RowPerInvocation;
        let (k, n) = (96usize, 100usize);
        let gain: Vec<f32> = random(k, 62).iter().map(|v| 1.0 + 0.5 * v).collect();
        let gb = storage_buffer(ctx, "gain", &gain);
        let opts = LinearOptions { accumulate: true, ..Default::default() };
        let q5_1 = {
            use crate::loader::quant::{dequantize, quantize, GgmlType};
            dequantize(GgmlType::Q5_1, &quantize(GgmlType::Q5_1, &random(n * k, 66)), n * k)
        };
        let q5_0 = {
            use crate::loader::quant::{dequantize, quantize, GgmlType};
            dequantize(GgmlType::Q5_0, &quantize(GgmlType::Q5_0, &random(n * k, 69)), n * k)
        };
        // K-quant blocks run along the flat array; rows of 96 are whole sub-blocks.
        let kquant = |ty, seed| {
            use crate::loader::quant::{dequantize, quantize};
            let whole = (n * k).next_multiple_of(256);
            dequantize(ty, &quantize(ty, &random(whole, seed)), whole)[..n * k].to_vec()
        };
        use crate::loader::quant::GgmlType::{Q4K, Q6K};
        let cases = [
            (Format::Q4, q4_1_weights(n * k, 61)),
            (Format::Q8, q8_0_weights(n * k, 65)),
            (Format::Q5, q5_1),
            (Format::Q5, q5_0),
            (Format::Q8Halves, kquant(Q4K, 67)),
            (Format::Q8Halves, kquant(Q6K, 68)),
        ];
        for (format, weights) in cases {
            let m = Matrix::upload(ctx, "w", &weights, n, k, true);
            assert_eq!(m.packed.as_ref().map(|p| p.format), Some(format));
            for t in [1usize, 3, 9, 20] {
                // The 5- and 8-bit forms have no matmul: many tokens read the f16 weights.
                let w = if format != Format::Q4 && t as u32 > MATVEC_MAX_TOKENS { crate::testing::round_f16(&weights) } else { weights.clone() };
                let step = uniform_buffer(ctx, "step", &Step::new(t, 0));
                let x: Vec<f32> = random(t * 2 * k, 63).iter().map(|v| 3.0 * v).collect();
                let xb = storage_buffer(ctx, "x", &x);
                // Stored and normed inputs read [t, k]; SwiGLU reads [t, gate | up].
                let stored = x[..t * k].to_vec();
                let normed = super::super::rmsnorm::reference(&stored, &gain, 1e-5);
                let swiglu: Vec<f32> = x.chunks(2 * k).flat_map(|r| super::super::swiglu::reference(&r[..k], &r[k..])).collect();
                let cases = [(None, stored), (Some(FusedInput::Norm { weight: &gb, eps: 1e-5 }), normed), (Some(FusedInput::SwiGlu), swiglu)];
                // Fused inputs are for the matvec only (a few tokens).
                for (fused, input) in cases.into_iter().filter(|(f, _)| f.is_none() || t as u32 <= MATVEC_MAX_TOKENS) {
                    let y0 = random(t * n, 64);
                    let yb = storage_buffer(ctx, "y", &y0);
                    let call = match fused {
                        None => LinearCall::with_family(ctx, &m, &step, &xb, &yb, opts, kind),
                        Some(f) => LinearCall::fused(ctx, &m, &step, &xb, Output::One(&yb, opts), f, kind),
                    };
                    run_linear(ctx, &call, t as u32);
                    let want: Vec<f32> = reference(&input, &w, n, k).iter().zip(&y0).map(|(a, b)| a + b).collect();
                    let err = max_err(&read_buffer_f32(ctx, &yb, 0, t * n).unwrap(), &want);
                    assert!(err < TOL, "{format:?} t={t} fused={}: {err}", fused.is_some());
                }
            }
        }
    }

    #[test]
    fn split_matrix_accumulate_and_cache_rows() {
        let opts = LinearOptions { accumulate: true, y_row_from_pos: true };
        for &t in &[1usize, 9] {
            let (got, want) = run(t, 100, 32, 13 * 32 * 2, opts, 6);
            assert!(max_err(&got, &want) < TOL, "t={t}: {}", max_err(&got, &want));
        }
    }
}
