//! GGUF reader. Every length, count and offset read from the file is checked
//! against the bytes actually present before it is used, so a truncated or
//! hostile file gives an error, never a panic, a huge allocation or an over-read.

use super::quant::{dequantize, ggml_type_name, non_finite, GgmlType};
use super::{element_count, Tensor, TensorSource};
use crate::error::{Result, SiftError};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
const MAX_DIMS: usize = 4;

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    Array(Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) if v >= 0 => Some(v as u64),
            Value::I16(v) if v >= 0 => Some(v as u64),
            Value::I32(v) if v >= 0 => Some(v as u64),
            Value::I64(v) if v >= 0 => Some(v as u64),
            _ => None,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    /// GGUF order: dims[0] is the fastest-varying (columns).
    pub dims: Vec<usize>,
    pub type_id: u32,
    /// Absolute byte range in the file.
    pub range: std::ops::Range<usize>,
}

pub struct GgufFile {
    pub path: PathBuf,
    pub metadata: HashMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    index: HashMap<String, usize>,
    bytes: Bytes,
    reported_non_finite: std::sync::atomic::AtomicBool,
}

enum Bytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn err(&self, what: impl std::fmt::Display) -> SiftError {
        SiftError::bad_file(self.path, format!("{what} (at byte {})", self.pos))
    }
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(self.err(format!("truncated: {what} needs {n} bytes, {} left", self.buf.len() - self.pos))),
        }
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1, "u8")?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2, "u16")?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, "u32")?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8, "u64")?.try_into().unwrap()))
    }
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    /// A count that claims at least `min_bytes_each` per item must fit in the file.
    fn count(&mut self, what: &str, min_bytes_each: usize) -> Result<usize> {
        let n = self.u64()?;
        if n.saturating_mul(min_bytes_each as u64) > self.remaining() as u64 {
            return Err(self.err(format!("{what} {n} is impossible for a file of {} bytes", self.buf.len())));
        }
        Ok(n as usize)
    }
    fn string(&mut self) -> Result<String> {
        let n = self.count("string length", 1)?;
        let bytes = self.take(n, "string")?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.err("string is not UTF-8"))
    }
    fn value(&mut self, ty: u32, depth: u32) -> Result<Value> {
        Ok(match ty {
            0 => Value::U8(self.u8()?),
            1 => Value::I8(self.u8()? as i8),
            2 => Value::U16(self.u16()?),
            3 => Value::I16(self.u16()? as i16),
            4 => Value::U32(self.u32()?),
            5 => Value::I32(self.u32()? as i32),
            6 => Value::F32(f32::from_bits(self.u32()?)),
            7 => Value::Bool(self.u8()? != 0),
            8 => Value::Str(self.string()?),
            9 => {
                if depth > 2 {
                    return Err(self.err("metadata arrays nested too deep"));
                }
                let elem = self.u32()?;
                let n = self.count("array length", 1)?;
                let mut v = Vec::with_capacity(n.min(1 << 20));
                for _ in 0..n {
                    v.push(self.value(elem, depth + 1)?);
                }
                Value::Array(v)
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(self.u64()? as i64),
            12 => Value::F64(f64::from_bits(self.u64()?)),
            other => return Err(self.err(format!("unknown metadata value type {other}"))),
        })
    }
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<GgufFile> {
        let file = std::fs::File::open(path).map_err(|e| SiftError::io(path, e))?;
        // SAFETY: the map is read-only; a file changed underneath us while mapped
        // is outside what any reader can defend against.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| SiftError::io(path, e))?;
        Self::parse(path, Bytes::Mapped(map))
    }

    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<GgufFile> {
        Self::parse(path, Bytes::Owned(bytes))
    }

    fn parse(path: &Path, bytes: Bytes) -> Result<GgufFile> {
        let mut r = Reader { buf: &bytes, pos: 0, path };
        if r.take(4, "magic")? != MAGIC {
            return Err(SiftError::bad_file(path, "not a GGUF file (wrong magic)"));
        }
        let version = r.u32()?;
        if !(2..=3).contains(&version) {
            return Err(r.err(format!("unsupported GGUF version {version} (supported: 2, 3)")));
        }
        // A tensor info needs at least 8 (name len) + 4 + 4 + 8 bytes; a kv 8 + 4 + 1.
        let n_tensors = r.count("tensor count", 24)?;
        let n_kv = r.count("metadata count", 13)?;
        let mut metadata = HashMap::new();
        for _ in 0..n_kv {
            let key = r.string()?;
            let ty = r.u32()?;
            let value = r.value(ty, 0)?;
            metadata.insert(key, value);
        }
        let mut raw = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let name = r.string()?;
            let n_dims = r.u32()? as usize;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(r.err(format!("tensor '{name}' has {n_dims} dimensions")));
            }
            let mut dims = Vec::with_capacity(n_dims);
            for _ in 0..n_dims {
                dims.push(r.u64()?);
            }
            let type_id = r.u32()?;
            let offset = r.u64()?;
            raw.push((name, dims, type_id, offset));
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a.is_power_of_two() && a <= 1 << 16 => a,
                _ => return Err(SiftError::bad_file(path, format!("bad general.alignment {v:?}"))),
            },
        };
        let data_start = (r.pos as u64).next_multiple_of(alignment);
        let file_len = bytes.len() as u64;
        let mut tensors = Vec::with_capacity(raw.len());
        let mut index = HashMap::new();
        for (name, dims, type_id, offset) in raw {
            let dims_usize: Vec<usize> = dims
                .iter()
                .map(|&d| usize::try_from(d).ok().filter(|&d| d > 0))
                .collect::<Option<_>>()
                .ok_or_else(|| SiftError::bad_file(path, format!("tensor '{name}' has a zero or absurd dimension {dims:?}")))?;
            let n = element_count(&dims_usize)
                .ok_or_else(|| SiftError::bad_file(path, format!("tensor '{name}' dimensions {dims:?} overflow")))?;
            // Size is only known for types we read; others get their error when used.
            let size = match GgmlType::from_id(type_id) {
                Some(ty) => {
                    // Blocks run along a row: a row that is not whole blocks is corrupt.
                    let (block, _) = ty.block();
                    if !dims_usize[0].is_multiple_of(block) {
                        return Err(SiftError::bad_file(
                            path,
                            format!("tensor '{name}': its rows of {} are not a whole number of {}'s blocks of {block}", dims_usize[0], ty.name()),
                        ));
                    }
                    ty.bytes_for(n).ok_or_else(|| SiftError::bad_file(path, format!("tensor '{name}': {n} elements overflow")))? as u64
                }
                None => 0,
            };
            let start = data_start.checked_add(offset);
            let end = start.and_then(|s| s.checked_add(size));
            let (start, end) = match (start, end) {
                (Some(s), Some(e)) if e <= file_len && offset % alignment == 0 => (s, e),
                _ => {
                    return Err(SiftError::bad_file(
                        path,
                        format!(
                            "tensor '{name}' claims bytes at offset {offset} (+{size}) but the file holds {file_len} bytes (truncated or corrupt)"
                        ),
                    ))
                }
            };
            if index.insert(name.clone(), tensors.len()).is_some() {
                return Err(SiftError::bad_file(path, format!("tensor '{name}' appears twice")));
            }
            tensors.push(TensorInfo {
                name,
                dims: dims_usize,
                type_id,
                range: start as usize..end as usize,
            });
        }
        Ok(GgufFile {
            path: path.to_path_buf(),
            metadata,
            tensors,
            index,
            bytes,
            reported_non_finite: Default::default(),
        })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    pub fn get_u64(&self, key: &str) -> Result<u64> {
        self.get(key)
            .and_then(Value::as_u64)
            .ok_or_else(|| SiftError::bad_file(&self.path, format!("missing or non-integer metadata '{key}'")))
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    pub fn architecture(&self) -> Result<String> {
        self.get_str("general.architecture")
            .map(str::to_string)
            .ok_or_else(|| SiftError::bad_file(&self.path, "missing metadata 'general.architecture'"))
    }
}

