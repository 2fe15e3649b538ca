//! Stage-2 tables against an arena allocator, a recording TLB, an independent descriptor walker
//! and a reference model.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

use proptest::prelude::*;
use stage2::{
    FrameAllocator, MemoryKind, PAGE_SIZE, Perms, Stage2Config, Stage2Error, Stage2Table,
    TlbMaintenance, Translation,
};

const PAGE: u64 = PAGE_SIZE;
const MIB2: u64 = 2 << 20;
const GIB: u64 = 1 << 30;
/// Physical address of the arena's first page (non-zero to catch PA/pointer mix-ups).
const ARENA_BASE: u64 = 0x8000_0000;
/// PARange 2: 40-bit IPA, start level 1, two concatenated root tables.
const PARANGE: u8 = 2;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Event {
    Barrier,
    /// An IPA invalidation and whether the IPA still translated when it was issued.
    Invalidate {
        ipa: u64,
        mapped: bool,
    },
    Vmid,
}

/// Table memory, allocation state and TLB log shared by the arena and the recorder.
struct Shared {
    mem: Box<[Cell<u64>]>,
    used: RefCell<Vec<bool>>,
    free_list: RefCell<Vec<usize>>,
    next: Cell<usize>,
    /// Allocations left before `alloc_zeroed` fails.
    budget: Cell<usize>,
    events: RefCell<Vec<Event>>,
    root: Cell<u64>,
    start_level: u8,
}

impl Shared {
    fn new(pages: usize) -> Rc<Self> {
        Rc::new(Self {
            mem: vec![Cell::new(0); pages * 512].into_boxed_slice(),
            used: RefCell::new(vec![false; pages]),
            free_list: RefCell::new(Vec::new()),
            next: Cell::new(0),
            budget: Cell::new(usize::MAX),
            events: RefCell::new(Vec::new()),
            root: Cell::new(0),
            start_level: Stage2Config::from_parange(PARANGE).start_level(),
        })
    }

    fn read(&self, pa: u64) -> u64 {
        self.mem[((pa - ARENA_BASE) / 8) as usize].get()
    }

    fn live_pages(&self) -> usize {
        self.used.borrow().iter().filter(|&&u| u).count()
    }
}

/// Test allocator: single pages from a free list, multi-page allocations bumped and aligned.
struct Arena(Rc<Shared>);

// SAFETY: allocations are disjoint, zeroed, aligned ranges of `mem` (tracked in `used`), and
// `table_ptr` derives its pointer from the whole `Cell` slice, so it is valid for the allocation.
unsafe impl FrameAllocator for Arena {
    fn alloc_zeroed(&mut self, pages: usize) -> Option<u64> {
        let s = &self.0;
        if s.budget.get() == 0 {
            return None;
        }
        s.budget.set(s.budget.get() - 1);
        let popped = s.free_list.borrow_mut().pop();
        let first = match popped {
            Some(page) if pages == 1 => page,
            popped => {
                s.free_list.borrow_mut().extend(popped);
                let first = s.next.get().next_multiple_of(pages);
                if first + pages > s.used.borrow().len() {
                    return None;
                }
                s.next.set(first + pages);
                first
            }
        };
        for page in first..first + pages {
            assert!(!s.used.borrow()[page]);
            s.used.borrow_mut()[page] = true;
            s.mem[page * 512..(page + 1) * 512]
                .iter()
                .for_each(|c| c.set(0));
        }
        Some(ARENA_BASE + first as u64 * PAGE)
    }

    fn free(&mut self, pa: u64, pages: usize) {
        let first = ((pa - ARENA_BASE) / PAGE) as usize;
        assert_eq!(pa % (pages as u64 * PAGE), 0);
        for page in first..first + pages {
            assert!(self.0.used.borrow()[page], "double free of page {page}");
            self.0.used.borrow_mut()[page] = false;
            self.0.free_list.borrow_mut().push(page);
        }
    }

    fn table_ptr(&self, pa: u64) -> *mut u64 {
        let index = ((pa - ARENA_BASE) / 8) as usize;
        self.0
            .mem
            .as_ptr()
            .cast::<u64>()
            .cast_mut()
            .wrapping_add(index)
    }
}

/// Recording TLB: logs barriers and invalidations, noting whether the invalidated IPA was still
/// mapped (it must not be: the break must precede the invalidation).
struct Recorder(Rc<Shared>);

impl TlbMaintenance for Recorder {
    fn table_update_barrier(&mut self) {
        self.0.events.borrow_mut().push(Event::Barrier);
    }

