//! Each physical CPU's loop: ask the scheduler for a vCPU, switch to it (registers, EL1 system
//! registers, FP/SIMD, timers, the virtual CPU interface, stage 2 and VMID), run it until its
//! slice ends, it waits or it stops, switch away, and tell the scheduler. The state here belongs
//! to this CPU alone and lives on its stack: no lock guards it.

use alloc::vec::Vec;

use crate::arch::board::{Board, board, kick};
use crate::arch::guest::Vm;
use crate::arch::{gic, management, sysregs, transfer, vectors};
use crate::exit::{ExitKind, TrapSyndrome};
use crate::instance::{Next, TimerRaise, Vcpu, VcpuStatus};
use crate::sched::VcpuId;

/// The list registers as this CPU last filled them, and the vGIC epoch they reflect.
#[derive(Default)]
struct LoadedInterrupts {
    lrs: [u64; gic::LIST_REGISTERS],
    epoch: u64,
    /// False until filled for the vCPU now loaded.
    valid: bool,
    /// The guest ran since `lrs` were last filled or compared with the live ones: those may
    /// differ now (the guest acknowledges and completes interrupts in them).
    guest_ran: bool,
    /// The last fill left interrupts over (more than fit in the list registers).
    overflow: bool,
}

/// A stage-2 abort that [`Vm::ram_fault`] resolves: the guest retries the access. Out of the
/// run loop, which every exit goes through, to keep that loop small.
#[inline(never)]
fn retry_ram_abort(vm: &Vm, syndrome: &TrapSyndrome) -> bool {
    let ipa = if syndrome.ipa_needs_translation() {
        sysregs::guest_ipa_of(syndrome.far).unwrap_or(syndrome.fault_ipa())
    } else {
        syndrome.fault_ipa()
    };
    vm.ram_fault(ipa, syndrome.is_instruction_abort())
}

impl LoadedInterrupts {
    /// True if `lrs` are as filled and the vGIC is still at `epoch`. Compared register by
    /// register: array equality would call `memcmp` on this path.
    fn is_current(&self, lrs: &[u64; gic::LIST_REGISTERS], epoch: u64) -> bool {
        self.valid && self.epoch == epoch && self.lrs.iter().zip(lrs).all(|(a, b)| a == b)
    }

    /// The live list registers: read from the GIC unless they were filled (or compared) for
    /// the vCPU loaded now and the guest has not run since (a read costs four system
    /// registers, or four MMIO reads and conversions on a GICv2).
    fn live(&self) -> [u64; gic::LIST_REGISTERS] {
        if self.valid && !self.guest_ran {
            self.lrs
        } else {
            gic::read_lrs()
        }
    }
}

/// Why a vCPU left this CPU.
enum SliceEnd {
    /// Its slice is over or someone more deserving waits: it stays runnable.
    Preempted,
    /// It waits for an interrupt (WFI, CPU_SUSPEND) or for the others to leave (reset); it
    /// must be woken by `wake_at` (a timer deadline) if nothing wakes it before.
    Waiting { wake_at: Option<u64> },
    /// It is off (CPU_OFF, or its instance stopped or is being reset).
    Off,
}

/// This CPU's own state.
struct PerCpu {
    index: usize,
    loaded: LoadedInterrupts,
    /// When vCPUs that began waiting here must be woken, if nothing wakes them before.
    sleepers: Vec<(u64, VcpuId)>,
    /// A kick or the scheduling timer arrived: look at the scheduler again.
    resched: bool,
    /// A timer of the vCPU loaded here raised an interrupt it can take (so a vCPU waiting in
    /// place need not ask the vGIC).
    raised: bool,
}

