//! SMP: per-CPU identity (MPIDR Aff0), secondary start through PSCI CPU_ON over HVC with a per-CPU
//! stack, PSCI CPU_SUSPEND to a power-down state (resuming on that stack), a spinning barrier and
//! an IRQ-safe spinlock. Atomics need the MMU on (normal memory), which every CPU has before its
//! first Rust code.

use core::{
    cell::UnsafeCell,
    ops::{Deref, DerefMut},
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
};

use crate::{hvc_call, irq};

/// Most CPUs the runtime supports (per-CPU arrays are this long).
pub const MAX_CPUS: usize = 8;
/// PSCI CPU_ON, SMC64.
pub const PSCI_CPU_ON: u64 = 0xC400_0003;
/// PSCI CPU_SUSPEND, SMC64.
pub const PSCI_CPU_SUSPEND: u64 = 0xC400_0001;
/// CPU_SUSPEND `power_state` (original format) StateType bit: a power-down state (clear: standby).
pub const POWER_STATE_POWER_DOWN: u64 = 1 << 16;
/// Stack of each secondary CPU.
pub const STACK_SIZE: usize = 32 * 1024;

/// This CPU's index: MPIDR_EL1.Aff0 (vCPU n has Aff0 = n under the hypervisor, as on QEMU virt).
#[inline(always)]
pub fn cpu_id() -> usize {
    let mpidr: u64;
    // SAFETY: reading MPIDR_EL1 has no side effects.
    unsafe { core::arch::asm!("mrs {0}, mpidr_el1", out(reg) mpidr, options(nomem, nostack)) };
    (mpidr & 0xff) as usize
}

/// The MPIDR affinity of CPU `cpu` (Aff0 only), as PSCI CPU_ON and the GIC take it.
pub fn mpidr_of(cpu: usize) -> u64 {
    cpu as u64
}

/// Number of CPUs in the device tree's `/cpus` (1 if it cannot be read).
pub fn cpus_from_dt(dtb: usize) -> usize {
    // SAFETY: the boot protocol passes a valid DTB address in x0; `from_ptr` checks the header.
    match unsafe { fdt::Fdt::from_ptr(dtb as *const u8) } {
        Ok(fdt) => fdt.cpus().count().max(1),
        Err(_) => 1,
    }
}

#[repr(C, align(16))]
struct Stacks([[u8; STACK_SIZE]; MAX_CPUS]);

/// Secondary stacks (in BSS, part of the image footprint). Only their addresses are taken here.
static mut STACKS: Stacks = Stacks([[0; STACK_SIZE]; MAX_CPUS]);

/// The Rust entry of each CPU (`fn(usize) -> !` as usize), read by the CPU once its MMU is on.
static ENTRIES: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];

/// The top of CPU `cpu`'s stack in the runtime's per-CPU stacks (what CPU_ON and CPU_SUSPEND pass
/// as context_id); the stack spans `[stack_top(cpu) - STACK_SIZE, stack_top(cpu))`.
pub fn stack_top(cpu: usize) -> usize {
    assert!(cpu < MAX_CPUS, "stack_top({cpu})");
    // Only the address of the stack array is taken.
    let stacks = core::ptr::addr_of!(STACKS) as usize;
    stacks + (cpu + 1) * STACK_SIZE
}

/// Physical address of the runtime's secondary entry (`__secondary_entry`: MMU off, x0 = the top
/// of the stack), the entry point the runtime gives CPU_ON and CPU_SUSPEND.
pub fn secondary_entry() -> u64 {
    unsafe extern "C" {
        fn __secondary_entry();
    }
    __secondary_entry as *const () as u64 // identity mapped: VA = PA
}

