//! TensorPool: tensors keyed by (shape, dtype), reused on a hit, allocated on a miss; at most
//! `max_per_key` kept per key; tensors above `bypass_bytes` bypass the pool.

use super::{AlignedBuffer, Owner};
use crate::tensor::{byte_size, Shape, Tensor, TensorRef};
use opal_plugin_api::DType;
use parking_lot::Mutex;
use std::{
    collections::HashMap,
    sync::atomic::{AtomicU64, Ordering},
};

/// Ranks above this are never pooled (the key stores dims inline).
const MAX_POOLED_RANK: usize = 8;

/// How the pool behaves; the seed's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Tensors kept per (shape, dtype); more are freed when returned.
    pub max_per_key: usize,
    /// Tensors larger than this are allocated and freed directly.
    pub bypass_bytes: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_per_key: 20,
            bypass_bytes: 1 << 20,
        }
    }
}

/// A pool key: dtype and dims, stored inline so looking up needs no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct PoolKey {
    dtype: DType,
    rank: u8,
    dims: [usize; MAX_POOLED_RANK],
}

impl PoolKey {
    fn new(dtype: DType, shape: &[usize]) -> Option<Self> {
        if shape.len() > MAX_POOLED_RANK {
            return None;
        }
        let mut dims = [0; MAX_POOLED_RANK];
        dims[..shape.len()].copy_from_slice(shape);
        Some(PoolKey {
            dtype,
            rank: shape.len() as u8,
            dims,
        })
    }
}

/// The pool's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PoolStats {
    pub hits: u64,
    pub misses: u64,
    pub bypassed: u64,
    pub pooled_tensors: usize,
    pub pooled_bytes: usize,
}

impl PoolStats {
    /// Hits over requests the pool could serve (bypassed ones excluded); 0 before any request.
    pub fn hit_rate(&self) -> f64 {
        let requests = self.hits + self.misses;
        if requests == 0 {
            0.0
        } else {
            self.hits as f64 / requests as f64
        }
    }
}

/// Reusable tensor storage shared by every run of an engine.
#[derive(Debug)]
pub struct TensorPool {
    config: PoolConfig,
    /// Owner of bytes handed out as live tensors.
    tensors: Owner,
    /// Owner of bytes resting in the pool.
    pooled: Owner,
    free: Mutex<HashMap<PoolKey, Vec<AlignedBuffer>>>,
    hits: AtomicU64,
    misses: AtomicU64,
    bypassed: AtomicU64,
}

/// The pool could not allocate a tensor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot allocate a {dtype} tensor of shape {shape:?}: {reason}")]
pub struct AllocError {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub reason: &'static str,
}

impl TensorPool {
    /// A pool whose live tensors are accounted to `tensors` and idle ones to `pooled`.
    pub fn new(config: PoolConfig, tensors: Owner, pooled: Owner) -> Self {
        TensorPool {
            config,
            tensors,
            pooled,
            free: Mutex::new(HashMap::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            bypassed: AtomicU64::new(0),
        }
    }

    pub fn config(&self) -> PoolConfig {
        self.config
    }

    /// A zeroed-or-reused tensor of `dtype` and `shape`: contents are unspecified on a hit.
    pub fn get(&self, dtype: DType, shape: &[usize]) -> Result<Tensor, AllocError> {
        let error = |reason| AllocError {
            dtype,
            shape: shape.to_vec(),
            reason,
        };
        let bytes = byte_size(dtype, shape).ok_or_else(|| error("its size overflows"))?;
        // String tensors own bytes beside their views: they are never pooled.
        let key = (self.poolable(bytes) && dtype != DType::STRING)
            .then(|| PoolKey::new(dtype, shape))
            .flatten();
        let Some(key) = key else {
            self.bypassed.fetch_add(1, Ordering::Relaxed);
            let data = AlignedBuffer::zeroed(bytes, &self.tensors)
                .ok_or_else(|| error("out of memory"))?;
            return Ok(Tensor::from_parts(dtype, Shape::from_slice(shape), data));
        };
        let reused = self.free.lock().get_mut(&key).and_then(Vec::pop);
        let data = match reused {
            Some(mut data) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                data.set_owner(&self.tensors);
                data
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                AlignedBuffer::zeroed(bytes, &self.tensors).ok_or_else(|| error("out of memory"))?
            }
        };
        Ok(Tensor::from_parts(dtype, Shape::from_slice(shape), data))
    }

    /// Returns a tensor: kept for reuse if its key has room, freed otherwise.
    pub fn put(&self, tensor: Tensor) {
        let (dtype, shape, mut data, _) = tensor.into_parts();
        if !self.poolable(data.len()) || dtype == DType::STRING {
            return;
        }
        let Some(key) = PoolKey::new(dtype, &shape) else {
            return;
        };
        let mut free = self.free.lock();
        let slot = free
            .entry(key)
            .or_insert_with(|| Vec::with_capacity(self.config.max_per_key));
        if slot.len() < self.config.max_per_key {
            data.set_owner(&self.pooled);
            slot.push(data);
        }
    }

    /// A copy of `tensor` (its strings too, for a string tensor).
    pub fn copy_of(&self, tensor: TensorRef<'_>) -> Result<Tensor, AllocError> {
        if tensor.dtype == DType::STRING {
            return Tensor::copy_of(tensor, &self.tensors).ok_or_else(|| AllocError {
                dtype: tensor.dtype,
                shape: tensor.shape.to_vec(),
                reason: "out of memory",
            });
        }
        let mut copy = self.get(tensor.dtype, tensor.shape)?;
        copy.bytes_mut().copy_from_slice(tensor.data);
        Ok(copy)
    }

