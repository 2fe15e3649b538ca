//! The guest's EL1 physical timer (`CNTP_*_EL0`) and counter (`CNTPCT_EL0`), trapped and emulated
//! in the instance's own time (the board's counter less the instance's offset, as its virtual
//! counter is): the hypervisor keeps the timer's control and compare values, answers reads from
//! the counter, and backs an enabled timer with
//! a deadline timer of its own (the real EL1 physical timer, free since guests cannot reach
//! it) so that the guest's interrupt (PPI 14, INTID 30) arrives on time.

/// INTID of the guest's EL1 physical timer interrupt.
pub const PHYS_TIMER_INTID: u32 = 30;

/// `CNTP_CTL_EL0.ENABLE`.
const CTL_ENABLE: u64 = 1 << 0;
/// `CNTP_CTL_EL0.IMASK`.
const CTL_IMASK: u64 = 1 << 1;
/// `CNTP_CTL_EL0.ISTATUS` (read-only).
const CTL_ISTATUS: u64 = 1 << 2;

/// Which timer register a trapped access targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerRegister {
    /// `CNTP_TVAL_EL0`: signed 32-bit distance to the deadline.
    TimerValue,
    /// `CNTP_CTL_EL0`.
    Control,
    /// `CNTP_CVAL_EL0`: the absolute deadline.
    CompareValue,
    /// `CNTPCT_EL0` (or `CNTPCTSS_EL0`): the physical counter, as the instance sees it.
    Counter,
}

impl TimerRegister {
    /// The register with the encoding `(op0, op1, CRn, CRm, op2)`, if it is a physical timer one.
    pub fn decode(encoding: (u8, u8, u8, u8, u8)) -> Option<Self> {
        match encoding {
            (3, 3, 14, 2, 0) => Some(Self::TimerValue),
            (3, 3, 14, 2, 1) => Some(Self::Control),
            (3, 3, 14, 2, 2) => Some(Self::CompareValue),
            (3, 3, 14, 0, 1) | (3, 3, 14, 0, 5) => Some(Self::Counter),
            _ => None,
        }
    }
}

/// A vCPU's emulated EL1 physical timer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EmulatedTimer {
    /// ENABLE and IMASK as the guest wrote them.
    pub control: u64,
    /// The deadline, in counter ticks.
    pub compare: u64,
}

impl EmulatedTimer {
    /// The value a read of `register` returns when the counter reads `now`.
    pub fn read(&self, register: TimerRegister, now: u64) -> u64 {
        match register {
            TimerRegister::TimerValue => self.compare.wrapping_sub(now) & 0xffff_ffff,
            TimerRegister::Control => {
                let status = if self.control & CTL_ENABLE != 0 && now >= self.compare {
                    CTL_ISTATUS
                } else {
                    0
                };
                self.control | status
            }
            TimerRegister::CompareValue => self.compare,
            TimerRegister::Counter => now,
        }
    }

    /// Applies a write of `value` to `register` when the counter reads `now`.
    pub fn write(&mut self, register: TimerRegister, value: u64, now: u64) {
        match register {
            TimerRegister::TimerValue => {
                self.compare = now.wrapping_add(value as u32 as i32 as i64 as u64)
            }
            TimerRegister::Control => self.control = value & (CTL_ENABLE | CTL_IMASK),
            TimerRegister::CompareValue => self.compare = value,
            // Read-only.
            TimerRegister::Counter => {}
        }
    }

    /// The level of the timer's interrupt output at `now`.
    pub fn asserted(&self, now: u64) -> bool {
        self.deadline().is_some_and(|deadline| now >= deadline)
    }

    /// When the interrupt output will rise, if the timer is enabled and unmasked.
    pub fn deadline(&self) -> Option<u64> {
        (self.control & (CTL_ENABLE | CTL_IMASK) == CTL_ENABLE).then_some(self.compare)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_only_the_physical_timer() {
        assert_eq!(
            TimerRegister::decode((3, 3, 14, 2, 1)),
            Some(TimerRegister::Control)
        );
        assert_eq!(
            TimerRegister::decode((3, 3, 14, 3, 1)),
            None,
            "CNTV_CTL_EL0 is the guest's own"
        );
    }

    #[test]
    fn timer_value_is_relative_and_signed() {
        let mut timer = EmulatedTimer::default();
        timer.write(TimerRegister::TimerValue, 1000, 5000);
        assert_eq!(timer.compare, 6000);
        assert_eq!(timer.read(TimerRegister::TimerValue, 5500), 500);
        assert_eq!(
            timer.read(TimerRegister::TimerValue, 6001),
            0xffff_ffff,
            "-1 after the deadline"
        );
        timer.write(TimerRegister::TimerValue, 0xffff_fff6, 5000);
        assert_eq!(
            timer.compare, 4990,
            "a negative value puts the deadline in the past"
        );
    }

    #[test]
    fn interrupt_follows_enable_mask_and_deadline() {
        let mut timer = EmulatedTimer::default();
        timer.write(TimerRegister::CompareValue, 100, 0);
        assert!(!timer.asserted(200), "disabled");
        timer.write(TimerRegister::Control, CTL_ENABLE | CTL_ISTATUS, 0);
        assert_eq!(
            timer.read(TimerRegister::Control, 50),
            CTL_ENABLE,
            "ISTATUS is read-only"
        );
        assert_eq!(timer.deadline(), Some(100));
        assert!(!timer.asserted(99));
        assert!(timer.asserted(100));
        assert_eq!(
            timer.read(TimerRegister::Control, 100),
            CTL_ENABLE | CTL_ISTATUS
        );
        timer.write(TimerRegister::Control, CTL_ENABLE | CTL_IMASK, 0);
        assert!(!timer.asserted(200), "masked");
        assert_eq!(timer.deadline(), None);
        assert_eq!(
            timer.read(TimerRegister::Control, 200),
            CTL_ENABLE | CTL_IMASK | CTL_ISTATUS
        );
    }
}
