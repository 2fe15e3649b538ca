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
    /// `text_offset` is not 4 KiB-aligned.
    BadTextOffset(u64),
    /// Kernel, initrd and device tree together need more RAM than the instance has (or the
    /// header's sizes do not even add up in 64 bits: `needed` is then `u64::MAX`).
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
            Self::BadTextOffset(offset) => write!(
                f,
                "Image header text_offset {offset:#x} is not 4 KiB-aligned"
            ),
            Self::DoesNotFit { needed, ram } if *needed == u64::MAX => write!(
                f,
                "kernel, initrd and device tree sizes overflow: they cannot fit in {ram:#x} bytes of RAM"
            ),
            Self::DoesNotFit { needed, ram } => write!(
                f,
                "kernel, initrd and device tree need {needed:#x} bytes of RAM, the instance has {ram:#x}"
            ),
            Self::DtbTooLarge(size) => {
                write!(f, "device tree of {size:#x} bytes exceeds the 2 MiB limit")
            }
        }
    }
}

/// The fields of an arm64 Image header that placement depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageHeader {
    /// Offset of the image from a 2 MiB-aligned base: 4 KiB-aligned.
    pub text_offset: u64,
    /// Bytes the kernel occupies once running, including BSS (never less than the file).
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
        if !text_offset.is_multiple_of(SZ_4K) {
            return Err(ImageError::BadTextOffset(text_offset));
        }
        Ok(Self {
            text_offset,
            image_size: image_size.max(image.len() as u64),
        })
    }
}

/// A range of guest-physical addresses `[start, start + size)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// First address.
    pub start: u64,
    /// Length in bytes.
    pub size: u64,
}

impl Region {
    /// One past the last address, if that is representable.
    pub fn end(&self) -> Option<u64> {
        self.start.checked_add(self.size)
    }

    /// True if `self` lies wholly inside `outer`.
    pub fn is_inside(&self, outer: &Region) -> bool {
        match (self.end(), outer.end()) {
            (Some(end), Some(outer_end)) => self.start >= outer.start && end <= outer_end,
            _ => false,
        }
    }

    /// True if the two regions share a byte.
    pub fn overlaps(&self, other: &Region) -> bool {
        let (a_end, b_end) = (
            self.end().unwrap_or(u64::MAX),
            other.end().unwrap_or(u64::MAX),
        );
        self.size != 0 && other.size != 0 && self.start < b_end && other.start < a_end
    }
}

/// Where kernel, initrd and device tree go in guest RAM, as guest-physical addresses: every
/// region inside the instance's RAM and no two overlapping ([`plan_layout`] proves both).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootLayout {
    /// The kernel from its load address (also its entry point) to the end of its BSS.
    pub kernel: Region,
    /// The initrd, if there is one.
    pub initrd: Option<Region>,
    /// The device tree (x0 at entry); its start is 8-byte aligned.
    pub dtb: Region,
}

impl BootLayout {
    /// The kernel's entry point.
    pub fn entry(&self) -> u64 {
        self.kernel.start
    }
}