/// Runs vCPUs on physical CPU `index` for as long as the board runs.
pub fn run(index: usize) -> ! {
    let mut this = PerCpu {
        index,
        loaded: LoadedInterrupts::default(),
        sleepers: Vec::new(),
        resched: false,
        raised: false,
    };
    let board = board();
    loop {
        this.take_interrupts(None);
        this.wake_sleepers();
        transfer::work();
        let picked = board.sched.lock().pick(index, sysregs::counter());
        let Some((id, slice_end)) = picked else {
            // Idle: back in time for the board link's next deadline, if it has one.
            let link_deadline = transfer::next_deadline_ms()
                .map(|ms| sysregs::counter() + sysregs::ms_to_ticks(ms));
            this.arm_timer(link_deadline);
            aarch64_cpu::asm::wfi();
            continue;
        };
        let Some(vm) = board.instance(id.instance as usize) else {
            board.sched.lock().remove(id);
            continue;
        };
        let end = this.run_vcpu(board, &vm, usize::from(id.vcpu), slice_end);
        let now = sysregs::counter();
        match end {
            SliceEnd::Preempted => {
                if let Some(cpu) = board.sched.lock().put(index, id, now) {
                    gic::kick(cpu);
                }
            }
            SliceEnd::Waiting { wake_at } => {
                board.sched.lock().block(id, now);
                if let Some(deadline) = wake_at {
                    this.sleepers.push((deadline, id));
                }
                // What woke it may have come between its decision to wait and the block.
                if vm.should_wake(usize::from(id.vcpu)) || wake_at.is_some_and(|at| at <= now) {
                    kick(id.instance as usize, usize::from(id.vcpu));
                }
            }
            SliceEnd::Off => {
                board.sched.lock().power_off(id, now);
                if let VcpuStatus::Ended(reason) = vm.instance.poll(usize::from(id.vcpu))
                    && vm.vcpu_ended(usize::from(id.vcpu))
                {
                    drop(vm);
                    board.instance_ended(id.instance as usize, &reason);
                }
            }
        }
    }
}

impl PerCpu {
    /// Runs vCPU `index` of `vm` until `slice_end` (or until it waits or stops).
    fn run_vcpu(&mut self, board: &Board, vm: &Vm, index: usize, mut slice_end: u64) -> SliceEnd {
        let mut vcpu = vm.vcpus[index].lock();
        if vm.try_reset(index) == Some(false) {
            return SliceEnd::Waiting { wake_at: None };
        }
        match vm.instance.poll(index) {
            VcpuStatus::Ended(_) | VcpuStatus::Off => {
                vm.instance.left(index);
                return SliceEnd::Off;
            }
            VcpuStatus::Start { entry, context_id } => vcpu.power_on(entry, context_id),
            VcpuStatus::Continue => {}
        }
        if vm.is_paused() {
            return SliceEnd::Waiting { wake_at: None };
        }
        if let Some((entry, context_id)) = vcpu.powered_down {
            // Its timer fires as soon as it is loaded if its deadline has passed.
            let wake_at = vcpu.wake_deadline(vm.instance.counter_offset(), sysregs::counter());
            let timer_due = wake_at.is_some_and(|at| at <= sysregs::counter());
            if !timer_due && !vm.instance.has_pending(index) {
                return SliceEnd::Waiting { wake_at };
            }
            vcpu.resume_from_power_down(entry, context_id);
            vcpu.powered_down = None;
        }
        self.load(vm, &vcpu);
        self.arm_timer(Some(slice_end));
        let offset = vm.instance.counter_offset();
        // The emulated physical timer's deadline in the instance's time, as last armed: only a
        // change costs a conversion to board time and a timer write.
        let mut armed = vcpu.phys_timer.deadline();
        sysregs::arm_deadline_timer(vcpu.phys_deadline(offset, sysregs::counter()));
        let mut fast = vm.instance.fast_vcpu(&vcpu);
        let end = loop {
            self.load_interrupts(vm, index);
            fast.phys_timer = vcpu.phys_timer;
            let kind = vectors::run(&mut vcpu.regs, &fast);
            self.loaded.guest_ran = true;
            self.sync_interrupts(vm, index);
            if kind == ExitKind::Irq {
                self.take_interrupts(Some((vm, index)));
            }
            management::resume_console_input(vm);
            let syndrome = sysregs::trap_syndrome();
            // A write that dirty tracking caught (logged, writable again), or an access that
            // raced with a block split: the guest retries.
            if kind == ExitKind::Synchronous
                && syndrome.is_abort()
                && retry_ram_abort(vm, &syndrome)
            {
                continue;
            }
            let next = vm.instance.handle_exit(
                &mut vcpu,
                kind,
                &syndrome,
                &mut sysregs::LiveEl1,
                sysregs::counter(),
            );
            if vcpu.phys_timer.deadline() != armed {
                armed = vcpu.phys_timer.deadline();
                sysregs::arm_deadline_timer(vcpu.phys_deadline(offset, sysregs::counter()));
            }
            match next {
                Next::Resume => {}
                Next::Wait => {
                    if !self.wait_in_place(board, vm, index, &mut slice_end) {
                        break SliceEnd::Waiting { wake_at: None };
                    }
                }
                Next::PowerDown { entry, context_id } => {
                    vcpu.powered_down = Some((entry, context_id));
                    break SliceEnd::Waiting { wake_at: None };
                }
                Next::Leave => {
                    vm.instance.left(index);
                    break SliceEnd::Off;
                }
                Next::Reset => {
                    vm.begin_reset(index);
                    break SliceEnd::Waiting { wake_at: None };
                }
            }
            if core::mem::take(&mut self.resched) {
                self.wake_sleepers();
                let now = sysregs::counter();
                if vm.is_paused() {
                    break SliceEnd::Waiting { wake_at: None };
                }
                if now >= slice_end || board.sched.lock().should_preempt(self.index, now) {
                    break SliceEnd::Preempted;
                }
                self.arm_timer(Some(slice_end));
            }
        };
        self.save(vm, &mut vcpu);
        match end {
            SliceEnd::Waiting { wake_at: None } => {
                vm.show_prompt(index);
                SliceEnd::Waiting {
                    wake_at: vcpu.wake_deadline(vm.instance.counter_offset(), sysregs::counter()),
                }
            }
            other => other,
        }
    }

