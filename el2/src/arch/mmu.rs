//! The EL2 identity map: 39-bit addresses, 4 KiB granule, 1 GiB blocks from level 1, refined
//! to 2 MiB blocks where a gigabyte holds both RAM and devices. RAM is normal write-back memory;
//! everything else is Device-nGnRE and never executable.

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{MAIR_EL2, SCTLR_EL2, TCR_EL2, TTBR0_EL2};
use tock_registers::interfaces::{ReadWriteable, Writeable};

use crate::memory::PhysRange;

const ENTRIES: usize = 512;
const GIB: u64 = 1 << 30;
const MIB2: u64 = 2 << 20;
/// Level-2 tables available for gigabytes that mix RAM and devices.
const L2_TABLES: usize = 4;
/// The map covers 2^39 bytes.
const VA_BITS: u64 = 39;

const VALID: u64 = 1;
const TABLE: u64 = 1 << 1;
const ATTR_DEVICE: u64 = 0 << 2;
const ATTR_NORMAL: u64 = 1 << 2;
const INNER_SHAREABLE: u64 = 3 << 8;
const ACCESS_FLAG: u64 = 1 << 10;
const EXECUTE_NEVER: u64 = 1 << 54;

#[repr(C, align(4096))]
struct Table([u64; ENTRIES]);

/// The level-1 table comes first: its address is the tables' address.
#[repr(C)]
struct Tables {
    l1: Table,
    l2: [Table; L2_TABLES],
}

static mut TABLES: Tables = Tables {
    l1: Table([0; ENTRIES]),
    l2: [const { Table([0; ENTRIES]) }; L2_TABLES],
};

fn block(address: u64, ram: bool) -> u64 {
    let attributes = if ram {
        ATTR_NORMAL | INNER_SHAREABLE
    } else {
        ATTR_DEVICE | EXECUTE_NEVER
    };
    address | attributes | ACCESS_FLAG | VALID
}

/// Whether `[start, start + size)` lies wholly inside RAM, wholly outside, or straddles.
fn classify(ram: &[PhysRange], start: u64, size: u64) -> Option<bool> {
    let end = start + size;
    if ram.iter().any(|r| r.start <= start && end <= r.end) {
        Some(true)
    } else if ram.iter().all(|r| r.end <= start || end <= r.start) {
        Some(false)
    } else {
        None
    }
}

/// Builds the identity map for `ram` (once, on the boot CPU, before [`enable`]).
///
/// Panics if a gigabyte mixes RAM and devices at finer than 2 MiB or more gigabytes mix than
/// there are level-2 tables: board memory maps are not like that.
pub fn build(ram: &[PhysRange]) {
    // SAFETY: called once on the boot CPU with the MMU off and no other CPU running, so nothing
    // else reads or writes the tables while they are built.
    let tables = unsafe { (&raw mut TABLES).as_mut() }.expect("a static is never null");
    let mut next_l2 = 0;
    for (index, entry) in tables.l1.0.iter_mut().enumerate() {
        let base = index as u64 * GIB;
        *entry = match classify(ram, base, GIB) {
            Some(is_ram) => block(base, is_ram),
            None => {
                let l2 = &mut tables.l2[next_l2];
                next_l2 += 1;
                for (sub, l2_entry) in l2.0.iter_mut().enumerate() {
                    let address = base + sub as u64 * MIB2;
                    let is_ram = classify(ram, address, MIB2).unwrap_or_else(|| {
                        panic!("RAM boundary inside the 2 MiB block at {address:#x}")
                    });
                    *l2_entry = block(address, is_ram);
                }
                l2.0.as_ptr() as u64 | TABLE | VALID
            }
        };
    }
    // Secondary CPUs read the tables with their caches still off.
    super::clean_to_poc(
        &raw const TABLES as u64,
        core::mem::size_of::<Tables>() as u64,
    );
}

/// Turns the EL2 MMU and caches on for this CPU, with the map [`build`] made.
pub fn enable(parange: u8) {
    let l1 = (&raw const TABLES) as u64;

    MAIR_EL2.write(
        MAIR_EL2::Attr0_Device::nonGathering_nonReordering_EarlyWriteAck
            + MAIR_EL2::Attr1_Normal_Outer::WriteBack_NonTransient_ReadWriteAlloc
            + MAIR_EL2::Attr1_Normal_Inner::WriteBack_NonTransient_ReadWriteAlloc,
    );
    // TCR_EL2 bits 31 and 23 are RES1 when HCR_EL2.E2H is 0.
    const TCR_EL2_RES1: u64 = (1 << 31) | (1 << 23);
    TCR_EL2.set(TCR_EL2_RES1);
    TCR_EL2.modify(
        TCR_EL2::T0SZ.val(64 - VA_BITS)
            + TCR_EL2::PS.val(u64::from(parange.min(5)))
            + TCR_EL2::TG0::KiB_4
            + TCR_EL2::SH0::Inner
            + TCR_EL2::ORGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL2::IRGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable,
    );
    TTBR0_EL2.set_baddr(l1);
    barrier::dsb(barrier::ISH);
    // SAFETY: invalidates stale EL2 translations before the new map is used; no memory access.
    unsafe { core::arch::asm!("tlbi alle2", options(nostack)) };
    barrier::dsb(barrier::ISH);
    barrier::isb(barrier::SY);
    SCTLR_EL2.modify(SCTLR_EL2::M::Enable + SCTLR_EL2::C::Cacheable + SCTLR_EL2::I::Cacheable);
    barrier::isb(barrier::SY);
}
