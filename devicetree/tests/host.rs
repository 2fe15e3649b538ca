//! `parse_board` on QEMU virt DTBs and on a synthetic Raspberry Pi 4-shaped DTB.

use devicetree::{
    Board, DtError, EnableMethod, GicDescription, MemRange, PsciMethod, TimerPpis, UartKind,
    dtb_total_size, parse_board,
};
use vm_fdt::{FdtReserveEntry, FdtWriter};

const GICV2_DTB: &[u8] = include_bytes!("fixtures/qemu-virt-gicv2.dtb");
const GICV3_DTB: &[u8] = include_bytes!("fixtures/qemu-virt-gicv3.dtb");

/// What both QEMU fixtures share.
fn check_qemu_virt(board: &Board) {
    assert_eq!(board.model.as_deref(), Some("linux,dummy-virt"));
    assert_eq!(board.compatible, ["linux,dummy-virt"]);
    assert_eq!(board.memory, [MemRange::new(0x4000_0000, 512 << 20)]);
    assert_eq!(board.reserved, []);
    assert_eq!(board.usable_memory(), board.memory);

    let mpidrs: Vec<u64> = board.cpus.iter().map(|c| c.mpidr).collect();
    assert_eq!(mpidrs, [0, 1, 2, 3]);
    assert!(
        board
            .cpus
            .iter()
            .all(|c| c.enable_method == EnableMethod::Psci)
    );
    assert_eq!(board.psci.map(|p| p.method), Some(PsciMethod::Smc));

    let uart = board.uart.expect("uart");
    assert_eq!((uart.base, uart.size), (0x0900_0000, 0x1000));
    assert_eq!(uart.kind, UartKind::Pl011);
    assert_eq!(uart.irq, Some(33));

    let timer = TimerPpis {
        secure_phys: 29,
        nonsecure_phys: 30,
        virtual_: 27,
        hyp: 26,
    };
    assert_eq!(board.timer, Some(timer));

    assert_eq!(
        board.chosen.bootargs.as_deref(),
        Some("log=debug guest.mem=64M")
    );
    assert_eq!(board.chosen.stdout_path.as_deref(), Some("/pl011@9000000"));
    let initrd = board.chosen.initrd.expect("initrd");
    assert_eq!(initrd.size, 10000);
    assert!(initrd.base >= 0x4000_0000 && initrd.end() <= 0x6000_0000);
}

#[test]
fn a_second_pl011_is_the_management_uart() {
    let board = parse_board(GICV3_DTB).unwrap();
    assert_eq!(board.management_uart, None, "one -serial: no second UART");
    let dtb = include_bytes!("fixtures/qemu-virt-two-uarts.dtb");
    let board = parse_board(dtb).unwrap();
    assert_eq!(board.uart.map(|uart| uart.base), Some(0x0900_0000));
    let management = board.management_uart.expect("UART1");
    assert_eq!(
        (management.base, management.kind, management.irq),
        (0x0904_0000, UartKind::Pl011, Some(32 + 8))
    );
}

#[test]
fn qemu_virt_gicv3() {
    let board = parse_board(GICV3_DTB).unwrap();
    check_qemu_virt(&board);
    assert_eq!(
        board.gic,
        GicDescription::V3 {
            distributor: MemRange::new(0x0800_0000, 0x1_0000),
            // QEMU sizes the region for its 123-CPU maximum, not for -smp.
            redistributors: vec![MemRange::new(0x080A_0000, 0xF6_0000)],
            maintenance_irq: Some(25),
        }
    );
}

#[test]
fn qemu_virt_gicv2() {
    let board = parse_board(GICV2_DTB).unwrap();
    check_qemu_virt(&board);
    assert_eq!(
        board.gic,
        GicDescription::V2 {
            distributor: MemRange::new(0x0800_0000, 0x1_0000),
            cpu_interface: MemRange::new(0x0801_0000, 0x1_0000),
            hyp_interface: Some(MemRange::new(0x0803_0000, 0x1_0000)),
            virtual_cpu_interface: Some(MemRange::new(0x0804_0000, 0x1_0000)),
            maintenance_irq: Some(25),
        }
    );
}

