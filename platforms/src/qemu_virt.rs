//! QEMU's `virt` machine with `virtualization=on`: PL011 console, PSCI over SMC to QEMU's
//! built-in firmware, secondaries started with CPU_ON.

use devicetree::{Board, PsciMethod};

use crate::{BoardPower, Platform, PlatformError, PsciConduit, SecondaryStart, pl011};

/// True if the device tree is QEMU virt's.
pub fn matches(board: &Board) -> bool {
    board.compatible.iter().any(|c| c == "linux,dummy-virt")
}

/// The platform for QEMU virt, checked against its device tree.
pub fn platform(board: &Board) -> Result<Platform, PlatformError> {
    let console = pl011(board.uart.as_ref()).ok_or(PlatformError::Missing("PL011 console"))?;
    match board.psci.as_ref().map(|psci| psci.method) {
        Some(PsciMethod::Smc) => {}
        Some(PsciMethod::Hvc) => {
            return Err(PlatformError::Missing(
                "PSCI over SMC (run with virtualization=on)",
            ));
        }
        None => return Err(PlatformError::Missing("/psci node")),
    }
    Ok(Platform {
        name: "QEMU virt",
        console,
        management: pl011(board.management_uart.as_ref()),
        power: BoardPower::Psci(PsciConduit::Smc),
        secondary_start: SecondaryStart::Psci(PsciConduit::Smc),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_the_qemu_dtbs() {
        for dtb in [
            &include_bytes!("../../devicetree/tests/fixtures/qemu-virt-gicv3.dtb")[..],
            &include_bytes!("../../devicetree/tests/fixtures/qemu-virt-gicv2.dtb")[..],
        ] {
            let board = devicetree::parse_board(dtb).unwrap();
            let platform = crate::detect(&board).unwrap();
            assert_eq!(platform.console.base, 0x0900_0000);
            assert_eq!(platform.power, BoardPower::Psci(PsciConduit::Smc));
            assert_eq!(
                platform.secondary_start,
                SecondaryStart::Psci(PsciConduit::Smc)
            );
        }
    }
}
