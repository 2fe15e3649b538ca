//! ARMv8-A VMSAv8-64 stage-2 translation tables, 4 KiB granule only.
//!
//! [`Stage2Config`] derives the IPA size, start level and `VTCR_EL2` value from the host's
//! `ID_AA64MMFR0_EL1.PARange`; [`Stage2Table`] builds and edits one guest's tables through a
//! [`FrameAllocator`] and keeps the TLBs coherent through a [`TlbMaintenance`] implementation,
//! always using break-before-make when a valid entry is replaced or removed (dirty tracking's
//! permission flips aside, see below).
//!
//! Table pages that become empty after `unmap` are not reclaimed eagerly; a later `map` that can
//! use a block over such an empty table replaces it (freeing it), and dropping the
//! [`Stage2Table`] frees every table page.
//!
//! Dirty tracking for live migration ([`Stage2Table::start_dirty_tracking`],
//! [`Stage2Table::handle_dirty_fault`], [`Stage2Table::take_dirty`],
//! [`Stage2Table::stop_dirty_tracking`]) write-protects a range, splits a block only when a page
//! in it is first written, and logs written pages in a [`DirtyLog`]. Its permission flips (write
//! permission and a software bit, nothing else) are the exception to break-before-make: they
//! are made in place, then published and invalidated. The architecture requires
//! break-before-make only for changes of output address, memory type, shareability or block
//! size, and breaking would give vCPUs running on other CPUs translation faults on guest RAM at
//! every dirty fault and every round. Block splits still use break-before-make.
#![cfg_attr(not(test), no_std)]
#![warn(missing_docs)]

extern crate alloc;

mod dirty;

use core::fmt;

pub use dirty::DirtyLog;

/// Size of a translation granule (one page) in bytes.
pub const PAGE_SIZE: u64 = 4096;

const ENTRIES: usize = 512;
const DESC_VALID: u64 = 0b01;
const DESC_TYPE_MASK: u64 = 0b11;
/// Table descriptor at levels 0-2, page descriptor at level 3.
const DESC_TABLE: u64 = 0b11;
/// Block descriptor at levels 1-2.
const DESC_BLOCK: u64 = 0b01;
const ADDR_MASK: u64 = 0x0000_ffff_ffff_f000;
const MEMATTR_MASK: u64 = 0b1111 << 2;
const MEMATTR_NORMAL_WB: u64 = 0b1111 << 2;
const MEMATTR_DEVICE_NGNRE: u64 = 0b0001 << 2;
const S2AP_READ: u64 = 1 << 6;
const S2AP_WRITE: u64 = 1 << 7;
const SH_INNER: u64 = 0b11 << 8;
const AF: u64 = 1 << 10;
/// XN[54:53] = 0b10: execute-never at EL1 and EL0.
const XN: u64 = 0b10 << 53;
/// Software bit (descriptor bits [58:55] are reserved for software): write permission was removed
/// by [`Stage2Table::write_protect`].
const SW_WRITE_PROTECTED: u64 = 1 << 55;
/// Beyond this many pages, [`Stage2Table::take_dirty`] invalidates the whole VMID once instead
/// of page by page (each `invalidate_ipa` also drops all of the VMID's stage-1 entries anyway).
const DIRTY_TLBI_PAGES: u64 = 16;

const fn level_shift(level: u8) -> u32 {
    12 + 9 * (3 - level as u32)
}

const fn level_size(level: u8) -> u64 {
    1 << level_shift(level)
}

const fn index_at(ipa: u64, level: u8) -> usize {
    ((ipa >> level_shift(level)) as usize) & (ENTRIES - 1)
}

/// Stage-2 translation geometry and `VTCR_EL2` value for the host's physical address size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage2Config {
    ipa_bits: u8,
    start_level: u8,
    root_tables: usize,
    ps: u8,
}

impl Stage2Config {
    /// Derives the configuration from `ID_AA64MMFR0_EL1.PARange`.
    ///
    /// 0..=5 mean 32, 36, 40, 42, 44 and 48 bits; 6 (52 bits, which needs FEAT_LPA2) and the
    /// reserved values are clamped to 48 bits. The IPA size equals the PA size. IPA sizes above
    /// 42 bits start at level 0 with one root table; smaller ones start at level 1 with
    /// 2^(ipa_bits - 39) concatenated root tables above 39 bits, one otherwise (the permitted
    /// 4 KiB-granule SL0/T0SZ combinations: level 0 for T0SZ 16..=24, level 1 for 21..=33).
    pub fn from_parange(parange: u8) -> Self {
        const BITS: [u8; 6] = [32, 36, 40, 42, 44, 48];
        let ps = parange.min(5);
        let ipa_bits = BITS[ps as usize];
        let (start_level, root_tables) = match ipa_bits {
            43.. => (0, 1),
            40..=42 => (1, 1 << (ipa_bits - 39)),
            _ => (1, 1),
        };
        Self {
            ipa_bits,
            start_level,
            root_tables,
            ps,
        }
    }