#[test]
fn total_size_from_header() {
    assert_eq!(dtb_total_size(&GICV3_DTB[..40]), Ok(1 << 20));
    assert_eq!(
        dtb_total_size(&GICV3_DTB[..39]),
        Err(DtError::BadHeader("shorter than 40 bytes"))
    );
    let mut bad = GICV3_DTB[..40].to_vec();
    bad[0] = 0;
    assert_eq!(dtb_total_size(&bad), Err(DtError::BadHeader("bad magic")));
}

#[test]
fn rejects_malformed_dtbs() {
    let err = parse_board(&GICV3_DTB[..4096]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "bad DTB header: total size exceeds the buffer"
    );

    let mut dtb = GICV3_DTB.to_vec();
    dtb[8..12].copy_from_slice(&0xFFFF_0000u32.to_be_bytes()); // off_dt_struct
    assert_eq!(
        parse_board(&dtb),
        Err(DtError::BadHeader("structure block out of bounds"))
    );

    // Replace the root's first property (interrupt-parent, 16 bytes at 0x48) with NOPs, as
    // libfdt deletes one: the board is read without it, and its timer then has no interrupt
    // parent to read its interrupts with.
    let mut dtb = GICV3_DTB.to_vec();
    assert_eq!(dtb[0x48..0x50], [0, 0, 0, 3, 0, 0, 0, 4]);
    for token in dtb[0x48..0x58].chunks_mut(4) {
        token.copy_from_slice(&4u32.to_be_bytes());
    }
    let err = parse_board(&dtb).unwrap_err();
    assert_eq!(err.to_string(), "timer node has a malformed interrupts");
}

