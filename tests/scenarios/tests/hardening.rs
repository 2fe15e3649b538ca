//! Hostile images and hostile guests: an image whose header would place anything outside the
//! instance's RAM is refused before a byte is copied; a guest that floods the hypervisor's log
//! is rate-limited and one that faults forever is stopped; names cannot forge console lines;
//! PSCI answers as the specification says; user errors at boot are one line, never a panic, and
//! a device tree the hypervisor cannot use is named on the early console.

use std::path::PathBuf;
use std::time::Duration;

use scenarios::{Log, board_gic, board_with_guest, board_with_image, with_icount};
use xtask::build;
use xtask::bundle::{BundleSpec, write_bundle_file};
use xtask::linux_guest;

/// A file in the temporary directory, unique to this process, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str) -> Self {
        Self(std::env::temp_dir().join(format!("hardening-{}-{name}", std::process::id())))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        std::fs::remove_file(&self.0).ok();
    }
}

/// The basic test guest's image with its Image header fields changed.
fn basic_with_header(
    text_offset: Option<u64>,
    image_size: Option<u64>,
    flags: Option<u64>,
) -> Vec<u8> {
    let mut image = std::fs::read(build::guest_image("basic")).expect("the basic guest is built");
    for (offset, value) in [(8, text_offset), (16, image_size), (24, flags)] {
        if let Some(value) = value {
            image[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
        }
    }
    image
}

/// Boots `image` as the guest `name` (64 MiB of RAM) and checks that it is refused for `reason`
/// without a byte of it running.
fn refused(name: &str, image: &[u8], reason: &str) {
    let file = TempFile::new(name);
    std::fs::write(&file.0, image).expect("write the hostile image");
    let log = Log::boot(name, &board_with_image(file.0.clone(), name));
    log.powered_off()
        .has(&format!("{name}: cannot start: {reason}"))
        .in_order("cannot start", "all instances stopped: powering off")
        .lacks("vCPUs,")
        .lacks(&format!("[{name}]"))
        .lacks("PANIC");
}

#[test]
fn images_whose_header_would_place_anything_outside_guest_ram_are_refused() {
    const MIB: u64 = 1 << 20;
    let overflow = "guest image: kernel, initrd and device tree sizes overflow";
    let too_big = "guest image: kernel, initrd and device tree need";
    let corpus: [(&str, Vec<u8>, &str); 8] = [
        (
            "below-ram",
            basic_with_header(Some((2 * MIB).wrapping_neg()), None, None),
            overflow,
        ),
        (
            "above-ram",
            basic_with_header(Some(1 << 32), None, None),
            too_big,
        ),
        (
            "across-ram-end",
            basic_with_header(Some(63 * MIB), Some(4 * MIB), None),
            too_big,
        ),
        (
            "size-wraps",
            basic_with_header(Some(0), Some(u64::MAX - 0xfff), None),
            overflow,
        ),
        (
            "huge-size",
            basic_with_header(Some(0), Some(1 << 40), None),
            too_big,
        ),
        (
            "over-the-dtb",
            basic_with_header(Some(0), Some(63 * MIB), None),
            too_big,
        ),
        (
            "unaligned",
            basic_with_header(Some(0x1234), None, None),
            "guest image: Image header text_offset 0x1234 is not 4 KiB-aligned",
        ),
        (
            "big-endian",
            basic_with_header(None, None, Some(1)),
            "guest image: big-endian kernel images are not supported",
        ),
    ];
    for (name, image, reason) in &corpus {
        refused(name, image, reason);
    }
}

#[test]
fn an_initrd_that_would_overlap_the_kernel_is_refused() {
    const MIB: u64 = 1 << 20;
    let kernel = TempFile::new("overlap-kernel");
    let initrd = TempFile::new("overlap-initrd");
    std::fs::write(&kernel.0, basic_with_header(None, Some(40 * MIB), None)).unwrap();
    std::fs::write(&initrd.0, vec![0x5a; 30 << 20]).unwrap();
    let bundle = TempFile::new("overlap.fit");
    write_bundle_file(
        &BundleSpec {
            kernel: kernel.0.clone(),
            initrd: Some(initrd.0.clone()),
            name: "overlap".into(),
            memory: 64 * MIB,
            vcpus: 1,
            bootargs: String::new(),
        },
        &bundle.0,
    )
    .unwrap();
    let mut board = board_with_image(bundle.0.clone(), "overlap");
    board.memory_mib = 512;
    let log = Log::boot("overlap", &board);
    log.powered_off()
        .has("overlap: cannot start: guest image: kernel, initrd and device tree need")
        .lacks("vCPUs,")
        .lacks("PANIC");
}

#[test]
fn a_guest_that_floods_the_log_and_faults_forever_is_bounded_and_stopped() {
    let log = Log::boot("flood", &with_icount(board_with_guest("flood")));
    // The guest's own output arrived, before the hypervisor stopped it.
    log.powered_off()
        .has("[flood] flood: starting 1000000 unknown hypercalls")
        .has("[flood] PASS: unknown hvc answered")
        .has("[flood] flood: faulting at an unmapped vector")
        .has("flood: unknown Hvc call 0x86001234")
        .has("lines about this instance suppressed before this one")
        .has("flood: stopping vCPU 0: its exception vector at 0x10000200 is not mapped")
        .in_order(
            "[flood] flood: faulting at an unmapped vector",
            "flood: stopping vCPU 0",
        )
        .in_order("flood: stopping vCPU 0", "flood: stopped:")
        .lacks("PANIC");
    // At most 20 lines at once and 10 a second (one more line when the vCPU stops): the million
    // calls take about a second of the guest's time here, so 50 is a generous bound (without the
    // limit: a million).
    let lines = log.count("el2  WARN: flood:");
    log.check(
        lines <= 50,
        &format!("{lines} hypervisor lines about the flood guest, expected at most 50"),
    )
    .check(
        log.count("stopping vCPU") == 1,
        "the vCPU is stopped with exactly one line",
    );
}

#[test]
fn a_bundle_whose_name_would_forge_console_lines_is_refused() {
    const SAFE: &str = "AAAAAAAAAAAAAAAAAAA";
    const FORGED: &[u8; 19] = b"x\nel2  INFO: ok\x1b[2J";
    let bundle = TempFile::new("forged.fit");
    write_bundle_file(
        &BundleSpec {
            kernel: build::guest_image("basic"),
            initrd: None,
            name: SAFE.into(),
            memory: 64 << 20,
            vcpus: 1,
            bootargs: String::new(),
        },
        &bundle.0,
    )
    .unwrap();
    // Names are not covered by the image hashes: rewrite every copy of it in place.
    let mut blob = std::fs::read(&bundle.0).unwrap();
    let mut patched = 0;
    while let Some(at) = blob.windows(SAFE.len()).position(|w| w == SAFE.as_bytes()) {
        blob[at..at + SAFE.len()].copy_from_slice(FORGED);
        patched += 1;
    }
    assert!(patched > 0);
    std::fs::write(&bundle.0, &blob).unwrap();
    let log = Log::boot("forged name", &board_with_image(bundle.0.clone(), "forged"));
    log.powered_off()
        .has("cannot start: guest bundle: guest bundle manifest: bad hv,name")
        .check(
            !log.serial().contains('\x1b'),
            "an escape code reached the console",
        )
        .check(
            !log.serial()
                .lines()
                .any(|line| line.starts_with("el2  INFO: ok")),
            "a forged hypervisor line reached the console",
        )
        .lacks("PANIC");
}

#[test]
fn psci_answers_as_the_specification_says_and_cpu_suspend_wakes_by_the_timer() {
    let mut board = with_icount(board_with_guest("psci"));
    board.bootargs = "log=debug guest.name=psci guest.mem=64M".into();
    let log = Log::boot("psci", &board);
    log.powered_off()
        .has("[psci] PASS: cpu_on entry outside ram")
        .has("[psci] PASS: cpu_on reserved mpidr bits")
        .has("[psci] PASS: cpu_suspend offered")
        .has("[psci] PASS: cpu_suspend standby wakes by its timer")
        .has("[psci] PASS: cpu_suspend power-down resumes at its entry")
        .has("[psci] RESULT: PASS")
        // The hypervisor's own record of the calls it trapped.
        .has("psci: vCPU 0: Hvc CpuOn { target: 0, entry: 0,")
        .has("psci: vCPU 0: Hvc CpuSuspend { power_state: 0,")
        .has("psci: vCPU 0: Hvc CpuSuspend { power_state: 10000,")
        .lacks("FAIL")
        .lacks("PANIC");
}

/// Boots the basic guest on a board changed by `adjust` and checks that the hypervisor refuses
/// to boot with one line containing `reason`, then powers the board off.
fn boot_refused(name: &str, adjust: impl FnOnce(&mut xtask::qemu::Board), reason: &str) {
    let mut board = board_with_guest("basic");
    adjust(&mut board);
    let log = Log::boot(name, &board);
    log.powered_off()
        .has(&format!("el2 ERROR: cannot boot: {reason}"))
        .check(log.count("cannot boot") == 1, "one line of reason")
        .lacks("[basic]")
        .lacks("PANIC");
}

/// Gives `board` QEMU virt's own device tree for it (dumped by QEMU with the same options),
/// written to `file` with every `from` replaced by `to` (of the same length).
fn with_patched_dtb(board: &mut xtask::qemu::Board, file: &TempFile, from: &[u8], to: &[u8]) {
    let status = board
        .command()
        .args(["-machine", &format!("dumpdtb={}", file.0.display())])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("QEMU dumps its device tree");
    assert!(status.success(), "dumpdtb: {status}");
    let mut dtb = std::fs::read(&file.0).expect("the dumped device tree");
    let places: Vec<usize> = (0..dtb.len().saturating_sub(from.len()))
        .filter(|&at| dtb[at..].starts_with(from))
        .collect();
    assert!(!places.is_empty(), "the text to replace");
    for at in places {
        dtb[at..at + to.len()].copy_from_slice(to);
    }
    std::fs::write(&file.0, dtb).expect("the patched device tree");
    board
        .extra_args
        .extend(["-dtb".to_string(), file.0.display().to_string()]);
}

#[test]
fn a_device_tree_the_hypervisor_cannot_use_is_named_on_the_early_console() {
    // A board no platform module knows: said on the PL011 its device tree names.
    let unknown = TempFile::new("unknown-board.dtb");
    boot_refused(
        "unknown board",
        |board| with_patched_dtb(board, &unknown, b"linux,dummy-virt", b"acme,unknown-brd"),
        "unsupported board (root compatible not recognised): the device tree's root is \
         compatible with \"acme,unknown-brd\"",
    );
    // A device tree that is no board description (its GIC unknown): said on the early console
    // that `earlycon=` names.
    let no_gic = TempFile::new("no-gic.dtb");
    boot_refused(
        "unusable device tree",
        |board| {
            board.bootargs.push_str(" earlycon=pl011,0x09000000");
            let (gic, unknown): (&[u8], &[u8]) = match board_gic() {
                2 => (b"arm,cortex-a15-gic\0", b"arm,cortex-a99-gic\0"),
                _ => (b"arm,gic-v3\0", b"arm,gic-v9\0"),
            };
            with_patched_dtb(board, &no_gic, gic, unknown);
        },
        "the board's device tree cannot be used: no GIC node",
    );
    // A corrupt device tree (a node name that is not UTF-8; QEMU's own handling of `-dtb` does
    // not look at it): said on the fallback console, QEMU virt's PL011.
    let corrupt = TempFile::new("corrupt.dtb");
    boot_refused(
        "corrupt device tree",
        |board| {
            with_patched_dtb(
                board,
                &corrupt,
                b"\0\0\0\x01pl011@9000000\0",
                b"\0\0\0\x01pl011@90000\xff0\0",
            )
        },
        "the board's device tree cannot be used: bad DTB structure: node name not \
         NUL-terminated UTF-8",
    );
}

#[test]
fn user_errors_at_boot_are_one_line_and_a_clean_power_off() {
    boot_refused(
        "entered at EL1",
        |board| {
            board
                .extra_args
                .extend(["-machine", "virtualization=off"].map(String::from))
        },
        "entered at EL1, but the hypervisor runs at EL2",
    );
    boot_refused(
        "48 MiB board",
        |board| board.memory_mib = 48,
        "the board has",
    );
    boot_refused(
        "guest.mem=abc",
        |board| board.bootargs = "log=info guest.name=basic guest.mem=abc".into(),
        "boot argument `guest.mem=abc`",
    );
    let empty = TempFile::new("empty.img");
    std::fs::write(&empty.0, []).unwrap();
    boot_refused(
        "empty image",
        |board| board.guest = empty.0.clone(),
        "no guest image",
    );
}

#[test]
fn linux_on_four_vcpus_reboots_ten_times_in_a_row() {
    const REBOOTS: usize = 10;
    let bundle = linux_guest::bundle_path(4);
    let mut board = board_with_image(bundle, "linux");
    board.cpus = 4;
    board.memory_mib = 1024;
    // The keyboard starts with the management shell: Ctrl-] gives it to the guest.
    let mut script = vec![
        (linux_guest::PROMPT, "\x1d"),
        ("keyboard to linux", "reboot -f\r"),
    ];
    script.extend(vec![(linux_guest::PROMPT, "reboot -f\r"); REBOOTS - 1]);
    script.push((linux_guest::PROMPT, "poweroff -f\r"));
    let log = Log::boot_scripted_within("linux reboots", &board, &script, Duration::from_secs(300));
    log.powered_off()
        .check(
            log.count(linux_guest::INIT_MARKER) == REBOOTS + 1,
            "Linux reached its shell after every reboot",
        )
        .check(
            log.count("linux: SYSTEM_RESET: reloading the instance") == REBOOTS,
            "the hypervisor reloaded the instance once per reboot",
        )
        .has("linux: stopped: the guest called SYSTEM_OFF")
        .lacks("PANIC");
}
