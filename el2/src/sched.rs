//! The vCPU scheduler's policy: which vCPU each physical CPU runs next, and for how long. The
//! hardware side (the EL2 timer, kicks between CPUs, the world switch) asks it and tells it what
//! happened; it holds one lock around the [`Scheduler`] and passes the counter's value as `now`.
//! All times are counter ticks.
//!
//! # Policy
//!
//! Weighted fair queueing by virtual runtime, as in Linux's CFS:
//!
//! * Every physical CPU has its own run queue of runnable vCPUs. A vCPU is in at most one queue
//!   or running on at most one CPU; a vCPU blocked in WFI (or off) is in none until woken.
//! * Each vCPU has a virtual runtime (`vruntime`). Running for `t` ticks adds
//!   `t * DEFAULT_WEIGHT * active / weight`, where `weight` is its *instance's* weight and
//!   `active` is the number of that instance's vCPUs that are runnable or running. An
//!   instance's weight is thus split among the vCPUs that want the CPU, so fairness is between
//!   *instances*: an instance with four busy vCPUs gets no more than one with two, and an idle
//!   vCPU neither costs nor earns its siblings anything. (Giving every vCPU the full instance
//!   weight would let a guest buy CPU time by declaring more vCPUs.) `active` is read when the
//!   time is charged, which approximates the split when siblings come and go.
//! * A CPU runs the vCPU with the least `vruntime` in its queue (ties: the one queued first)
//!   for one slice, then puts it back.
//! * Virtual time is one clock for all CPUs, so a CPU also looks at the other queues: it takes
//!   (steals) a waiting vCPU its affinity allows when that vCPU lags its own best by more than a
//!   slice, and an idle CPU takes the best vCPU of the busiest queue it may take from. This is
//!   the load balancing: a queue with more vCPUs advances their `vruntime` more slowly, so its
//!   vCPUs fall behind and are pulled to CPUs with less to do; and it keeps instances fair
//!   however their vCPUs are placed (two busy vCPUs of a weight-2 instance queued on one CPU and
//!   two of a weight-1 instance on the other still get 2:1; three busy vCPUs on two CPUs get
//!   two thirds of a CPU each). The price is migrations where fairness needs them (in those two
//!   cases about one pick in six or nine); a balanced load does not migrate.
//! * A vCPU that wakes gets `max(vruntime, floor - slice)`, where `floor` is the least
//!   `vruntime` queued or running on the CPU it joins, never decreasing (for an idle CPU, whose
//!   own floor is stale, at least the least floor of the busy CPUs): a long sleep earns at most
//!   one slice of credit. A vCPU that moves to another CPU keeps at most two slices of credit
//!   against that CPU's floor, so a vCPU from a crowded queue (its CPU pinned by other vCPUs'
//!   affinities) cannot monopolise a quieter CPU.
//! * A woken vCPU goes to its last CPU if that is idle, else to an idle CPU its affinity allows,
//!   else to its last CPU if that is at most one vCPU busier than the least loaded allowed CPU,
//!   else to the least loaded one (lowest number first). [`Scheduler::wake`] says which CPU to
//!   kick: the idle one, or the one whose running vCPU it preempts, because the woken vCPU's
//!   `vruntime` is less than the running one's (its current run included) by more than a
//!   quarter slice. So a vCPU that slept for a while runs at once; others wait at most for the
//!   end of the running vCPU's slice, unless vCPUs further behind wait on the same CPU.
//! * "A slice" of virtual time above is what `slice` ticks of running add to a vCPU alone in
//!   an instance of [`DEFAULT_WEIGHT`].
//!
//! Everything is integer arithmetic and ordered by CPU number and queueing order: the same calls
//! give the same decisions. `vruntime` is a `u128`, which the charges cannot overflow.
//!
//! # Protocol for the hardware side
//!
//! * [`Scheduler::pick`] when a CPU needs work; run the vCPU until the returned deadline (program
//!   the EL2 timer for it), an exit that needs the scheduler, or a kick.
//! * At the deadline, or on a kick, ask [`Scheduler::should_preempt`]; if so, call
//!   [`Scheduler::put`] and [`Scheduler::pick`]. (At the deadline simply calling `put` and `pick`
//!   is also right: `pick` gives the same vCPU a new slice when it should go on.)
//! * On WFI with nothing pending, [`Scheduler::block`] then `pick`; when its interrupt or timer
//!   deadline arrives, [`Scheduler::wake`] and kick the CPU it names.
//! * CPUs are numbered `0..cpus`, at most [`MAX_CPUS`] (affinities are `u64` bitmasks).

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

/// The weight of an instance that was given no other: the unit of [`Scheduler::set_weight`].
pub const DEFAULT_WEIGHT: u32 = 1024;

/// Most physical CPUs a scheduler handles (affinities are 64-bit masks).
pub const MAX_CPUS: usize = 64;

/// Names one vCPU: its instance (the board slot number) and its index within the instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VcpuId {
    /// The instance's board slot.
    pub instance: u32,
    /// The vCPU's index within the instance.
    pub vcpu: u16,
}

/// What a vCPU is doing, as far as the scheduler knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcpuState {
    /// Powered off (or never started): runs only once woken.
    Off,
    /// Waiting for an interrupt or its timer (WFI): off the queues until woken.
    Blocked,
    /// Waiting in a CPU's run queue.
    Runnable,
    /// Running on a CPU.
    Running,
}

/// What the management shell shows about one vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuStats {
    /// What it is doing.
    pub state: VcpuState,
    /// Ticks it has run in total, including the current run.
    pub run_time: u64,
    /// The CPU it runs on now.
    pub running_on: Option<usize>,
    /// The CPU whose queue it waits in.
    pub queued_on: Option<usize>,
    /// The CPU it last ran on.
    pub last_cpu: Option<usize>,
    /// How many times it started running on a CPU other than the one it ran on before.
    pub migrations: u64,
    /// Its virtual runtime (see the module documentation), without the current run.
    pub vruntime: u128,
    /// The CPUs it may run on (bit n: CPU n).
    pub affinity: u64,
}

/// Where a vCPU is; the single source of truth that the queues and the CPUs' current vCPUs
/// mirror.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Off,
    Blocked,
    Queued(usize),
    Running(usize),
}

impl Place {
    /// Whether the vCPU wants a CPU (counts in its instance's `active`).
    fn is_active(self) -> bool {
        matches!(self, Place::Queued(_) | Place::Running(_))
    }
}

/// The scheduler's record of one vCPU.
#[derive(Clone, Debug)]
struct Entry {
    place: Place,
    vruntime: u128,
    affinity: u64,
    last_cpu: Option<usize>,
    /// When it was last queued (orders equal `vruntime`s first come, first served).
    seq: u64,
    run_time: u64,
    migrations: u64,
}

/// The vCPU a CPU runs.
#[derive(Clone, Copy, Debug)]
struct Current {
    id: VcpuId,
    since: u64,
    deadline: u64,
    /// A vCPU arrived in this CPU's queue far enough behind this one to preempt it.
    preempt: bool,
}

/// One physical CPU: its run queue and what it runs.
#[derive(Clone, Debug, Default)]
struct Cpu {
    /// Runnable vCPUs, unordered (a CPU takes the least `(vruntime, seq)`). Its capacity is
    /// kept at the number of vCPUs, so queueing never allocates.
    queue: Vec<VcpuId>,
    current: Option<Current>,
    /// The least `vruntime` of the vCPUs queued on or running on this CPU, never decreasing.
    min_vruntime: u128,
}

/// An instance's share.
#[derive(Clone, Copy, Debug)]
struct Group {
    weight: u32,
    /// vCPUs known to the scheduler.
    members: u32,
    /// vCPUs runnable or running.
    active: u32,
}

/// A waiting (or running) vCPU's rank: least first.
type Rank = (u128, u64, VcpuId);