    fn invalidate_ipa(&mut self, vmid: u16, ipa: u64) {
        assert_eq!(vmid, VMID);
        let mapped = walk(&self.0, ipa).is_some();
        self.0
            .events
            .borrow_mut()
            .push(Event::Invalidate { ipa, mapped });
    }

    fn invalidate_vmid(&mut self, vmid: u16) {
        assert_eq!(vmid, VMID);
        self.0.events.borrow_mut().push(Event::Vmid);
    }
}

const VMID: u16 = 7;

type Table = Stage2Table<Arena, Recorder>;

fn setup(pages: usize) -> (Rc<Shared>, Table) {
    let shared = Shared::new(pages);
    let config = Stage2Config::from_parange(PARANGE);
    let table = Table::new(
        config,
        VMID,
        Arena(shared.clone()),
        Recorder(shared.clone()),
    )
    .unwrap();
    assert_eq!(table.vttbr() >> 48, u64::from(VMID));
    shared.root.set(table.vttbr() & 0x0000_ffff_ffff_fffe);
    (shared, table)
}

/// A leaf descriptor found by the independent walker.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Leaf {
    ipa: u64,
    level: u8,
    desc: u64,
}

const LEVEL_SHIFT: [u32; 4] = [39, 30, 21, 12];

/// Hardware-style walk over raw descriptors: the leaf translating `ipa`, if any.
fn walk(s: &Shared, ipa: u64) -> Option<Leaf> {
    let mut level = s.start_level;
    // Root index spans the concatenated root tables.
    let mut desc_pa = s.root.get() + (ipa >> LEVEL_SHIFT[level as usize]) * 8;
    loop {
        let desc = s.read(desc_pa);
        let shift = LEVEL_SHIFT[level as usize];
        match (desc & 3, level) {
            (3, 0..=2) => {
                level += 1;
                let index = (ipa >> LEVEL_SHIFT[level as usize]) & 511;
                desc_pa = (desc & 0x0000_ffff_ffff_f000) + index * 8;
            }
            (1, 1 | 2) | (3, 3) => {
                let ipa = ipa >> shift << shift;
                return Some(Leaf { ipa, level, desc });
            }
            _ => return None,
        }
    }
}

/// Every leaf reachable from the root, in IPA order.
fn leaves(s: &Shared) -> Vec<Leaf> {
    fn visit(s: &Shared, table: u64, entries: u64, level: u8, base: u64, out: &mut Vec<Leaf>) {
        let shift = LEVEL_SHIFT[level as usize];
        for i in 0..entries {
            let desc = s.read(table + i * 8);
            let ipa = base + (i << shift);
            match (desc & 3, level) {
                (3, 0..=2) => visit(s, desc & 0x0000_ffff_ffff_f000, 512, level + 1, ipa, out),
                (1, 1 | 2) | (3, 3) => out.push(Leaf { ipa, level, desc }),
                _ => {}
            }
        }
    }
    let config = Stage2Config::from_parange(PARANGE);
    let entries = config.root_tables() as u64 * 512;
    let mut out = Vec::new();
    visit(s, s.root.get(), entries, s.start_level, 0, &mut out);
    out
}

fn leaf_size(level: u8) -> u64 {
    1 << LEVEL_SHIFT[level as usize]
}

fn leaf_oa(leaf: &Leaf) -> u64 {
    leaf.desc & 0x0000_ffff_ffff_f000 & !(leaf_size(leaf.level) - 1)
}

/// Expected attribute bits (all but address and type) of a leaf, derived from the Arm ARM.
fn expected_attrs(seg: &Seg) -> u64 {
    let mut bits = 1 << 10; // AF
    bits |= match seg.kind {
        MemoryKind::Normal => 0b1111 << 2 | 0b11 << 8,
        MemoryKind::Device => 0b0001 << 2,
    };
    bits |= u64::from(seg.perms.read) << 6 | u64::from(seg.perms.write) << 7;
    if !seg.perms.execute {
        bits |= 0b10 << 53;
    }
    if seg.wp {
        bits |= 1 << 55;
    }
    bits
}

/// Reference model segment: `[start, end)` maps to `pa + (ipa - start)`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Seg {
    end: u64,
    pa: u64,
    kind: MemoryKind,
    perms: Perms,
    wp: bool,
}

#[derive(Default, Debug)]
struct Model(BTreeMap<u64, Seg>);

