//! How the process gives memory back. glibc's allocator raises its mmap
//! threshold to the size of each large block freed, so that the buffers a
//! download passes through (the HTTP client's reads, up to a few hundred KiB,
//! freed on other threads than they were taken on) end up in its heaps, which
//! it gives back only from their top: a sync of a large object through twelve
//! slow connections held about 30 MiB more than it had buffered at its peak.
//! A fixed threshold (setting the trim threshold fixes both) hands each large
//! block back when it is freed.
//!
//! Not for spool: `--delta`'s rewrite takes and frees blocks of the same few
//! sizes (pieces of up to a few MiB) thousands of times, and under a fixed
//! threshold each is mapped and faulted in anew: 0.2 s of a 2.4 s spool on
//! two cores. Its memory is bounded by the pieces in flight either way.

/// Trim the heaps when this much is free at their top; see the module's
/// comment.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 1 << 20;

/// Sets the allocator's thresholds; call before any thread starts.
pub fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a parameter of the allocator; called from
    // main before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}
