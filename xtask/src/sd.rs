//! Boot files for a real Raspberry Pi 4 (`cargo xtask build --platform rpi4 --sd DIR`): the
//! hypervisor as `kernel8.img`, the default guests as the firmware's initramfs, `config.txt` and
//! `cmdline.txt`. They go on the SD card's FAT boot partition beside the Raspberry Pi firmware
//! files (README, "A real Raspberry Pi 4").

use std::path::Path;

use crate::{build, linux_guest};

/// The guest bundle's file name on the card.
pub const BUNDLE: &str = "guests.fit";
/// vCPUs of each default instance on the Pi.
const VCPUS: u32 = 2;

/// `config.txt` for the hypervisor: 64-bit at EL2, the GIC-400 on, the guest bundle loaded
/// after the kernel (its place goes into `/chosen` as the initrd), UART0 (the PL011) on the
/// GPIO header as the console.
pub fn config_txt() -> String {
    format!(
        "# Written by `cargo xtask build --platform rpi4`: the hypervisor as the Pi's kernel.\n\
         # 64-bit, entered at EL2 with the device tree in x0.\n\
         arm_64bit=1\n\
         kernel=kernel8.img\n\
         # The GIC-400 (with its virtualization frames), not the legacy interrupt controller.\n\
         enable_gic=1\n\
         # The guests: a board bundle the firmware loads after the kernel and names in /chosen.\n\
         initramfs {BUNDLE} followkernel\n\
         # UART0, the PL011 the hypervisor's console drives, on GPIO 14 (TX) and 15 (RX) at\n\
         # 115200 8N1; Bluetooth moves off it.\n\
         enable_uart=1\n\
         dtoverlay=disable-bt\n"
    )
}

/// `cmdline.txt`: the hypervisor's boot arguments (the firmware puts them in `/chosen`).
pub const CMDLINE: &str = "log=info\n";

/// Builds everything and writes the Pi's boot files into `dir` (created if missing).
pub fn write_sd_files(dir: &Path) -> Result<(), String> {
    build::build_all()?;
    let bundle = linux_guest::board_bundle(VCPUS)?;
    std::fs::create_dir_all(dir)
        .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
    let copy = |from: &Path, name: &str| {
        std::fs::copy(from, dir.join(name))
            .map(drop)
            .map_err(|error| format!("cannot write {}: {error}", dir.join(name).display()))
    };
    copy(&build::hypervisor_image(), "kernel8.img")?;
    copy(&bundle, BUNDLE)?;
    for (name, text) in [
        ("config.txt", config_txt()),
        ("cmdline.txt", CMDLINE.into()),
    ] {
        std::fs::write(dir.join(name), text)
            .map_err(|error| format!("cannot write {}: {error}", dir.join(name).display()))?;
    }
    eprintln!(
        "xtask: wrote kernel8.img, {BUNDLE}, config.txt and cmdline.txt to {}: copy them to the \
         SD card's boot partition beside the Raspberry Pi firmware files (README)",
        dir.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_txt_boots_the_hypervisor_at_el2_with_the_gic_and_the_bundle() {
        let config = config_txt();
        for line in [
            "arm_64bit=1",
            "kernel=kernel8.img",
            "enable_gic=1",
            "initramfs guests.fit followkernel",
            "enable_uart=1",
            "dtoverlay=disable-bt",
        ] {
            assert!(config.lines().any(|l| l == line), "{line}:\n{config}");
        }
        assert!(
            config
                .lines()
                .all(|l| l.starts_with('#') || l.contains('=') || l.starts_with("initramfs "))
        );
    }
}