/// The scheduler: run queues for `cpus` physical CPUs and the vCPUs of every instance.
#[derive(Clone, Debug)]
pub struct Scheduler {
    cpus: Vec<Cpu>,
    vcpus: BTreeMap<VcpuId, Entry>,
    instances: BTreeMap<u32, Group>,
    slice: u64,
    seq: u64,
}

/// Whether `affinity` allows CPU `cpu`.
fn allows(affinity: u64, cpu: usize) -> bool {
    cpu < MAX_CPUS && affinity & (1 << cpu) != 0
}

impl Scheduler {
    /// A scheduler for `cpus` physical CPUs (clamped to `1..=MAX_CPUS`) that runs a vCPU for
    /// `slice` ticks (at least 1) before it lets another have the CPU.
    pub fn new(cpus: usize, slice: u64) -> Self {
        Self {
            cpus: alloc::vec![Cpu::default(); cpus.clamp(1, MAX_CPUS)],
            vcpus: BTreeMap::new(),
            instances: BTreeMap::new(),
            slice: slice.max(1),
            seq: 0,
        }
    }

    /// The number of physical CPUs.
    pub fn cpus(&self) -> usize {
        self.cpus.len()
    }

    /// The time slice in ticks.
    pub fn slice(&self) -> u64 {
        self.slice
    }

    /// Adds vCPU `id`, off, allowed on the CPUs in `affinity` (bit n: CPU n; a mask naming no
    /// existing CPU means any CPU). `weight` (at least 1; [`DEFAULT_WEIGHT`] is normal) becomes
    /// the weight of its whole instance. Returns false, changing nothing, if `id` exists.
    pub fn add(&mut self, id: VcpuId, weight: u32, affinity: u64) -> bool {
        if self.vcpus.contains_key(&id) {
            return false;
        }
        let affinity = self.normalize(affinity);
        let group = self.instances.entry(id.instance).or_insert(Group {
            weight: DEFAULT_WEIGHT,
            members: 0,
            active: 0,
        });
        group.weight = weight.max(1);
        group.members += 1;
        self.vcpus.insert(
            id,
            Entry {
                place: Place::Off,
                vruntime: 0,
                affinity,
                last_cpu: None,
                seq: 0,
                run_time: 0,
                migrations: 0,
            },
        );
        let vcpus = self.vcpus.len();
        for cpu in &mut self.cpus {
            cpu.queue.reserve(vcpus.saturating_sub(cpu.queue.len()));
        }
        true
    }

    /// Forgets vCPU `id` wherever it is. Returns the CPU it was running on, which must be kicked
    /// to stop running it (that CPU then runs nothing until its next [`Scheduler::pick`]).
    pub fn remove(&mut self, id: VcpuId) -> Option<usize> {
        let place = self.vcpus.get(&id)?.place;
        let mut was_running = None;
        match place {
            Place::Running(cpu) => {
                self.cpus[cpu].current = None;
                was_running = Some(cpu);
            }
            Place::Queued(cpu) => {
                self.unqueue(cpu, id);
                self.refresh_min(cpu);
            }
            Place::Off | Place::Blocked => {}
        }
        self.set_place(id, Place::Off);
        self.vcpus.remove(&id);
        if let Some(group) = self.instances.get_mut(&id.instance) {
            group.members -= 1;
            if group.members == 0 {
                self.instances.remove(&id.instance);
            }
        }
        was_running
    }

    /// Makes an off or blocked vCPU runnable (its interrupt or timer deadline arrived, or it was
    /// powered on) and queues it on a CPU its affinity allows. Returns the CPU to kick so that it
    /// notices: an idle CPU, or one whose running vCPU it should preempt. Does nothing to a vCPU
    /// that is already runnable or running.
    pub fn wake(&mut self, id: VcpuId, now: u64) -> Option<usize> {
        match self.vcpus.get(&id)?.place {
            Place::Off | Place::Blocked => self.arrive(id, now, self.slice),
            Place::Queued(_) | Place::Running(_) => None,
        }
    }

    /// vCPU `id` waits for an interrupt (WFI): its run so far is charged and it leaves the CPU or
    /// queue until [`Scheduler::wake`]. The CPU it ran on then calls [`Scheduler::pick`].
    pub fn block(&mut self, id: VcpuId, now: u64) {
        self.take_off(id, now, Place::Blocked);
    }

    /// vCPU `id` is powered off (PSCI CPU_OFF, or its instance stopped): like
    /// [`Scheduler::block`], but it stays off until woken explicitly.
    pub fn power_off(&mut self, id: VcpuId, now: u64) {
        self.take_off(id, now, Place::Off);
    }

    /// The next vCPU for `cpu` and the deadline at which its slice ends, or `None` to idle (wait
    /// for a kick). Marks the vCPU running on `cpu`. Takes it from `cpu`'s queue, or from another
    /// queue when that vCPU lags by more than a slice or `cpu` has nothing of its own.
    ///
    /// A vCPU still running on `cpu` is put back first, as by [`Scheduler::put`] (a kick that
    /// `put` would return for it is lost: call `put` yourself if affinities change).
    pub fn pick(&mut self, cpu: usize, now: u64) -> Option<(VcpuId, u64)> {
        let current = self.cpus.get(cpu)?.current;
        if let Some(current) = current {
            self.put(cpu, current.id, now);
        }
        let (source, id) = self.choose(cpu, None)?;
        self.unqueue(source, id);
        let floor = (source != cpu).then(|| self.floor(cpu));
        let deadline = now.saturating_add(self.slice);
        let credit = u128::from(self.migration_credit());
        let entry = self.vcpus.get_mut(&id)?;
        if let Some(floor) = floor {
            entry.vruntime = entry.vruntime.max(floor.saturating_sub(credit));
        }
        if entry.last_cpu.is_some_and(|last| last != cpu) {
            entry.migrations += 1;
        }
        entry.last_cpu = Some(cpu);
        self.set_place(id, Place::Running(cpu));
        self.cpus[cpu].current = Some(Current {
            id,
            since: now,
            deadline,
            preempt: false,
        });
        self.refresh_min(cpu);
        self.refresh_min(source);
        Some((id, deadline))
    }

    /// vCPU `id`, running on `cpu`, stops (its slice is over, it was preempted or it exited to
    /// the scheduler) but stays runnable: its run is charged and it is queued again, on `cpu`
    /// if its affinity still allows. Returns the CPU to kick if it had to go elsewhere (see
    /// [`Scheduler::wake`]). Does nothing unless `id` runs on `cpu`.
    pub fn put(&mut self, cpu: usize, id: VcpuId, now: u64) -> Option<usize> {
        if self.cpus.get(cpu)?.current.map(|current| current.id) != Some(id) {
            return None;
        }
        self.stop(cpu, now);
        if allows(self.vcpus.get(&id)?.affinity, cpu) {
            self.enqueue(id, cpu);
            None
        } else {
            self.arrive(id, now, self.migration_credit())
        }
    }

    /// Whether `cpu` should stop its vCPU now and [`Scheduler::put`] and [`Scheduler::pick`]:
    /// its affinity no longer allows `cpu`; or a vCPU woke (or moved) into its queue whose
    /// `vruntime` is less than the running vCPU's by more than a quarter slice of virtual time
    /// (the [`Scheduler::wake`] that returned this CPU decided so); or its slice is over and
    /// `pick` would choose another vCPU. False for an idle CPU (a kicked idle CPU just picks).
    pub fn should_preempt(&self, cpu: usize, now: u64) -> bool {
        let Some(current) = self.cpus.get(cpu).and_then(|cpu| cpu.current) else {
            return false;
        };
        let Some(entry) = self.vcpus.get(&current.id) else {
            return true;
        };
        if !allows(entry.affinity, cpu) || current.preempt {
            return true;
        }
        now >= current.deadline
            && self
                .choose(cpu, Some((current.id, self.vruntime_now(current, now))))
                .is_some_and(|(_, next)| next != current.id)
    }