/// Places a kernel with `header` in `ram` (2 MiB-aligned): the kernel at the base plus
/// text_offset, the device tree in the top 2 MiB, the initrd just below it. All arithmetic is
/// checked; the result is returned only once every region is proven inside `ram` and disjoint.
pub fn plan_layout(
    header: &ImageHeader,
    ram: Region,
    initrd_size: Option<u64>,
    dtb_size: u64,
) -> Result<BootLayout, ImageError> {
    if dtb_size > MAX_DTB_SIZE {
        return Err(ImageError::DtbTooLarge(dtb_size));
    }
    if !header.text_offset.is_multiple_of(SZ_4K) {
        return Err(ImageError::BadTextOffset(header.text_offset));
    }
    let overflow = ImageError::DoesNotFit {
        needed: u64::MAX,
        ram: ram.size,
    };
    let initrd_span = match initrd_size {
        Some(size) => size
            .checked_next_multiple_of(SZ_4K)
            .ok_or(overflow.clone())?,
        None => 0,
    };
    let needed = header
        .text_offset
        .checked_add(header.image_size)
        .and_then(|end| end.checked_next_multiple_of(SZ_4K))
        .and_then(|end| end.checked_add(initrd_span))
        .and_then(|end| end.checked_add(MAX_DTB_SIZE))
        .ok_or(overflow.clone())?;
    if needed > ram.size {
        return Err(ImageError::DoesNotFit {
            needed,
            ram: ram.size,
        });
    }
    let kernel = Region {
        start: ram
            .start
            .checked_add(header.text_offset)
            .ok_or(overflow.clone())?,
        size: header.image_size,
    };
    let dtb_start = ram
        .end()
        .and_then(|end| end.checked_sub(MAX_DTB_SIZE))
        .ok_or(overflow.clone())?;
    let dtb = Region {
        start: dtb_start,
        size: dtb_size,
    };
    let initrd = match initrd_size {
        Some(size) => Some(Region {
            start: dtb_start.checked_sub(initrd_span).ok_or(overflow.clone())?,
            size,
        }),
        None => None,
    };
    let layout = BootLayout {
        kernel,
        initrd,
        dtb,
    };
    let regions = [Some(kernel), initrd, Some(dtb)];
    let placed = regions.iter().flatten();
    let inside = placed.clone().all(|region| region.is_inside(&ram));
    let disjoint = placed
        .clone()
        .enumerate()
        .all(|(i, a)| placed.clone().skip(i + 1).all(|b| !a.overlaps(b)));
    if !(inside && disjoint && dtb.start.is_multiple_of(8)) {
        return Err(overflow);
    }
    Ok(layout)
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

    const RAM: Region = Region {
        start: 0x4000_0000,
        size: 0x800_0000,
    };

    #[test]
    fn layout_puts_dtb_on_top_and_initrd_below() {
        let kernel = ImageHeader {
            text_offset: 0,
            image_size: 0x180_0000,
        };
        let layout = plan_layout(&kernel, RAM, Some(0x10_0001), 0x2000).unwrap();
        assert_eq!(layout.entry(), 0x4000_0000);
        assert_eq!(layout.dtb.start, 0x4000_0000 + 0x800_0000 - 0x20_0000);
        assert_eq!(
            layout.initrd,
            Some(Region {
                start: layout.dtb.start - 0x10_1000,
                size: 0x10_0001
            })
        );
        assert_eq!(layout.dtb.start % 8, 0);
    }

    #[test]
    fn layout_refuses_what_does_not_fit() {
        let ram = Region {
            start: 0x4000_0000,
            size: 0x400_0000,
        };
        let kernel = ImageHeader {
            text_offset: 0x8_0000,
            image_size: 0x300_0000,
        };
        let result = plan_layout(&kernel, ram, Some(0x100_0000), 0x1000);
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
            plan_layout(&small, ram, None, 0x20_0001),
            Err(ImageError::DtbTooLarge(0x20_0001))
        );
    }

    #[test]
    fn headers_that_wrap_or_misplace_the_kernel_are_refused() {
        // text_offset of minus 2 MiB: the sum wraps, which would place the kernel below RAM.
        let below = ImageHeader::parse(&header((-(2i64 << 20)) as u64, 0x10_0000, 0)).unwrap();
        assert!(matches!(
            plan_layout(&below, RAM, None, 0x1000),
            Err(ImageError::DoesNotFit { .. })
        ));
        // Past the end of RAM, or across its end.
        for offset in [0x800_0000, 0x7f0_0000, 0x4000_0000] {
            let parsed = ImageHeader::parse(&header(offset, 0x20_0000, 0)).unwrap();
            assert!(
                plan_layout(&parsed, RAM, None, 0x1000).is_err(),
                "{offset:#x}"
            );
        }
        assert_eq!(
            ImageHeader::parse(&header(0x123, 0x10_0000, 0)),
            Err(ImageError::BadTextOffset(0x123))
        );
        // image_size so large that the sum wraps.
        let huge = ImageHeader::parse(&header(0x8_0000, u64::MAX - 0x1000, 0)).unwrap();
        assert!(matches!(
            plan_layout(&huge, RAM, None, 0x1000),
            Err(ImageError::DoesNotFit {
                needed: u64::MAX,
                ..
            })
        ));
        // An initrd so large that rounding it up wraps.
        let small = ImageHeader {
            text_offset: 0,
            image_size: 0x1000,
        };
        assert!(plan_layout(&small, RAM, Some(u64::MAX), 0x1000).is_err());
        // RAM at the very top of the address space.
        let top = Region {
            start: u64::MAX - 0xf_ffff,
            size: 0x800_0000,
        };
        assert!(plan_layout(&small, top, None, 0x1000).is_err());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn any_ram() -> impl Strategy<Value = Region> {
            (0u64..=u64::MAX >> 21, 0u64..=4096).prop_map(|(base, blocks)| Region {
                start: base << 21,
                size: blocks << 21,
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4096))]

            /// Whatever the header says and whatever the sizes: an error, or every region
            /// inside RAM, disjoint, with the kernel at a 2 MiB-aligned base plus text_offset.
            #[test]
            fn any_header_is_refused_or_placed_inside_ram(
                text_offset in prop_oneof![any::<u64>(), (0u64..0x2000).prop_map(|page| page << 12)],
                image_size in prop_oneof![any::<u64>(), 0u64..0x400_0000],
                flags in any::<u64>(),
                file_len in 0usize..4096,
                ram in any_ram(),
                initrd in proptest::option::of(prop_oneof![any::<u64>(), 0u64..0x400_0000]),
                dtb in prop_oneof![any::<u64>(), 0u64..0x30_0000],
            ) {
                let mut bytes = alloc::vec![0u8; file_len.max(64)];
                bytes[..64].copy_from_slice(&header(text_offset, image_size, flags));
                bytes.truncate(file_len);
                let Ok(parsed) = ImageHeader::parse(&bytes) else { return Ok(()) };
                let Ok(layout) = plan_layout(&parsed, ram, initrd, dtb) else { return Ok(()) };
                let regions: alloc::vec::Vec<Region> =
                    [Some(layout.kernel), layout.initrd, Some(layout.dtb)].into_iter().flatten().collect();
                for (i, region) in regions.iter().enumerate() {
                    prop_assert!(region.is_inside(&ram), "{region:x?} outside {ram:x?}");
                    for other in &regions[i + 1..] {
                        prop_assert!(!region.overlaps(other), "{region:x?} overlaps {other:x?}");
                    }
                }
                prop_assert!(layout.kernel.size >= bytes.len() as u64);
                prop_assert_eq!(layout.kernel.start - ram.start, parsed.text_offset);
                prop_assert_eq!(layout.dtb.size, dtb);
                prop_assert_eq!(layout.initrd.map(|r| r.size), initrd);
            }
        }
    }
}
