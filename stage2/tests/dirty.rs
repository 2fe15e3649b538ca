//! Dirty tracking against an arena allocator, a TLB recorder that snapshots the raw tables at
//! every barrier and invalidation, and a reference model of a pre-copy loop.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::rc::Rc;

use proptest::prelude::*;
use stage2::{
    FrameAllocator, MemoryKind, PAGE_SIZE, Perms, Stage2Config, Stage2Error, Stage2Table,
    TlbMaintenance,
};

const PAGE: u64 = PAGE_SIZE;
const MIB2: u64 = 2 << 20;
const GIB: u64 = 1 << 30;
const ARENA_BASE: u64 = 0x8000_0000;
/// PARange 2: 40-bit IPA, start level 1, two concatenated root tables.
const PARANGE: u8 = 2;
const VMID: u16 = 3;
const ADDR: u64 = 0x0000_ffff_ffff_f000;
const LEVEL_SHIFT: [u32; 4] = [39, 30, 21, 12];

/// A leaf descriptor found by the independent walker.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Leaf {
    ipa: u64,
    level: u8,
    desc: u64,
}

#[derive(Debug, Clone, PartialEq)]
enum Event {
    /// A barrier and every leaf at that moment.
    Barrier(Vec<Leaf>),
    /// An IPA invalidation and the leaf translating the IPA when it was issued.
    Invalidate { ipa: u64, seen: Option<Leaf> },
    /// A VMID-wide invalidation and every leaf at that moment.
    Vmid(Vec<Leaf>),
}

struct Shared {
    mem: Box<[Cell<u64>]>,
    used: RefCell<Vec<bool>>,
    free_list: RefCell<Vec<usize>>,
    next: Cell<usize>,
    budget: Cell<usize>,
    events: RefCell<Vec<Event>>,
    root: Cell<u64>,
}

impl Shared {
    fn read(&self, pa: u64) -> u64 {
        self.mem[((pa - ARENA_BASE) / 8) as usize].get()
    }

    fn live_pages(&self) -> usize {
        self.used.borrow().iter().filter(|&&u| u).count()
    }

    fn take_events(&self) -> Vec<Event> {
        std::mem::take(&mut self.events.borrow_mut())
    }
}

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

struct Recorder(Rc<Shared>);

impl TlbMaintenance for Recorder {
    fn table_update_barrier(&mut self) {
        let snapshot = leaves(&self.0);
        self.0.events.borrow_mut().push(Event::Barrier(snapshot));
    }

    fn invalidate_ipa(&mut self, vmid: u16, ipa: u64) {
        assert_eq!(vmid, VMID);
        let seen = walk(&self.0, ipa);
        self.0
            .events
            .borrow_mut()
            .push(Event::Invalidate { ipa, seen });
    }

    fn invalidate_vmid(&mut self, vmid: u16) {
        assert_eq!(vmid, VMID);
        let snapshot = leaves(&self.0);
        self.0.events.borrow_mut().push(Event::Vmid(snapshot));
    }
}

type Table = Stage2Table<Arena, Recorder>;

fn setup(pages: usize) -> (Rc<Shared>, Table) {
    let shared = Rc::new(Shared {
        mem: vec![Cell::new(0); pages * 512].into_boxed_slice(),
        used: RefCell::new(vec![false; pages]),
        free_list: RefCell::new(Vec::new()),
        next: Cell::new(0),
        budget: Cell::new(usize::MAX),
        events: RefCell::new(Vec::new()),
        root: Cell::new(0),
    });
    let config = Stage2Config::from_parange(PARANGE);
    let table = Table::new(
        config,
        VMID,
        Arena(shared.clone()),
        Recorder(shared.clone()),
    )
    .unwrap();
    shared.root.set(table.vttbr() & ADDR);
    (shared, table)
}

fn leaf_size(level: u8) -> u64 {
    1 << LEVEL_SHIFT[level as usize]
}

