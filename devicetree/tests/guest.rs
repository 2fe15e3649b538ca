//! Guest DTBs, read back with the `fdt` crate and with `parse_board`.

use devicetree::guest::{
    self, GuestGic, GuestPlatform, MAX_GICV2_VCPUS, MAX_GICV3_VCPUS, write_guest_dtb,
};
use devicetree::{
    DtError, EnableMethod, GicDescription, MemRange, PsciMethod, TimerPpis, UartKind, parse_board,
};
use fdt::Fdt;

const INITRD: MemRange = MemRange::new(0x4800_0000, 10_000);

fn platform(vcpus: u64, gic: GuestGic) -> GuestPlatform {
    GuestPlatform {
        name: "instance-a".into(),
        ram_size: 256 << 20,
        vcpu_mpidrs: (0..vcpus).collect(),
        gic,
        bootargs: "console=ttyAMA0 earlycon".into(),
        initrd: Some(INITRD),
        virtio_transports: 2,
    }
}

fn u32s(value: &[u8]) -> Vec<u32> {
    value
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes(c.try_into().unwrap()))
        .collect()
}

fn u64s(value: &[u8]) -> Vec<u64> {
    value
        .chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().unwrap()))
        .collect()
}

fn strs(value: &[u8]) -> Vec<&str> {
    value
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| std::str::from_utf8(s).unwrap())
        .collect()
}