    /// Size of the guest physical (IPA) space, and of the accepted PA range, in bits.
    pub fn ipa_bits(&self) -> u8 {
        self.ipa_bits
    }

    /// Level of the initial lookup (0 or 1).
    pub fn start_level(&self) -> u8 {
        self.start_level
    }

    /// Number of concatenated root tables (1, 2, 4 or 8), allocated as one aligned block.
    pub fn root_tables(&self) -> usize {
        self.root_tables
    }

    /// `VTCR_EL2` value: T0SZ, SL0, write-back write-allocate inner shareable walks, 4 KiB
    /// granule, PS, RES1 bit 31. VS is left 0 (8-bit VMIDs).
    pub fn vtcr(&self) -> u64 {
        let t0sz = 64 - u64::from(self.ipa_bits);
        let sl0 = if self.start_level == 0 { 2 } else { 1 };
        t0sz | sl0 << 6
            | 0b01 << 8 // IRGN0: write-back write-allocate
            | 0b01 << 10 // ORGN0: write-back write-allocate
            | 0b11 << 12 // SH0: inner shareable
            // TG0 = 0b00: 4 KiB granule
            | u64::from(self.ps) << 16
            | 1 << 31
    }

    fn limit(&self) -> u64 {
        1 << self.ipa_bits
    }
}

/// Memory type of a stage-2 mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryKind {
    /// Normal memory, inner and outer write-back cacheable, inner shareable.
    Normal,
    /// Device-nGnRE memory.
    Device,
}

/// Stage-2 access permissions for the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Perms {
    /// Data reads allowed (S2AP bit 6).
    pub read: bool,
    /// Data writes allowed (S2AP bit 7).
    pub write: bool,
    /// Instruction fetches allowed at EL1 and EL0 (XN = 0b00 instead of 0b10).
    pub execute: bool,
}

impl Perms {
    /// No access.
    pub const NONE: Self = Self::new(false, false, false);
    /// Read-only.
    pub const RO: Self = Self::new(true, false, false);
    /// Read-write.
    pub const RW: Self = Self::new(true, true, false);
    /// Read and execute.
    pub const RX: Self = Self::new(true, false, true);
    /// Read, write and execute.
    pub const RWX: Self = Self::new(true, true, true);

    const fn new(read: bool, write: bool, execute: bool) -> Self {
        Self {
            read,
            write,
            execute,
        }
    }

    fn bits(self) -> u64 {
        let mut bits = 0;
        if self.read {
            bits |= S2AP_READ;
        }
        if self.write {
            bits |= S2AP_WRITE;
        }
        if !self.execute {
            bits |= XN;
        }
        bits
    }

    fn from_desc(desc: u64) -> Self {
        Self::new(
            desc & S2AP_READ != 0,
            desc & S2AP_WRITE != 0,
            desc & XN == 0,
        )
    }
}

/// Attribute bits of a block or page descriptor (everything but the address and type bits).
fn leaf_attrs(kind: MemoryKind, perms: Perms) -> u64 {
    let memattr = match kind {
        MemoryKind::Normal => MEMATTR_NORMAL_WB | SH_INNER,
        MemoryKind::Device => MEMATTR_DEVICE_NGNRE,
    };
    AF | memattr | perms.bits()
}

fn kind_of(desc: u64) -> MemoryKind {
    if desc & MEMATTR_MASK == MEMATTR_DEVICE_NGNRE {
        MemoryKind::Device
    } else {
        MemoryKind::Normal
    }
}

fn with_perms(desc: u64, perms: Perms) -> u64 {
    desc & !(S2AP_READ | S2AP_WRITE | XN | SW_WRITE_PROTECTED) | perms.bits()
}

/// Result of a successful [`Stage2Table::translate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    /// Output (host physical) address of the translated IPA.
    pub pa: u64,
    /// Memory type of the mapping.
    pub kind: MemoryKind,
    /// Permissions of the mapping.
    pub perms: Perms,
    /// Level of the block (1, 2) or page (3) descriptor that maps the IPA.
    pub level: u8,
}

