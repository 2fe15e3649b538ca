//! What belongs to the whole board: the instance table, the vCPU scheduler, the physical memory
//! and VMIDs instances are built from, and the board console's input. Each physical CPU's loop
//! (`arch::cpu`) takes its work from here.

use alloc::sync::Arc;
use alloc::vec::Vec;
use log::{error, info};
use platforms::BoardPower;
use spin::{Mutex, Once};

use crate::arch::guest::{BuildError, InstanceConfig, Vm};
use crate::arch::{gic, management, power, sysregs};
use crate::exit::ExitReason;
use crate::instance::StopReason;
use crate::memory::PhysAllocator;
use crate::sched::{Scheduler, VcpuId};
use crate::vmid::VmidAllocator;

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
    /// VMIDs in use.
    vmids: Mutex<VmidAllocator>,
    stage2_config: stage2::Stage2Config,
    /// Physical CPUs that run vCPUs.
    pub cpus: usize,
    /// The board UART's interrupt, if it has one.
    pub console_intid: Option<u32>,
    /// The JSON port's interrupt, if the board has a second UART.
    pub json_intid: Option<u32>,
    /// The board link NIC's interrupt, if it has one.
    pub nic_intid: Option<u32>,
    /// Every instance the board can start (`start NAME`), by name.
    catalog: Mutex<Vec<InstanceConfig>>,
    /// Total board memory for instances, as at boot.
    total_memory: u64,
    power: BoardPower,
}

/// The board's interrupts and firmware conduit, for [`init`].
pub struct BoardDevices {
    /// The board console UART's interrupt.
    pub console_intid: Option<u32>,
    /// The JSON port UART's interrupt.
    pub json_intid: Option<u32>,
    /// The board link NIC's interrupt.
    pub nic_intid: Option<u32>,
    /// How to reach the board's PSCI firmware.
    pub power: BoardPower,
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
    devices: BoardDevices,
) -> &'static Board {
    BOARD.call_once(|| Board {
        instances: Mutex::new((0..MAX_INSTANCES).map(|_| None).collect()),
        sched: Mutex::new(Scheduler::new(cpus, slice)),
        total_memory: phys.free_bytes(),
        phys: Mutex::new(phys),
        vmids: Mutex::new(VmidAllocator::new(vmid_count)),
        stage2_config,
        cpus,
        console_intid: devices.console_intid,
        json_intid: devices.json_intid,
        nic_intid: devices.nic_intid,
        catalog: Mutex::new(Vec::new()),
        power: devices.power,
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
        let (slot, vm) = self.build(config)?;
        self.launch(slot);
        let booted = vm.boot();
        drop(vm);
        if let Err(error) = booted {
            self.release(slot);
            return Err(error);
        }
        Ok(slot)
    }

    /// Builds an instance in a free slot, with its memory, stage 2 and VMID, but runs none of
    /// its vCPUs yet ([`Board::launch`]; [`Board::discard`] takes it back).
    pub fn build(&self, config: InstanceConfig) -> Result<(usize, Arc<Vm>), BuildError> {
        let name = config.name.clone();
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
        let vmid = self
            .vmids
            .lock()
            .allocate()
            .ok_or(BuildError::TooManyInstances)?;
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
                self.vmids.lock().free(vmid);
                return Err(error);
            }
        };
        instances[slot] = Some(vm.clone());
        Ok((slot, vm))
    }

    /// Hands the vCPUs of the instance in `slot` to the scheduler.
    pub fn launch(&self, slot: usize) {
        let Some(vm) = self.instance(slot) else {
            return;
        };
        let config = vm.config();
        {
            let mut sched = self.sched.lock();
            for index in 0..config.vcpus {
                sched.add(vcpu_id(slot, index), config.weight, config.affinity);
            }
        }
        for index in 0..config.vcpus {
            kick(slot, index);
        }
    }

    /// Takes back an instance that [`Board::build`] made and that never ran.
    pub fn discard(&self, slot: usize) {
        self.release(slot);
    }

    /// The instance called `name` in the board's bundle, if any.
    pub fn catalog_entry(&self, name: &str) -> Option<InstanceConfig> {
        self.catalog
            .lock()
            .iter()
            .find(|config| config.name == name)
            .cloned()
    }

    /// Remembers `config` for `start NAME`.
    pub fn add_to_catalog(&self, config: InstanceConfig) {
        self.catalog.lock().push(config);
    }

    /// Starts the instance of the bundle called `name`.
    pub fn start_by_name(&self, name: &str) -> Result<(), BuildError> {
        let config = self.catalog_entry(name).ok_or(BuildError::NotInBundle)?;
        self.start(config).map(drop)
    }

    /// Pauses (or resumes) every vCPU of `vm`.
    pub fn pause(&self, vm: &Vm, paused: bool) {
        vm.set_paused(paused);
        for index in 0..vm.instance.vcpu_count() {
            kick(vm.instance.slot, index);
        }
    }

    /// Every vCPU of the instance in `slot` saw it end: says why, takes it off the board and
    /// gives back its memory and VMID, and starts it again if the operator asked for a restart.
    /// The board powers off once the last instance has ended by itself (a guest's SYSTEM_OFF
    /// or a fault; not when the operator destroyed it).
    pub fn instance_ended(&self, slot: usize, reason: &StopReason) {
        let Some(vm) = self.instance(slot) else {
            return;
        };
        let name = vm.instance.name.clone();
        let restart = vm.restart_requested().then(|| vm.config().clone());
        let run_time = self
            .sched
            .lock()
            .instance_run_time(slot as u32, sysregs::counter());
        let cpu_ticks = vm.total_cpu_time(run_time);
        let exits = ExitReason::histogram(&vm.instance.exit_counts());
        drop(vm);
        let cpu_ms = sysregs::ticks_to_ms(cpu_ticks);
        self.release(slot);
        // Said once its memory is free again, so that what `free` answers next includes it.
        info!("{name}: stopped: {reason} (it ran {cpu_ms} ms of CPU time)");
        info!("{name}: exits: {exits}");
        if let Some(config) = restart {
            match self.start(config) {
                Ok(_) => info!("{name}: restarted"),
                Err(why) => error!("{name}: cannot restart: {why}"),
            }
            return;
        }
        let empty = self.instances.lock().iter().all(Option::is_none);
        if empty && !matches!(reason, StopReason::Destroyed | StopReason::Moved(_)) {
            self.shut_down("all instances stopped");
        }
    }

    fn release(&self, slot: usize) {
        let (vm, position) = {
            let mut instances = self.instances.lock();
            let position = instances[..slot].iter().flatten().count();
            (instances[slot].take(), position)
        };
        let Some(vm) = vm else {
            return;
        };
        management::instance_removed(position);
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
        self.vmids.lock().free(vmid);
    }

    /// Board memory for instances: (free bytes, the largest instance RAM possible, all bytes).
    pub fn free_memory(&self) -> (u64, u64, u64) {
        let phys = self.phys.lock();
        (
            phys.free_bytes(),
            phys.largest_block(2 << 20),
            self.total_memory,
        )
    }

    /// Powers the board off, saying `why`.
    pub fn shut_down(&self, why: &str) -> ! {
        info!("{why}: powering off");
        power::off(self.power)
    }
}