/// Checks the raw DT as Linux would read it.
fn check_raw(dtb: &[u8], p: &GuestPlatform) {
    let fdt = Fdt::new(dtb).unwrap();
    let prop = |path: &str, name: &str| {
        fdt.find_node(path)
            .unwrap_or_else(|| panic!("no {path}"))
            .property(name)
            .unwrap_or_else(|| panic!("no {path} {name}"))
            .value
    };
    let root = fdt.root();
    assert_eq!(root.compatible().first(), "linux,dummy-virt");
    assert_eq!(root.model(), "instance-a");
    assert_eq!(u32s(prop("/", "#address-cells")), [2]);
    assert_eq!(u32s(prop("/", "#size-cells")), [2]);
    let gic_phandle = u32s(prop("/", "interrupt-parent"));
    assert_eq!(u32s(prop("/intc@8000000", "phandle")), gic_phandle);

    let mem: Vec<_> = fdt
        .memory()
        .regions()
        .map(|r| (r.starting_address as usize, r.size))
        .collect();
    assert_eq!(mem, [(0x4000_0000, Some(256 << 20))]);
    assert_eq!(strs(prop("/memory@40000000", "device_type")), ["memory"]);

    let cpus: Vec<_> = fdt.cpus().map(|c| c.ids().first() as u64).collect();
    assert_eq!(cpus, p.vcpu_mpidrs);
    for cpu in fdt.cpus() {
        assert_eq!(
            cpu.property("enable-method").unwrap().as_str(),
            Some("psci")
        );
        assert_eq!(cpu.property("device_type").unwrap().as_str(), Some("cpu"));
        assert_eq!(
            cpu.property("compatible").unwrap().as_str(),
            Some("arm,armv8")
        );
    }
    assert_eq!(u32s(prop("/cpus", "#size-cells")), [0]);

    assert_eq!(
        strs(prop("/psci", "compatible")),
        ["arm,psci-1.0", "arm,psci-0.2"]
    );
    assert_eq!(strs(prop("/psci", "method")), ["hvc"]);

    let flags = match p.gic {
        GuestGic::V3 => 4,
        GuestGic::V2 => (((1 << p.vcpu_mpidrs.len()) - 1) << 8) | 4,
    };
    assert_eq!(
        u32s(prop("/timer", "interrupts")),
        [1, 13, flags, 1, 14, flags, 1, 11, flags, 1, 10, flags]
    );
    assert_eq!(strs(prop("/timer", "compatible"))[0], "arm,armv8-timer");
    assert!(prop("/timer", "always-on").is_empty());

    let gic = fdt.find_node("/intc@8000000").unwrap();
    assert!(gic.property("interrupt-controller").is_some());
    assert_eq!(gic.interrupt_cells(), Some(3));
    let n = p.vcpu_mpidrs.len() as u64;
    match p.gic {
        GuestGic::V3 => {
            assert_eq!(gic.compatible().unwrap().first(), "arm,gic-v3");
            assert_eq!(
                u64s(prop("/intc@8000000", "reg")),
                [0x0800_0000, 0x1_0000, 0x080A_0000, n * 0x2_0000]
            );
            assert_eq!(u32s(prop("/intc@8000000", "#redistributor-regions")), [1]);
            assert_eq!(u32s(prop("/intc@8000000", "interrupts")), [1, 9, 4]);
        }
        GuestGic::V2 => {
            assert_eq!(gic.compatible().unwrap().first(), "arm,cortex-a15-gic");
            assert_eq!(
                u64s(prop("/intc@8000000", "reg")),
                [0x0800_0000, 0x1_0000, 0x0801_0000, 0x2000]
            );
        }
    }

    let clk = u32s(prop("/apb-pclk", "phandle"));
    assert_eq!(strs(prop("/apb-pclk", "compatible")), ["fixed-clock"]);
    assert_eq!(u32s(prop("/apb-pclk", "#clock-cells")), [0]);
    assert_eq!(u32s(prop("/apb-pclk", "clock-frequency")), [24_000_000]);
    assert_eq!(strs(prop("/apb-pclk", "clock-output-names")), ["clk24mhz"]);

    assert_eq!(
        strs(prop("/pl011@9000000", "compatible")),
        ["arm,pl011", "arm,primecell"]
    );
    assert_eq!(u64s(prop("/pl011@9000000", "reg")), [0x0900_0000, 0x1000]);
    assert_eq!(u32s(prop("/pl011@9000000", "interrupts")), [0, 1, 4]);
    assert_eq!(u32s(prop("/pl011@9000000", "clocks")), [clk[0], clk[0]]);
    assert_eq!(
        strs(prop("/pl011@9000000", "clock-names")),
        ["uartclk", "apb_pclk"]
    );

    let virtio: Vec<_> = fdt
        .all_nodes()
        .filter(|n| n.name.starts_with("virtio_mmio@"))
        .collect();
    assert_eq!(virtio.len(), p.virtio_transports as usize);
    for (i, node) in virtio.iter().enumerate() {
        let i = i as u64;
        assert_eq!(
            node.name,
            format!("virtio_mmio@{:x}", 0x0a00_0000 + i * 0x200)
        );
        assert_eq!(node.compatible().unwrap().first(), "virtio,mmio");
        assert_eq!(
            u64s(node.property("reg").unwrap().value),
            [0x0a00_0000 + i * 0x200, 0x200]
        );
        assert_eq!(
            u32s(node.property("interrupts").unwrap().value),
            [0, 16 + i as u32, 1]
        );
        assert!(node.property("dma-coherent").is_some());
    }

    let chosen = fdt.chosen();
    assert_eq!(chosen.bootargs(), Some(p.bootargs.as_str()));
    assert_eq!(chosen.stdout().map(|n| n.name), Some("pl011@9000000"));
    assert_eq!(u64s(prop("/chosen", "linux,initrd-start")), [INITRD.base]);
    assert_eq!(u64s(prop("/chosen", "linux,initrd-end")), [INITRD.end()]);
    assert_eq!(
        fdt.aliases().unwrap().resolve("serial0"),
        Some("/pl011@9000000")
    );
    assert_eq!(fdt.memory_reservations().count(), 0);
}

/// Checks the DT through our own parser.
fn check_parsed(dtb: &[u8], p: &GuestPlatform) {
    let board = parse_board(dtb).unwrap();
    assert_eq!(board.compatible, ["linux,dummy-virt"]);
    assert_eq!(board.memory, [MemRange::new(guest::RAM_BASE, p.ram_size)]);
    assert_eq!(
        board.cpus.iter().map(|c| c.mpidr).collect::<Vec<_>>(),
        p.vcpu_mpidrs
    );
    assert!(
        board
            .cpus
            .iter()
            .all(|c| c.enable_method == EnableMethod::Psci)
    );
    assert_eq!(board.psci.unwrap().method, PsciMethod::Hvc);
    let gicd = MemRange::new(guest::GICD_BASE, guest::GICD_SIZE);
    let expected_gic = match p.gic {
        GuestGic::V3 => GicDescription::V3 {
            distributor: gicd,
            redistributors: vec![MemRange::new(
                guest::GICR_BASE,
                guest::GICR_STRIDE * p.vcpu_mpidrs.len() as u64,
            )],
            maintenance_irq: Some(25),
        },
        GuestGic::V2 => GicDescription::V2 {
            distributor: gicd,
            cpu_interface: MemRange::new(guest::GICC_BASE, guest::GICC_SIZE),
            hyp_interface: None,
            virtual_cpu_interface: None,
            maintenance_irq: None,
        },
    };
    assert_eq!(board.gic, expected_gic);
    let uart = board.uart.unwrap();
    assert_eq!(
        (uart.base, uart.size, uart.kind, uart.irq),
        (0x0900_0000, 0x1000, UartKind::Pl011, Some(33))
    );
    let timer = TimerPpis {
        secure_phys: 29,
        nonsecure_phys: 30,
        virtual_: 27,
        hyp: 26,
    };
    assert_eq!(board.timer, Some(timer));
    assert_eq!(board.chosen.bootargs.as_deref(), Some(p.bootargs.as_str()));
    assert_eq!(board.chosen.stdout_path.as_deref(), Some("/pl011@9000000"));
    assert_eq!(board.chosen.initrd, p.initrd);
}