/// Errors of [`Stage2Table`] operations. A failed operation leaves the translation unchanged
/// (it may leave extra, empty or equivalent split, table pages behind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage2Error {
    /// An address or size is not a multiple of [`PAGE_SIZE`].
    Misaligned,
    /// The IPA range (or, for `map`, the PA range) extends beyond `2^ipa_bits`.
    OutOfRange,
    /// `map`: part of the IPA range is already mapped.
    AlreadyMapped,
    /// `unmap` / `protect` / `write_protect` / `start_dirty_tracking`: part of the IPA range is
    /// not mapped.
    NotMapped,
    /// The frame allocator could not provide a table page, or the dirty log's bitmap could not be
    /// allocated.
    OutOfMemory,
    /// `start_dirty_tracking`: dirty tracking is already active.
    TrackingActive,
}

impl fmt::Display for Stage2Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Misaligned => "address or size not 4 KiB aligned",
            Self::OutOfRange => "address range beyond the IPA/PA size",
            Self::AlreadyMapped => "IPA range already mapped",
            Self::NotMapped => "IPA range not mapped",
            Self::OutOfMemory => "out of memory for translation tables",
            Self::TrackingActive => "dirty tracking already active",
        })
    }
}

impl core::error::Error for Stage2Error {}

/// Source of physical pages for translation tables.
///
/// # Safety
///
/// `alloc_zeroed(pages)` must return the physical address of `pages` contiguous, zeroed,
/// otherwise unused 4 KiB pages aligned to `pages * 4096`, below 2^48. For such an allocation
/// base `pa`, `table_ptr(pa)` must return a pointer valid for volatile reads and writes of the
/// whole allocation (as `u64`s) until it is passed to `free`, and the memory must not be accessed
/// by anything else meanwhile (except the hardware table walker).
pub unsafe trait FrameAllocator {
    /// Allocates `pages` contiguous zeroed pages aligned to `pages * 4096`; `None` when exhausted.
    fn alloc_zeroed(&mut self, pages: usize) -> Option<u64>;
    /// Frees an allocation made by `alloc_zeroed` with the same `pages`.
    fn free(&mut self, pa: u64, pages: usize);
    /// Pointer through which the table memory at `pa` is accessed (identity map on the board).
    fn table_ptr(&self, pa: u64) -> *mut u64;
}

/// TLB maintenance for one guest's stage-2 translations.
pub trait TlbMaintenance {
    /// Makes preceding table writes visible to the table walkers (`DSB ISHST`). Called after
    /// breaking an entry (before the invalidation) and before an operation returns.
    fn table_update_barrier(&mut self);
    /// Invalidates, inner shareable, every cached stage-2 entry (any level) translating `ipa`
    /// for `vmid` and the combined stage-1+2 entries (`TLBI IPAS2E1IS`, `DSB ISH`,
    /// `TLBI VMALLE1IS`, `DSB ISH`), complete on return.
    fn invalidate_ipa(&mut self, vmid: u16, ipa: u64);
    /// Invalidates every cached translation of `vmid` (`TLBI VMALLS12E1IS`, `DSB ISH`).
    fn invalidate_vmid(&mut self, vmid: u16);
}

/// Location and content of one descriptor.
#[derive(Clone, Copy)]
struct Entry {
    table: u64,
    index: usize,
    level: u8,
    desc: u64,
}

impl Entry {
    fn is_leaf(&self) -> bool {
        match self.desc & DESC_TYPE_MASK {
            DESC_BLOCK => self.level == 1 || self.level == 2,
            DESC_TABLE => self.level == 3,
            _ => false,
        }
    }
}

/// One guest's stage-2 translation tables, owning its allocator and TLB-maintenance handles.
///
/// The VMID is written to `VTTBR_EL2[63:48]`; since [`Stage2Config::vtcr`] selects 8-bit VMIDs,
/// it must be below 256 unless the hypervisor sets `VTCR_EL2.VS`. Dropping the table invalidates
/// the VMID's TLB entries and frees every table page; the guest must no longer run by then.
pub struct Stage2Table<A: FrameAllocator, T: TlbMaintenance> {
    config: Stage2Config,
    vmid: u16,
    root: u64,
    alloc: A,
    tlb: T,
    /// The dirty log, and so the tracked range, while dirty tracking is active.
    dirty: Option<DirtyLog>,
}