impl Model {
    fn at(&self, ipa: u64) -> Option<(u64, Seg)> {
        let (&start, seg) = self.0.range(..=ipa).next_back()?;
        (ipa < seg.end).then_some((start, *seg))
    }

    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.at(start).is_some() || self.0.range(start..end).next().is_some()
    }

    fn covers(&self, start: u64, end: u64) -> bool {
        let mut a = start;
        while a < end {
            match self.at(a) {
                Some((_, seg)) => a = seg.end,
                None => return false,
            }
        }
        true
    }

    fn split(&mut self, at: u64) {
        if let Some((start, seg)) = self.at(at).filter(|&(start, _)| start != at) {
            self.0.insert(start, Seg { end: at, ..seg });
            let pa = seg.pa + (at - start);
            self.0.insert(at, Seg { pa, ..seg });
        }
    }

    /// Removes and returns the segments in `[start, end)`, splitting at the ends.
    fn take(&mut self, start: u64, end: u64) -> Vec<(u64, Seg)> {
        self.split(start);
        self.split(end);
        let keys: Vec<u64> = self.0.range(start..end).map(|(&k, _)| k).collect();
        keys.into_iter()
            .map(|k| (k, self.0.remove(&k).unwrap()))
            .collect()
    }

    fn translate(&self, ipa: u64) -> Option<Translation> {
        self.at(ipa).map(|(start, seg)| Translation {
            pa: seg.pa + (ipa - start),
            kind: seg.kind,
            perms: seg.perms,
            level: 0,
        })
    }
}

/// Checks that the raw tables describe exactly the model's mappings.
fn check_tables(s: &Shared, model: &Model) {
    let mut mapped = 0;
    for leaf in leaves(s) {
        let size = leaf_size(leaf.level);
        mapped += size;
        let mut covered = 0;
        for (&start, seg) in model.0.range(..leaf.ipa + size) {
            let (lo, hi) = (start.max(leaf.ipa), seg.end.min(leaf.ipa + size));
            if lo >= hi {
                continue;
            }
            covered += hi - lo;
            assert_eq!(
                leaf_oa(&leaf) + (lo - leaf.ipa),
                seg.pa + (lo - start),
                "{leaf:x?}"
            );
            let attrs = leaf.desc & !0x0000_ffff_ffff_f003;
            assert_eq!(attrs, expected_attrs(seg), "{leaf:x?} vs {seg:x?}");
        }
        assert_eq!(covered, size, "leaf {leaf:x?} not fully in the model");
    }
    let model_mapped: u64 = model.0.iter().map(|(&start, seg)| seg.end - start).sum();
    assert_eq!(mapped, model_mapped);
}

/// Checks `translate`, the independent walker and `is_write_protected` at `ipa`.
fn check_at(s: &Shared, table: &Table, model: &Model, ipa: u64) {
    let expected = model.translate(ipa);
    let got = table.translate(ipa);
    assert_eq!(
        got.map(|t| Translation { level: 0, ..t }),
        expected,
        "ipa {ipa:#x}"
    );
    let leaf = walk(s, ipa);
    assert_eq!(leaf.map(|l| l.level), got.map(|t| t.level), "ipa {ipa:#x}");
    assert_eq!(
        leaf.map(|l| leaf_oa(&l) + (ipa - l.ipa)),
        expected.map(|t| t.pa)
    );
    let wp = model.at(ipa).is_some_and(|(_, seg)| seg.wp);
    assert_eq!(table.is_write_protected(ipa), wp, "ipa {ipa:#x}");
}

/// Checks break-before-make for one operation: every invalidation was issued after a barrier
/// while the IPA was unmapped, and every leaf that changed or disappeared got an invalidation.
fn check_bbm(before: &[Leaf], after: &[Leaf], events: &[Event]) {
    for (i, e) in events.iter().enumerate() {
        if let Event::Invalidate { ipa, mapped } = *e {
            assert!(!mapped, "invalidation of {ipa:#x} while still mapped");
            assert_eq!(
                events[i - 1],
                Event::Barrier,
                "no barrier before invalidating {ipa:#x}"
            );
        }
    }
    for old in before {
        if after
            .binary_search_by_key(&old.ipa, |l| l.ipa)
            .ok()
            .map(|i| after[i])
            == Some(*old)
        {
            continue;
        }
        let range = old.ipa..old.ipa + leaf_size(old.level);
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::Invalidate { ipa, .. } if range.contains(ipa))),
            "changed leaf {old:x?} was not invalidated"
        );
    }
}

