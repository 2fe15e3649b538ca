//! The hypervisor's own command line (`/chosen/bootargs` of the board's device tree).
//!
//! `log=<error|warn|info|debug|trace>` sets the log level; `guest.name=<name>` and
//! `guest.mem=<size>[K|M|G]` describe the default instance. Unknown words are reported, not fatal.

use alloc::string::String;
use alloc::vec::Vec;

/// Guest RAM when `guest.mem` is not given.
pub const DEFAULT_GUEST_MEM: u64 = 128 << 20;

/// The hypervisor's settings from its command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootArgs {
    /// Maximum level of log messages printed.
    pub log_level: log::LevelFilter,
    /// Name of the default instance.
    pub guest_name: String,
    /// RAM of the default instance, in bytes.
    pub guest_mem: u64,
    /// Words that were not understood, to be reported once logging is up.
    pub unknown: Vec<String>,
}

impl Default for BootArgs {
    fn default() -> Self {
        Self {
            log_level: log::LevelFilter::Info,
            guest_name: "guest0".into(),
            guest_mem: DEFAULT_GUEST_MEM,
            unknown: Vec::new(),
        }
    }
}

impl BootArgs {
    /// Parses a command line; words it does not understand land in `unknown`.
    pub fn parse(cmdline: &str) -> Self {
        let mut args = Self::default();
        for word in cmdline.split_whitespace() {
            let parsed = match word.split_once('=') {
                Some(("log", level)) => level.parse().map(|level| args.log_level = level).is_ok(),
                Some(("guest.name", name)) if !name.is_empty() => {
                    args.guest_name = name.into();
                    true
                }
                Some(("guest.mem", size)) => {
                    parse_size(size).map(|size| args.guest_mem = size).is_some()
                }
                _ => false,
            };
            if !parsed {
                args.unknown.push(word.into());
            }
        }
        args
    }
}

/// Parses `64M`, `1G`, `512K` or a plain byte count.
pub fn parse_size(text: &str) -> Option<u64> {
    let (digits, shift) = match text.as_bytes().last()? {
        b'K' | b'k' => (&text[..text.len() - 1], 10),
        b'M' | b'm' => (&text[..text.len() - 1], 20),
        b'G' | b'g' => (&text[..text.len() - 1], 30),
        _ => (text, 0),
    };
    let value: u64 = digits.parse().ok()?;
    value.checked_mul(1 << shift).filter(|size| *size > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_words_and_keeps_unknown_ones() {
        let args =
            BootArgs::parse("log=debug guest.mem=64M guest.name=basic console=ttyAMA0 log=loud");
        assert_eq!(args.log_level, log::LevelFilter::Debug);
        assert_eq!(args.guest_mem, 64 << 20);
        assert_eq!(args.guest_name, "basic");
        assert_eq!(args.unknown, ["console=ttyAMA0", "log=loud"]);
    }

    #[test]
    fn defaults() {
        assert_eq!(BootArgs::parse(""), BootArgs::default());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("512k"), Some(512 << 10));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("0M"), None);
        assert_eq!(parse_size("M"), None);
        assert_eq!(parse_size("99999999999G"), None);
    }
}
