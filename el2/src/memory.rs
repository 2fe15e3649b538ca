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

    /// The largest block aligned to `align` (a power of two) that [`PhysAllocator::allocate`]
    /// could hand out now: what one guest's RAM can be at most.
    pub fn largest_block(&self, align: u64) -> u64 {
        self.ranges()
            .iter()
            .filter_map(|range| {
                let start = range.start.checked_next_multiple_of(align)?;
                let end = range.end & !(align - 1);
                end.checked_sub(start)
            })
            .max()
            .unwrap_or(0)
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

    /// Gives `range` back (it must have come from [`PhysAllocator::allocate`] and not be free),
    /// merged with the free ranges next to it.
    pub fn free(&mut self, range: PhysRange) {
        let mut merged = range;
        let old = self.clone();
        self.len = 0;
        for free in old.ranges() {
            if free.end == merged.start {
                merged.start = free.start;
            } else if free.start == merged.end {
                merged.end = free.end;
            } else {
                self.push(*free);
            }
        }
        self.push(merged);
        self.free[..self.len].sort_unstable_by_key(|range| range.start);
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

/// Why bytes could not be written into an instance's RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutsideRam {
    /// The guest-physical address asked for.
    pub ipa: u64,
    /// The number of bytes asked for.
    pub len: u64,
}

impl core::fmt::Display for OutsideRam {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{:#x} bytes at IPA {:#x} lie outside the instance's RAM",
            self.len, self.ipa
        )
    }
}

/// An instance's RAM as the hypervisor sees it: `size` bytes at guest-physical `ipa_base`, backed
/// by hypervisor-visible memory at `host`. Every write the hypervisor makes into an instance
/// goes through [`GuestRam::write`], which refuses anything that does not lie wholly inside.
#[derive(Debug)]
pub struct GuestRam {
    ipa_base: u64,
    size: u64,
    host: *mut u8,
}

// SAFETY: GuestRam is a bounds-checked window onto memory its creator owns for its lifetime
// (see `GuestRam::new`); nothing in it is tied to one CPU.
unsafe impl Send for GuestRam {}
// SAFETY: as above; concurrent writers are the instance's own business, like its vCPUs' stores.
unsafe impl Sync for GuestRam {}

impl GuestRam {
    /// The RAM of `size` bytes at guest-physical `ipa_base`, backed at `host`.
    ///
    /// # Safety
    /// `[host, host + size)` must be memory that the caller owns for as long as this value
    /// lives, valid for writes, and not the hypervisor's own (code, stacks, heap).
    pub unsafe fn new(ipa_base: u64, size: u64, host: *mut u8) -> Self {
        Self {
            ipa_base,
            size,
            host,
        }
    }

    /// The guest-physical range this RAM covers.
    pub fn ipa_range(&self) -> crate::image::Region {
        crate::image::Region {
            start: self.ipa_base,
            size: self.size,
        }
    }

    /// The host address that backs `[ipa, ipa + len)`, if all of it is inside this RAM.
    fn host_range(&self, ipa: u64, len: u64) -> Result<*mut u8, OutsideRam> {
        let outside = OutsideRam { ipa, len };
        let offset = ipa.checked_sub(self.ipa_base).ok_or(outside)?;
        let end = offset.checked_add(len).ok_or(outside)?;
        if end > self.size {
            return Err(outside);
        }
        // In bounds: `offset + len <= size`, and `host + size` is valid (see `new`).
        Ok(self.host.wrapping_add(offset as usize))
    }

    /// Copies `bytes` to guest-physical `ipa`; returns the host address written, or refuses if
    /// any byte would land outside the instance's RAM.
    pub fn write(&self, ipa: u64, bytes: &[u8]) -> Result<u64, OutsideRam> {
        let destination = self.host_range(ipa, bytes.len() as u64)?;
        // SAFETY: `host_range` proved the destination inside the RAM that `new`'s caller
        // guarantees writable and owned; the source is hypervisor memory, never guest RAM
        // (boot modules and heap buffers), so the two do not overlap.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), destination, bytes.len()) };
        Ok(destination as u64)
    }

