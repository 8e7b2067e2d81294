//! GPU runtime: adapter selection and device creation (`context`), buffer helpers
//! (`buffers`), and compiled kernels with their bind-group layouts (`pipeline`).

mod buffers;
mod context;
mod pipeline;

pub use buffers::{read_buffer_f32, read_buffer_u32, split_rows, storage_buffer, uniform_buffer, zeroed_buffer};
pub use context::{describe_adapter, format_bytes, list_adapters, AdapterRequest, AdapterSummary, GpuContext};
pub use pipeline::{params_in_storage, Binding, Kernel};
