//! How the process uses and gives back memory (glibc's allocator).
//!
//! By default glibc raises its mmap threshold to the size of each large block
//! freed, so that the buffers a download passes through (the HTTP client's
//! reads, up to ~400 KiB, freed on other threads than they were taken on) end
//! up in per-thread heaps, which it gives back only from their top: a sync of a
//! large object through twelve slow connections held about 30 MiB more than it
//! had buffered at its peak. Mapping each of those blocks on its own (a fixed
//! threshold of 128 KiB) gives them back exactly, but maps and faults in every
//! one anew (255 mappings in a four-package loopback sync).
//!
//! So: blocks up to 1 MiB come from the heap, and from one heap only (one
//! arena), where a block freed by any thread is taken again by the next read
//! whichever thread makes it; the heap is trimmed once 1 MiB is free at its
//! top. Four-package `.tar.zst` sync onto tmpfs 0.33 → 0.29 s (medians of 9
//! runs); the large package through the modelled link holds 5 MiB more, 78 →
//! 83 MiB (docs/performance.md).
//!
//! Not for spool: `--delta`'s rewrite takes and frees blocks of the same few
//! sizes (pieces of up to a few MiB) thousands of times, on several threads at
//! once; glibc's own rule serves it best. Its memory is bounded by the pieces
//! in flight either way.

/// Trim the heap when this much is free at its top.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 1 << 20;

/// Blocks at least this large are mapped on their own.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 1 << 20;

/// Sets the allocator's parameters (see the module's comment); call before
/// any thread starts.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets parameters of the allocator; called from main
    // before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}