/// A DT shaped like the Raspberry Pi 4's: devices under /soc behind `ranges`, spin-table CPUs,
/// an aliased stdout-path with options, reservations, and 32-bit initrd cells.
fn pi4_like_dtb(with_memory: bool) -> Vec<u8> {
    let mut w =
        FdtWriter::new_with_mem_reserv(&[FdtReserveEntry::new(0, 0x1000).unwrap()]).unwrap();
    let root = w.begin_node("").unwrap();
    w.property_string_list(
        "compatible",
        vec!["raspberrypi,4-model-b".into(), "brcm,bcm2711".into()],
    )
    .unwrap();
    w.property_string("model", "Raspberry Pi 4 Model B")
        .unwrap();
    w.property_u32("#address-cells", 2).unwrap();
    w.property_u32("#size-cells", 1).unwrap();
    w.property_u32("interrupt-parent", 1).unwrap();

    let n = w.begin_node("aliases").unwrap();
    w.property_string("serial0", "/soc/serial@7e215040")
        .unwrap();
    w.property_string("serial1", "/soc/serial@7e201000")
        .unwrap();
    w.end_node(n).unwrap();

    let n = w.begin_node("chosen").unwrap();
    w.property_string("stdout-path", "serial1:115200n8")
        .unwrap();
    w.property_u32("linux,initrd-start", 0x0200_0000).unwrap();
    w.property_u32("linux,initrd-end", 0x0280_0000).unwrap();
    w.end_node(n).unwrap();

    let n = w.begin_node("reserved-memory").unwrap();
    w.property_u32("#address-cells", 2).unwrap();
    w.property_u32("#size-cells", 1).unwrap();
    w.property_null("ranges").unwrap();
    let c = w.begin_node("linux,cma").unwrap();
    w.property_u32("size", 0x0400_0000).unwrap();
    w.end_node(c).unwrap();
    let c = w.begin_node("nvram@3b400000").unwrap();
    w.property_array_u32("reg", &[0, 0x3b40_0000, 0x10_0000])
        .unwrap();
    w.end_node(c).unwrap();
    w.end_node(n).unwrap();

    let soc = w.begin_node("soc").unwrap();
    w.property_string("compatible", "simple-bus").unwrap();
    w.property_u32("#address-cells", 1).unwrap();
    w.property_u32("#size-cells", 1).unwrap();
    #[rustfmt::skip]
    w.property_array_u32("ranges", &[
        0x7e00_0000, 0, 0xfe00_0000, 0x0180_0000,
        0x4000_0000, 0, 0xff80_0000, 0x0080_0000,
    ]).unwrap();
    let n = w.begin_node("serial@7e215040").unwrap();
    w.property_string("compatible", "brcm,bcm2835-aux-uart")
        .unwrap();
    w.property_array_u32("reg", &[0x7e21_5040, 0x40]).unwrap();
    w.end_node(n).unwrap();
    let n = w.begin_node("serial@7e201000").unwrap();
    w.property_string_list(
        "compatible",
        vec!["arm,pl011".into(), "arm,primecell".into()],
    )
    .unwrap();
    w.property_array_u32("reg", &[0x7e20_1000, 0x200]).unwrap();
    w.property_array_u32("interrupts", &[0, 121, 4]).unwrap();
    w.end_node(n).unwrap();
    let n = w.begin_node("interrupt-controller@40041000").unwrap();
    w.property_string("compatible", "arm,gic-400").unwrap();
    w.property_null("interrupt-controller").unwrap();
    w.property_u32("#interrupt-cells", 3).unwrap();
    #[rustfmt::skip]
    w.property_array_u32("reg", &[
        0x4004_1000, 0x1000, 0x4004_2000, 0x2000, 0x4004_4000, 0x2000, 0x4004_6000, 0x2000,
    ]).unwrap();
    w.property_array_u32("interrupts", &[1, 9, 0xf04]).unwrap();
    w.property_phandle(1).unwrap();
    w.end_node(n).unwrap();
    w.end_node(soc).unwrap();

    let n = w.begin_node("timer").unwrap();
    w.property_string("compatible", "arm,armv8-timer").unwrap();
    w.property_array_u32(
        "interrupts",
        &[1, 13, 0xf08, 1, 14, 0xf08, 1, 11, 0xf08, 1, 10, 0xf08],
    )
    .unwrap();
    w.end_node(n).unwrap();

    let cpus = w.begin_node("cpus").unwrap();
    w.property_u32("#address-cells", 2).unwrap();
    w.property_u32("#size-cells", 0).unwrap();
    for (i, release) in [0xd8u64, 0xe0, 0xe8, 0xf0].into_iter().enumerate() {
        let n = w.begin_node(&format!("cpu@{i}")).unwrap();
        w.property_string("device_type", "cpu").unwrap();
        w.property_string("compatible", "arm,cortex-a72").unwrap();
        w.property_u64("reg", 0x1_0000_0000 | i as u64).unwrap();
        w.property_string("enable-method", "spin-table").unwrap();
        w.property_u64("cpu-release-addr", release).unwrap();
        w.end_node(n).unwrap();
    }
    let n = w.begin_node("l2-cache0").unwrap();
    w.property_string("compatible", "cache").unwrap();
    w.end_node(n).unwrap();
    w.end_node(cpus).unwrap();

    if with_memory {
        let n = w.begin_node("memory@0").unwrap();
        w.property_string("device_type", "memory").unwrap();
        w.property_array_u32("reg", &[0, 0, 0x3b40_0000, 0, 0x4000_0000, 0x4000_0000])
            .unwrap();
        w.end_node(n).unwrap();
    }
    w.end_node(root).unwrap();
    w.finish().unwrap()
}

