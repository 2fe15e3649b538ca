//! VMIDs for instances: each running instance has its own, so the TLB entries of one are never
//! used for another; a VMID is handed out again only after its instance's stage-2 tables (and
//! with them its TLB entries) are gone. VMID 0 is never handed out.

use alloc::vec::Vec;

/// The VMIDs in use.
#[derive(Clone, Debug)]
pub struct VmidAllocator {
    /// Bit n of word n / 64: VMID n is in use.
    used: Vec<u64>,
    count: usize,
}

impl VmidAllocator {
    /// An allocator of VMIDs 1..`count` (256 for 8-bit VMIDs, 65536 for 16-bit).
    pub fn new(count: usize) -> Self {
        let mut used = alloc::vec![0; count.div_ceil(64)];
        if let Some(first) = used.first_mut() {
            *first = 1;
        }
        Self { used, count }
    }

    /// The lowest free VMID, now in use; `None` when all are.
    pub fn allocate(&mut self) -> Option<u16> {
        let vmid = (1..self.count).find(|n| self.used[n / 64] & (1 << (n % 64)) == 0)?;
        self.used[vmid / 64] |= 1 << (vmid % 64);
        u16::try_from(vmid).ok()
    }

    /// Gives `vmid` back.
    pub fn free(&mut self, vmid: u16) {
        let n = usize::from(vmid);
        if n != 0 && n < self.count {
            self.used[n / 64] &= !(1 << (n % 64));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_each_vmid_once_and_never_zero() {
        let mut vmids = VmidAllocator::new(256);
        let all: Vec<u16> = (0..255).map(|_| vmids.allocate().unwrap()).collect();
        assert_eq!(all.first(), Some(&1));
        assert_eq!(all.last(), Some(&255));
        assert_eq!(vmids.allocate(), None, "all 255 in use");
        vmids.free(7);
        assert_eq!(vmids.allocate(), Some(7), "a freed VMID is reused");
        vmids.free(0);
        assert_eq!(vmids.allocate(), None, "freeing 0 frees nothing");
    }

    #[test]
    fn sixteen_bit_vmids() {
        let mut vmids = VmidAllocator::new(65536);
        for expected in 1..=300 {
            assert_eq!(vmids.allocate(), Some(expected));
        }
        vmids.free(65535);
        vmids.free(200);
        assert_eq!(vmids.allocate(), Some(200));
    }
}