impl TensorSource for GgufFile {
    fn stored_names(&self) -> Vec<String> {
        self.tensors.iter().map(|t| t.name.clone()).collect()
    }

    fn stored_name(&self, name: &str) -> Option<String> {
        Some(name.to_string())
    }

    fn tensor(&self, name: &str) -> Result<Option<Tensor>> {
        let Some(&i) = self.index.get(name) else { return Ok(None) };
        let info = &self.tensors[i];
        let ty = GgmlType::from_id(info.type_id).ok_or_else(|| SiftError::UnsupportedTensorType {
            ty: ggml_type_name(info.type_id),
            tensor: name.to_string(),
        })?;
        let n = element_count(&info.dims).expect("validated at parse time");
        let data = dequantize(ty, &self.bytes[info.range.clone()], n);
        // A NaN or infinite block scale is the file's own data: it loads, said once.
        let bad = non_finite(&data);
        if bad > 0 && !self.reported_non_finite.swap(true, std::sync::atomic::Ordering::Relaxed) {
            log::warn!("{}: tensor '{name}' ({}) has {bad} NaN or infinite values (a block scale is not finite); further tensors are not reported", self.path.display(), ty.name());
        }
        Ok(Some(Tensor {
            shape: info.dims.iter().rev().copied().collect(),
            data,
        }))
    }
}