impl<A: FrameAllocator, T: TlbMaintenance> Stage2Table<A, T> {
    /// Allocates the (concatenated) root table of an empty translation.
    pub fn new(config: Stage2Config, vmid: u16, mut alloc: A, tlb: T) -> Result<Self, Stage2Error> {
        let root = alloc
            .alloc_zeroed(config.root_tables)
            .ok_or(Stage2Error::OutOfMemory)?;
        Ok(Self {
            config,
            vmid,
            root,
            alloc,
            tlb,
            dirty: None,
        })
    }

    /// The configuration the tables were built for.
    pub fn config(&self) -> Stage2Config {
        self.config
    }

    /// `VTTBR_EL2` value: root table address (BADDR) and VMID in bits [63:48].
    pub fn vttbr(&self) -> u64 {
        self.root | u64::from(self.vmid) << 48
    }

    /// Maps `size` bytes at `ipa` to `pa`, with 1 GiB / 2 MiB blocks wherever `ipa`, `pa` and the
    /// remaining size allow, 4 KiB pages elsewhere. Nothing in the range may be mapped yet.
    pub fn map(
        &mut self,
        ipa: u64,
        pa: u64,
        size: u64,
        kind: MemoryKind,
        perms: Perms,
    ) -> Result<(), Stage2Error> {
        let end = self.check(ipa, size)?;
        self.check(pa, size)?;
        if !self.range_is(ipa, end, false) {
            return Err(Stage2Error::AlreadyMapped);
        }
        let attrs = leaf_attrs(kind, perms);
        let mut done = 0;
        while done < size {
            let (cur_ipa, cur_pa, rest) = (ipa + done, pa + done, size - done);
            let level = [1, 2]
                .into_iter()
                .find(|&l| {
                    let s = level_size(l);
                    cur_ipa.is_multiple_of(s) && cur_pa.is_multiple_of(s) && rest >= s
                })
                .unwrap_or(3);
            if let Err(e) = self.map_one(cur_ipa, cur_pa | attrs, level) {
                // Roll back: the range mapped so far consists exactly of our own leaves.
                self.rewrite(ipa, cur_ipa, |_| 0);
                return Err(e);
            }
            done += level_size(level);
        }
        self.tlb.table_update_barrier();
        Ok(())
    }

    /// Removes every mapping in the range (all of which must be mapped), splitting blocks that
    /// straddle its ends, and invalidates the TLB for each removed entry.
    pub fn unmap(&mut self, ipa: u64, size: u64) -> Result<(), Stage2Error> {
        self.modify(ipa, size, |_| 0)
    }

    /// Sets the permissions of every mapping in the range (all of which must be mapped),
    /// splitting blocks that straddle its ends. Clears any write-protect mark.
    pub fn protect(&mut self, ipa: u64, size: u64, perms: Perms) -> Result<(), Stage2Error> {
        self.modify(ipa, size, |desc| with_perms(desc, perms))
    }

    /// Removes write permission from every mapping in the range (all of which must be mapped),
    /// marking the ones that were writable so that [`Self::is_write_protected`] recognises
    /// their write faults (dirty tracking). Restore with [`Self::protect`].
    pub fn write_protect(&mut self, ipa: u64, size: u64) -> Result<(), Stage2Error> {
        self.modify(ipa, size, |desc| {
            if desc & S2AP_WRITE != 0 {
                desc & !S2AP_WRITE | SW_WRITE_PROTECTED
            } else {
                desc
            }
        })
    }

    /// Whether `ipa` lies in a mapping whose write permission was removed by
    /// [`Self::write_protect`] (a write fault there is a dirty-tracking fault).
    pub fn is_write_protected(&self, ipa: u64) -> bool {
        ipa < self.config.limit() && {
            let e = self.lookup(ipa);
            e.is_leaf() && e.desc & SW_WRITE_PROTECTED != 0
        }
    }

    /// Translates `ipa` by walking the tables as the hardware does, from the VTTBR root.
    pub fn translate(&self, ipa: u64) -> Option<Translation> {
        if ipa >= self.config.limit() {
            return None;
        }
        let e = self.lookup(ipa);
        if !e.is_leaf() {
            return None;
        }
        let offset_mask = level_size(e.level) - 1;
        Some(Translation {
            pa: (e.desc & ADDR_MASK & !offset_mask) | (ipa & offset_mask),
            kind: kind_of(e.desc),
            perms: Perms::from_desc(e.desc),
            level: e.level,
        })
    }

