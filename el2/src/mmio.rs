//! MMIO emulation: decoding a stage-2 data abort into an access, and the interface that emulated
//! devices implement.

/// Why a data abort cannot be emulated as a single register access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmioDecodeError {
    /// `ISS.ISV` is clear: the instruction (a pair, writeback or SIMD access) left no syndrome.
    NoSyndrome,
    /// The abort happened during the guest's own stage-1 table walk.
    StageOneWalk,
    /// A cache-maintenance instruction hit the address.
    CacheMaintenance,
    /// The fault is not a translation fault (e.g. a permission fault), given as DFSC.
    NotTranslationFault(u8),
}

impl core::fmt::Display for MmioDecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoSyndrome => write!(f, "no instruction syndrome (ISV=0)"),
            Self::StageOneWalk => write!(f, "fault on the guest's stage-1 table walk"),
            Self::CacheMaintenance => write!(f, "cache maintenance on an unmapped address"),
            Self::NotTranslationFault(dfsc) => {
                write!(f, "fault status {dfsc:#x} is not a translation fault")
            }
        }
    }
}

/// One guest load or store to an emulated address, decoded from `ESR_EL2.ISS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioAccess {
    /// The intermediate physical address accessed.
    pub ipa: u64,
    /// Access size in bytes: 1, 2, 4 or 8.
    pub size: u8,
    /// True for a store.
    pub write: bool,
    /// The transfer register, 0..=30, or 31 for XZR/WZR.
    pub reg: u8,
    /// A load that sign-extends to the register width.
    pub sign_extend: bool,
    /// The register is 64 bits wide (X) rather than 32 (W).
    pub sixty_four: bool,
}

impl MmioAccess {
    /// Decodes the ISS of a data abort from a lower EL at `ipa`.
    pub fn decode(iss: u32, ipa: u64) -> Result<Self, MmioDecodeError> {
        if iss & (1 << 24) == 0 {
            return Err(MmioDecodeError::NoSyndrome);
        }
        if iss & (1 << 7) != 0 {
            return Err(MmioDecodeError::StageOneWalk);
        }
        if iss & (1 << 8) != 0 {
            return Err(MmioDecodeError::CacheMaintenance);
        }
        let dfsc = (iss & 0x3f) as u8;
        if dfsc & 0x3c != 0x04 {
            return Err(MmioDecodeError::NotTranslationFault(dfsc));
        }
        Ok(Self {
            ipa,
            size: 1 << ((iss >> 22) & 0x3),
            write: iss & (1 << 6) != 0,
            reg: ((iss >> 16) & 0x1f) as u8,
            sign_extend: iss & (1 << 21) != 0,
            sixty_four: iss & (1 << 15) != 0,
        })
    }

    /// The bits of a register that a store of this size writes.
    pub fn store_value(&self, register: u64) -> u64 {
        register & self.size_mask()
    }

    /// The register value a load of this size produces from the device's `raw` answer:
    /// truncated to the access size, sign-extended if asked, and limited to 32 bits for W registers.
    pub fn load_value(&self, raw: u64) -> u64 {
        let bits = u32::from(self.size) * 8;
        let mut value = raw & self.size_mask();
        if self.sign_extend && bits < 64 {
            let shift = 64 - bits;
            value = (((value << shift) as i64) >> shift) as u64;
        }
        if !self.sixty_four {
            value &= 0xffff_ffff;
        }
        value
    }

    fn size_mask(&self) -> u64 {
        if self.size >= 8 {
            u64::MAX
        } else {
            (1u64 << (u32::from(self.size) * 8)) - 1
        }
    }
}

