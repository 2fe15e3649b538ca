//! The arm64 Linux Image protocol: reading a kernel's 64-byte header and placing kernel, initrd and
//! device tree in guest RAM the way the boot protocol (Documentation/arch/arm64/booting.rst) asks.

/// "ARM\x64", little-endian, at offset 56.
const IMAGE_MAGIC: u32 = 0x644d_5241;
/// Size of the Image header.
pub const HEADER_SIZE: usize = 64;
/// text_offset that kernels with `image_size == 0` (before Linux 3.17) imply.
const LEGACY_TEXT_OFFSET: u64 = 0x8_0000;
const SZ_2M: u64 = 2 << 20;
const SZ_4K: u64 = 4 << 10;
/// Largest device tree the protocol allows.
pub const MAX_DTB_SIZE: u64 = SZ_2M;

/// Why a kernel image cannot be booted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageError {
    /// Shorter than the 64-byte header.
    TooShort(usize),
    /// No "ARM\x64" magic at offset 56.
    BadMagic(u32),
    /// The header asks for big-endian, which guests here cannot be.
    BigEndian,
    /// Kernel, initrd and device tree together need more RAM than the instance has.
    DoesNotFit {
        /// Bytes of guest RAM the layout needs.
        needed: u64,
        /// Bytes of guest RAM the instance has.
        ram: u64,
    },
    /// The device tree is larger than the protocol's 2 MiB.
    DtbTooLarge(u64),
}

impl core::fmt::Display for ImageError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::TooShort(len) => write!(
                f,
                "image is {len} bytes, shorter than the 64-byte arm64 Image header"
            ),
            Self::BadMagic(magic) => {
                write!(f, "no arm64 Image magic (found {magic:#010x} at offset 56)")
            }
            Self::BigEndian => write!(f, "big-endian kernel images are not supported"),
            Self::DoesNotFit { needed, ram } => {
                write!(
                    f,
                    "kernel, initrd and device tree need {needed:#x} bytes of RAM, the instance has {ram:#x}"
                )
            }
            Self::DtbTooLarge(size) => {
                write!(f, "device tree of {size:#x} bytes exceeds the 2 MiB limit")
            }
        }
    }
}

/// The fields of an arm64 Image header that placement depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageHeader {
    /// Offset of the image from a 2 MiB-aligned base.
    pub text_offset: u64,
    /// Bytes the kernel occupies once running, including BSS.
    pub image_size: u64,
}

impl ImageHeader {
    /// Parses and checks the header at the start of `image`.
    pub fn parse(image: &[u8]) -> Result<Self, ImageError> {
        let header = image
            .get(..HEADER_SIZE)
            .ok_or(ImageError::TooShort(image.len()))?;
        let u64_at =
            |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().expect("8 bytes"));
        let magic = u32::from_le_bytes(header[56..60].try_into().expect("4 bytes"));
        if magic != IMAGE_MAGIC {
            return Err(ImageError::BadMagic(magic));
        }
        let (text_offset, image_size, flags) = (u64_at(8), u64_at(16), u64_at(24));
        if image_size == 0 {
            return Ok(Self {
                text_offset: LEGACY_TEXT_OFFSET,
                image_size: image.len() as u64,
            });
        }
        if flags & 1 != 0 {
            return Err(ImageError::BigEndian);
        }
        Ok(Self {
            text_offset,
            image_size: image_size.max(image.len() as u64),
        })
    }
}

/// Where kernel, initrd and device tree go in guest RAM, as guest-physical addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootLayout {
    /// Load address and entry point of the kernel.
    pub kernel: u64,
    /// Start of the initrd, if there is one.
    pub initrd: Option<u64>,
    /// Address of the device tree (x0 at entry).
    pub dtb: u64,
}