/// Starts CPU `cpu` (MPIDR Aff0 = `cpu`) at `entry(cpu)` on its own stack through PSCI CPU_ON over
/// HVC; returns the PSCI error code (as i64) if the call fails.
pub fn start_secondary(cpu: usize, entry: fn(usize) -> !) -> Result<(), i64> {
    assert!(cpu < MAX_CPUS && cpu != cpu_id(), "start_secondary({cpu})");
    ENTRIES[cpu].store(entry as usize, Ordering::SeqCst);
    match hvc_call(
        PSCI_CPU_ON,
        mpidr_of(cpu),
        secondary_entry(),
        stack_top(cpu) as u64,
    ) as i64
    {
        0 => Ok(()),
        error => Err(error),
    }
}

/// Suspends this CPU to a power-down state through PSCI CPU_SUSPEND over HVC. On wake-up the CPU
/// restarts like a secondary (fresh EL1 state, MMU off, then the runtime's per-CPU setup) on its
/// slot of the per-CPU stacks and calls `resume(cpu)`; whatever was on the current stack is gone.
/// Returns only if the call fails (or was downgraded to a standby), with the PSCI status as i64.
///
/// Any CPU may call it: the boot CPU runs on its own boot stack (its slot of the per-CPU stacks is
/// otherwise unused); a secondary resumes from the top of the stack it was running on.
pub fn suspend_power_down(resume: fn(usize) -> !) -> i64 {
    let cpu = cpu_id();
    assert!(cpu < MAX_CPUS, "suspend_power_down on CPU {cpu}");
    ENTRIES[cpu].store(resume as usize, Ordering::SeqCst);
    hvc_call(
        PSCI_CPU_SUSPEND,
        POWER_STATE_POWER_DOWN,
        secondary_entry(),
        stack_top(cpu) as u64,
    ) as i64
}

/// First Rust code of a secondary CPU, called from the boot assembly with the MMU on.
#[unsafe(no_mangle)]
extern "C" fn test_guests_secondary_start() -> ! {
    let cpu = cpu_id();
    let entry = ENTRIES.get(cpu).map_or(0, |e| e.load(Ordering::SeqCst));
    if entry == 0 {
        crate::println!("FAIL: CPU {cpu} started with no entry");
        crate::system_off();
    }
    // SAFETY: `start_secondary` and `suspend_power_down` store only `fn(usize) -> !` values.
    let entry: fn(usize) -> ! = unsafe { core::mem::transmute::<usize, fn(usize) -> !>(entry) };
    entry(cpu)
}

/// A reusable spinning barrier for `n` CPUs.
pub struct Barrier {
    n: usize,
    arrived: AtomicUsize,
    generation: AtomicUsize,
}

impl Barrier {
    /// A barrier that releases every `n` arrivals.
    pub const fn new(n: usize) -> Self {
        Self {
            n,
            arrived: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
        }
    }

    /// Waits until `n` CPUs have called `wait` (IRQs are taken meanwhile if unmasked).
    pub fn wait(&self) {
        let generation = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.n {
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::Release);
        } else {
            while self.generation.load(Ordering::Acquire) == generation {
                core::hint::spin_loop();
            }
        }
    }
}

/// A spinlock that masks IRQs on the CPU holding it (so handlers on that CPU cannot deadlock).
pub struct IrqLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the lock gives one CPU at a time access to the value.
unsafe impl<T: Send> Sync for IrqLock<T> {}

impl<T> IrqLock<T> {
    /// An unlocked lock holding `value`.
    pub const fn new(value: T) -> Self {
        Self {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// Masks IRQs and spins until the lock is ours.
    pub fn lock(&self) -> IrqLockGuard<'_, T> {
        let daif = irq::mask();
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
        IrqLockGuard { lock: self, daif }
    }
}

/// Access to an [`IrqLock`]'s value; unlocking restores the CPU's IRQ mask.
pub struct IrqLockGuard<'a, T> {
    lock: &'a IrqLock<T>,
    daif: u64,
}

impl<T> Deref for IrqLockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for IrqLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard holds the lock.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for IrqLockGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
        irq::restore(self.daif);
    }
}
