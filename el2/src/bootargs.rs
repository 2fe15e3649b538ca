//! The hypervisor's own command line (`/chosen/bootargs` of the board's device tree).
//!
//! `log=<off|error|warn|info|debug|trace>` sets the log level; `guest.name=<name>` and
//! `guest.mem=<size>[K|M|G]` describe the default instance; `sched.slice_ms=<1..1000>` sets the
//! scheduler's time slice; `net.addr=<a.b.c.d/prefix>` and `net.gw=<a.b.c.d>` place the board on
//! its link (default: QEMU user networking's 10.0.2.15/24 via 10.0.2.2), and `net.listen`
//! accepts incoming instances from boot (a board may then start with none). Unknown words are
//! reported, not
//! fatal; a known word with a bad value is an error, so the hypervisor refuses to start rather
//! than run with a setting nobody asked for.

use alloc::string::String;
use alloc::vec::Vec;

/// The scheduler's time slice when `sched.slice_ms` is not given.
pub const DEFAULT_SLICE_MS: u64 = 4;
/// Guest RAM when `guest.mem` is not given.
pub const DEFAULT_GUEST_MEM: u64 = 128 << 20;
/// Guest RAM is a whole number of these (the stage-2 block size it is mapped with).
const GUEST_MEM_GRANULE: u64 = 2 << 20;

/// The hypervisor's settings from its command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootArgs {
    /// Maximum level of log messages printed.
    pub log_level: log::LevelFilter,
    /// Name of the default instance.
    pub guest_name: String,
    /// RAM of the default instance, in bytes.
    pub guest_mem: u64,
    /// The scheduler's time slice in milliseconds.
    pub slice_ms: u64,
    /// Where the board sits on its link.
    pub net: crate::net::NetConfig,
    /// Accept incoming instances from boot.
    pub listen: bool,
    /// Words that were not understood, to be reported once logging is up.
    pub unknown: Vec<String>,
}

impl Default for BootArgs {
    fn default() -> Self {
        Self {
            log_level: log::LevelFilter::Info,
            guest_name: "guest0".into(),
            guest_mem: DEFAULT_GUEST_MEM,
            slice_ms: DEFAULT_SLICE_MS,
            net: crate::net::NetConfig::QEMU_USER,
            listen: false,
            unknown: Vec::new(),
        }
    }
}

/// A known boot argument with a value that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadBootArg {
    /// The word as given.
    pub word: String,
    /// What is wrong with its value.
    pub why: &'static str,
}

impl core::fmt::Display for BadBootArg {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "boot argument `{}`: {}", self.word, self.why)
    }
}

impl BootArgs {
    /// Parses a command line; words it does not understand land in `unknown`.
    pub fn parse(cmdline: &str) -> Result<Self, BadBootArg> {
        let mut args = Self::default();
        for word in cmdline.split_whitespace() {
            let bad = |why| BadBootArg {
                word: word.into(),
                why,
            };
            match word.split_once('=') {
                Some(("log", level)) => {
                    args.log_level = level.parse().map_err(|_| {
                        bad("the level is one of off, error, warn, info, debug, trace")
                    })?;
                }
                Some(("guest.name", name)) => {
                    devicetree::fit::check_instance_name(name).map_err(bad)?;
                    args.guest_name = name.into();
                }
                Some(("guest.mem", size)) => {
                    args.guest_mem = parse_size(size)
                        .filter(|size| size.is_multiple_of(GUEST_MEM_GRANULE))
                        .ok_or(bad(
                            "the size is a nonzero multiple of 2 MiB, such as 64M or 1G",
                        ))?;
                }
                Some(("sched.slice_ms", ms)) => {
                    args.slice_ms = ms
                        .parse()
                        .ok()
                        .filter(|ms| (1..=1000).contains(ms))
                        .ok_or(bad("the slice is 1 to 1000 milliseconds"))?;
                }
                Some(("net.addr", cidr)) => {
                    args.net.address = cidr
                        .parse()
                        .map_err(|_| bad("the address is a.b.c.d/prefix, such as 10.0.0.1/24"))?;
                    // A board given its own address has no gateway unless told.
                    if !cmdline.split_whitespace().any(|w| w.starts_with("net.gw=")) {
                        args.net.gateway = None;
                    }
                }
                Some(("net.gw", gateway)) => {
                    args.net.gateway = Some(
                        gateway
                            .parse()
                            .map_err(|_| bad("the gateway is an address a.b.c.d"))?,
                    );
                }
                None if word == "net.listen" => args.listen = true,
                _ => args.unknown.push(word.into()),
            }
        }
        Ok(args)
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
    fn network_words_place_the_board() {
        let args = BootArgs::parse("net.addr=10.0.0.2/24 net.listen").unwrap();
        assert_eq!(args.net.address.to_string(), "10.0.0.2/24");
        assert_eq!(args.net.gateway, None);
        assert!(args.listen);
        let args = BootArgs::parse("net.gw=10.0.0.1 net.addr=10.0.0.2/24").unwrap();
        assert_eq!(
            args.net.gateway.map(|g| g.to_string()).as_deref(),
            Some("10.0.0.1")
        );
        assert_eq!(
            BootArgs::parse("").unwrap().net,
            crate::net::NetConfig::QEMU_USER
        );
        assert!(BootArgs::parse("net.addr=10.0.0.300/24").is_err());
        assert!(BootArgs::parse("net.gw=x").is_err());
    }

    #[test]
    fn parses_known_words_and_keeps_unknown_ones() {
        let args =
            BootArgs::parse("log=debug guest.mem=64M guest.name=basic console=ttyAMA0 quiet")
                .unwrap();
        assert_eq!(args.log_level, log::LevelFilter::Debug);
        assert_eq!(args.guest_mem, 64 << 20);
        assert_eq!(args.guest_name, "basic");
        assert_eq!(args.unknown, ["console=ttyAMA0", "quiet"]);
    }

    #[test]
    fn bad_values_of_known_words_are_errors() {
        for word in [
            "log=loud",
            "guest.mem=abc",
            "guest.mem=0",
            "guest.mem=3M",
            "guest.mem=",
            "guest.name=",
            "guest.name=a\u{1b}[31mred",
            "sched.slice_ms=0",
            "sched.slice_ms=x",
        ] {
            let error = BootArgs::parse(&alloc::format!("log=info {word}")).unwrap_err();
            assert_eq!(error.word, word);
        }
    }

    #[test]
    fn defaults() {
        assert_eq!(BootArgs::parse(""), Ok(BootArgs::default()));
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