#[derive(Debug, Clone)]
enum Op {
    Map {
        ipa: u64,
        pa: u64,
        size: u64,
        kind: MemoryKind,
        perms: Perms,
    },
    Unmap {
        ipa: u64,
        size: u64,
    },
    Protect {
        ipa: u64,
        size: u64,
        perms: Perms,
    },
    WriteProtect {
        ipa: u64,
        size: u64,
    },
}

/// A 1 GiB / 2 MiB / 4 KiB component that is often 0 (aligned) and often near a boundary.
fn part() -> impl Strategy<Value = u64> {
    prop_oneof![3 => Just(0u64), 1 => 1..3u64, 1 => 510..512u64]
}

/// IPA in the 0..8 GiB window, frequently block-aligned.
fn addr() -> impl Strategy<Value = u64> {
    (0..8u64, part(), part()).prop_map(|(g, m, p)| g * GIB + m * MIB2 + p * PAGE)
}

fn size() -> impl Strategy<Value = u64> {
    (prop_oneof![6 => Just(0u64), 1 => 1..3u64], part(), part())
        .prop_map(|(g, m, p)| (g * GIB + m * MIB2 + p * PAGE).max(PAGE))
}

fn perms() -> impl Strategy<Value = Perms> {
    (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(read, write, execute)| Perms {
        read,
        write,
        execute,
    })
}

fn op() -> impl Strategy<Value = Op> {
    let kind = prop_oneof![Just(MemoryKind::Normal), Just(MemoryKind::Device)];
    // PA: same offset within a GiB as the IPA (block-compatible) or an arbitrary page address.
    let pa = prop_oneof![
        (0..64u64).prop_map(|g| (g, None)),
        addr().prop_map(|a| (0, Some(a)))
    ];
    prop_oneof![
        3 => (addr(), pa, size(), kind, perms()).prop_map(|(ipa, (g, pa), size, kind, perms)| {
            let pa = pa.unwrap_or(g * GIB + ipa % GIB);
            Op::Map { ipa, pa, size, kind, perms }
        }),
        2 => (addr(), size()).prop_map(|(ipa, size)| Op::Unmap { ipa, size }),
        2 => (addr(), size(), perms()).prop_map(|(ipa, size, perms)| Op::Protect { ipa, size, perms }),
        1 => (addr(), size()).prop_map(|(ipa, size)| Op::WriteProtect { ipa, size }),
    ]
}

/// Applies `op` to the model, returning the result the tables must give.
fn apply_model(model: &mut Model, op: &Op) -> Result<(), Stage2Error> {
    match *op {
        Op::Map {
            ipa,
            pa,
            size,
            kind,
            perms,
        } => {
            if model.overlaps(ipa, ipa + size) {
                return Err(Stage2Error::AlreadyMapped);
            }
            let seg = Seg {
                end: ipa + size,
                pa,
                kind,
                perms,
                wp: false,
            };
            model.0.insert(ipa, seg);
        }
        Op::Unmap { ipa, size }
        | Op::Protect { ipa, size, .. }
        | Op::WriteProtect { ipa, size } => {
            if !model.covers(ipa, ipa + size) {
                return Err(Stage2Error::NotMapped);
            }
            for (start, mut seg) in model.take(ipa, ipa + size) {
                match *op {
                    Op::Unmap { .. } => continue,
                    Op::Protect { perms, .. } => (seg.perms, seg.wp) = (perms, false),
                    _ if seg.perms.write => (seg.perms.write, seg.wp) = (false, true),
                    _ => {}
                }
                model.0.insert(start, seg);
            }
        }
    }
    Ok(())
}

fn apply_table(table: &mut Table, op: &Op) -> Result<(), Stage2Error> {
    match *op {
        Op::Map {
            ipa,
            pa,
            size,
            kind,
            perms,
        } => table.map(ipa, pa, size, kind, perms),
        Op::Unmap { ipa, size } => table.unmap(ipa, size),
        Op::Protect { ipa, size, perms } => table.protect(ipa, size, perms),
        Op::WriteProtect { ipa, size } => table.write_protect(ipa, size),
    }
}

