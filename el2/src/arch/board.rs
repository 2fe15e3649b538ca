//! What belongs to the whole board: the instance table, the vCPU scheduler, the physical memory
//! and VMIDs instances are built from, and the board console's input. Each physical CPU's loop
//! (`arch::cpu`) takes its work from here.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

use log::info;
use platforms::PsciConduit;
use spin::{Mutex, Once};

use crate::arch::guest::{BuildError, InstanceConfig, Vm};
use crate::arch::{console, gic, psci, sysregs};
use crate::instance::StopReason;
use crate::memory::PhysAllocator;
use crate::sched::{Scheduler, VcpuId};

/// Most instances a board holds at once.
const MAX_INSTANCES: usize = 64;

/// The board: every instance on it and what they are built and run from.
pub struct Board {
    /// The instances by slot; a slot is free again once its instance has ended.
    instances: Mutex<Vec<Option<Arc<Vm>>>>,
    /// Which vCPU runs where, and next.
    pub sched: Mutex<Scheduler>,
    /// Board memory not used by the hypervisor or an instance.
    phys: Mutex<PhysAllocator>,
    /// VMIDs in use (bit n of word n / 64); VMID 0 is never handed out.
    vmids: Mutex<Vec<u64>>,
    /// How many VMIDs the CPU has (256 or 65536).
    vmid_count: usize,
    stage2_config: stage2::Stage2Config,
    /// Physical CPUs that run vCPUs.
    pub cpus: usize,
    /// The board UART's interrupt, if it has one.
    pub console_intid: Option<u32>,
    /// Console input waits in the board UART until the instance's UART has room.
    input_paused: AtomicBool,
    conduit: PsciConduit,
}

static BOARD: Once<Board> = Once::new();

/// The board, once [`init`] has run.
pub fn board() -> &'static Board {
    BOARD
        .get()
        .expect("the board is set up before any CPU runs vCPUs")
}

/// Sets up the board: `phys` is the memory left for instances, `slice` the scheduling time
/// slice in counter ticks, `vmid_count` how many VMIDs the stage-2 configuration allows.
pub fn init(
    phys: PhysAllocator,
    stage2_config: stage2::Stage2Config,
    vmid_count: usize,
    cpus: usize,
    slice: u64,
    console_intid: Option<u32>,
    conduit: PsciConduit,
) -> &'static Board {
    BOARD.call_once(|| Board {
        instances: Mutex::new((0..MAX_INSTANCES).map(|_| None).collect()),
        sched: Mutex::new(Scheduler::new(cpus, slice)),
        phys: Mutex::new(phys),
        vmids: Mutex::new(alloc::vec![1; vmid_count.div_ceil(64)]),
        vmid_count,
        stage2_config,
        cpus,
        console_intid,
        input_paused: AtomicBool::new(false),
        conduit,
    })
}

/// Makes vCPU `vcpu` of the instance in `slot` notice a change: wakes it if it waits, or
/// interrupts the CPU it runs on (the instances' [`crate::instance::Kick`]).
pub fn kick(slot: usize, vcpu: usize) {
    let id = vcpu_id(slot, vcpu);
    let target = {
        let mut sched = board().sched.lock();
        sched
            .wake(id, sysregs::counter())
            .or_else(|| sched.running_on(id))
    };
    if let Some(cpu) = target {
        gic::kick(cpu);
    }
}

/// The scheduler's name for vCPU `vcpu` of the instance in `slot`.
pub fn vcpu_id(slot: usize, vcpu: usize) -> VcpuId {
    VcpuId {
        instance: slot as u32,
        vcpu: vcpu as u16,
    }
}

impl Board {
    /// The instance in `slot`, if there is one.
    pub fn instance(&self, slot: usize) -> Option<Arc<Vm>> {
        self.instances.lock().get(slot).cloned().flatten()
    }

    /// The running instances, by slot.
    pub fn instances(&self) -> Vec<Arc<Vm>> {
        self.instances.lock().iter().flatten().cloned().collect()
    }

