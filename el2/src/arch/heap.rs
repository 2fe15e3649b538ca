//! The hypervisor heap: a buddy allocator that starts on a small region inside the image (enough
//! to read the device tree) and grows onto board memory once the memory map is known.

use buddy_system_allocator::LockedHeap;

/// Bytes of the boot heap inside the image's BSS.
const BOOT_HEAP_SIZE: usize = 1 << 20;

#[repr(C, align(4096))]
struct BootHeap([u8; BOOT_HEAP_SIZE]);

static mut BOOT_HEAP: BootHeap = BootHeap([0; BOOT_HEAP_SIZE]);

#[global_allocator]
static HEAP: LockedHeap<32> = LockedHeap::empty();

/// Puts the boot heap in service. Called once, first thing.
pub fn init_boot_heap() {
    // SAFETY: BOOT_HEAP is used only here and handed to the allocator exactly once, at boot,
    // before any allocation and before other CPUs run.
    unsafe {
        let start = (&raw mut BOOT_HEAP) as usize;
        HEAP.lock().init(start, BOOT_HEAP_SIZE);
    }
}

/// Adds the board memory `[start, start + size)` to the heap.
pub fn grow(start: u64, size: u64) {
    // SAFETY: the caller took this range out of the physical allocator, so it is RAM, covered
    // by the EL2 identity map, and owned by nothing else.
    unsafe {
        HEAP.lock()
            .add_to_heap(start as usize, (start + size) as usize)
    };
}