fn op_range(op: &Op) -> (u64, u64) {
    match *op {
        Op::Map { ipa, size, .. }
        | Op::Unmap { ipa, size }
        | Op::Protect { ipa, size, .. }
        | Op::WriteProtect { ipa, size } => (ipa, size),
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 40,
        // A fixed seed: the same 40 sequences on every run, so the suite takes the same time
        // in CI (some random seeds produce sequences that take minutes in a debug build).
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x5eed_0002),
        max_shrink_iters: 256,
        ..ProptestConfig::default()
    })]

    #[test]
    fn matches_reference_model(ops in prop::collection::vec((op(), prop::collection::vec(addr(), 4)), 1..24)) {
        let (shared, mut table) = setup(6144);
        let mut model = Model::default();
        for (op, samples) in &ops {
            let before = leaves(&shared);
            shared.events.borrow_mut().clear();
            let expected = apply_model(&mut model, op);
            prop_assert_eq!(apply_table(&mut table, op), expected, "{:x?}", op);
            let after = leaves(&shared);
            check_bbm(&before, &after, &shared.events.borrow());
            check_tables(&shared, &model);
            let (ipa, size) = op_range(op);
            let edges = [ipa, ipa + size - PAGE, ipa.saturating_sub(PAGE), ipa + size];
            for &a in edges.iter().chain(samples) {
                check_at(&shared, &table, &model, a);
            }
        }
        drop(table);
        prop_assert_eq!(shared.live_pages(), 0);
        let last = shared.events.borrow().last().copied();
        prop_assert_eq!(last, Some(Event::Vmid));
    }
}

fn levels(s: &Shared) -> Vec<(u64, u8)> {
    leaves(s).iter().map(|l| (l.ipa, l.level)).collect()
}

#[test]
fn gib_aligned_map_uses_one_level1_block() {
    let (shared, mut table) = setup(64);
    table
        .map(GIB, 3 * GIB, GIB, MemoryKind::Normal, Perms::RWX)
        .unwrap();
    assert_eq!(levels(&shared), [(GIB, 1)]);
    let t = table.translate(GIB + 0x1234_5678).unwrap();
    assert_eq!((t.pa, t.level), (3 * GIB + 0x1234_5678, 1));
}

#[test]
fn mib2_aligned_map_uses_two_level2_blocks() {
    let (shared, mut table) = setup(64);
    table
        .map(4 * MIB2, 6 * MIB2, 2 * MIB2, MemoryKind::Device, Perms::RW)
        .unwrap();
    assert_eq!(levels(&shared), [(4 * MIB2, 2), (5 * MIB2, 2)]);
}

#[test]
fn unaligned_map_uses_pages() {
    let (shared, mut table) = setup(64);
    // IPA 2 MiB-aligned but PA only page-aligned: pages all the way.
    table
        .map(0, PAGE, MIB2 + PAGE, MemoryKind::Normal, Perms::RO)
        .unwrap();
    let l = levels(&shared);
    assert_eq!(l.len(), 513);
    assert!(l.iter().all(|&(_, level)| level == 3));
    // Mixed: a page, then a 2 MiB block, then a page.
    table
        .map(
            GIB - PAGE,
            GIB - PAGE,
            MIB2 + 2 * PAGE,
            MemoryKind::Normal,
            Perms::RO,
        )
        .unwrap();
    let l = levels(&shared);
    assert_eq!(l[513..], [(GIB - PAGE, 3), (GIB, 2), (GIB + MIB2, 3)]);
}

#[test]
fn partial_protect_splits_block_with_break_before_make() {
    let (shared, mut table) = setup(64);
    table
        .map(0, 0, GIB, MemoryKind::Normal, Perms::RWX)
        .unwrap();
    shared.events.borrow_mut().clear();
    table.write_protect(MIB2 + PAGE, PAGE).unwrap();
    let events = shared.events.borrow().clone();
    use Event::*;
    assert_eq!(
        events,
        [
            Barrier,
            Invalidate {
                ipa: 0,
                mapped: false
            },
            Barrier,
            Invalidate {
                ipa: MIB2,
                mapped: false
            },
            Barrier,
            Invalidate {
                ipa: MIB2 + PAGE,
                mapped: false
            },
            Barrier,
        ]
    );
    assert!(table.is_write_protected(MIB2 + PAGE));
    assert!(!table.is_write_protected(MIB2));
    let t = table.translate(MIB2 + PAGE + 8).unwrap();
    assert_eq!((t.pa, t.perms, t.level), (MIB2 + PAGE + 8, Perms::RX, 3));
    assert_eq!(table.translate(5 * MIB2).unwrap().level, 2);
    // Restoring write access clears the mark.
    table.protect(MIB2 + PAGE, PAGE, Perms::RWX).unwrap();
    assert!(!table.is_write_protected(MIB2 + PAGE));
}