/// A device that the hypervisor emulates behind a range of guest-physical addresses.
///
/// Offsets are relative to the device's base. Devices answer every access: registers that do not
/// exist read as zero and ignore writes, as the PrimeCell and GIC specifications ask.
pub trait MmioDevice {
    /// The size of the device's register window in bytes.
    fn window_size(&self) -> u64;
    /// Reads `size` bytes at `offset`.
    fn read(&mut self, offset: u64, size: u8) -> u64;
    /// Writes the low `size` bytes of `value` at `offset`.
    fn write(&mut self, offset: u64, size: u8, value: u64);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a data-abort ISS with a valid syndrome and a level-3 translation fault.
    fn iss(sas: u32, sse: bool, srt: u32, sf: bool, wnr: bool) -> u32 {
        (1 << 24)
            | (sas << 22)
            | (u32::from(sse) << 21)
            | (srt << 16)
            | (u32::from(sf) << 15)
            | (u32::from(wnr) << 6)
            | 0x07
    }

    #[test]
    fn decodes_size_register_and_direction() {
        let load = MmioAccess::decode(iss(2, false, 5, false, false), 0x900_0fe0).unwrap();
        assert_eq!(
            (load.size, load.reg, load.write, load.sixty_four),
            (4, 5, false, false)
        );
        let store = MmioAccess::decode(iss(3, false, 30, true, true), 0x900_0000).unwrap();
        assert_eq!(
            (store.size, store.reg, store.write, store.sixty_four),
            (8, 30, true, true)
        );
        let byte = MmioAccess::decode(iss(0, false, 31, false, true), 0).unwrap();
        assert_eq!((byte.size, byte.reg), (1, 31));
    }

    #[test]
    fn rejects_what_cannot_be_emulated() {
        assert_eq!(
            MmioAccess::decode(0x07, 0),
            Err(MmioDecodeError::NoSyndrome)
        );
        let walk = iss(2, false, 0, false, false) | (1 << 7);
        assert_eq!(
            MmioAccess::decode(walk, 0),
            Err(MmioDecodeError::StageOneWalk)
        );
        let cm = iss(2, false, 0, false, false) | (1 << 8);
        assert_eq!(
            MmioAccess::decode(cm, 0),
            Err(MmioDecodeError::CacheMaintenance)
        );
        let perm = (iss(2, false, 0, false, false) & !0x3f) | 0x0f;
        assert_eq!(
            MmioAccess::decode(perm, 0),
            Err(MmioDecodeError::NotTranslationFault(0x0f))
        );
    }

    #[test]
    fn load_values_follow_width_and_sign() {
        // ldrsb x1: byte sign-extended to 64 bits.
        let ldrsb_x = MmioAccess::decode(iss(0, true, 1, true, false), 0).unwrap();
        assert_eq!(ldrsb_x.load_value(0x1234_5680), 0xffff_ffff_ffff_ff80);
        // ldrsh w1: halfword sign-extended to 32 bits, upper half of X zero.
        let ldrsh_w = MmioAccess::decode(iss(1, true, 1, false, false), 0).unwrap();
        assert_eq!(ldrsh_w.load_value(0xffff_8001), 0xffff_8001);
        // ldrb w1: zero-extended.
        let ldrb = MmioAccess::decode(iss(0, false, 1, false, false), 0).unwrap();
        assert_eq!(ldrb.load_value(0x1ff), 0xff);
        // ldr x1: all 64 bits.
        let ldr_x = MmioAccess::decode(iss(3, false, 1, true, false), 0).unwrap();
        assert_eq!(ldr_x.load_value(u64::MAX - 1), u64::MAX - 1);
        // ldrsw x1: word sign-extended to 64.
        let ldrsw = MmioAccess::decode(iss(2, true, 1, true, false), 0).unwrap();
        assert_eq!(ldrsw.load_value(0x8000_0000), 0xffff_ffff_8000_0000);
    }

    #[test]
    fn store_values_are_truncated() {
        let strh = MmioAccess::decode(iss(1, false, 2, false, true), 0).unwrap();
        assert_eq!(strh.store_value(0xdead_beef), 0xbeef);
        let str_x = MmioAccess::decode(iss(3, false, 2, true, true), 0).unwrap();
        assert_eq!(str_x.store_value(u64::MAX), u64::MAX);
    }
}