    /// Restricts vCPU `id` to the CPUs in `affinity` (a mask naming no existing CPU means any
    /// CPU). A queued vCPU on a CPU no longer allowed moves; returns the CPU to kick: where it
    /// moved to (see [`Scheduler::wake`]), or the disallowed CPU it runs on, which then finds
    /// [`Scheduler::should_preempt`] true and must `put` it.
    pub fn set_affinity(&mut self, id: VcpuId, affinity: u64, now: u64) -> Option<usize> {
        let affinity = self.normalize(affinity);
        let entry = self.vcpus.get_mut(&id)?;
        entry.affinity = affinity;
        let place = entry.place;
        match place {
            Place::Queued(cpu) if !allows(affinity, cpu) => {
                self.unqueue(cpu, id);
                self.refresh_min(cpu);
                self.arrive(id, now, self.migration_credit())
            }
            Place::Running(cpu) if !allows(affinity, cpu) => Some(cpu),
            _ => None,
        }
    }

    /// Sets the weight (at least 1; [`DEFAULT_WEIGHT`] is normal) of `instance`, shared by its
    /// vCPUs: instances that all want more than they get receive CPU time in proportion to their
    /// weights. Returns false if the scheduler has no vCPU of `instance`.
    pub fn set_weight(&mut self, instance: u32, weight: u32) -> bool {
        match self.instances.get_mut(&instance) {
            Some(group) => {
                group.weight = weight.max(1);
                true
            }
            None => false,
        }
    }

    /// The weight of `instance`, if the scheduler has any vCPU of it.
    pub fn weight(&self, instance: u32) -> Option<u32> {
        self.instances.get(&instance).map(|group| group.weight)
    }

    /// The CPU vCPU `id` runs on now (where a kick for it must go).
    pub fn running_on(&self, id: VcpuId) -> Option<usize> {
        match self.vcpus.get(&id)?.place {
            Place::Running(cpu) => Some(cpu),
            _ => None,
        }
    }

    /// The CPU whose queue vCPU `id` waits in.
    pub fn cpu_of(&self, id: VcpuId) -> Option<usize> {
        match self.vcpus.get(&id)?.place {
            Place::Queued(cpu) => Some(cpu),
            _ => None,
        }
    }

    /// What vCPU `id` is doing, if the scheduler knows it.
    pub fn state(&self, id: VcpuId) -> Option<VcpuState> {
        Some(match self.vcpus.get(&id)?.place {
            Place::Off => VcpuState::Off,
            Place::Blocked => VcpuState::Blocked,
            Place::Queued(_) => VcpuState::Runnable,
            Place::Running(_) => VcpuState::Running,
        })
    }

    /// The vCPU `cpu` runs now.
    pub fn running(&self, cpu: usize) -> Option<VcpuId> {
        Some(self.cpus.get(cpu)?.current?.id)
    }

    /// The number of vCPUs waiting in `cpu`'s queue.
    pub fn queue_len(&self, cpu: usize) -> usize {
        self.cpus.get(cpu).map_or(0, |cpu| cpu.queue.len())
    }