#[test]
fn remap_over_empty_table_uses_block_and_frees_table() {
    let (shared, mut table) = setup(64);
    table
        .map(0, 0, PAGE, MemoryKind::Normal, Perms::RW)
        .unwrap();
    table.unmap(0, PAGE).unwrap();
    let live = shared.live_pages();
    table
        .map(0, 0, MIB2, MemoryKind::Normal, Perms::RW)
        .unwrap();
    assert_eq!(levels(&shared), [(0, 2)]);
    assert_eq!(shared.live_pages(), live - 1);
}

#[test]
fn errors() {
    let (shared, mut table) = setup(64);
    let n = MemoryKind::Normal;
    assert_eq!(
        table.map(PAGE / 2, 0, PAGE, n, Perms::RW),
        Err(Stage2Error::Misaligned)
    );
    assert_eq!(
        table.map(0, 0, 100, n, Perms::RW),
        Err(Stage2Error::Misaligned)
    );
    assert_eq!(
        table.map(1 << 40, 0, PAGE, n, Perms::RW),
        Err(Stage2Error::OutOfRange)
    );
    assert_eq!(
        table.map(0, (1 << 40) - PAGE, 2 * PAGE, n, Perms::RW),
        Err(Stage2Error::OutOfRange)
    );
    assert_eq!(
        table.map(u64::MAX - PAGE + 1, 0, PAGE, n, Perms::RW),
        Err(Stage2Error::OutOfRange)
    );
    table.map(0, 0, 2 * PAGE, n, Perms::RW).unwrap();
    assert_eq!(
        table.map(PAGE, 0, PAGE, n, Perms::RW),
        Err(Stage2Error::AlreadyMapped)
    );
    assert_eq!(table.unmap(PAGE, 2 * PAGE), Err(Stage2Error::NotMapped));
    assert_eq!(
        table.protect(2 * PAGE, PAGE, Perms::RO),
        Err(Stage2Error::NotMapped)
    );
    // The top of the IPA space is usable.
    table.map((1 << 40) - GIB, 0, GIB, n, Perms::RW).unwrap();
    table.protect((1 << 40) - PAGE, PAGE, Perms::RO).unwrap();
    assert_eq!(table.translate((1 << 40) - 1).unwrap().pa, GIB - 1);
    assert_eq!(table.translate(1 << 40), None);
    drop(table);
    assert_eq!(shared.live_pages(), 0);
}

#[test]
fn out_of_memory_rolls_back() {
    let (shared, mut table) = setup(64);
    // Root exists; allow one more table: the level-2 table, but not the level-3 tables.
    shared.budget.set(1);
    let r = table.map(0, 0, MIB2 + PAGE, MemoryKind::Normal, Perms::RW);
    assert_eq!(r, Err(Stage2Error::OutOfMemory));
    assert!(leaves(&shared).is_empty());
    shared.budget.set(usize::MAX);
    table.map(0, 0, GIB, MemoryKind::Normal, Perms::RW).unwrap();
    shared.budget.set(0);
    assert_eq!(table.unmap(PAGE, PAGE), Err(Stage2Error::OutOfMemory));
    assert_eq!(table.translate(PAGE).unwrap().pa, PAGE);
    drop(table);
    assert_eq!(shared.live_pages(), 0);
}

#[test]
fn every_config_walks_from_its_root() {
    for parange in 0..=6 {
        let config = Stage2Config::from_parange(parange);
        let shared = Shared::new(64);
        let mut table = Table::new(
            config,
            VMID,
            Arena(shared.clone()),
            Recorder(shared.clone()),
        )
        .unwrap();
        let top = (1u64 << config.ipa_bits()) - GIB;
        table
            .map(top, GIB, GIB, MemoryKind::Normal, Perms::RW)
            .unwrap();
        table
            .map(0, 0, PAGE, MemoryKind::Device, Perms::RO)
            .unwrap();
        assert_eq!(table.translate(top + 5).unwrap().pa, GIB + 5);
        assert_eq!(table.translate(0).unwrap().kind, MemoryKind::Device);
        assert_eq!(table.translate(top - PAGE), None);
        // Root tables, a level-2 and a level-3 table for IPA 0, and when starting at level 0,
        // a level-1 table for each of the two mappings.
        let tables = config.root_tables() + 2 + 2 * usize::from(config.start_level() == 0);
        assert_eq!(shared.next.get(), tables);
        drop(table);
        assert_eq!(shared.live_pages(), 0);
    }
}