    /// The owner of the bytes of live tensors.
    pub fn tensor_owner(&self) -> &Owner {
        &self.tensors
    }

    /// Allocates `count` tensors of `dtype` and `shape` into the pool ahead of use.
    pub fn preallocate(
        &self,
        dtype: DType,
        shape: &[usize],
        count: usize,
    ) -> Result<(), AllocError> {
        let tensors = (0..count)
            .map(|_| {
                let bytes = byte_size(dtype, shape).ok_or_else(|| AllocError {
                    dtype,
                    shape: shape.to_vec(),
                    reason: "its size overflows",
                })?;
                let data = AlignedBuffer::zeroed(bytes, &self.tensors).ok_or(AllocError {
                    dtype,
                    shape: shape.to_vec(),
                    reason: "out of memory",
                })?;
                Ok(Tensor::from_parts(dtype, Shape::from_slice(shape), data))
            })
            .collect::<Result<Vec<_>, _>>()?;
        tensors.into_iter().for_each(|t| self.put(t));
        Ok(())
    }

    /// Frees every pooled tensor.
    pub fn clear(&self) {
        self.free.lock().clear();
    }

    pub fn stats(&self) -> PoolStats {
        let free = self.free.lock();
        PoolStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            bypassed: self.bypassed.load(Ordering::Relaxed),
            pooled_tensors: free.values().map(Vec::len).sum(),
            pooled_bytes: free.values().flatten().map(AlignedBuffer::len).sum(),
        }
    }

    /// Whether a tensor of `bytes` bypasses the pool (is freed rather than kept when put).
    pub fn bypasses(&self, bytes: usize) -> bool {
        !self.poolable(bytes)
    }

    fn poolable(&self, bytes: usize) -> bool {
        bytes <= self.config.bypass_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryTracker;

    fn pool(
        max_per_key: usize,
        bypass_bytes: usize,
    ) -> (std::sync::Arc<MemoryTracker>, TensorPool) {
        let tracker = MemoryTracker::new();
        let pool = TensorPool::new(
            PoolConfig {
                max_per_key,
                bypass_bytes,
            },
            tracker.owner("tensors"),
            tracker.owner("pool"),
        );
        (tracker, pool)
    }

    #[test]
    fn a_returned_tensor_is_reused_for_the_same_shape_and_dtype() {
        let (_, pool) = pool(20, 1 << 20);
        let t = pool.get(DType::F32, &[2, 3]).unwrap();
        let address = t.bytes().as_ptr();
        pool.put(t);
        let again = pool.get(DType::F32, &[2, 3]).unwrap();
        assert_eq!(again.bytes().as_ptr(), address);
        let stats = pool.stats();
        assert_eq!((stats.hits, stats.misses), (1, 1));
        assert_eq!(stats.hit_rate(), 0.5);
    }

    #[test]
    fn shape_and_dtype_are_both_part_of_the_key() {
        let (_, pool) = pool(20, 1 << 20);
        pool.put(pool.get(DType::F32, &[2, 3]).unwrap());
        pool.get(DType::F32, &[3, 2]).unwrap();
        pool.get(DType::I32, &[2, 3]).unwrap();
        assert_eq!(pool.stats().hits, 0);
    }

    #[test]
    fn each_key_keeps_at_most_max_per_key() {
        let (tracker, pool) = pool(2, 1 << 20);
        let tensors: Vec<_> = (0..5)
            .map(|_| pool.get(DType::F32, &[4]).unwrap())
            .collect();
        tensors.into_iter().for_each(|t| pool.put(t));
        let stats = pool.stats();
        assert_eq!((stats.pooled_tensors, stats.pooled_bytes), (2, 32));
        assert_eq!(tracker.current_bytes(), 32);
    }

    #[test]
    fn large_tensors_bypass_the_pool() {
        let (tracker, pool) = pool(20, 1024);
        pool.put(pool.get(DType::F32, &[1024]).unwrap());
        let stats = pool.stats();
        assert_eq!((stats.pooled_tensors, stats.bypassed), (0, 1));
        assert_eq!(tracker.current_bytes(), 0);
    }

    #[test]
    fn bytes_move_between_the_tensor_and_pool_owners() {
        let (tracker, pool) = pool(20, 1 << 20);
        let t = pool.get(DType::F32, &[8]).unwrap();
        pool.put(t);
        let owners = tracker.owners();
        assert_eq!(owners[0].current_bytes, 0, "tensors");
        assert_eq!(owners[1].current_bytes, 32, "pool");
    }

    #[test]
    fn preallocated_shapes_hit_on_first_use() {
        let (_, pool) = pool(20, 1 << 20);
        pool.preallocate(DType::F32, &[1, 64], 2).unwrap();
        pool.get(DType::F32, &[1, 64]).unwrap();
        assert_eq!(pool.stats().hits, 1);
    }

    #[test]
    fn an_overflowing_shape_is_an_error_not_a_panic() {
        let (_, pool) = pool(20, 1 << 20);
        let err = pool.get(DType::F32, &[usize::MAX, 2]).unwrap_err();
        assert!(err.to_string().contains("overflows"), "{err}");
    }
}