#[test]
fn pi4_shaped_board() {
    let board = parse_board(&pi4_like_dtb(true)).unwrap();
    assert_eq!(board.model.as_deref(), Some("Raspberry Pi 4 Model B"));
    assert_eq!(board.compatible, ["raspberrypi,4-model-b", "brcm,bcm2711"]);
    assert_eq!(
        board.memory,
        [
            MemRange::new(0, 0x3b40_0000),
            MemRange::new(0x4000_0000, 0x4000_0000)
        ]
    );
    assert_eq!(
        board.reserved,
        [
            MemRange::new(0, 0x1000),
            MemRange::new(0x3b40_0000, 0x10_0000)
        ]
    );
    assert_eq!(
        board.usable_memory(),
        [
            MemRange::new(0x1000, 0x3b3f_f000),
            MemRange::new(0x4000_0000, 0x4000_0000)
        ]
    );

    let cpus: Vec<_> = board
        .cpus
        .iter()
        .map(|c| (c.mpidr, c.enable_method))
        .collect();
    let spin = |release_addr| EnableMethod::SpinTable { release_addr };
    assert_eq!(
        cpus,
        [
            (0x1_0000_0000, spin(0xd8)),
            (0x1_0000_0001, spin(0xe0)),
            (0x1_0000_0002, spin(0xe8)),
            (0x1_0000_0003, spin(0xf0)),
        ]
    );
    assert_eq!(board.psci, None);
    assert_eq!(
        board.gic,
        GicDescription::V2 {
            distributor: MemRange::new(0xff84_1000, 0x1000),
            cpu_interface: MemRange::new(0xff84_2000, 0x2000),
            hyp_interface: Some(MemRange::new(0xff84_4000, 0x2000)),
            virtual_cpu_interface: Some(MemRange::new(0xff84_6000, 0x2000)),
            maintenance_irq: Some(25),
        }
    );
    let uart = board.uart.unwrap();
    assert_eq!(
        (uart.base, uart.size, uart.kind, uart.irq),
        (0xfe20_1000, 0x200, UartKind::Pl011, Some(153))
    );
    let timer = TimerPpis {
        secure_phys: 29,
        nonsecure_phys: 30,
        virtual_: 27,
        hyp: 26,
    };
    assert_eq!(board.timer, Some(timer));
    assert_eq!(
        board.chosen.stdout_path.as_deref(),
        Some("serial1:115200n8")
    );
    assert_eq!(board.chosen.bootargs, None);
    assert_eq!(
        board.chosen.initrd,
        Some(MemRange::new(0x0200_0000, 0x80_0000))
    );
}

#[test]
fn missing_memory_is_reported() {
    let err = parse_board(&pi4_like_dtb(false)).unwrap_err();
    assert_eq!(err, DtError::MissingNode("/memory"));
    assert_eq!(err.to_string(), "no /memory node");
}

#[test]
fn corrupted_dtbs_are_errors_not_panics() {
    let word = |at: usize| u32::from_be_bytes(GICV3_DTB[at..at + 4].try_into().unwrap()) as usize;
    // QEMU pads to 1 MiB; the tree ends with the strings block.
    let used = word(12) + word(32);
    let mut dtb = GICV3_DTB.to_vec();
    for pos in (0..used).step_by(5) {
        for flip in [0x01, 0xff] {
            dtb[pos] ^= flip;
            let _ = parse_board(&dtb);
            dtb[pos] ^= flip;
        }
    }
    for len in (0..used).step_by(7) {
        let mut truncated = GICV3_DTB[..len].to_vec();
        if len >= 8 {
            truncated[4..8].copy_from_slice(&(len as u32).to_be_bytes());
        }
        assert!(parse_board(&truncated).is_err());
    }
}

#[test]
fn qemu_virt_lists_its_virtio_mmio_slots() {
    let board = parse_board(GICV3_DTB).unwrap();
    assert_eq!(board.virtio_mmio.len(), 32);
    assert_eq!(board.pm_watchdog, None, "QEMU virt has no BCM2835 watchdog");
    let mut bases: Vec<u64> = board.virtio_mmio.iter().map(|slot| slot.base).collect();
    bases.sort_unstable();
    assert_eq!(bases[0], 0x0a00_0000);
    assert_eq!(bases[31], 0x0a00_0000 + 31 * 0x200);
    let first = board
        .virtio_mmio
        .iter()
        .find(|slot| slot.base == 0x0a00_0000)
        .unwrap();
    // QEMU virt: transport n at 0x0a000000 + n * 0x200 raises SPI 16 + n.
    assert_eq!((first.size, first.irq), (0x200, Some(32 + 16)));
}