    /// Waits with vCPU `index` of `vm` still loaded for as long as no vCPU waits in any queue:
    /// its own interrupts then reach it for the cost of a WFI rather than two switches. True when
    /// it has an interrupt to take (at once, if one is pending already); false when it should
    /// leave the CPU (a vCPU waits, which this CPU may take, or it was paused or turned off).
    /// The scheduling timer keeps ticking each slice so that a vCPU queued here meanwhile is
    /// seen. The time waited is not its CPU time.
    fn wait_in_place(&mut self, board: &Board, vm: &Vm, index: usize, slice_end: &mut u64) -> bool {
        // What it waits for may be there already: the refill that the next entry needs says,
        // without the vGIC's lock while its list registers are current. Filled before the wait
        // rather than after the wake, they also let a timer's interrupt go straight into a
        // free one (`raise_timer`), with no refill between the interrupt and the guest.
        let on = vm.instance.is_on(index) && !vm.is_paused();
        if on && self.interrupts_to_take(vm, index) {
            return true;
        }
        vm.show_prompt(index);
        let start = sysregs::counter();
        self.raised = false;
        let woke = loop {
            // Any vCPU queued anywhere: leave, so that this CPU picks or steals it.
            let (queued, slice) = {
                let sched = board.sched.lock();
                let queued = (0..sched.cpus()).any(|cpu| sched.queue_len(cpu) > 0);
                (queued, sched.slice())
            };
            if queued || vm.is_paused() || !vm.instance.is_on(index) {
                break false;
            }
            aarch64_cpu::asm::wfi();
            self.take_interrupts(Some((vm, index)));
            if core::mem::take(&mut self.raised) || self.interrupts_to_take(vm, index) {
                break true;
            }
            // Waiting time is idle time: the board link may use it.
            if transfer::is_pending() {
                transfer::work();
            }
            if core::mem::take(&mut self.resched) {
                self.wake_sleepers();
                let now = sysregs::counter();
                if now >= *slice_end {
                    *slice_end = now + slice;
                }
                self.arm_timer(Some(*slice_end));
            }
        };
        vm.waited_in_place(index, sysregs::counter() - start);
        woke
    }