/// Hardware-style walk over raw descriptors: the leaf translating `ipa`, if any.
fn walk(s: &Shared, ipa: u64) -> Option<Leaf> {
    let mut level = Stage2Config::from_parange(PARANGE).start_level();
    let mut desc_pa = s.root.get() + (ipa >> LEVEL_SHIFT[level as usize]) * 8;
    loop {
        let desc = s.read(desc_pa);
        let shift = LEVEL_SHIFT[level as usize];
        match (desc & 3, level) {
            (3, 0..=2) => {
                level += 1;
                let index = (ipa >> LEVEL_SHIFT[level as usize]) & 511;
                desc_pa = (desc & ADDR) + index * 8;
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
                (3, 0..=2) => visit(s, desc & ADDR, 512, level + 1, ipa, out),
                (1, 1 | 2) | (3, 3) => out.push(Leaf { ipa, level, desc }),
                _ => {}
            }
        }
    }
    let config = Stage2Config::from_parange(PARANGE);
    let entries = config.root_tables() as u64 * 512;
    let mut out = Vec::new();
    visit(s, s.root.get(), entries, config.start_level(), 0, &mut out);
    out
}

/// The leaf of `snapshot` translating `ipa`.
fn leaf_in(snapshot: &[Leaf], ipa: u64) -> Option<Leaf> {
    let i = snapshot.partition_point(|l| l.ipa <= ipa).checked_sub(1)?;
    let l = snapshot[i];
    (ipa < l.ipa + leaf_size(l.level)).then_some(l)
}

/// Checks the TLB maintenance of one operation that turned the leaves `before` into `after`:
/// every invalidation follows a barrier with no unpublished table write in between, and saw the
/// IPA either broken (break-before-make) or already in its final state (in-place permission
/// change); the operation ends with its writes published; every leaf that changed or went away
/// was invalidated (by IPA within it, or VMID-wide).
fn check_tlb(before: &[Leaf], after: &[Leaf], events: &[Event]) {
    let mut published: Option<&[Leaf]> = None;
    for e in events {
        match e {
            Event::Barrier(snapshot) => published = Some(snapshot),
            Event::Invalidate { ipa, seen } => {
                let published = published.expect("invalidation before any barrier");
                assert_eq!(
                    leaf_in(published, *ipa),
                    *seen,
                    "unpublished write at {ipa:#x}"
                );
                assert!(
                    seen.is_none() || *seen == leaf_in(after, *ipa),
                    "invalidated {ipa:#x} in an intermediate state {seen:x?}"
                );
            }
            Event::Vmid(snapshot) => {
                let published = published.expect("invalidation before any barrier");
                assert_eq!(
                    published,
                    &snapshot[..],
                    "unpublished write before VMID flush"
                );
                assert_eq!(&snapshot[..], after, "VMID flush before the final state");
            }
        }
    }
    if before != after {
        assert_eq!(
            published,
            Some(after),
            "operation returned with unpublished writes"
        );
    }
    for old in before {
        if after
            .binary_search_by_key(&old.ipa, |l| l.ipa)
            .map(|i| after[i])
            == Ok(*old)
        {
            continue;
        }
        let range = old.ipa..old.ipa + leaf_size(old.level);
        assert!(
            events.iter().any(|e| match e {
                Event::Invalidate { ipa, .. } => range.contains(ipa),
                Event::Vmid(_) => true,
                Event::Barrier(_) => false,
            }),
            "changed leaf {old:x?} was not invalidated"
        );
    }
}

/// Runs `op` on the table and checks its TLB maintenance.
fn checked<R>(shared: &Shared, table: &mut Table, op: impl FnOnce(&mut Table) -> R) -> R {
    let before = leaves(shared);
    shared.take_events();
    let r = op(table);
    check_tlb(&before, &leaves(shared), &shared.take_events());
    r
}