    /// Starts dirty tracking of `[ipa, ipa + size)` (guest RAM, all of which must be mapped)
    /// with an all-clean [`DirtyLog`] for it.
    ///
    /// Every writable mapping in the range is write-protected and marked as by
    /// [`Self::write_protect`], keeping 1 GiB / 2 MiB blocks whole: only blocks straddling the
    /// ends of the range are split. Mappings without write permission stay untracked (their
    /// write faults are real faults). Writes are then caught by [`Self::handle_dirty_fault`].
    ///
    /// Fails with `TrackingActive` if tracking is already active, and with `Misaligned`,
    /// `OutOfRange`, `NotMapped` or `OutOfMemory` (log bitmap or end split) leaving the
    /// translation unchanged and tracking off.
    pub fn start_dirty_tracking(&mut self, ipa: u64, size: u64) -> Result<(), Stage2Error> {
        if self.dirty.is_some() {
            return Err(Stage2Error::TrackingActive);
        }
        let end = self.check(ipa, size)?;
        if !self.range_is(ipa, end, true) {
            return Err(Stage2Error::NotMapped);
        }
        let log = DirtyLog::new(ipa, size)?;
        // Splitting preserves the translation, so failing here changes nothing observable.
        self.split_at(ipa)?;
        if end < self.config.limit() {
            self.split_at(end)?;
        }
        self.update_in_place(ipa, end, |desc| {
            if desc & S2AP_WRITE != 0 {
                desc & !S2AP_WRITE | SW_WRITE_PROTECTED
            } else {
                desc
            }
        });
        self.dirty = Some(log);
        Ok(())
    }

    /// Handles a stage-2 permission fault for a guest write at `ipa` (any address).
    ///
    /// If `ipa` lies in the tracked range in a mapping write-protected for tracking, splits the
    /// mapping down to 4 KiB pages if it is a block (break-before-make; the new entries keep the
    /// attributes and the write-protect mark), restores write permission on the page containing
    /// `ipa` alone, invalidates its TLB entries, marks it in the dirty log and returns `Ok(true)`:
    /// the guest can retry the access. `Ok(true)` too if the page is already writable and
    /// dirty (a fault that raced with an earlier one on the same page).
    ///
    /// Returns `Ok(false)` for any other address (not tracked, not mapped, not write-protected
    /// for tracking): a real fault for the caller. Fails with `OutOfMemory` when a split table
    /// cannot be allocated; the mapping is then still write-protected (possibly split one level)
    /// with the same translation, so the fault will recur and can be retried.
    pub fn handle_dirty_fault(&mut self, ipa: u64) -> Result<bool, Stage2Error> {
        let page = ipa & !(PAGE_SIZE - 1);
        if !self.dirty.as_ref().is_some_and(|log| log.contains(page)) {
            return Ok(false);
        }
        let e = loop {
            let e = self.lookup(page);
            if !e.is_leaf() {
                return Ok(false);
            }
            if e.desc & SW_WRITE_PROTECTED == 0 {
                let dirty = self.dirty.as_ref().is_some_and(|log| log.is_dirty(page));
                return Ok(e.desc & S2AP_WRITE != 0 && dirty);
            }
            if e.level == 3 {
                break e;
            }
            self.split_block(&e, page)?;
        };
        let writable = e.desc & !SW_WRITE_PROTECTED | S2AP_WRITE;
        self.write(e.table, e.index, writable);
        self.tlb.table_update_barrier();
        self.tlb.invalidate_ipa(self.vmid, page);
        if let Some(log) = &mut self.dirty {
            log.mark(page);
        }
        Ok(true)
    }

    /// Reports, in ascending order, the IPA of every page marked dirty since tracking started or
    /// the last call, and returns their number; 0 when tracking is off.
    ///
    /// Before any page is reported, every reported page that is writable is write-protected
    /// again (in place) and the TLB invalidated (page by page, or the whole VMID for many
    /// pages), so `out` may copy the pages: a later write faults and is logged for the next
    /// call. The log is then cleared. Each page written through [`Self::handle_dirty_fault`]
    /// between two calls is reported exactly once, by the second.
    pub fn take_dirty(&mut self, mut out: impl FnMut(u64)) -> u64 {
        let Some(log) = self.dirty.take() else {
            return 0;
        };
        let mut reprotected = false;
        for page in log.iter() {
            let e = self.lookup(page);
            if e.is_leaf() && e.desc & S2AP_WRITE != 0 {
                let desc = e.desc & !S2AP_WRITE | SW_WRITE_PROTECTED;
                self.write(e.table, e.index, desc);
                reprotected = true;
            }
        }
        self.tlb.table_update_barrier();
        let count = log.dirty_pages();
        if reprotected {
            if count > DIRTY_TLBI_PAGES {
                self.tlb.invalidate_vmid(self.vmid);
            } else {
                for page in log.iter() {
                    self.tlb.invalidate_ipa(self.vmid, page);
                }
            }
        }
        let log = self.dirty.insert(log);
        log.iter().for_each(&mut out);
        log.clear();
        count
    }

