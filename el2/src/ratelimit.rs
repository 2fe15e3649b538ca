//! A token bucket for lines a guest can put on the board console: each instance may make the
//! hypervisor print at most [`LogBudget::BURST`] log lines at once and [`LogBudget::PER_SECOND`]
//! a second after that, and write [`LogBudget::CONSOLE_BURST`] console lines at once and
//! [`LogBudget::CONSOLE_PER_SECOND`] a second. What it suppresses is counted and reported with
//! the next line it lets through.

/// What [`LogBudget::admit`] decided about one line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Print the line; `suppressed` lines were dropped since the last one printed.
    Print { suppressed: u64 },
    /// Drop the line (it is counted).
    Drop,
}

/// One instance's budget of guest-driven log lines, refilled by the counter's time.
#[derive(Clone, Debug)]
pub struct LogBudget {
    /// Lines that may be printed now.
    tokens: u64,
    /// Counter value up to which tokens have been credited.
    credited_at: u64,
    /// Lines dropped since the last one printed.
    suppressed: u64,
    /// Most lines at once.
    burst: u64,
    /// Lines a second, sustained.
    per_second: u64,
}

impl LogBudget {
    /// Lines an instance may cause at once.
    pub const BURST: u64 = 20;
    /// Lines an instance may cause per second, sustained.
    pub const PER_SECOND: u64 = 10;

    /// Guest console lines an instance may write at once.
    pub const CONSOLE_BURST: u64 = 500;
    /// Guest console lines an instance may write per second, sustained.
    pub const CONSOLE_PER_SECOND: u64 = 200;

    /// A full bucket of log lines at counter value `now`.
    pub const fn new(now: u64) -> Self {
        Self::with_limits(now, Self::BURST, Self::PER_SECOND)
    }

    /// A full bucket of console lines at counter value `now`.
    pub const fn console(now: u64) -> Self {
        Self::with_limits(now, Self::CONSOLE_BURST, Self::CONSOLE_PER_SECOND)
    }

    const fn with_limits(now: u64, burst: u64, per_second: u64) -> Self {
        Self {
            tokens: burst,
            credited_at: now,
            suppressed: 0,
            burst,
            per_second,
        }
    }

    /// Lines a second this bucket lets through, sustained.
    pub const fn per_second(&self) -> u64 {
        self.per_second
    }

    /// Decides about one line at counter value `now`, the counter running at `hz` ticks a second.
    pub fn admit(&mut self, now: u64, hz: u64) -> Admission {
        let per_token = (hz / self.per_second).max(1);
        let earned = now.saturating_sub(self.credited_at) / per_token;
        if earned > 0 {
            self.tokens = self.tokens.saturating_add(earned).min(self.burst);
            self.credited_at = self.credited_at.saturating_add(earned * per_token);
        }
        if now < self.credited_at {
            // The counter went backwards (a new board after a move): start the refill afresh.
            self.credited_at = now;
        }
        if self.tokens == 0 {
            self.suppressed += 1;
            return Admission::Drop;
        }
        self.tokens -= 1;
        Admission::Print {
            suppressed: core::mem::take(&mut self.suppressed),
        }
    }

    /// Lines dropped and not yet reported (reported when the instance stops).
    pub fn take_suppressed(&mut self) -> u64 {
        core::mem::take(&mut self.suppressed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HZ: u64 = 1_000_000_000;

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let mut budget = LogBudget::new(0);
        for _ in 0..LogBudget::BURST {
            assert_eq!(budget.admit(0, HZ), Admission::Print { suppressed: 0 });
        }
        for _ in 0..1000 {
            assert_eq!(budget.admit(10, HZ), Admission::Drop);
        }
        // A tenth of a second later one line is earned, and it reports the drops.
        assert_eq!(
            budget.admit(HZ / 10, HZ),
            Admission::Print { suppressed: 1000 }
        );
        assert_eq!(budget.admit(HZ / 10, HZ), Admission::Drop);
    }

    #[test]
    fn a_million_lines_in_ten_seconds_print_at_most_burst_plus_rate() {
        let mut budget = LogBudget::new(0);
        let mut printed = 0;
        for i in 0..1_000_000u64 {
            if let Admission::Print { .. } = budget.admit(i * 10_000, HZ) {
                printed += 1;
            }
        }
        assert!(printed <= LogBudget::BURST + 10 * LogBudget::PER_SECOND);
        assert!(printed >= 10 * LogBudget::PER_SECOND);
    }

    #[test]
    fn idle_time_refills_only_up_to_the_burst() {
        let mut budget = LogBudget::new(0);
        for _ in 0..LogBudget::BURST {
            budget.admit(0, HZ);
        }
        let later = 3600 * HZ;
        let printed = (0..100)
            .filter(|_| matches!(budget.admit(later, HZ), Admission::Print { .. }))
            .count() as u64;
        assert_eq!(printed, LogBudget::BURST);
        assert_eq!(budget.take_suppressed(), 100 - LogBudget::BURST);
    }

    #[test]
    fn the_console_budget_lets_a_boot_log_through_and_stops_a_flood() {
        let mut budget = LogBudget::console(0);
        let boot_log = (0..400)
            .filter(|_| matches!(budget.admit(0, HZ), Admission::Print { .. }))
            .count();
        assert_eq!(boot_log, 400);
        let flood = (0..100_000u64)
            .filter(|i| matches!(budget.admit(i * 10_000, HZ), Admission::Print { .. }))
            .count() as u64;
        assert!(flood <= 100 + LogBudget::CONSOLE_PER_SECOND, "{flood}");
    }

    #[test]
    fn a_counter_that_goes_backwards_does_not_wedge_the_budget() {
        let mut budget = LogBudget::new(u64::MAX - 5);
        for _ in 0..LogBudget::BURST {
            budget.admit(u64::MAX - 5, HZ);
        }
        assert_eq!(budget.admit(0, HZ), Admission::Drop);
        assert!(matches!(budget.admit(HZ, HZ), Admission::Print { .. }));
    }
}