#[test]
fn gicv3_one_vcpu() {
    let p = platform(1, GuestGic::V3);
    let dtb = write_guest_dtb(&p).unwrap();
    check_raw(&dtb, &p);
    check_parsed(&dtb, &p);
}

#[test]
fn gicv3_four_vcpus() {
    let p = platform(4, GuestGic::V3);
    let dtb = write_guest_dtb(&p).unwrap();
    check_raw(&dtb, &p);
    check_parsed(&dtb, &p);
}

#[test]
fn gicv2_four_vcpus() {
    let p = platform(4, GuestGic::V2);
    let dtb = write_guest_dtb(&p).unwrap();
    check_raw(&dtb, &p);
    check_parsed(&dtb, &p);
}

#[test]
fn wide_mpidrs_use_two_address_cells() {
    let mut p = platform(2, GuestGic::V3);
    p.vcpu_mpidrs = vec![0x1_0000_0000, 0x1_0000_0100];
    p.initrd = None;
    let dtb = write_guest_dtb(&p).unwrap();
    let fdt = Fdt::new(&dtb).unwrap();
    let cells = fdt
        .find_node("/cpus")
        .unwrap()
        .property("#address-cells")
        .unwrap();
    assert_eq!(cells.as_usize(), Some(2));
    check_parsed(&dtb, &p);
    assert!(fdt.chosen().bootargs().is_some());
    assert!(
        fdt.find_node("/chosen")
            .unwrap()
            .property("linux,initrd-start")
            .is_none()
    );
}

#[test]
fn rejects_impossible_platforms() {
    let check =
        |p: GuestPlatform, why| assert_eq!(write_guest_dtb(&p), Err(DtError::InvalidGuest(why)));
    check(platform(0, GuestGic::V3), "no vCPUs");
    check(
        platform(MAX_GICV2_VCPUS as u64 + 1, GuestGic::V2),
        "GICv2 supports at most 8 vCPUs",
    );
    check(
        platform(MAX_GICV3_VCPUS as u64 + 1, GuestGic::V3),
        "too many vCPUs for the GICv3 redistributor region",
    );
    let mut p = platform(2, GuestGic::V3);
    p.vcpu_mpidrs = vec![1, 1];
    check(p, "duplicate vCPU MPIDR");
    let mut p = platform(1, GuestGic::V3);
    p.ram_size = 0;
    check(p, "bad RAM size");
    let mut p = platform(1, GuestGic::V3);
    p.virtio_transports = 33;
    check(p, "too many virtio-mmio transports");
    let mut p = platform(1, GuestGic::V3);
    p.initrd = Some(MemRange::new(0x4000_0000 + (256 << 20) - 100, 200));
    check(p, "initrd outside guest RAM");
    let mut p = platform(1, GuestGic::V3);
    p.bootargs = "nul\0inside".into();
    let err = write_guest_dtb(&p).unwrap_err();
    assert_eq!(
        err.to_string(),
        "writing the guest DTB failed: Strings cannot contain NUL"
    );
}

#[test]
fn largest_gicv3_platform_fits() {
    let p = platform(MAX_GICV3_VCPUS as u64, GuestGic::V3);
    let board = parse_board(&write_guest_dtb(&p).unwrap()).unwrap();
    let GicDescription::V3 { redistributors, .. } = board.gic else {
        panic!("not GICv3")
    };
    assert_eq!(redistributors[0].end(), guest::UART_BASE);
}
