//! Page-aligned buffers, as O_DIRECT reads and writes need.

use std::alloc::{Layout, alloc_zeroed, dealloc};

pub const ALIGN: usize = 4096;

/// A page-aligned byte buffer of fixed capacity and variable length.
pub struct AlignedBuf {
    ptr: *mut u8,
    layout: Layout,
    len: usize,
}

// SAFETY: the buffer owns its allocation exclusively, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    pub fn new(cap: usize) -> Self {
        let layout = Layout::from_size_align(cap.max(ALIGN), ALIGN).expect("valid layout");
        // SAFETY: layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        AlignedBuf {
            ptr,
            layout,
            len: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.layout.size()
    }

    /// Set the length (at most the capacity); new bytes keep old content.
    pub fn set_len(&mut self, len: usize) {
        assert!(len <= self.capacity());
        self.len = len;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The whole capacity, for reading into.
    pub fn spare(&mut self) -> &mut [u8] {
        // SAFETY: ptr is a live, initialised (zeroed) allocation of
        // layout.size() bytes owned by self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: as in `spare`, and len <= capacity.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut self.spare()[..len]
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}