/// Writes a GGUF v3 file: metadata plus tensors given in PyTorch shape order.
/// Used by tests and fixtures; it is the inverse of [`GgufFile::parse`].
pub fn write(metadata: &[(&str, Value)], tensors: &[(String, Vec<usize>, GgmlType, Vec<u8>)]) -> Vec<u8> {
    fn put_str(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }
    fn type_id(v: &Value) -> u32 {
        match v {
            Value::U8(_) => 0,
            Value::I8(_) => 1,
            Value::U16(_) => 2,
            Value::I16(_) => 3,
            Value::U32(_) => 4,
            Value::I32(_) => 5,
            Value::F32(_) => 6,
            Value::Bool(_) => 7,
            Value::Str(_) => 8,
            Value::Array(_) => 9,
            Value::U64(_) => 10,
            Value::I64(_) => 11,
            Value::F64(_) => 12,
        }
    }
    fn put_value(out: &mut Vec<u8>, v: &Value) {
        match v {
            Value::U8(x) => out.push(*x),
            Value::I8(x) => out.push(*x as u8),
            Value::U16(x) => out.extend(x.to_le_bytes()),
            Value::I16(x) => out.extend(x.to_le_bytes()),
            Value::U32(x) => out.extend(x.to_le_bytes()),
            Value::I32(x) => out.extend(x.to_le_bytes()),
            Value::F32(x) => out.extend(x.to_le_bytes()),
            Value::Bool(x) => out.push(*x as u8),
            Value::Str(s) => put_str(out, s),
            Value::Array(items) => {
                out.extend(items.first().map(type_id).unwrap_or(4).to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                items.iter().for_each(|i| put_value(out, i));
            }
            Value::U64(x) => out.extend(x.to_le_bytes()),
            Value::I64(x) => out.extend(x.to_le_bytes()),
            Value::F64(x) => out.extend(x.to_le_bytes()),
        }
    }
    let mut out = MAGIC.to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        put_str(&mut out, k);
        out.extend(type_id(v).to_le_bytes());
        put_value(&mut out, v);
    }
    let mut offset = 0u64;
    for (name, shape, ty, data) in tensors {
        put_str(&mut out, name);
        out.extend((shape.len() as u32).to_le_bytes());
        shape.iter().rev().for_each(|&d| out.extend((d as u64).to_le_bytes()));
        out.extend(ty.id().to_le_bytes());
        out.extend(offset.to_le_bytes());
        offset = (offset + data.len() as u64).next_multiple_of(DEFAULT_ALIGNMENT);
    }
    out.resize((out.len() as u64).next_multiple_of(DEFAULT_ALIGNMENT) as usize, 0);
    for (_, _, _, data) in tensors {
        out.extend(data);
        out.resize((out.len() as u64).next_multiple_of(DEFAULT_ALIGNMENT) as usize, 0);
    }
    out
}