    /// Puts `vcpu` of `vm` on this CPU.
    fn load(&mut self, vm: &Vm, vcpu: &Vcpu) {
        sysregs::load_stage2_and_identity(vm.vttbr(), vcpu.mpidr);
        if vm.switched_vcpu_on(self.index, vcpu.index) {
            sysregs::flush_guest_tlb_local();
        }
        sysregs::load_el1(&vcpu.el1);
        sysregs::restore_fp(&vcpu.fp);
        sysregs::load_virtual_timer(&vcpu.virtual_timer, vm.instance.counter_offset());
        gic::load_cpu_interface(vcpu.vmcr, vcpu.active_priorities);
        self.loaded.valid = false;
        vm.instance.vcpu_loaded(vcpu.index, Some(self.index));
    }

    /// Takes `vcpu` of `vm` off this CPU, leaving nothing of it running.
    fn save(&mut self, vm: &Vm, vcpu: &mut Vcpu) {
        vm.instance.vcpu_loaded(vcpu.index, None);
        vcpu.el1 = sysregs::save_el1();
        sysregs::save_fp(&mut vcpu.fp);
        vcpu.virtual_timer = sysregs::save_virtual_timer();
        // Always folded, changed or not: the vGIC must not take the empty list registers the
        // vCPU finds on its next CPU for what the guest left in these.
        vm.instance.sync_interrupts(vcpu.index, &gic::read_lrs());
        (vcpu.vmcr, vcpu.active_priorities) = gic::save_cpu_interface();
        self.loaded.valid = false;
        sysregs::arm_deadline_timer(None);
        // Deactivated here, the timer's interrupt fires again wherever the vCPU runs next if
        // its condition still holds.
        gic::deactivate(gic::Interrupt::ppi(gic::VTIMER_INTID));
    }

    /// Programs the scheduling timer for `slice_end` or the earliest sleeper, whichever is first.
    fn arm_timer(&self, slice_end: Option<u64>) {
        let sleeper = self.sleepers.iter().map(|(deadline, _)| *deadline).min();
        let deadline = match (slice_end, sleeper) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        sysregs::arm_scheduling_timer(deadline);
    }

    /// Wakes the vCPUs whose wake-up deadline has passed.
    fn wake_sleepers(&mut self) {
        let now = sysregs::counter();
        let mut index = 0;
        while index < self.sleepers.len() {
            if self.sleepers[index].0 <= now {
                let (_, id) = self.sleepers.swap_remove(index);
                kick(id.instance as usize, usize::from(id.vcpu));
            } else {
                index += 1;
            }
        }
    }

    /// Acknowledges and handles every pending physical interrupt; `current` is the vCPU loaded
    /// on this CPU, if any.
    fn take_interrupts(&mut self, current: Option<(&Vm, usize)>) {
        while let Some(interrupt) = gic::acknowledge() {
            gic::priority_drop(interrupt);
            match (interrupt.intid(), current) {
                // Left active: the guest's deactivation of the HW-mapped virtual interrupt
                // deactivates it.
                (gic::VTIMER_INTID, Some((vm, vcpu))) => self.raise_timer(vm, |lrs| {
                    vm.instance
                        .timer_fired(vcpu, gic::VTIMER_INTID, gic::VTIMER_INTID, lrs)
                }),
                // The maintenance interrupt stays asserted until the list registers change:
                // fold them into the vGIC and refill them now.
                (gic::MAINTENANCE_INTID, Some((vm, vcpu))) => {
                    self.sync_interrupts(vm, vcpu);
                    self.load_interrupts(vm, vcpu);
                    gic::deactivate(interrupt);
                }
                // An interrupt became pending for a vCPU loaded here: the list registers are
                // refilled before it enters the guest again (its epoch moved), and a vCPU
                // waiting in place sees it pending. Nothing for the scheduler.
                (gic::INTERRUPT_SGI, _) => {
                    // Pairs with the sender's barrier before the SGI: what this CPU reads of
                    // the vGIC next (its epoch) is read after the acknowledgement.
                    aarch64_cpu::asm::barrier::dmb(aarch64_cpu::asm::barrier::ISHLD);
                    gic::deactivate(interrupt)
                }
                // The emulated physical timer's deadline passed.
                (gic::DEADLINE_TIMER_INTID, _) => {
                    sysregs::mask_deadline_timer();
                    if let Some((vm, vcpu)) = current {
                        self.raise_timer(vm, |lrs| vm.instance.phys_timer_fired(vcpu, lrs));
                    }
                    gic::deactivate(interrupt);
                }
                (gic::SCHEDULING_TIMER_INTID, _) => {
                    sysregs::mask_scheduling_timer();
                    self.resched = true;
                    gic::deactivate(interrupt);
                }
                (intid, _) if Some(intid) == board().console_intid => {
                    management::console_input();
                    gic::deactivate(interrupt);
                }
                (intid, _) if Some(intid) == board().json_intid => {
                    management::json_input();
                    gic::deactivate(interrupt);
                }
                // The board link: frames arrived or went out. Moved on at once by an idle CPU;
                // one running a guest leaves it to its next return to the scheduler.
                (intid, current) if Some(intid) == board().nic_intid => {
                    transfer::interrupt();
                    gic::deactivate(interrupt);
                    if current.is_none() {
                        transfer::work();
                    }
                }
                // A kick: look at the scheduler again.
                _ => {
                    self.resched = true;
                    gic::deactivate(interrupt);
                }
            }
        }
    }