/// Places a kernel with `header` in RAM at `ram_base` (2 MiB-aligned) of `ram_size` bytes: the
/// kernel at the base plus text_offset, the device tree in the top 2 MiB, the initrd just below it.
pub fn plan_layout(
    header: &ImageHeader,
    ram_base: u64,
    ram_size: u64,
    initrd_size: Option<u64>,
    dtb_size: u64,
) -> Result<BootLayout, ImageError> {
    if dtb_size > MAX_DTB_SIZE {
        return Err(ImageError::DtbTooLarge(dtb_size));
    }
    let kernel_end = header.text_offset + header.image_size;
    let initrd_span = initrd_size.map_or(0, |size| size.next_multiple_of(SZ_4K));
    let needed = kernel_end.next_multiple_of(SZ_4K) + initrd_span + MAX_DTB_SIZE;
    if needed > ram_size {
        return Err(ImageError::DoesNotFit {
            needed,
            ram: ram_size,
        });
    }
    let dtb = ram_base + ram_size - MAX_DTB_SIZE;
    Ok(BootLayout {
        kernel: ram_base + header.text_offset,
        initrd: initrd_size.map(|_| dtb - initrd_span),
        dtb,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(text_offset: u64, image_size: u64, flags: u64) -> [u8; 64] {
        let mut bytes = [0u8; 64];
        bytes[8..16].copy_from_slice(&text_offset.to_le_bytes());
        bytes[16..24].copy_from_slice(&image_size.to_le_bytes());
        bytes[24..32].copy_from_slice(&flags.to_le_bytes());
        bytes[56..60].copy_from_slice(&IMAGE_MAGIC.to_le_bytes());
        bytes
    }

    #[test]
    fn parses_a_modern_header() {
        let parsed = ImageHeader::parse(&header(0, 0x2000_0000 >> 4, 0xa)).unwrap();
        assert_eq!(
            parsed,
            ImageHeader {
                text_offset: 0,
                image_size: 0x200_0000
            }
        );
    }

    #[test]
    fn legacy_header_implies_text_offset() {
        let parsed = ImageHeader::parse(&header(0x1234, 0, 0)).unwrap();
        assert_eq!(
            parsed,
            ImageHeader {
                text_offset: 0x8_0000,
                image_size: 64
            }
        );
    }

    #[test]
    fn rejects_bad_images() {
        assert_eq!(
            ImageHeader::parse(&[0u8; 10]),
            Err(ImageError::TooShort(10))
        );
        let mut bad = header(0, 0x1000, 0);
        bad[56] = b'X';
        assert!(matches!(
            ImageHeader::parse(&bad),
            Err(ImageError::BadMagic(_))
        ));
        assert_eq!(
            ImageHeader::parse(&header(0, 0x1000, 1)),
            Err(ImageError::BigEndian)
        );
    }

    #[test]
    fn layout_puts_dtb_on_top_and_initrd_below() {
        let kernel = ImageHeader {
            text_offset: 0,
            image_size: 0x180_0000,
        };
        let layout =
            plan_layout(&kernel, 0x4000_0000, 0x800_0000, Some(0x10_0001), 0x2000).unwrap();
        assert_eq!(layout.kernel, 0x4000_0000);
        assert_eq!(layout.dtb, 0x4000_0000 + 0x800_0000 - 0x20_0000);
        assert_eq!(layout.initrd, Some(layout.dtb - 0x10_1000));
        assert_eq!(layout.dtb % 8, 0);
    }

    #[test]
    fn layout_refuses_what_does_not_fit() {
        let kernel = ImageHeader {
            text_offset: 0x8_0000,
            image_size: 0x300_0000,
        };
        let result = plan_layout(&kernel, 0x4000_0000, 0x400_0000, Some(0x100_0000), 0x1000);
        assert_eq!(
            result,
            Err(ImageError::DoesNotFit {
                needed: 0x428_0000,
                ram: 0x400_0000
            })
        );
        let small = ImageHeader {
            text_offset: 0,
            image_size: 0x1000,
        };
        assert_eq!(
            plan_layout(&small, 0x4000_0000, 0x400_0000, None, 0x20_0001),
            Err(ImageError::DtbTooLarge(0x20_0001))
        );
    }
}
