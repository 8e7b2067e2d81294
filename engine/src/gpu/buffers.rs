//! Buffer helpers: upload, zero-filled scratch, uniforms, readback, and the row
//! split that keeps every binding under the adapter's storage-binding limit.

use super::GpuContext;
use crate::error::{Result, SiftError};
use wgpu::util::DeviceExt;

const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

pub fn storage_buffer<T: bytemuck::Pod>(ctx: &GpuContext, label: &str, data: &[T]) -> wgpu::Buffer {
    let bytes: &[u8] = bytemuck::cast_slice(data);
    if bytes.is_empty() {
        return zeroed_buffer(ctx, label, 4);
    }
    ctx.count_allocation(bytes.len() as u64);
    ctx.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some(label),
        contents: bytes,
        usage: STORAGE,
    })
}

pub fn zeroed_buffer(ctx: &GpuContext, label: &str, bytes: u64) -> wgpu::Buffer {
    ctx.count_allocation(bytes.max(4).next_multiple_of(4));
    ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: bytes.max(4).next_multiple_of(4),
        usage: STORAGE,
        mapped_at_creation: false,
    })
}

pub fn uniform_buffer<T: bytemuck::Pod>(ctx: &GpuContext, label: &str, value: &T) -> wgpu::Buffer {
    ctx.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some(label),
        contents: bytemuck::bytes_of(value),
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
    })
}

fn read_bytes(ctx: &GpuContext, buffer: &wgpu::Buffer, offset: u64, bytes: u64) -> Result<Vec<u8>> {
    // A failed device's buffers are invalid: mapping one would only add errors.
    ctx.check()?;
    let staging = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("readback"),
        size: bytes,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    enc.copy_buffer_to_buffer(buffer, offset, &staging, 0, bytes);
    ctx.queue.submit([enc.finish()]);
    let (tx, rx) = std::sync::mpsc::channel();
    staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    ctx.wait()?;
    rx.recv()
        .map_err(|_| SiftError::Gpu("readback callback dropped".into()))?
        .map_err(|e| SiftError::Gpu(format!("readback failed: {e}")))?;
    let view = staging
        .get_mapped_range(..)
        .map_err(|e| SiftError::Gpu(format!("readback map failed: {e}")))?;
    Ok(view.to_vec())
}

/// Reads `len` f32 values starting at element `offset`.
pub fn read_buffer_f32(ctx: &GpuContext, buffer: &wgpu::Buffer, offset: usize, len: usize) -> Result<Vec<f32>> {
    let bytes = read_bytes(ctx, buffer, offset as u64 * 4, len as u64 * 4)?;
    Ok(bytemuck::pod_collect_to_vec(&bytes))
}

pub fn read_buffer_u32(ctx: &GpuContext, buffer: &wgpu::Buffer, offset: usize, len: usize) -> Result<Vec<u32>> {
    let bytes = read_bytes(ctx, buffer, offset as u64 * 4, len as u64 * 4)?;
    Ok(bytemuck::pod_collect_to_vec(&bytes))
}

/// Splits `rows` rows of `row_bytes` each into consecutive ranges whose byte size
/// fits in `max_bytes`: how a tensor larger than one storage binding is stored.
pub fn split_rows(rows: usize, row_bytes: u64, max_bytes: u64) -> Vec<std::ops::Range<usize>> {
    let per_chunk = ((max_bytes / row_bytes.max(1)) as usize).max(1);
    (0..rows)
        .step_by(per_chunk)
        .map(|start| start..(start + per_chunk).min(rows))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::split_rows;

    #[test]
    fn split_rows_covers_everything_within_limit() {
        let chunks = split_rows(49152, 576 * 2, 128 << 20);
        assert_eq!(chunks.len(), 1);
        let chunks = split_rows(1000, 100, 2500);
        assert_eq!(chunks.len(), 40);
        assert!(chunks.iter().all(|c| (c.len() as u64) * 100 <= 2500));
        assert_eq!(chunks.first().unwrap().start, 0);
        assert_eq!(chunks.last().unwrap().end, 1000);
        assert!(chunks.windows(2).all(|w| w[0].end == w[1].start));
    }
}