    /// Marks the page containing `ipa` dirty, for writes to guest RAM that bypass stage 2 (made
    /// by the hypervisor itself); the next [`Self::take_dirty`] reports it. Returns whether
    /// `ipa` is in the tracked range (`false` when tracking is off).
    pub fn mark_dirty(&mut self, ipa: u64) -> bool {
        self.dirty.as_mut().is_some_and(|log| log.mark(ipa))
    }

    /// The dirty log (pages written since the last [`Self::take_dirty`]) and tracked range, if
    /// dirty tracking is active.
    pub fn dirty_log(&self) -> Option<&DirtyLog> {
        self.dirty.as_ref()
    }

    /// Stops dirty tracking: restores write permission to every mapping in the tracked range
    /// that is still write-protected (split blocks stay split), invalidates the VMID's TLB
    /// entries and drops the dirty log, unreported pages included. Does nothing if tracking is
    /// off.
    pub fn stop_dirty_tracking(&mut self) {
        if let Some(log) = self.dirty.take() {
            let (start, end) = (log.start(), log.start() + log.size());
            self.update_in_place(start, end, |desc| {
                if desc & SW_WRITE_PROTECTED != 0 {
                    desc & !SW_WRITE_PROTECTED | S2AP_WRITE
                } else {
                    desc
                }
            });
        }
    }

    /// Checks alignment and range of `[addr, addr + size)`, returning its end.
    fn check(&self, addr: u64, size: u64) -> Result<u64, Stage2Error> {
        if !(addr | size).is_multiple_of(PAGE_SIZE) {
            return Err(Stage2Error::Misaligned);
        }
        match addr.checked_add(size) {
            Some(end) if end <= self.config.limit() => Ok(end),
            _ => Err(Stage2Error::OutOfRange),
        }
    }

    fn read(&self, table: u64, index: usize) -> u64 {
        // SAFETY: `table` is the base of a live table allocation from `self.alloc` (the root or a
        // table linked from it) and `index` is within it, so by the `FrameAllocator` contract the
        // pointer is valid for reads.
        unsafe { self.alloc.table_ptr(table).add(index).read_volatile() }
    }

    fn write(&mut self, table: u64, index: usize, desc: u64) {
        // SAFETY: as in `read`; the allocation is ours alone, so writing it is valid. The volatile
        // 64-bit store is single-copy atomic for the table walker.
        unsafe { self.alloc.table_ptr(table).add(index).write_volatile(desc) }
    }

    fn root_entry(&self, ipa: u64) -> Entry {
        let level = self.config.start_level;
        // The root index spans all concatenated tables: ipa < 2^ipa_bits bounds it.
        let index = (ipa >> level_shift(level)) as usize;
        Entry {
            table: self.root,
            index,
            level,
            desc: self.read(self.root, index),
        }
    }

    fn next_entry(&self, table: u64, ipa: u64, level: u8) -> Entry {
        let index = index_at(ipa, level);
        Entry {
            table,
            index,
            level,
            desc: self.read(table, index),
        }
    }

    /// Walks to the first descriptor for `ipa` that is not a table descriptor.
    fn lookup(&self, ipa: u64) -> Entry {
        let mut e = self.root_entry(ipa);
        while e.level < 3 && e.desc & DESC_TYPE_MASK == DESC_TABLE {
            e = self.next_entry(e.desc & ADDR_MASK, ipa, e.level + 1);
        }
        e
    }

    /// Walks to the descriptor for `ipa` at `level`, creating missing tables on the way. Only
    /// used on unmapped ranges, so no block is met above `level`.
    fn walk_to(&mut self, ipa: u64, level: u8) -> Result<Entry, Stage2Error> {
        let mut e = self.root_entry(ipa);
        while e.level < level {
            let next = if e.desc & DESC_TYPE_MASK == DESC_TABLE {
                e.desc & ADDR_MASK
            } else {
                let table = self.alloc.alloc_zeroed(1).ok_or(Stage2Error::OutOfMemory)?;
                // The zeroed table must be visible before the walker can reach it.
                self.tlb.table_update_barrier();
                self.write(e.table, e.index, table | DESC_TABLE);
                table
            };
            e = self.next_entry(next, ipa, e.level + 1);
        }
        Ok(e)
    }

