//! Handing out the board's physical memory: what is left once the hypervisor image, the device
//! tree, the boot modules and reserved regions are taken out.

/// Most disjoint free ranges tracked; memory maps of real boards have a handful.
const MAX_RANGES: usize = 32;

/// A half-open range of physical addresses `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhysRange {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
}

impl PhysRange {
    /// The range of `size` bytes at `start`.
    pub fn new(start: u64, size: u64) -> Self {
        Self {
            start,
            end: start.saturating_add(size),
        }
    }

    /// The number of bytes in the range.
    pub fn size(&self) -> u64 {
        self.end - self.start
    }
}

/// A first-fit allocator of aligned physical ranges. It needs no heap, so it can run before the
/// heap exists (and supplies the heap's memory).
#[derive(Clone, Debug)]
pub struct PhysAllocator {
    free: [PhysRange; MAX_RANGES],
    len: usize,
}

impl PhysAllocator {
    /// An allocator over `ranges` (the board's usable memory); ranges beyond the capacity are dropped.
    pub fn new(ranges: impl IntoIterator<Item = PhysRange>) -> Self {
        let mut allocator = Self {
            free: [PhysRange { start: 0, end: 0 }; MAX_RANGES],
            len: 0,
        };
        for range in ranges.into_iter().filter(|range| range.end > range.start) {
            allocator.push(range);
        }
        allocator
    }

    fn push(&mut self, range: PhysRange) {
        if self.len < MAX_RANGES {
            self.free[self.len] = range;
            self.len += 1;
        }
    }

    /// The free ranges.
    pub fn ranges(&self) -> &[PhysRange] {
        &self.free[..self.len]
    }

    /// Total free bytes.
    pub fn free_bytes(&self) -> u64 {
        self.ranges().iter().map(PhysRange::size).sum()
    }

    /// Takes `taken` out of the free ranges (it need not be free or inside them).
    pub fn reserve(&mut self, taken: PhysRange) {
        let old = self.clone();
        self.len = 0;
        for range in old.ranges() {
            if taken.end <= range.start || taken.start >= range.end {
                self.push(*range);
                continue;
            }
            if range.start < taken.start {
                self.push(PhysRange {
                    start: range.start,
                    end: taken.start,
                });
            }
            if taken.end < range.end {
                self.push(PhysRange {
                    start: taken.end,
                    end: range.end,
                });
            }
        }
    }

    /// Allocates `size` bytes aligned to `align` (a power of two), lowest address first.
    pub fn allocate(&mut self, size: u64, align: u64) -> Option<u64> {
        let start = self.ranges().iter().find_map(|range| {
            let start = range.start.checked_next_multiple_of(align)?;
            (start.checked_add(size)? <= range.end).then_some(start)
        })?;
        self.reserve(PhysRange::new(start, size));
        Some(start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_splits_and_trims() {
        let mut phys = PhysAllocator::new([PhysRange::new(0x4000_0000, 0x2000_0000)]);
        phys.reserve(PhysRange::new(0x4020_0000, 0x20_0000));
        phys.reserve(PhysRange::new(0x5fff_0000, 0x10_0000));
        assert_eq!(
            phys.ranges(),
            [
                PhysRange {
                    start: 0x4000_0000,
                    end: 0x4020_0000
                },
                PhysRange {
                    start: 0x4040_0000,
                    end: 0x5fff_0000
                }
            ]
        );
        phys.reserve(PhysRange::new(0, 0x1000));
        assert_eq!(
            phys.ranges().len(),
            2,
            "reserving outside the free ranges changes nothing"
        );
    }

    #[test]
    fn allocations_are_aligned_disjoint_and_bounded() {
        let mut phys = PhysAllocator::new([PhysRange::new(0x4000_1000, 0x60_0000)]);
        let a = phys.allocate(0x20_0000, 0x20_0000).unwrap();
        let b = phys.allocate(0x20_0000, 0x20_0000).unwrap();
        assert_eq!((a, b), (0x4020_0000, 0x4040_0000));
        assert_eq!(
            phys.allocate(0x20_0000, 0x20_0000),
            None,
            "only 0x1000 bytes remain above b"
        );
        let c = phys.allocate(0x1000, 0x1000).unwrap();
        assert_eq!(c, 0x4000_1000);
        assert_eq!(phys.free_bytes(), 0x60_0000 - 0x40_0000 - 0x1000);
    }
}
