//! The Raspberry Pi 4 Model B (BCM2711) and QEMU's `raspi4b`: the PL011 console at
//! 0xfe20_1000, a GIC-400, secondaries released through the spin table the firmware's stub
//! leaves them on (no PSCI on this board), and power-off through the BCM2835 power-management
//! watchdog. Memory and every address come from the firmware's (or QEMU's) device tree.

use devicetree::{Board, EnableMethod, GicDescription};

use crate::{BoardPower, Platform, PlatformError, SecondaryStart, pl011};

/// True if the device tree is a Raspberry Pi 4's.
pub fn matches(board: &Board) -> bool {
    board
        .compatible
        .iter()
        .any(|c| c == "raspberrypi,4-model-b" || c == "brcm,bcm2711")
}

/// The platform for a Raspberry Pi 4, checked against its device tree.
pub fn platform(board: &Board) -> Result<Platform, PlatformError> {
    // The firmware's stdout-path names the mini UART when `enable_uart` is set; the hypervisor
    // drives the PL011 (UART0), which `dtoverlay=disable-bt` puts on the GPIO header pins.
    let console = pl011(board.uart.as_ref())
        .or_else(|| pl011(board.management_uart.as_ref()))
        .ok_or(PlatformError::Missing("PL011 (UART0)"))?;
    if board.memory.is_empty() {
        return Err(PlatformError::Missing(
            "/memory node (the firmware fills it in; with QEMU pass -dtb)",
        ));
    }
    if !matches!(
        board.gic,
        GicDescription::V2 {
            hyp_interface: Some(_),
            virtual_cpu_interface: Some(_),
            ..
        }
    ) {
        return Err(PlatformError::Missing(
            "GIC-400 with its GICH and GICV frames (config.txt: enable_gic=1)",
        ));
    }
    if !board
        .cpus
        .iter()
        .all(|cpu| matches!(cpu.enable_method, EnableMethod::SpinTable { .. }))
    {
        return Err(PlatformError::Missing(
            "spin-table enable-method on every CPU",
        ));
    }
    Ok(Platform {
        name: "Raspberry Pi 4",
        console,
        management: None,
        // Without the watchdog in its device tree the board cannot power off: a clear halt.
        power: board
            .pm_watchdog
            .map_or(BoardPower::Halt, |pm| BoardPower::PmWatchdog {
                base: pm.base,
            }),
        secondary_start: SecondaryStart::SpinTable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use devicetree::{Chosen, Cpu, MemRange, Uart, UartKind};

    /// What the Raspberry Pi 4 DTB of Debian's kernel package reads as, memory filled in.
    fn pi4() -> Board {
        let uart = |base, kind, irq| Uart {
            base,
            size: 0x40,
            kind,
            irq: Some(irq),
        };
        Board {
            model: Some("Raspberry Pi 4 Model B".into()),
            compatible: vec!["raspberrypi,4-model-b".into(), "brcm,bcm2711".into()],
            memory: vec![MemRange::new(0, 0x8000_0000)],
            reserved: vec![MemRange::new(0, 0x1000)],
            cpus: (0..4)
                .map(|n| Cpu {
                    mpidr: n,
                    enable_method: EnableMethod::SpinTable {
                        release_addr: 0xd8 + 8 * n,
                    },
                })
                .collect(),
            gic: GicDescription::V2 {
                distributor: MemRange::new(0xff84_1000, 0x1000),
                cpu_interface: MemRange::new(0xff84_2000, 0x2000),
                hyp_interface: Some(MemRange::new(0xff84_4000, 0x2000)),
                virtual_cpu_interface: Some(MemRange::new(0xff84_6000, 0x2000)),
                maintenance_irq: Some(25),
            },
            uart: Some(uart(0xfe21_5040, UartKind::Other, 125)),
            management_uart: Some(uart(0xfe20_1000, UartKind::Pl011, 153)),
            timer: None,
            psci: None,
            chosen: Chosen::default(),
            virtio_mmio: Vec::new(),
            pm_watchdog: Some(MemRange::new(0xfe10_0000, 0x114)),
        }
    }

    #[test]
    fn the_pi_4_runs_on_its_pl011_spin_table_and_watchdog() {
        let platform = crate::detect(&pi4()).unwrap();
        assert_eq!(platform.name, "Raspberry Pi 4");
        assert_eq!(platform.console.base, 0xfe20_1000);
        assert_eq!(platform.console.irq, Some(153));
        assert_eq!(platform.management, None);
        assert_eq!(platform.secondary_start, SecondaryStart::SpinTable);
        assert_eq!(platform.power, BoardPower::PmWatchdog { base: 0xfe10_0000 });
        // With no watchdog described, the board halts instead of powering off.
        let mut board = pi4();
        board.pm_watchdog = None;
        assert_eq!(crate::detect(&board).unwrap().power, BoardPower::Halt);
    }

    #[test]
    fn what_the_pi_4_cannot_do_without_is_named() {
        let mut board = pi4();
        board.memory.clear();
        assert!(
            matches!(platform(&board), Err(PlatformError::Missing(m)) if m.contains("/memory"))
        );
        let mut board = pi4();
        board.management_uart = None;
        assert!(matches!(platform(&board), Err(PlatformError::Missing(m)) if m.contains("PL011")));
        let mut board = pi4();
        board.gic = GicDescription::V2 {
            distributor: MemRange::new(0xff84_1000, 0x1000),
            cpu_interface: MemRange::new(0xff84_2000, 0x2000),
            hyp_interface: None,
            virtual_cpu_interface: None,
            maintenance_irq: None,
        };
        assert!(matches!(platform(&board), Err(PlatformError::Missing(m)) if m.contains("GICH")));
        let mut board = pi4();
        board.cpus[2].enable_method = EnableMethod::Psci;
        assert!(
            matches!(platform(&board), Err(PlatformError::Missing(m)) if m.contains("spin-table"))
        );
    }
}