    /// Whether every page in `[ipa, end)` is mapped (`mapped`) or none is (`!mapped`).
    fn range_is(&self, ipa: u64, end: u64, mapped: bool) -> bool {
        let mut a = ipa;
        while a < end {
            let e = self.lookup(a);
            if e.is_leaf() != mapped {
                return false;
            }
            a = (a | (level_size(e.level) - 1)) + 1;
        }
        true
    }

    /// Writes a block or page descriptor (`oa_attrs` without type bits) for `ipa` at `level`.
    fn map_one(&mut self, ipa: u64, oa_attrs: u64, level: u8) -> Result<(), Stage2Error> {
        let e = self.walk_to(ipa, level)?;
        let desc = oa_attrs | if level == 3 { DESC_TABLE } else { DESC_BLOCK };
        if e.desc & DESC_VALID != 0 {
            // An empty table left by earlier unmaps covers exactly this block: replace it.
            let table = e.desc & ADDR_MASK;
            self.break_entry(&e, ipa);
            self.write(e.table, e.index, desc);
            self.free_tables(table, level + 1, 1);
        } else {
            self.write(e.table, e.index, desc);
        }
        Ok(())
    }

    /// Break step of break-before-make: invalidates the entry and its TLB entries.
    fn break_entry(&mut self, e: &Entry, ipa: u64) {
        self.write(e.table, e.index, 0);
        self.tlb.table_update_barrier();
        self.tlb
            .invalidate_ipa(self.vmid, ipa & !(level_size(e.level) - 1));
    }

    /// Applies `f` to every leaf in a fully mapped range after splitting blocks at its ends.
    fn modify(&mut self, ipa: u64, size: u64, f: impl Fn(u64) -> u64) -> Result<(), Stage2Error> {
        let end = self.check(ipa, size)?;
        if !self.range_is(ipa, end, true) {
            return Err(Stage2Error::NotMapped);
        }
        // Splitting preserves the translation, so failing here changes nothing observable.
        self.split_at(ipa)?;
        if end < self.config.limit() {
            self.split_at(end)?;
        }
        self.rewrite(ipa, end, f);
        Ok(())
    }

    /// Splits blocks until no block straddles `addr`.
    fn split_at(&mut self, addr: u64) -> Result<(), Stage2Error> {
        loop {
            let e = self.lookup(addr);
            if !e.is_leaf() || e.level == 3 || addr.is_multiple_of(level_size(e.level)) {
                return Ok(());
            }
            self.split_block(&e, addr)?;
        }
    }

    /// Replaces the block `e` (translating `addr`) by a next-level table of entries with the
    /// same attributes and translation, with break-before-make. On allocation failure the block
    /// is left as it is (after a barrier publishing any earlier split of the operation).
    fn split_block(&mut self, e: &Entry, addr: u64) -> Result<(), Stage2Error> {
        let Some(table) = self.alloc.alloc_zeroed(1) else {
            self.tlb.table_update_barrier();
            return Err(Stage2Error::OutOfMemory);
        };
        let child = e.level + 1;
        let child_type = if child == 3 { DESC_TABLE } else { DESC_BLOCK };
        let oa = e.desc & ADDR_MASK & !(level_size(e.level) - 1);
        let attrs = e.desc & !(ADDR_MASK | DESC_TYPE_MASK);
        for i in 0..ENTRIES {
            let desc = (oa + i as u64 * level_size(child)) | attrs | child_type;
            self.write(table, i, desc);
        }
        self.break_entry(e, addr);
        self.write(e.table, e.index, table | DESC_TABLE);
        Ok(())
    }

    /// Replaces every leaf in `[ipa, end)` (leaves must not straddle the ends) by `f(leaf)`,
    /// with break-before-make; 0 unmaps.
    fn rewrite(&mut self, ipa: u64, end: u64, f: impl Fn(u64) -> u64) {
        let mut a = ipa;
        while a < end {
            let e = self.lookup(a);
            if e.is_leaf() {
                let new = f(e.desc);
                if new != e.desc {
                    self.break_entry(&e, a);
                    if new != 0 {
                        self.write(e.table, e.index, new);
                    }
                }
            }
            a = (a | (level_size(e.level) - 1)) + 1;
        }
        self.tlb.table_update_barrier();
    }