    /// Raises a timer interrupt of the vCPU of `vm` loaded here by `fire`, which is given the
    /// live list registers if they are exactly as this CPU last filled them and the vGIC has
    /// not changed since (the interrupt may then go straight into a free one,
    /// [`TimerRaise::InLr`]: that one register is written, the others stay as filled and no
    /// refill follows).
    fn raise_timer(&mut self, vm: &Vm, fire: impl FnOnce(Option<&[u64]>) -> TimerRaise) {
        let lrs = self.loaded.live();
        let as_filled = self.loaded.is_current(&lrs, vm.instance.interrupt_epoch());
        match fire(as_filled.then_some(&lrs[..])) {
            TimerRaise::Nothing => {}
            TimerRaise::Pending => self.raised = true,
            TimerRaise::InLr { slot, value } => {
                gic::write_lr(slot, value);
                self.loaded.lrs[slot] = value;
                self.raised = true;
            }
        }
    }

    /// Fills the list registers with the vCPU's most urgent interrupts, unless they are still
    /// exactly as last filled and the vGIC has not changed since. The vGIC folds in the current
    /// contents first if it has not seen them since its last fill (after a refill on a
    /// maintenance interrupt, say), so they must be the live values, never blanks.
    fn load_interrupts(&mut self, vm: &Vm, vcpu: usize) {
        let mut lrs = self.loaded.live();
        let epoch = vm.instance.interrupt_epoch();
        if self.loaded.is_current(&lrs, epoch) {
            self.loaded.guest_ran = false;
            return;
        }
        let refill = vm.instance.flush_interrupts(vcpu, &mut lrs);
        gic::write_lrs(&lrs, refill);
        self.loaded = LoadedInterrupts {
            lrs,
            epoch,
            valid: true,
            guest_ran: false,
            overflow: refill,
        };
    }

    /// For a vCPU waiting in place: fills its list registers as before an entry (so a wake
    /// looks at the vGIC once, not once to ask and again to fill) and says whether it has an
    /// interrupt to take: one pending in them, or (rarely: more candidates than fit, which
    /// may all be active) one the vGIC says is pending.
    fn interrupts_to_take(&mut self, vm: &Vm, vcpu: usize) -> bool {
        self.load_interrupts(vm, vcpu);
        self.loaded
            .lrs
            .iter()
            .any(|&lr| ::gic::lr::state(lr).pending())
            || (self.loaded.overflow && vm.instance.has_pending(vcpu))
    }

    /// Folds the list registers into the vGIC after an exit, if the guest changed them.
    fn sync_interrupts(&mut self, vm: &Vm, vcpu: usize) {
        let lrs = gic::read_lrs();
        if self.loaded.is_current(&lrs, self.loaded.epoch) {
            // As filled: the next entry need not read them again.
            self.loaded.guest_ran = false;
        } else {
            vm.instance.sync_interrupts(vcpu, &lrs);
        }
    }
}