    /// Every vCPU the scheduler knows, in order.
    pub fn vcpus(&self) -> impl Iterator<Item = VcpuId> + '_ {
        self.vcpus.keys().copied()
    }

    /// What the management shell shows about vCPU `id` at time `now`.
    pub fn stats(&self, id: VcpuId, now: u64) -> Option<VcpuStats> {
        let entry = self.vcpus.get(&id)?;
        Some(VcpuStats {
            state: self.state(id)?,
            run_time: entry.run_time.saturating_add(self.current_run(id, now)),
            running_on: self.running_on(id),
            queued_on: self.cpu_of(id),
            last_cpu: entry.last_cpu,
            migrations: entry.migrations,
            vruntime: entry.vruntime,
            affinity: entry.affinity,
        })
    }

    /// Ticks all vCPUs of `instance` have run, up to `now`.
    pub fn instance_run_time(&self, instance: u32, now: u64) -> u64 {
        let first = VcpuId { instance, vcpu: 0 };
        let last = VcpuId {
            instance,
            vcpu: u16::MAX,
        };
        self.vcpus
            .range(first..=last)
            .map(|(id, entry)| entry.run_time.saturating_add(self.current_run(*id, now)))
            .fold(0, u64::saturating_add)
    }

    /// Ticks vCPU `id` has been running in its current run, up to `now`.
    fn current_run(&self, id: VcpuId, now: u64) -> u64 {
        self.running_on(id)
            .and_then(|cpu| self.cpus[cpu].current)
            .map_or(0, |current| now.saturating_sub(current.since))
    }

    /// Virtual time below its new CPU's floor that a moving vCPU keeps.
    fn migration_credit(&self) -> u64 {
        self.slice.saturating_mul(2)
    }

    /// `affinity` limited to existing CPUs; all of them if that leaves none.
    fn normalize(&self, affinity: u64) -> u64 {
        let all = u64::MAX >> (MAX_CPUS - self.cpus.len());
        match affinity & all {
            0 => all,
            mask => mask,
        }
    }

    /// The virtual runtime `ticks` of running cost a vCPU of `instance`.
    fn charge(&self, instance: u32, ticks: u64) -> u128 {
        let (weight, active) = self
            .instances
            .get(&instance)
            .map_or((DEFAULT_WEIGHT, 1), |group| (group.weight, group.active));
        u128::from(ticks) * u128::from(DEFAULT_WEIGHT) * u128::from(active.max(1))
            / u128::from(weight.max(1))
    }

    /// vCPUs queued on or running on `cpu`.
    fn load(&self, cpu: usize) -> usize {
        let cpu = &self.cpus[cpu];
        cpu.queue.len() + usize::from(cpu.current.is_some())
    }

    /// The `vruntime` a vCPU joining `cpu` is measured against: the CPU's own floor if it has
    /// work; for an idle CPU (whose floor is stale) at least the least floor of the busy CPUs.
    fn floor(&self, cpu: usize) -> u128 {
        let own = self.cpus[cpu].min_vruntime;
        if self.load(cpu) > 0 {
            return own;
        }
        (0..self.cpus.len())
            .filter(|&other| self.load(other) > 0)
            .map(|other| self.cpus[other].min_vruntime)
            .min()
            .map_or(own, |busy| busy.max(own))
    }

    /// Raises `cpu`'s floor to the least `vruntime` now queued on or running on it.
    fn refresh_min(&mut self, cpu: usize) {
        let Some(state) = self.cpus.get(cpu) else {
            return;
        };
        let least = state
            .queue
            .iter()
            .chain(state.current.as_ref().map(|current| &current.id))
            .filter_map(|id| self.vcpus.get(id))
            .map(|entry| entry.vruntime)
            .min();
        if let Some(least) = least {
            let state = &mut self.cpus[cpu];
            state.min_vruntime = state.min_vruntime.max(least);
        }
    }

    /// Moves `id` to `place`, keeping its instance's count of active vCPUs (the queues and the
    /// CPUs' current vCPUs are the caller's business).
    fn set_place(&mut self, id: VcpuId, place: Place) {
        let Some(entry) = self.vcpus.get_mut(&id) else {
            return;
        };
        let was_active = entry.place.is_active();
        entry.place = place;
        if let Some(group) = self.instances.get_mut(&id.instance) {
            match (was_active, place.is_active()) {
                (false, true) => group.active += 1,
                (true, false) => group.active -= 1,
                _ => {}
            }
        }
    }

    /// Queues `id` on `cpu`.
    fn enqueue(&mut self, id: VcpuId, cpu: usize) {
        self.seq += 1;
        if let Some(entry) = self.vcpus.get_mut(&id) {
            entry.seq = self.seq;
        }
        self.cpus[cpu].queue.push(id);
        self.set_place(id, Place::Queued(cpu));
        self.refresh_min(cpu);
    }

    /// Takes `id` out of `cpu`'s queue (its place, and refreshing the CPU's floor once what it
    /// runs is settled, are the caller's business).
    fn unqueue(&mut self, cpu: usize, id: VcpuId) {
        let queue = &mut self.cpus[cpu].queue;
        if let Some(at) = queue.iter().position(|queued| *queued == id) {
            queue.swap_remove(at);
        }
    }

    /// Ends the run on `cpu` at `now` and charges it (the vCPU's place is the caller's business).
    fn stop(&mut self, cpu: usize, now: u64) {
        let Some(current) = self.cpus[cpu].current.take() else {
            return;
        };
        let ran = now.saturating_sub(current.since);
        let charge = self.charge(current.id.instance, ran);
        if let Some(entry) = self.vcpus.get_mut(&current.id) {
            entry.run_time = entry.run_time.saturating_add(ran);
            entry.vruntime = entry.vruntime.saturating_add(charge);
        }
    }

    /// Takes `id` off its CPU or queue into `place` (blocked or off), charging its run.
    fn take_off(&mut self, id: VcpuId, now: u64, place: Place) {
        let Some(entry) = self.vcpus.get(&id) else {
            return;
        };
        match entry.place {
            Place::Running(cpu) => self.stop(cpu, now),
            Place::Queued(cpu) => {
                self.unqueue(cpu, id);
                self.refresh_min(cpu);
            }
            Place::Blocked if place == Place::Off => {}
            Place::Off | Place::Blocked => return,
        }
        self.set_place(id, place);
    }

    /// Queues a vCPU that is on no CPU and in no queue on the CPU [`Scheduler::destination`]
    /// chooses, keeping at most `credit` of virtual time below that CPU's floor, and says which
    /// CPU to kick (marking a running vCPU it is far enough ahead of for preemption).
    fn arrive(&mut self, id: VcpuId, now: u64, credit: u64) -> Option<usize> {
        let cpu = self.destination(id)?;
        let floor = self.floor(cpu);
        let entry = self.vcpus.get_mut(&id)?;
        entry.vruntime = entry.vruntime.max(floor.saturating_sub(u128::from(credit)));
        let behind = entry.vruntime.saturating_add(u128::from(self.slice / 4));
        self.enqueue(id, cpu);
        let Some(current) = self.cpus[cpu].current else {
            return Some(cpu);
        };
        let preempt = behind < self.vruntime_now(current, now);
        if let Some(current) = self.cpus[cpu].current.as_mut().filter(|_| preempt) {
            current.preempt = true;
        }
        self.should_preempt(cpu, now).then_some(cpu)
    }

    /// The `vruntime` of the vCPU running as `current`, its run up to `now` included.
    fn vruntime_now(&self, current: Current, now: u64) -> u128 {
        self.vcpus.get(&current.id).map_or(0, |entry| {
            let ran = now.saturating_sub(current.since);
            entry
                .vruntime
                .saturating_add(self.charge(current.id.instance, ran))
        })
    }

    /// Where a vCPU that becomes runnable is queued: its last CPU if that is idle; else an idle
    /// allowed CPU; else its last CPU if at most one vCPU busier than the least loaded allowed
    /// CPU; else that least loaded CPU (lowest number first).
    fn destination(&self, id: VcpuId) -> Option<usize> {
        let entry = self.vcpus.get(&id)?;
        let last = entry
            .last_cpu
            .filter(|&cpu| cpu < self.cpus.len() && allows(entry.affinity, cpu));
        if let Some(last) = last.filter(|&cpu| self.load(cpu) == 0) {
            return Some(last);
        }
        let least = (0..self.cpus.len())
            .filter(|&cpu| allows(entry.affinity, cpu))
            .min_by_key(|&cpu| (self.load(cpu), cpu))?;
        let least_load = self.load(least);
        match last {
            Some(last) if least_load > 0 && self.load(last) <= least_load + 1 => Some(last),
            _ => Some(least),
        }
    }

    /// What [`Scheduler::pick`] on `cpu` would take, as `(queue it is in, vCPU)`; with
    /// `current` (the running vCPU and its `vruntime` now) counted as if queued on `cpu` (then
    /// a result naming it means: go on running it).
    fn choose(&self, cpu: usize, current: Option<(VcpuId, u128)>) -> Option<(usize, VcpuId)> {
        let rank = |id: &VcpuId| -> Option<Rank> {
            let entry = self.vcpus.get(id)?;
            Some((entry.vruntime, entry.seq, *id))
        };
        // The running vCPU ranks after queued vCPUs of equal vruntime, as it would once put.
        let own = current
            .map(|(id, vruntime)| (vruntime, u64::MAX, id))
            .into_iter()
            .chain(self.cpus[cpu].queue.iter().filter_map(rank))
            .min();
        let mut least: Option<(Rank, usize)> = None;
        let mut busiest: Option<(usize, usize, Rank)> = None;
        for other in (0..self.cpus.len()).filter(|&other| other != cpu) {
            let best = self.cpus[other]
                .queue
                .iter()
                .filter(|id| self.vcpus.get(id).is_some_and(|e| allows(e.affinity, cpu)))
                .filter_map(rank)
                .min();
            let Some(best) = best else { continue };
            if least.is_none_or(|(rank, _)| best < rank) {
                least = Some((best, other));
            }
            let load = self.load(other);
            if busiest.is_none_or(|(most, _, _)| load > most) {
                busiest = Some((load, other, best));
            }
        }
        match (own, least) {
            (None, _) => busiest.map(|(_, other, best)| (other, best.2)),
            (Some(own), Some((theirs, other)))
                if theirs.0.saturating_add(u128::from(self.slice)) < own.0 =>
            {
                Some((other, theirs.2))
            }
            (Some(own), _) => Some((cpu, own.2)),
        }
    }

    /// Panics unless the queues, the CPUs' current vCPUs, the vCPUs' places and the instances'
    /// counts agree.
    #[cfg(test)]
    fn assert_consistent(&self) {
        for (id, entry) in &self.vcpus {
            let queued: Vec<usize> = (0..self.cpus.len())
                .flat_map(|cpu| {
                    let count = self.cpus[cpu].queue.iter().filter(|q| *q == id).count();
                    core::iter::repeat_n(cpu, count)
                })
                .collect();
            let running: Vec<usize> = (0..self.cpus.len())
                .filter(|&cpu| self.cpus[cpu].current.is_some_and(|c| c.id == *id))
                .collect();
            match entry.place {
                Place::Queued(cpu) => {
                    assert_eq!(queued, [cpu], "{id:?}");
                    assert!(running.is_empty(), "{id:?} queued and running");
                    assert!(
                        allows(entry.affinity, cpu),
                        "{id:?} queued on disallowed {cpu}"
                    );
                }
                Place::Running(cpu) => {
                    assert_eq!(running, [cpu], "{id:?}");
                    assert!(queued.is_empty(), "{id:?} running and queued");
                }
                Place::Off | Place::Blocked => {
                    assert!(
                        queued.is_empty() && running.is_empty(),
                        "{id:?} idle but placed"
                    );
                }
            }
            assert_ne!(entry.affinity, 0);
        }
        for cpu in &self.cpus {
            for id in cpu.queue.iter().chain(cpu.current.as_ref().map(|c| &c.id)) {
                assert!(self.vcpus.contains_key(id), "unknown {id:?} on a CPU");
            }
            assert!(cpu.queue.capacity() >= self.vcpus.len());
        }
        for (instance, group) in &self.instances {
            let members = self.vcpus.keys().filter(|id| id.instance == *instance);
            let active = members
                .clone()
                .filter(|id| self.vcpus[id].place.is_active())
                .count();
            assert_eq!(
                group.members as usize,
                members.count(),
                "instance {instance}"
            );
            assert_eq!(group.active as usize, active, "instance {instance}");
        }
        for id in self.vcpus.keys() {
            assert!(self.instances.contains_key(&id.instance));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    const SLICE: u64 = 1000;

    fn id(instance: u32, vcpu: u16) -> VcpuId {
        VcpuId { instance, vcpu }
    }

    /// What a simulated vCPU does when it runs.
    #[derive(Clone, Copy, Debug)]
    enum Work {
        /// A CPU-bound loop: never blocks.
        Busy,
        /// Wakes every `period` ticks, runs `burst` ticks, waits in WFI again.
        Periodic { period: u64, burst: u64 },
    }

    /// A discrete-event simulation of the hardware side driving a [`Scheduler`].
    struct Sim {
        sched: Scheduler,
        now: u64,
        work: BTreeMap<VcpuId, Work>,
        /// Ticks left of the current burst of a periodic vCPU.
        left: BTreeMap<VcpuId, u64>,
        /// When blocked periodic vCPUs wake.
        wake_at: BTreeMap<VcpuId, u64>,
        /// Per CPU: the vCPU it runs, since when, and when it next stops (deadline or block).
        on: Vec<Option<(VcpuId, u64, u64)>>,
        /// Every pick: (time, CPU, vCPU).
        picks: Vec<(u64, usize, VcpuId)>,
        /// Every wake of a blocked vCPU: (time, vCPU).
        wakes: Vec<(u64, VcpuId)>,
    }

    impl Sim {
        fn new(cpus: usize) -> Self {
            Self {
                sched: Scheduler::new(cpus, SLICE),
                now: 0,
                work: BTreeMap::new(),
                left: BTreeMap::new(),
                wake_at: BTreeMap::new(),
                on: vec![None; cpus],
                picks: Vec::new(),
                wakes: Vec::new(),
            }
        }

        /// Adds a vCPU doing `work` that wakes now.
        fn add(&mut self, vcpu: VcpuId, weight: u32, affinity: u64, work: Work) {
            assert!(self.sched.add(vcpu, weight, affinity));
            self.work.insert(vcpu, work);
            if let Work::Periodic { burst, .. } = work {
                self.left.insert(vcpu, burst);
            }
            let kick = self.sched.wake(vcpu, self.now);
            self.kick(kick);
        }

        fn dispatch(&mut self, cpu: usize) {
            let now = self.now;
            self.on[cpu] = self.sched.pick(cpu, now).map(|(vcpu, deadline)| {
                assert!(deadline > now);
                let entry = &self.sched.vcpus[&vcpu];
                assert!(allows(entry.affinity, cpu), "{vcpu:?} picked on {cpu}");
                self.picks.push((now, cpu, vcpu));
                let end = match self.work[&vcpu] {
                    Work::Busy => deadline,
                    Work::Periodic { .. } => deadline.min(now + self.left[&vcpu]),
                };
                (vcpu, now, end)
            });
            self.sched.assert_consistent();
        }

        /// The running vCPU of `cpu` stops at `now`: updates the burst left.
        fn stop(&mut self, cpu: usize) -> VcpuId {
            let (vcpu, since, _) = self.on[cpu].take().expect("a running vCPU");
            if let Some(left) = self.left.get_mut(&vcpu) {
                *left -= self.now - since;
            }
            vcpu
        }

        fn kick(&mut self, cpu: Option<usize>) {
            let Some(cpu) = cpu else { return };
            if self.on[cpu].is_none() {
                self.dispatch(cpu);
            } else if self.sched.should_preempt(cpu, self.now) {
                let vcpu = self.stop(cpu);
                let kick = self.sched.put(cpu, vcpu, self.now);
                self.dispatch(cpu);
                self.kick(kick);
            }
        }

        /// No CPU idles while a vCPU it may run waits.
        fn assert_work_conserving(&self) {
            for cpu in (0..self.on.len()).filter(|&cpu| self.on[cpu].is_none()) {
                for vcpu in self.sched.vcpus() {
                    if self.sched.state(vcpu) == Some(VcpuState::Runnable) {
                        let mask = self.sched.stats(vcpu, self.now).unwrap().affinity;
                        assert!(mask & (1 << cpu) == 0, "CPU {cpu} idles, {vcpu:?} waits");
                    }
                }
            }
        }

        fn run_until(&mut self, end: u64) {
            loop {
                self.assert_work_conserving();
                let next_cpu = (0..self.on.len())
                    .filter_map(|cpu| Some((self.on[cpu]?.2, cpu)))
                    .min();
                let next_wake = self.wake_at.iter().map(|(v, t)| (*t, *v)).min();
                let next = [next_cpu.map(|c| c.0), next_wake.map(|w| w.0)];
                let Some(t) = next.into_iter().flatten().min() else {
                    break;
                };
                if t > end {
                    break;
                }
                self.now = t;
                if let Some((_, vcpu)) = next_wake.filter(|w| w.0 == t) {
                    self.wake_at.remove(&vcpu);
                    if let Work::Periodic { burst, .. } = self.work[&vcpu] {
                        self.left.insert(vcpu, burst);
                    }
                    self.wakes.push((t, vcpu));
                    let kick = self.sched.wake(vcpu, t);
                    self.kick(kick);
                    continue;
                }
                let (_, cpu) = next_cpu.unwrap();
                let vcpu = self.stop(cpu);
                match self.work[&vcpu] {
                    Work::Periodic { period, .. } if self.left[&vcpu] == 0 => {
                        self.sched.block(vcpu, t);
                        self.wake_at.insert(vcpu, t + period);
                    }
                    _ => {
                        let kick = self.sched.put(cpu, vcpu, t);
                        self.kick(kick);
                    }
                }
                self.dispatch(cpu);
            }
            self.now = end;
        }

        fn instance(&self, instance: u32) -> u64 {
            self.sched.instance_run_time(instance, self.now)
        }

        fn vcpu(&self, vcpu: VcpuId) -> u64 {
            self.sched.stats(vcpu, self.now).unwrap().run_time
        }
    }

    fn ratio(a: u64, b: u64) -> f64 {
        a as f64 / b as f64
    }

    #[test]
    fn two_busy_instances_share_equally_beside_an_idle_one() {
        // The acceptance case: six vCPUs on two CPUs; A and B loop, C idles in WFI.
        let mut sim = Sim::new(2);
        let idle = Work::Periodic {
            period: 10 * SLICE,
            burst: SLICE / 100,
        };
        for vcpu in 0..2 {
            sim.add(id(0, vcpu), DEFAULT_WEIGHT, !0, Work::Busy);
            sim.add(id(1, vcpu), DEFAULT_WEIGHT, !0, Work::Busy);
            sim.add(id(2, vcpu), DEFAULT_WEIGHT, !0, idle);
        }
        sim.run_until(2000 * SLICE);
        let (a, b, c) = (sim.instance(0), sim.instance(1), sim.instance(2));
        assert!((0.8..1.25).contains(&ratio(a, b)), "A {a} B {b}");
        assert!(c < 2000 * SLICE * 2 / 50, "the idle instance took {c}");
        assert!(a + b + c > 2000 * SLICE * 2 * 99 / 100, "a CPU idled");
        for vcpu in 0..2 {
            let (x, y) = (sim.vcpu(id(0, vcpu)), sim.vcpu(id(1, vcpu)));
            assert!((0.8..1.25).contains(&ratio(x, y)), "{vcpu}: {x} {y}");
        }
    }

    #[test]
    fn fairness_is_between_instances_not_vcpus() {
        // A has one busy vCPU, B three: each instance gets one CPU's worth.
        let mut sim = Sim::new(2);
        sim.add(id(0, 0), DEFAULT_WEIGHT, !0, Work::Busy);
        for vcpu in 0..3 {
            sim.add(id(1, vcpu), DEFAULT_WEIGHT, !0, Work::Busy);
        }
        sim.run_until(3000 * SLICE);
        let (a, b) = (sim.instance(0), sim.instance(1));
        assert!((0.8..1.25).contains(&ratio(a, b)), "A {a} B {b}");
        let bs: Vec<u64> = (0..3).map(|vcpu| sim.vcpu(id(1, vcpu))).collect();
        let (least, most) = (*bs.iter().min().unwrap(), *bs.iter().max().unwrap());
        assert!(ratio(most, least) < 1.25, "B's vCPUs {bs:?}");
    }

    #[test]
    fn weights_divide_the_time() {
        for (cpus, vcpus) in [(2, 2), (1, 1), (2, 3), (3, 2)] {
            let mut sim = Sim::new(cpus);
            for vcpu in 0..vcpus {
                sim.add(id(0, vcpu), 2 * DEFAULT_WEIGHT, !0, Work::Busy);
                sim.add(id(1, vcpu), DEFAULT_WEIGHT, !0, Work::Busy);
            }
            sim.run_until(3000 * SLICE);
            let (a, b) = (sim.instance(0), sim.instance(1));
            // With three CPUs and two vCPUs each, A can use at most two CPUs: 2:1 exactly.
            assert!(
                (1.8..2.2).contains(&ratio(a, b)),
                "{cpus} CPUs, {vcpus} vCPUs: A {a} B {b}"
            );
        }
    }

    #[test]
    fn weights_hold_even_when_instances_start_on_separate_cpus() {
        // A's vCPUs are placed on CPU 0 and B's on CPU 1; then both may go anywhere.
        let mut sim = Sim::new(2);
        for vcpu in 0..2 {
            sim.add(id(0, vcpu), 2 * DEFAULT_WEIGHT, 0b01, Work::Busy);
            sim.add(id(1, vcpu), DEFAULT_WEIGHT, 0b10, Work::Busy);
        }
        for vcpu in 0..2 {
            for instance in 0..2 {
                let kick = sim.sched.set_affinity(id(instance, vcpu), !0, 0);
                assert_eq!(kick, None);
            }
        }
        sim.run_until(3000 * SLICE);
        let (a, b) = (sim.instance(0), sim.instance(1));
        assert!((1.8..2.2).contains(&ratio(a, b)), "A {a} B {b}");
    }

    #[test]
    fn three_busy_vcpus_share_two_cpus() {
        let mut sim = Sim::new(2);
        for instance in 0..3 {
            sim.add(id(instance, 0), DEFAULT_WEIGHT, !0, Work::Busy);
        }
        sim.run_until(3000 * SLICE);
        for instance in 0..3 {
            let ran = sim.instance(instance);
            let share = ratio(ran, 3000 * SLICE);
            assert!((0.6..0.73).contains(&share), "{instance}: {share}");
        }
        let migrations: u64 = (0..3)
            .map(|i| sim.sched.stats(id(i, 0), sim.now).unwrap().migrations)
            .sum();
        assert!(migrations < 3000, "{migrations} migrations in 3000 slices");
    }

    #[test]
    fn blocked_vcpus_are_never_picked() {
        let mut sched = Scheduler::new(2, SLICE);
        for vcpu in 0..4 {
            sched.add(id(0, vcpu), DEFAULT_WEIGHT, !0);
            sched.wake(id(0, vcpu), 0);
        }
        let mut now = 0;
        for cpu in 0..2 {
            sched.pick(cpu, now);
        }
        let blocked = sched.running(0).unwrap();
        sched.block(blocked, 10);
        let queued = (0..4)
            .map(|vcpu| id(0, vcpu))
            .find(|v| sched.state(*v) == Some(VcpuState::Runnable))
            .unwrap();
        sched.block(queued, 10);
        sched.power_off(id(0, 3), 10);
        sched.assert_consistent();
        for _ in 0..100 {
            now += SLICE;
            for cpu in 0..2 {
                if let Some((vcpu, _)) = sched.pick(cpu, now) {
                    assert!(![blocked, queued, id(0, 3)].contains(&vcpu));
                }
            }
            sched.assert_consistent();
        }
        assert_eq!(sched.state(blocked), Some(VcpuState::Blocked));
        assert_eq!(sched.state(queued), Some(VcpuState::Blocked));
        assert_eq!(sched.state(id(0, 3)), Some(VcpuState::Off));
        assert_eq!(sched.stats(blocked, now).unwrap().run_time, 10);
    }

    #[test]
    fn a_woken_vcpu_runs_within_a_slice() {
        let mut sim = Sim::new(2);
        for vcpu in 0..4 {
            sim.add(id(0, vcpu), DEFAULT_WEIGHT, !0, Work::Busy);
        }
        let sleepers = [id(1, 0), id(2, 0)];
        for (n, sleeper) in sleepers.into_iter().enumerate() {
            let period = (57 + 10 * n as u64) * SLICE + 123;
            let burst = SLICE / 2;
            sim.add(
                sleeper,
                DEFAULT_WEIGHT,
                !0,
                Work::Periodic { period, burst },
            );
        }
        sim.run_until(2000 * SLICE);
        assert!(sim.wakes.len() > 40);
        for &(at, sleeper) in &sim.wakes {
            let ran = sim
                .picks
                .iter()
                .find(|(t, _, v)| *v == sleeper && *t >= at)
                .map(|(t, _, _)| *t);
            if let Some(ran) = ran {
                assert!(ran <= at + SLICE, "{sleeper:?} woke at {at}, ran at {ran}");
            }
        }
        // It preempts: the four busy vCPUs are ahead of it.
        let immediate = sim
            .wakes
            .iter()
            .filter(|(at, v)| sim.picks.iter().any(|(t, _, p)| t == at && p == v))
            .count();
        assert!(
            immediate * 10 > sim.wakes.len() * 9,
            "{immediate} of {}",
            sim.wakes.len()
        );
    }

    #[test]
    fn wake_kicks_an_idle_cpu_or_preempts_a_richer_vcpu() {
        let mut sched = Scheduler::new(2, SLICE);
        let (a, b, c) = (id(0, 0), id(1, 0), id(2, 0));
        for v in [a, b, c] {
            sched.add(v, DEFAULT_WEIGHT, !0);
        }
        assert_eq!(sched.wake(a, 0), Some(0));
        assert_eq!(sched.wake(a, 0), None, "already runnable");
        assert_eq!(sched.wake(b, 0), Some(1), "the idle CPU, not a's");
        assert_eq!(sched.pick(0, 0).unwrap(), (a, SLICE));
        assert_eq!(sched.pick(1, 0).unwrap(), (b, SLICE));
        assert!(!sched.should_preempt(0, SLICE), "nobody else waits");
        assert_eq!(sched.pick(0, SLICE).unwrap(), (a, 2 * SLICE));
        assert_eq!(sched.pick(1, SLICE).unwrap(), (b, 2 * SLICE));
        // c joins at the floor less a slice: behind a and b, which have run: it preempts one.
        let now = SLICE + SLICE / 2;
        assert_eq!(sched.wake(c, now), Some(0));
        assert!(sched.should_preempt(0, now));
        assert_eq!(sched.put(0, a, now), None);
        assert_eq!(sched.pick(0, now).unwrap().0, c);
        assert!(!sched.should_preempt(1, now));
        assert_eq!(sched.running_on(c), Some(0));
        assert_eq!(sched.cpu_of(a), Some(0));
        // a waits on CPU 0 less than a slice behind b: CPU 1 does not take it over b.
        assert!(!sched.should_preempt(1, 2 * SLICE));
        assert_eq!(sched.pick(1, 2 * SLICE).unwrap().0, b);
    }

    #[test]
    fn a_long_sleep_earns_only_a_slice() {
        let mut sim = Sim::new(1);
        let (busy, sleeper) = (id(0, 0), id(1, 0));
        sim.add(busy, DEFAULT_WEIGHT, !0, Work::Busy);
        let (period, burst) = (1000 * SLICE, 1);
        sim.add(
            sleeper,
            DEFAULT_WEIGHT,
            !0,
            Work::Periodic { period, burst },
        );
        sim.run_until(1000 * SLICE);
        // The sleeper wakes once more and then stays busy.
        assert_eq!(sim.sched.state(sleeper), Some(VcpuState::Blocked));
        sim.work.insert(sleeper, Work::Busy);
        sim.left.remove(&sleeper);
        sim.run_until(1001 * SLICE);
        let (busy_before, sleeper_before) = (sim.vcpu(busy), sim.vcpu(sleeper));
        sim.run_until(1021 * SLICE);
        let busy_ran = sim.vcpu(busy) - busy_before;
        let sleeper_ran = sim.vcpu(sleeper) - sleeper_before;
        assert_eq!(busy_ran + sleeper_ran, 20 * SLICE);
        assert!(
            busy_ran >= 9 * SLICE,
            "busy {busy_ran}, sleeper {sleeper_ran}"
        );
        assert!(
            sleeper_ran >= 9 * SLICE,
            "busy {busy_ran}, sleeper {sleeper_ran}"
        );
    }

    #[test]
    fn affinity_is_respected_even_by_stealing() {
        let mut sim = Sim::new(3);
        // vCPU 0 may only use CPU 0, vCPU 1 CPUs 0-1, and so on; CPU 2 stays idle a lot.
        let masks = [0b001, 0b011, 0b001, 0b010, 0b011];
        for (vcpu, mask) in masks.iter().enumerate() {
            sim.add(id(0, vcpu as u16), DEFAULT_WEIGHT, *mask, Work::Busy);
        }
        sim.add(
            id(1, 0),
            DEFAULT_WEIGHT,
            0b100,
            Work::Periodic {
                period: 5 * SLICE,
                burst: SLICE,
            },
        );
        sim.run_until(500 * SLICE);
        for (_, cpu, vcpu) in &sim.picks {
            let mask = if vcpu.instance == 1 {
                0b100
            } else {
                masks[usize::from(vcpu.vcpu)]
            };
            assert!(mask & (1 << cpu) != 0, "{vcpu:?} on {cpu}");
        }
        // The pinned vCPU never left CPU 0.
        let pinned = sim.sched.stats(id(0, 0), sim.now).unwrap();
        assert_eq!(pinned.migrations, 0);
        assert_eq!(pinned.last_cpu, Some(0));
        assert!(pinned.run_time > 0);
    }

    #[test]
    fn a_vcpu_from_a_crowded_cpu_does_not_monopolise_a_quiet_one() {
        // Three vCPUs pinned to CPU 0 advance at a third of the rate of the one pinned to CPU 1.
        let mut sim = Sim::new(2);
        for instance in 0..3 {
            sim.add(id(instance, 0), DEFAULT_WEIGHT, 0b01, Work::Busy);
        }
        let quiet = id(3, 0);
        sim.add(quiet, DEFAULT_WEIGHT, 0b10, Work::Busy);
        sim.run_until(300 * SLICE);
        // A newcomer queued on CPU 0 joins CPU 0's (low) floor, then may use both CPUs.
        let newcomer = id(4, 0);
        sim.add(newcomer, DEFAULT_WEIGHT, 0b01, Work::Busy);
        assert_eq!(sim.sched.set_affinity(newcomer, 0b11, sim.now), None);
        let before = sim.vcpu(quiet);
        sim.run_until(330 * SLICE);
        let quiet_ran = sim.vcpu(quiet) - before;
        assert!(
            quiet_ran >= 12 * SLICE,
            "the quiet CPU's own vCPU ran {quiet_ran}"
        );
        assert!(sim.vcpu(newcomer) >= 12 * SLICE);
    }

    #[test]
    fn vcpus_queued_on_one_cpu_spread_to_idle_ones() {
        let mut sched = Scheduler::new(2, SLICE);
        for vcpu in 0..4 {
            sched.add(id(0, vcpu), DEFAULT_WEIGHT, 0b01);
            sched.wake(id(0, vcpu), 0);
        }
        assert_eq!(sched.queue_len(0), 4);
        for vcpu in 0..4 {
            assert_eq!(sched.set_affinity(id(0, vcpu), 0b11, 0), None);
        }
        let (first, _) = sched.pick(0, 0).unwrap();
        let (stolen, _) = sched.pick(1, 0).unwrap();
        assert_ne!(first, stolen);
        assert_eq!(sched.running_on(stolen), Some(1));
        assert_eq!((sched.queue_len(0), sched.queue_len(1)), (2, 0));
        // Run on: the two CPUs keep sharing the four vCPUs about equally.
        let mut now = 0;
        for _ in 0..400 {
            now += SLICE;
            for cpu in 0..2 {
                if let Some(v) = sched.running(cpu) {
                    sched.put(cpu, v, now);
                }
                assert!(sched.pick(cpu, now).is_some(), "CPU {cpu} idle");
            }
            sched.assert_consistent();
        }
        let times: Vec<u64> = (0..4)
            .map(|v| sched.stats(id(0, v), now).unwrap().run_time)
            .collect();
        let (least, most) = (*times.iter().min().unwrap(), *times.iter().max().unwrap());
        assert!(ratio(most, least) < 1.1, "{times:?}");
    }

    #[test]
    fn removing_running_and_queued_vcpus() {
        let mut sched = Scheduler::new(1, SLICE);
        let (a, b, c) = (id(0, 0), id(0, 1), id(1, 0));
        for v in [a, b, c] {
            sched.add(v, DEFAULT_WEIGHT, !0);
            sched.wake(v, 0);
        }
        let (running, _) = sched.pick(0, 0).unwrap();
        assert_eq!(running, a);
        assert_eq!(sched.remove(a), Some(0));
        assert_eq!(sched.running(0), None);
        assert_eq!(
            sched.put(0, a, 10),
            None,
            "a put of a removed vCPU is ignored"
        );
        assert_eq!(sched.remove(b), None);
        sched.assert_consistent();
        assert_eq!(sched.pick(0, 10).unwrap().0, c);
        assert_eq!(sched.remove(c), Some(0));
        assert_eq!(sched.pick(0, 20), None);
        assert_eq!(sched.vcpus().count(), 0);
        assert!(!sched.set_weight(0, 5), "instance 0 is gone with its vCPUs");
        assert_eq!(sched.remove(a), None);
        sched.assert_consistent();
    }

    #[test]
    fn a_running_vcpu_whose_affinity_excludes_its_cpu_moves() {
        let mut sched = Scheduler::new(2, SLICE);
        let (a, b) = (id(0, 0), id(1, 0));
        sched.add(a, DEFAULT_WEIGHT, 0b01);
        sched.add(b, DEFAULT_WEIGHT, 0b11);
        sched.wake(a, 0);
        sched.wake(b, 0);
        assert_eq!(sched.pick(0, 0).unwrap().0, a);
        assert_eq!(sched.pick(1, 0).unwrap().0, b);
        assert_eq!(sched.set_affinity(a, 0b10, 5), Some(0));
        assert!(sched.should_preempt(0, 5));
        // a goes to CPU 1's queue, where b runs (and is not behind: no kick).
        assert_eq!(sched.put(0, a, 5), None);
        assert_eq!(sched.cpu_of(a), Some(1));
        assert_eq!(sched.pick(0, 5), None, "a may not come back, b is running");
        assert_eq!(sched.pick(1, SLICE).unwrap().0, a);
        assert_eq!(sched.stats(a, SLICE).unwrap().migrations, 1);
        // An affinity of no existing CPU means any CPU.
        sched.set_affinity(b, 0b1000, SLICE);
        assert_eq!(sched.stats(b, SLICE).unwrap().affinity, 0b11);
    }

    #[test]
    fn time_is_charged_to_the_right_vcpu() {
        let mut sched = Scheduler::new(1, SLICE);
        let (a, b) = (id(0, 0), id(0, 1));
        sched.add(a, DEFAULT_WEIGHT, !0);
        sched.add(b, DEFAULT_WEIGHT, !0);
        sched.wake(a, 0);
        sched.wake(b, 0);
        assert_eq!(sched.pick(0, 0), Some((a, SLICE)));
        assert_eq!(sched.stats(a, 300).unwrap().run_time, 300);
        assert!(
            !sched.should_preempt(0, 300),
            "b was not behind when a started"
        );
        assert!(sched.should_preempt(0, SLICE));
        sched.put(0, a, SLICE);
        assert_eq!(sched.pick(0, SLICE), Some((b, 2 * SLICE)));
        sched.block(b, SLICE + 1);
        assert_eq!(sched.pick(0, SLICE + 1), Some((a, 2 * SLICE + 1)));
        assert!(!sched.should_preempt(0, 5 * SLICE), "nobody else waits");
        let stats = sched.stats(a, 2 * SLICE).unwrap();
        assert_eq!(stats.run_time, 2 * SLICE - 1);
        assert_eq!(stats.state, VcpuState::Running);
        assert_eq!(stats.running_on, Some(0));
        assert_eq!(sched.instance_run_time(0, 2 * SLICE), 2 * SLICE);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        #[derive(Clone, Debug)]
        enum Op {
            Add(VcpuId, u32, u64),
            Remove(VcpuId),
            Wake(VcpuId),
            Block(VcpuId),
            PowerOff(VcpuId),
            Pick(usize),
            Put(usize),
            PutWrong(usize, VcpuId),
            Affinity(VcpuId, u64),
            Weight(u32, u32),
            Preempt(usize),
            Advance(u64),
        }

        fn any_id() -> impl Strategy<Value = VcpuId> {
            (0u32..3, 0u16..3).prop_map(|(instance, vcpu)| VcpuId { instance, vcpu })
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                3 => (any_id(), 0u32..4096, any::<u64>()).prop_map(|(v, w, a)| Op::Add(v, w, a)),
                1 => any_id().prop_map(Op::Remove),
                4 => any_id().prop_map(Op::Wake),
                2 => any_id().prop_map(Op::Block),
                1 => any_id().prop_map(Op::PowerOff),
                5 => (0usize..4).prop_map(Op::Pick),
                4 => (0usize..4).prop_map(Op::Put),
                1 => (0usize..4, any_id()).prop_map(|(c, v)| Op::PutWrong(c, v)),
                1 => (any_id(), 0u64..16).prop_map(|(v, a)| Op::Affinity(v, a)),
                1 => (0u32..3, 0u32..4096).prop_map(|(i, w)| Op::Weight(i, w)),
                1 => (0usize..4).prop_map(Op::Preempt),
                3 => (0u64..3 * SLICE).prop_map(Op::Advance),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1024))]

            /// Whatever the calls: every vCPU is in at most one queue or on at most one CPU,
            /// never both; only runnable vCPUs are picked, and only on CPUs they may use.
            #[test]
            fn any_sequence_keeps_the_queues_consistent(
                ops in proptest::collection::vec(op(), 1..200),
            ) {
                let mut sched = Scheduler::new(3, SLICE);
                let mut now = 0u64;
                let mut last_run = BTreeMap::new();
                for op in ops {
                    match op {
                        Op::Add(v, w, a) => {
                            let existed = sched.state(v).is_some();
                            prop_assert_eq!(sched.add(v, w, a), !existed);
                            if !existed {
                                prop_assert_eq!(sched.state(v), Some(VcpuState::Off));
                            }
                        }
                        Op::Remove(v) => {
                            let on = sched.running_on(v);
                            prop_assert_eq!(sched.remove(v), on);
                            prop_assert_eq!(sched.state(v), None);
                        }
                        Op::Wake(v) => {
                            let before = sched.state(v);
                            let kick = sched.wake(v, now);
                            if let Some(cpu) = kick {
                                prop_assert!(cpu < sched.cpus());
                            }
                            match before {
                                Some(VcpuState::Off | VcpuState::Blocked) => {
                                    prop_assert_eq!(sched.state(v), Some(VcpuState::Runnable));
                                    let cpu = sched.cpu_of(v).unwrap();
                                    if sched.running(cpu).is_none() {
                                        prop_assert_eq!(kick, Some(cpu));
                                    }
                                }
                                other => {
                                    prop_assert_eq!(kick, None);
                                    prop_assert_eq!(sched.state(v), other);
                                }
                            }
                        }
                        Op::Block(v) => {
                            let before = sched.state(v);
                            sched.block(v, now);
                            if before.is_some() && before != Some(VcpuState::Off) {
                                prop_assert_eq!(sched.state(v), Some(VcpuState::Blocked));
                            }
                        }
                        Op::PowerOff(v) => {
                            let known = sched.state(v).is_some();
                            sched.power_off(v, now);
                            if known {
                                prop_assert_eq!(sched.state(v), Some(VcpuState::Off));
                            }
                        }
                        Op::Pick(cpu) => {
                            // Queued vCPUs, and the one running on `cpu` (put back first).
                            let runnable: Vec<VcpuId> = sched
                                .vcpus()
                                .filter(|v| {
                                    sched.state(*v) == Some(VcpuState::Runnable)
                                        || sched.running_on(*v) == Some(cpu)
                                })
                                .collect();
                            match sched.pick(cpu, now) {
                                Some((v, deadline)) => {
                                    prop_assert!(runnable.contains(&v), "{:?} was not runnable", v);
                                    prop_assert_eq!(deadline, now + SLICE);
                                    prop_assert_eq!(sched.running_on(v), Some(cpu));
                                    prop_assert_eq!(sched.running(cpu), Some(v));
                                    let mask = sched.stats(v, now).unwrap().affinity;
                                    prop_assert!(mask & (1 << cpu) != 0);
                                }
                                None => {
                                    // Idle only if nothing waits that this CPU may take.
                                    prop_assert_eq!(sched.running(cpu), None);
                                    if cpu < sched.cpus() {
                                        for v in sched.vcpus() {
                                            if sched.state(v) == Some(VcpuState::Runnable) {
                                                let mask = sched.stats(v, now).unwrap().affinity;
                                                prop_assert!(mask & (1 << cpu) == 0);
                                            }
                                        }
                                    }
                                }
                            }
                        }
                        Op::Put(cpu) => {
                            if let Some(v) = sched.running(cpu) {
                                sched.put(cpu, v, now);
                                prop_assert_eq!(sched.state(v), Some(VcpuState::Runnable));
                                prop_assert_eq!(sched.running(cpu), None);
                            }
                        }
                        Op::PutWrong(cpu, v) => {
                            if sched.running(cpu) != Some(v) {
                                let before = sched.state(v);
                                prop_assert_eq!(sched.put(cpu, v, now), None);
                                prop_assert_eq!(sched.state(v), before);
                            }
                        }
                        Op::Affinity(v, mask) => {
                            sched.set_affinity(v, mask, now);
                        }
                        Op::Weight(instance, weight) => {
                            let known = sched.vcpus().any(|v| v.instance == instance);
                            prop_assert_eq!(sched.set_weight(instance, weight), known);
                        }
                        Op::Preempt(cpu) => {
                            let _ = sched.should_preempt(cpu, now);
                        }
                        Op::Advance(ticks) => now += ticks,
                    }
                    sched.assert_consistent();
                    // Run time never goes backwards.
                    for v in sched.vcpus() {
                        let ran = sched.stats(v, now).unwrap().run_time;
                        let before = last_run.insert(v, ran).unwrap_or(0);
                        prop_assert!(ran >= before || sched.state(v).is_none());
                    }
                    last_run.retain(|v, _| sched.state(*v).is_some());
                    let total: u64 = sched.vcpus().map(|v| sched.stats(v, now).unwrap().run_time).sum();
                    prop_assert!(total <= now.saturating_mul(3));
                }
            }
        }
    }
}