    /// Copies guest-physical `[ipa, ipa + buffer.len())` into `buffer`, or refuses if any byte
    /// lies outside the instance's RAM. The guest may be writing the same bytes meanwhile (a
    /// live copy): what it reads is some mix of old and new, which dirty tracking resends.
    pub fn read(&self, ipa: u64, buffer: &mut [u8]) -> Result<(), OutsideRam> {
        let source = self.host_range(ipa, buffer.len() as u64)?;
        // SAFETY: `host_range` proved the source inside the RAM `new`'s caller guarantees owned
        // and valid; the buffer is hypervisor memory, never guest RAM, so they do not overlap.
        // A racing guest store changes only the values read, never their validity (plain bytes).
        unsafe { core::ptr::copy_nonoverlapping(source, buffer.as_mut_ptr(), buffer.len()) };
        Ok(())
    }

    /// Fills the whole RAM with zeros.
    pub fn zero(&self) {
        // SAFETY: `[host, host + size)` is writable and owned (see `new`).
        unsafe { core::ptr::write_bytes(self.host, 0, self.size as usize) };
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

    #[test]
    fn freed_ranges_merge_back_to_what_was_there() {
        let mut phys = PhysAllocator::new([PhysRange::new(0x4000_0000, 0x100_0000)]);
        let before = phys.ranges().to_vec();
        let a = phys.allocate(0x20_0000, 0x20_0000).unwrap();
        let b = phys.allocate(0x40_0000, 0x20_0000).unwrap();
        let c = phys.allocate(0x20_0000, 0x20_0000).unwrap();
        phys.free(PhysRange::new(b, 0x40_0000));
        assert_eq!(
            phys.ranges().len(),
            2,
            "b's range is free again, apart from the rest"
        );
        phys.free(PhysRange::new(a, 0x20_0000));
        phys.free(PhysRange::new(c, 0x20_0000));
        assert_eq!(phys.ranges(), before);
        for _ in 0..20 {
            let ram = phys.allocate(0x80_0000, 0x20_0000).unwrap();
            phys.free(PhysRange::new(ram, 0x80_0000));
            assert_eq!(phys.ranges(), before, "the same free memory every round");
        }
    }

    #[test]
    fn largest_block_is_what_one_allocation_can_get() {
        let mut phys = PhysAllocator::new([
            PhysRange::new(0x4000_1000, 0x60_0000),
            PhysRange::new(0x8000_0000, 0x30_0000),
        ]);
        assert_eq!(phys.largest_block(0x20_0000), 0x40_0000);
        assert!(phys.allocate(0x40_0000, 0x20_0000).is_some());
        assert_eq!(phys.largest_block(0x20_0000), 0x20_0000);
        phys.reserve(PhysRange::new(0, u64::MAX));
        assert_eq!(phys.largest_block(0x20_0000), 0);
    }

    #[test]
    fn guest_ram_writes_only_inside_its_bounds() {
        let mut backing = alloc::vec![0u8; 0x2000];
        // SAFETY: `backing` outlives `ram` and nothing else uses it meanwhile.
        let ram = unsafe { GuestRam::new(0x4000_0000, 0x2000, backing.as_mut_ptr()) };
        assert!(ram.write(0x4000_1ffc, &[1, 2, 3, 4]).is_ok());
        for (ipa, len) in [
            (0x4000_1ffd, 4),
            (0x3fff_ffff, 1),
            (0x4000_2000, 1),
            (u64::MAX - 1, 4),
            (0x4000_0000, 0x2001),
        ] {
            assert_eq!(
                ram.write(ipa, &alloc::vec![0xff; len]),
                Err(OutsideRam {
                    ipa,
                    len: len as u64
                })
            );
        }
        assert!(
            ram.write(0x4000_2000, &[]).is_ok(),
            "an empty write at the end"
        );
        let _ = ram;
        assert_eq!(&backing[0x1ffc..], [1, 2, 3, 4]);
        assert!(backing[..0x1ffc].iter().all(|b| *b == 0));
    }
}