// Layout of the proptest: three 2 MiB blocks, eight read-write pages and four read-only pages,
// all tracked; then a read-write page outside the tracked range, write-protected by hand, and
// an unmapped page.
const BASE: u64 = GIB;
const BLOCKS: u64 = 3;
const BLOCK_PA: u64 = 5 * GIB;
const RW_TAIL: u64 = 8;
const RW_TAIL_PA: u64 = 0x1234_5000;
const RO_TAIL: u64 = 4;
const RO_TAIL_PA: u64 = 0x2000_0000;
const OUTSIDE_PA: u64 = 0x3000_0000;
const RW_PAGES: u64 = BLOCKS * 512 + RW_TAIL;
const TRACKED_PAGES: u64 = RW_PAGES + RO_TAIL;
const ALL_PAGES: u64 = TRACKED_PAGES + 2;

fn page_ipa(page: u64) -> u64 {
    BASE + page * PAGE
}

/// Expected PA, kind and read-write permission of page `page` (none if unmapped).
fn expected_map(page: u64) -> Option<(u64, MemoryKind, bool)> {
    let n = MemoryKind::Normal;
    match page {
        p if p < BLOCKS * 512 => Some((BLOCK_PA + p * PAGE, n, true)),
        p if p < RW_PAGES => Some((RW_TAIL_PA + (p - BLOCKS * 512) * PAGE, n, true)),
        p if p < TRACKED_PAGES => Some((RO_TAIL_PA + (p - RW_PAGES) * PAGE, n, false)),
        p if p == TRACKED_PAGES => Some((OUTSIDE_PA, MemoryKind::Device, true)),
        _ => None,
    }
}

fn setup_layout() -> (Rc<Shared>, Table) {
    let (shared, mut table) = setup(64);
    let n = MemoryKind::Normal;
    table
        .map(BASE, BLOCK_PA, BLOCKS * MIB2, n, Perms::RW)
        .unwrap();
    let tail = BASE + BLOCKS * MIB2;
    table
        .map(tail, RW_TAIL_PA, RW_TAIL * PAGE, n, Perms::RWX)
        .unwrap();
    let ro = tail + RW_TAIL * PAGE;
    table
        .map(ro, RO_TAIL_PA, RO_TAIL * PAGE, n, Perms::RO)
        .unwrap();
    let outside = page_ipa(TRACKED_PAGES);
    table
        .map(outside, OUTSIDE_PA, PAGE, MemoryKind::Device, Perms::RW)
        .unwrap();
    table.write_protect(outside, PAGE).unwrap();
    (shared, table)
}

/// Pre-copy model: the pages written since the last take and the blocks already split.
#[derive(Default)]
struct Model {
    written: BTreeSet<u64>,
    split: [bool; BLOCKS as usize],
}

impl Model {
    /// Result of a guest write fault on `page`; `exhausted`: the allocator gives nothing.
    fn write(&mut self, page: u64, exhausted: bool) -> Result<bool, Stage2Error> {
        if page >= RW_PAGES {
            return Ok(false);
        }
        if page < BLOCKS * 512 {
            let block = &mut self.split[(page / 512) as usize];
            if !*block && exhausted {
                return Err(Stage2Error::OutOfMemory);
            }
            *block = true;
        }
        self.written.insert(page);
        Ok(true)
    }
}

