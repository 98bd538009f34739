//! sluice's process allocator: the system allocator, except that very large
//! allocations are anonymous `mmap`s with `MAP_NORESERVE`.
//!
//! Why: the Kafka codec (`kafka-protocol` 0.18) sizes a `Vec` from an array
//! count read off the wire before decoding any element. A 20-byte request
//! declaring 2^31 elements asks for hundreds of GiB up front; the system
//! allocator refuses, and Rust aborts the whole process on a failed
//! allocation — one malformed request would take the node down. Mapped with
//! `MAP_NORESERVE`, such a reservation only takes address space (pages are
//! committed when touched, and a bogus array is never filled: its decode
//! fails at the end of the frame and the mapping is released), so the
//! request gets its error and the node keeps serving. Real allocations this
//! large do not happen in sluice (buffers are bounded far below the
//! threshold), so the mmap path serves only such reservations.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations of at least this many bytes are mapped.
const MAPPED_BYTES_MIN: usize = 1 << 30;
/// Alignment `mmap` guarantees (a page).
const PAGE_BYTES: usize = 4096;

/// See the module docs.
pub struct ReservingAllocator;

fn mapped(layout: &Layout) -> bool {
    cfg!(target_os = "linux") && layout.size() >= MAPPED_BYTES_MIN && layout.align() <= PAGE_BYTES
}

// SAFETY: every block is either from `System` (small) or from `mmap`
// (large, page aligned); `mapped` decides by the same layout at allocation
// and release, so each block goes back to where it came from.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for ReservingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if mapped(&layout) {
            // SAFETY: an anonymous private mapping; no file, no fixed address.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    layout.size(),
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            if ptr == libc::MAP_FAILED {
                std::ptr::null_mut()
            } else {
                ptr.cast()
            }
        } else {
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if mapped(&layout) {
            // SAFETY: anonymous mappings are zero-filled.
            unsafe { self.alloc(layout) }
        } else {
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if mapped(&layout) {
            // SAFETY: `ptr` came from the mmap above with this size.
            unsafe {
                libc::munmap(ptr.cast(), layout.size());
            }
        } else {
            // SAFETY: `ptr` came from `System` with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size` with `layout.align()` is valid.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !mapped(&layout) && !mapped(&new_layout) {
            // SAFETY: forwarded with the caller's guarantees.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: a fresh block, filled from the old one, which is then released.
        unsafe {
            let new_ptr = self.alloc(new_layout);
            if !new_ptr.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new_ptr, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new_ptr
        }
    }
}

/// Large allocations (up to this) come from the heap, not fresh mappings.
const MMAP_THRESHOLD_BYTES: i32 = 64 << 20;
/// Free memory at the top of a heap kept for reuse before it is returned.
const TRIM_THRESHOLD_BYTES: i32 = 16 << 20;
/// glibc heaps (arenas) at most; its default is eight per core.
const ARENAS_MAX: i32 = 2;

/// Tunes glibc's malloc for a process that allocates many buffers of a few
/// MiB (requests, segments, fetch responses): they are served from the
/// heap and reused, where glibc's defaults map each one fresh (a page
/// fault and a zeroed page per 4 KiB, then an unmap: a third of the read
/// path's CPU); and few arenas, so that freed memory is found again rather
/// than held by another thread's heap. Free memory kept this way is given
/// back by [`release_free_memory`]. A `MALLOC_*_` variable that sets the
/// same parameter wins. Does nothing off glibc.
pub fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    for (param, variable, value) in [
        (
            libc::M_MMAP_THRESHOLD,
            "MALLOC_MMAP_THRESHOLD_",
            MMAP_THRESHOLD_BYTES,
        ),
        (
            libc::M_TRIM_THRESHOLD,
            "MALLOC_TRIM_THRESHOLD_",
            TRIM_THRESHOLD_BYTES,
        ),
        (libc::M_ARENA_MAX, "MALLOC_ARENA_MAX", ARENAS_MAX),
    ] {
        if std::env::var_os(variable).is_none() {
            // SAFETY: mallopt only changes allocator parameters; called
            // at start-up, it races with nothing.
            #[allow(unsafe_code)]
            unsafe {
                libc::mallopt(param, value);
            }
        }
    }
}

/// Returns the heap's free pages to the system (glibc's `malloc_trim`):
/// what the tuning of [`tune_malloc`] keeps for reuse, called when the
/// process nears its memory budget. Does nothing off glibc.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; callable at any time.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    #[global_allocator]
    static ALLOCATOR: super::ReservingAllocator = super::ReservingAllocator;

    /// A reservation far beyond this machine's memory succeeds and is
    /// released (with the system allocator alone the process would abort).
    #[test]
    fn huge_reservations_do_not_abort() {
        let reserved: Vec<u64> = Vec::with_capacity(1 << 37); // 1 TiB
        assert!(reserved.capacity() >= 1 << 37);
        let mut grown: Vec<u8> = Vec::with_capacity(16);
        grown.extend_from_slice(b"small");
        grown.reserve(1 << 31);
        assert_eq!(&grown[..5], b"small");
        grown.shrink_to_fit();
        assert_eq!(grown, b"small");
    }
}