#[test]
fn the_early_console_comes_from_earlycon() {
    assert_eq!(
        devicetree::earlycon_pl011("console=ttyAMA0 earlycon=pl011,0x09000000 quiet"),
        Some(0x0900_0000)
    );
    assert_eq!(
        devicetree::earlycon_pl011("earlycon=pl011,mmio32,0xfe201000"),
        Some(0xfe20_1000)
    );
    assert_eq!(
        devicetree::earlycon_pl011("earlycon=uart8250,mmio32,0x1000"),
        None
    );
    assert_eq!(devicetree::earlycon_pl011("earlycon=pl011,nothex"), None);
    assert_eq!(devicetree::earlycon_pl011("log=info"), None);
}

#[test]
fn bootargs_are_read_even_where_the_board_is_not() {
    // A board whose GIC is unknown (its compatible changed) is no board, but its bootargs
    // can still name an early console.
    let mut dtb = GICV3_DTB.to_vec();
    let at = dtb
        .windows(10)
        .position(|window| window == b"arm,gic-v3")
        .expect("the GIC's compatible");
    dtb[at..at + 10].copy_from_slice(b"arm,gic-v9");
    assert_eq!(parse_board(&dtb).unwrap_err(), DtError::MissingNode("GIC"));
    assert_eq!(
        devicetree::raw_bootargs(&dtb),
        Some("log=debug guest.mem=64M")
    );
    assert_eq!(devicetree::raw_bootargs(&pi4_like_dtb(false)), None);
    assert_eq!(devicetree::raw_bootargs(&dtb[..20]), None);
    assert_eq!(devicetree::raw_bootargs(b"not a device tree at all"), None);
}

/// `dtb` with a NOP token inserted at structure-block offset `at` (a token boundary).
fn with_nop_at(dtb: &[u8], at: usize) -> Vec<u8> {
    let field = |i: usize| u32::from_be_bytes(dtb[i * 4..i * 4 + 4].try_into().unwrap()) as usize;
    let (off_struct, off_strings) = (field(2), field(3));
    assert!(
        off_strings > off_struct,
        "QEMU puts the strings after the structure"
    );
    let mut out = dtb[..off_struct + at].to_vec();
    out.extend_from_slice(&4u32.to_be_bytes());
    out.extend_from_slice(&dtb[off_struct + at..]);
    let set = |out: &mut Vec<u8>, i: usize, value: usize| {
        out[i * 4..i * 4 + 4].copy_from_slice(&(value as u32).to_be_bytes())
    };
    set(&mut out, 1, field(1) + 4);
    set(&mut out, 3, off_strings + 4);
    set(&mut out, 9, field(9) + 4);
    out
}

#[test]
fn nop_tokens_anywhere_in_the_structure_are_skipped() {
    // libfdt leaves NOPs where it deleted something (QEMU's -dtb handling, U-Boot): right after
    // the root node's name, and between two properties of the first child.
    let expected = parse_board(GICV3_DTB).unwrap();
    let word = |dtb: &[u8], at: usize| u32::from_be_bytes(dtb[at..at + 4].try_into().unwrap());
    let off_struct = word(GICV3_DTB, 8) as usize;
    let first_property = 8; // after BEGIN_NODE and the root's empty name
    assert_eq!(
        word(GICV3_DTB, off_struct + first_property),
        3,
        "a property"
    );
    let length = word(GICV3_DTB, off_struct + first_property + 4) as usize;
    let second_property = first_property + 12 + length.next_multiple_of(4);
    let nop_between = with_nop_at(GICV3_DTB, second_property);
    assert_eq!(parse_board(&nop_between).unwrap(), expected);
    let nops_twice = with_nop_at(&nop_between, first_property);
    assert_eq!(parse_board(&nops_twice).unwrap(), expected);
}