    /// Replaces every leaf in `[ipa, end)` by `f(leaf)` in place, without break-before-make:
    /// `f` may change only permissions and software bits. Then publishes the writes and, if any
    /// leaf changed, invalidates the VMID's TLB entries.
    fn update_in_place(&mut self, ipa: u64, end: u64, f: impl Fn(u64) -> u64) {
        let mut changed = false;
        let mut a = ipa;
        while a < end {
            let e = self.lookup(a);
            if e.is_leaf() {
                let new = f(e.desc);
                if new != e.desc {
                    self.write(e.table, e.index, new);
                    changed = true;
                }
            }
            a = (a | (level_size(e.level) - 1)) + 1;
        }
        self.tlb.table_update_barrier();
        if changed {
            self.tlb.invalidate_vmid(self.vmid);
        }
    }

    /// Frees the `pages`-page table at `table` (a `level` table) and every table below it.
    fn free_tables(&mut self, table: u64, level: u8, pages: usize) {
        if level < 3 {
            for i in 0..pages * ENTRIES {
                let desc = self.read(table, i);
                if desc & DESC_TYPE_MASK == DESC_TABLE {
                    self.free_tables(desc & ADDR_MASK, level + 1, 1);
                }
            }
        }
        self.alloc.free(table, pages);
    }
}

impl<A: FrameAllocator, T: TlbMaintenance> Drop for Stage2Table<A, T> {
    fn drop(&mut self) {
        self.tlb.table_update_barrier();
        self.tlb.invalidate_vmid(self.vmid);
        self.free_tables(self.root, self.config.start_level, self.config.root_tables);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_per_parange() {
        // (parange, ipa_bits, start_level, root_tables, vtcr)
        let expected = [
            (0, 32, 1, 1, 0x8000_3560),
            (1, 36, 1, 1, 0x8001_355c),
            (2, 40, 1, 2, 0x8002_3558),
            (3, 42, 1, 8, 0x8003_3556),
            (4, 44, 0, 1, 0x8004_3594),
            (5, 48, 0, 1, 0x8005_3590),
            (6, 48, 0, 1, 0x8005_3590),
            (7, 48, 0, 1, 0x8005_3590),
        ];
        for (parange, bits, level, roots, vtcr) in expected {
            let c = Stage2Config::from_parange(parange);
            assert_eq!(c.ipa_bits(), bits, "parange {parange}");
            assert_eq!(c.start_level(), level, "parange {parange}");
            assert_eq!(c.root_tables(), roots, "parange {parange}");
            assert_eq!(c.vtcr(), vtcr, "parange {parange}: {:#x}", c.vtcr());
            // Root index range (entries resolved at the start level) matches the root size.
            let root_entries = 1u64 << (bits as u32 - level_shift(level));
            assert!(root_entries <= (roots * ENTRIES) as u64);
            assert!(root_entries > (roots * ENTRIES / 2) as u64 || roots == 1);
        }
    }

    #[test]
    fn leaf_descriptor_bits() {
        assert_eq!(
            leaf_attrs(MemoryKind::Normal, Perms::RW),
            AF | SH_INNER | 0b1111 << 2 | 0b11 << 6 | 1 << 54
        );
        assert_eq!(
            leaf_attrs(MemoryKind::Normal, Perms::RW),
            0x0040_0000_0000_07fc
        );
        assert_eq!(leaf_attrs(MemoryKind::Device, Perms::RX), 0x444);
        assert_eq!(
            leaf_attrs(MemoryKind::Device, Perms::NONE),
            0x0040_0000_0000_0404
        );
        for kind in [MemoryKind::Normal, MemoryKind::Device] {
            for bits in 0..8 {
                let perms = Perms::new(bits & 1 != 0, bits & 2 != 0, bits & 4 != 0);
                let desc = leaf_attrs(kind, perms) | 0x1234_5000 | DESC_TABLE;
                assert_eq!(kind_of(desc), kind);
                assert_eq!(Perms::from_desc(desc), perms);
                assert_eq!(with_perms(desc | SW_WRITE_PROTECTED, Perms::RWX) & XN, 0);
            }
        }
    }

    #[test]
    fn level_geometry() {
        assert_eq!(level_size(1), 1 << 30);
        assert_eq!(level_size(2), 2 << 20);
        assert_eq!(level_size(3), 4096);
        assert_eq!(index_at(0x7fe0_3000, 3), 3);
        assert_eq!(index_at(0x7fe0_3000, 2), 511);
        assert_eq!(index_at(0x7fe0_3000, 1), 1);
    }
}