/// Checks every page of the layout against the model.
fn check_pages(table: &Table, model: &Model) {
    let log = table.dirty_log().expect("tracking");
    for page in 0..ALL_PAGES {
        let ipa = page_ipa(page);
        let t = table.translate(ipa + 0x18);
        let Some((pa, kind, rw)) = expected_map(page) else {
            assert_eq!(t, None);
            continue;
        };
        let t = t.unwrap_or_else(|| panic!("page {page} unmapped"));
        assert_eq!((t.pa, t.kind), (pa + 0x18, kind), "page {page}");
        let split = page >= BLOCKS * 512 || model.split[(page / 512) as usize];
        assert_eq!(t.level, if split { 3 } else { 2 }, "page {page}");
        let tracked_rw = page < RW_PAGES;
        let protected = if tracked_rw {
            !model.written.contains(&page)
        } else {
            page == TRACKED_PAGES
        };
        assert_eq!(table.is_write_protected(ipa), protected, "page {page}");
        assert_eq!(t.perms.write, rw && !protected, "page {page}");
        assert!(t.perms.read);
        assert_eq!(
            log.is_dirty(ipa),
            model.written.contains(&page),
            "page {page}"
        );
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// A guest write fault on a page; `exhausted`: with an empty allocator.
    Write {
        page: u64,
        exhausted: bool,
    },
    Take,
}

fn page() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => 0..ALL_PAGES,
        // Block edges, the tail, the pages beyond the range.
        2 => prop::sample::select(vec![0, 1, 511, 512, 1023, 1024, 1535, 1536, 1543, 1544, 1547, 1548, 1549]),
        // A few hot pages, written often.
        2 => 700..704u64,
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (page(), prop::bool::weighted(0.15)).prop_map(|(page, exhausted)| Op::Write { page, exhausted }),
        2 => Just(Op::Take),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0xd1_7e57),
        max_shrink_iters: 256,
        ..ProptestConfig::default()
    })]

    #[test]
    fn precopy_matches_model(ops in prop::collection::vec(op(), 1..64)) {
        let (shared, mut table) = setup_layout();
        let tables = shared.live_pages();
        checked(&shared, &mut table, |t| t.start_dirty_tracking(BASE, TRACKED_PAGES * PAGE)).unwrap();
        // Whole blocks write-protected: no split up front.
        prop_assert_eq!(shared.live_pages(), tables);
        let mut model = Model::default();
        check_pages(&table, &model);
        for op in &ops {
            match *op {
                Op::Write { page, exhausted } => {
                    let expected = model.write(page, exhausted);
                    if exhausted {
                        shared.budget.set(0);
                    }
                    let got = checked(&shared, &mut table, |t| t.handle_dirty_fault(page_ipa(page) + 0x7f8));
                    shared.budget.set(usize::MAX);
                    prop_assert_eq!(got, expected, "{:?}", op);
                }
                Op::Take => {
                    let mut got = Vec::new();
                    let n = checked(&shared, &mut table, |t| t.take_dirty(|ipa| got.push(ipa)));
                    let expected: Vec<u64> = model.written.iter().map(|&p| page_ipa(p)).collect();
                    prop_assert_eq!(&got, &expected);
                    prop_assert_eq!(n, expected.len() as u64);
                    model.written.clear();
                }
            }
            check_pages(&table, &model);
            let splits = model.split.iter().filter(|&&s| s).count();
            prop_assert_eq!(shared.live_pages(), tables + splits);
        }
        checked(&shared, &mut table, |t| t.stop_dirty_tracking());
        prop_assert!(table.dirty_log().is_none());
        for page in 0..ALL_PAGES {
            let ipa = page_ipa(page);
            let wp = page == TRACKED_PAGES;
            prop_assert_eq!(table.is_write_protected(ipa), wp, "page {}", page);
            let write = expected_map(page).map(|(_, _, rw)| rw && !wp);
            prop_assert_eq!(table.translate(ipa).map(|t| t.perms.write), write, "page {}", page);
        }
        drop(table);
        prop_assert_eq!(shared.live_pages(), 0);
    }
}