    /// Builds and boots an instance; its vCPU 0 starts on whichever CPU picks it.
    pub fn start(&self, config: InstanceConfig) -> Result<usize, BuildError> {
        let name = config.name.clone();
        let (affinity, weight, vcpus) = (config.affinity, config.weight, config.vcpus);
        let mut instances = self.instances.lock();
        if instances
            .iter()
            .flatten()
            .any(|vm| vm.instance.name == name)
        {
            return Err(BuildError::NameTaken);
        }
        let slot = instances
            .iter()
            .position(Option::is_none)
            .ok_or(BuildError::TooManyInstances)?;
        let vmid = self.allocate_vmid().ok_or(BuildError::TooManyInstances)?;
        let built = Vm::build(
            config,
            slot,
            vmid,
            &mut self.phys.lock(),
            self.stage2_config,
            self.cpus,
            kick,
        );
        let vm = match built {
            Ok(vm) => Arc::new(vm),
            Err(error) => {
                self.free_vmid(vmid);
                return Err(error);
            }
        };
        instances[slot] = Some(vm.clone());
        drop(instances);
        {
            let mut sched = self.sched.lock();
            for index in 0..vcpus {
                sched.add(vcpu_id(slot, index), weight, affinity);
            }
        }
        let booted = vm.boot();
        drop(vm);
        if let Err(error) = booted {
            self.release(slot);
            return Err(error);
        }
        Ok(slot)
    }

    /// Every vCPU of the instance in `slot` saw it end: says why, takes it off the board and
    /// gives back its memory and VMID. The board powers off when no instance is left.
    pub fn instance_ended(&self, slot: usize, reason: &StopReason) {
        let Some(vm) = self.instance(slot) else {
            return;
        };
        info!("{}: stopped: {reason}", vm.instance.name);
        drop(vm);
        self.release(slot);
        if self.instances.lock().iter().all(Option::is_none) {
            self.shut_down();
        }
    }

    fn release(&self, slot: usize) {
        let Some(vm) = self.instances.lock()[slot].take() else {
            return;
        };
        {
            let mut sched = self.sched.lock();
            for index in 0..vm.config().vcpus {
                sched.remove(vcpu_id(slot, index));
            }
        }
        let (ram, vmid) = (vm.ram_range(), vm.vmid);
        // CPUs that saw it end may still hold it for a moment; no new holder can appear now
        // that it is out of the table and the scheduler. Its last reference takes its stage-2
        // tables (and their TLB entries) with it.
        let mut vm = vm;
        loop {
            match Arc::try_unwrap(vm) {
                Ok(vm) => break drop(vm),
                Err(shared) => {
                    vm = shared;
                    core::hint::spin_loop();
                }
            }
        }
        self.phys.lock().free(ram);
        self.free_vmid(vmid);
    }

    fn allocate_vmid(&self) -> Option<u16> {
        let mut vmids = self.vmids.lock();
        let vmid = (1..self.vmid_count).find(|n| vmids[n / 64] & (1 << (n % 64)) == 0)?;
        vmids[vmid / 64] |= 1 << (vmid % 64);
        Some(vmid as u16)
    }

    fn free_vmid(&self, vmid: u16) {
        let n = usize::from(vmid);
        self.vmids.lock()[n / 64] &= !(1 << (n % 64));
    }

    /// Board memory free for instances: (all free bytes, the largest instance RAM possible).
    pub fn free_memory(&self) -> (u64, u64) {
        let phys = self.phys.lock();
        (phys.free_bytes(), phys.largest_block(2 << 20))
    }

    /// Bytes typed on the board console go to the first instance (the one with the keyboard),
    /// as many as its UART can take; the rest wait in the board UART, whose interrupt stays off
    /// until the instance has read some.
    pub fn console_input(&self) {
        let Some(vm) = self.instances().into_iter().next() else {
            // Nobody to type to: drain what was typed.
            let mut discard = [0u8; 32];
            while console::read_input(&mut discard) > 0 {}
            return;
        };
        let mut buffer = [0u8; 32];
        let room = vm.instance.console_space().min(buffer.len());
        let count = console::read_input(&mut buffer[..room]);
        vm.instance.console_input(&buffer[..count]);
        if room == 0 || vm.instance.console_space() == 0 {
            self.input_paused.store(true, Ordering::Relaxed);
            console::enable_input(false);
        }
    }

    /// Takes console input again once the instance with the keyboard has room for it.
    pub fn resume_console_input(&self, vm: &Vm) {
        if self.input_paused.load(Ordering::Relaxed) && vm.instance.console_space() > 0 {
            self.input_paused.store(false, Ordering::Relaxed);
            console::enable_input(true);
        }
    }

    /// Powers the board off.
    pub fn shut_down(&self) -> ! {
        info!("all instances stopped: powering off");
        psci::system_off(self.conduit)
    }
}