#[test]
fn write_fault_outside_tracking_is_not_handled() {
    let (shared, mut table) = setup_layout();
    let outside = page_ipa(TRACKED_PAGES);
    // Tracking off: even a write-protected page is a real fault.
    assert!(table.is_write_protected(outside));
    assert_eq!(table.handle_dirty_fault(outside), Ok(false));
    assert_eq!(table.handle_dirty_fault(BASE), Ok(false));
    assert_eq!(table.take_dirty(|_| panic!("nothing tracked")), 0);
    assert!(!table.mark_dirty(BASE));
    table.stop_dirty_tracking();
    table
        .start_dirty_tracking(BASE, TRACKED_PAGES * PAGE)
        .unwrap();
    shared.take_events();
    let before = leaves(&shared);
    for ipa in [
        outside,
        outside + PAGE,     // unmapped
        page_ipa(RW_PAGES), // read-only page in the range
        BASE - PAGE,        // below the range, unmapped
        1 << 40,            // beyond the IPA space
        u64::MAX,           // and beyond anything
        u64::MAX - PAGE + 1,
    ] {
        assert_eq!(table.handle_dirty_fault(ipa), Ok(false), "{ipa:#x}");
    }
    assert_eq!(leaves(&shared), before);
    assert!(shared.take_events().is_empty());
    assert!(table.dirty_log().unwrap().iter().next().is_none());
    // Unmapped after tracking started: no longer a tracking mapping.
    table.unmap(page_ipa(BLOCKS * 512), PAGE).unwrap();
    assert_eq!(table.handle_dirty_fault(page_ipa(BLOCKS * 512)), Ok(false));
}

#[test]
fn allocator_exhaustion_mid_split_keeps_the_block() {
    let (shared, mut table) = setup(64);
    table.map(0, 0, GIB, MemoryKind::Normal, Perms::RW).unwrap();
    table.start_dirty_tracking(0, GIB).unwrap();
    let ipa = 3 * MIB2 + 5 * PAGE;
    let whole = leaves(&shared);
    assert_eq!(whole.len(), 1);
    // No page at all: the 1 GiB block stays as it is.
    shared.budget.set(0);
    let r = checked(&shared, &mut table, |t| t.handle_dirty_fault(ipa));
    assert_eq!(r, Err(Stage2Error::OutOfMemory));
    assert_eq!(leaves(&shared), whole);
    // One page: split into 2 MiB blocks, then out of memory; still write-protected, same
    // translation.
    shared.budget.set(1);
    let r = checked(&shared, &mut table, |t| t.handle_dirty_fault(ipa));
    assert_eq!(r, Err(Stage2Error::OutOfMemory));
    let blocks = leaves(&shared);
    assert_eq!(blocks.len(), 512);
    for (i, l) in blocks.iter().enumerate() {
        assert_eq!((l.ipa, l.level), (i as u64 * MIB2, 2));
        assert_eq!(l.desc & ADDR, l.ipa);
        assert_eq!(l.desc & !ADDR, whole[0].desc & !ADDR);
    }
    assert!(table.is_write_protected(ipa));
    assert_eq!(table.translate(ipa).unwrap().pa, ipa);
    assert!(table.dirty_log().unwrap().iter().next().is_none());
    // The retried fault succeeds.
    shared.budget.set(usize::MAX);
    let r = checked(&shared, &mut table, |t| t.handle_dirty_fault(ipa));
    assert_eq!(r, Ok(true));
    let t = table.translate(ipa).unwrap();
    assert_eq!((t.pa, t.level, t.perms), (ipa, 3, Perms::RW));
    assert!(table.is_write_protected(ipa + PAGE));
    assert!(table.is_write_protected(ipa - PAGE));
    assert_eq!(table.translate(0).unwrap().level, 2);
    let mut got = Vec::new();
    checked(&shared, &mut table, |t| t.take_dirty(|a| got.push(a)));
    assert_eq!(got, [ipa]);
    assert!(table.is_write_protected(ipa));
    drop(table);
    assert_eq!(shared.live_pages(), 0);
}

#[test]
fn start_errors_leave_everything_unchanged() {
    let (shared, mut table) = setup_layout();
    let before = leaves(&shared);
    let end = page_ipa(TRACKED_PAGES);
    assert_eq!(
        table.start_dirty_tracking(BASE + 1, PAGE),
        Err(Stage2Error::Misaligned)
    );
    assert_eq!(
        table.start_dirty_tracking(BASE, 1 << 40),
        Err(Stage2Error::OutOfRange)
    );
    assert_eq!(
        table.start_dirty_tracking(BASE, end + 2 * PAGE - BASE),
        Err(Stage2Error::NotMapped)
    );
    // The range ends inside a block: splitting the end needs a page.
    shared.budget.set(0);
    assert_eq!(
        table.start_dirty_tracking(BASE, MIB2 + PAGE),
        Err(Stage2Error::OutOfMemory)
    );
    shared.budget.set(usize::MAX);
    assert_eq!(leaves(&shared), before);
    assert!(table.dirty_log().is_none());
    table.start_dirty_tracking(BASE, MIB2 + PAGE).unwrap();
    assert_eq!(
        table.start_dirty_tracking(BASE, PAGE),
        Err(Stage2Error::TrackingActive)
    );
    // Only the end block was split, and only the tracked part of it is write-protected.
    assert_eq!(table.translate(BASE).unwrap().level, 2);
    assert!(table.is_write_protected(BASE + MIB2));
    assert!(!table.is_write_protected(BASE + MIB2 + PAGE));
    assert_eq!(table.translate(BASE + MIB2 + PAGE).unwrap().level, 3);
    assert_eq!(table.handle_dirty_fault(BASE + MIB2 + PAGE), Ok(false));
}

#[test]
fn take_of_many_pages_flushes_the_vmid_once() {
    let (shared, mut table) = setup_layout();
    table
        .start_dirty_tracking(BASE, TRACKED_PAGES * PAGE)
        .unwrap();
    let pages: Vec<u64> = (0..40).map(|i| page_ipa(i * 37)).collect();
    for &ipa in &pages {
        assert_eq!(table.handle_dirty_fault(ipa + 8), Ok(true));
        // A second fault on the same page (another vCPU raced): resolved, logged once.
        assert_eq!(table.handle_dirty_fault(ipa), Ok(true));
    }
    let mut got = Vec::new();
    let before = leaves(&shared);
    shared.take_events();
    assert_eq!(table.take_dirty(|a| got.push(a)), 40);
    let events = shared.take_events();
    check_tlb(&before, &leaves(&shared), &events);
    assert_eq!(got, pages);
    let flushes = events
        .iter()
        .filter(|e| matches!(e, Event::Vmid(_)))
        .count();
    let invalidations = events
        .iter()
        .filter(|e| matches!(e, Event::Invalidate { .. }))
        .count();
    assert_eq!((flushes, invalidations), (1, 0));
    // A second take reports nothing and touches nothing.
    let before = leaves(&shared);
    assert_eq!(table.take_dirty(|_| panic!("clean")), 0);
    assert_eq!(leaves(&shared), before);
}

#[test]
fn hypervisor_writes_are_reported_once() {
    let (_shared, mut table) = setup_layout();
    table
        .start_dirty_tracking(BASE, TRACKED_PAGES * PAGE)
        .unwrap();
    assert!(table.mark_dirty(BASE + 3 * PAGE + 1));
    assert!(table.mark_dirty(page_ipa(RW_PAGES)));
    assert!(!table.mark_dirty(page_ipa(TRACKED_PAGES)));
    assert_eq!(table.handle_dirty_fault(BASE + 3 * PAGE), Ok(true));
    let mut got = Vec::new();
    assert_eq!(table.take_dirty(|a| got.push(a)), 2);
    assert_eq!(got, [BASE + 3 * PAGE, page_ipa(RW_PAGES)]);
    assert!(table.is_write_protected(BASE + 3 * PAGE));
    // The read-only page stays read-only and unmarked.
    assert!(!table.is_write_protected(page_ipa(RW_PAGES)));
    assert!(!table.translate(page_ipa(RW_PAGES)).unwrap().perms.write);
    assert_eq!(table.take_dirty(|_| panic!("clean")), 0);
}
