//! A writer for `newc` cpio archives, the format Linux unpacks as an initramfs.
//!
//! Every entry is owned by root (uid and gid 0) and dated 0, whoever builds the archive, so
//! no privileges are needed and the same inputs always give the same bytes.

/// File type bits of `st_mode`.
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// A `newc` archive being built in memory.
#[derive(Debug, Default)]
pub struct Cpio {
    bytes: Vec<u8>,
    next_inode: u32,
}

impl Cpio {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    /// A directory with permissions `perm` (e.g. 0o755).
    pub fn dir(&mut self, path: &str, perm: u32) -> &mut Self {
        self.entry(path, S_IFDIR | perm, 2, (0, 0), &[])
    }

    /// A regular file.
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> &mut Self {
        self.entry(path, S_IFREG | perm, 1, (0, 0), data)
    }

    /// A symbolic link at `path` pointing to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.entry(path, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes())
    }

    /// A character device node (major, minor), e.g. `/dev/console` (5, 1).
    pub fn char_device(&mut self, path: &str, perm: u32, device: (u32, u32)) -> &mut Self {
        self.entry(path, S_IFCHR | perm, 1, device, &[])
    }

    /// Closes the archive with the `TRAILER!!!` entry and returns its bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, 1, (0, 0), &[]);
        self.bytes
    }

    fn entry(
        &mut self,
        path: &str,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> &mut Self {
        let name = path.trim_start_matches('/');
        self.next_inode += 1;
        let inode = if name == "TRAILER!!!" {
            0
        } else {
            self.next_inode
        };
        let fields = [
            inode,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime
            u32::try_from(data.len()).expect("cpio entries are smaller than 4 GiB"),
            0, // devmajor
            0, // devminor
            rdev.0,
            rdev.1,
            u32::try_from(name.len() + 1).expect("short name"),
            0, // check
        ];
        self.bytes.extend_from_slice(b"070701");
        for field in fields {
            self.bytes
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
        self
    }

    fn pad(&mut self) {
        self.bytes.resize(self.bytes.len().next_multiple_of(4), 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One entry read back: name, mode, uid, gid, rdev and data.
    #[derive(Debug, PartialEq)]
    struct Entry {
        name: String,
        mode: u32,
        owner: (u32, u32),
        rdev: (u32, u32),
        data: Vec<u8>,
    }

    /// A minimal newc reader, independent of the writer's code.
    fn parse(mut archive: &[u8]) -> Vec<Entry> {
        let mut entries = Vec::new();
        let total = archive.len();
        loop {
            assert_eq!(
                &archive[..6],
                b"070701",
                "magic at offset {}",
                total - archive.len()
            );
            let field = |i: usize| {
                let hex = std::str::from_utf8(&archive[6 + 8 * i..14 + 8 * i]).unwrap();
                u32::from_str_radix(hex, 16).unwrap()
            };
            let (size, namesize) = (field(6) as usize, field(11) as usize);
            let name_end = 110 + namesize;
            assert_eq!(archive[name_end - 1], 0, "name is NUL-terminated");
            let name = String::from_utf8(archive[110..name_end - 1].to_vec()).unwrap();
            let data_start = name_end.next_multiple_of(4);
            let entry = Entry {
                name,
                mode: field(1),
                owner: (field(2), field(3)),
                rdev: (field(9), field(10)),
                data: archive[data_start..data_start + size].to_vec(),
            };
            archive = &archive[(data_start + size).next_multiple_of(4)..];
            if entry.name == "TRAILER!!!" {
                assert!(archive.is_empty(), "nothing after the trailer");
                return entries;
            }
            entries.push(entry);
        }
    }

    #[test]
    fn entries_read_back() {
        let mut cpio = Cpio::new();
        cpio.dir("/bin", 0o755)
            .file("/bin/busybox", 0o755, b"\x7fELF and more")
            .symlink("/bin/sh", "busybox")
            .char_device("/dev/console", 0o600, (5, 1))
            .file("/init", 0o755, b"#!/bin/sh\n");
        let archive = cpio.finish();
        assert_eq!(archive.len() % 4, 0);
        let entry = |name: &str, mode, rdev, data: &[u8]| Entry {
            name: name.into(),
            mode,
            owner: (0, 0),
            rdev,
            data: data.to_vec(),
        };
        assert_eq!(
            parse(&archive),
            [
                entry("bin", 0o040_755, (0, 0), b""),
                entry("bin/busybox", 0o100_755, (0, 0), b"\x7fELF and more"),
                entry("bin/sh", 0o120_777, (0, 0), b"busybox"),
                entry("dev/console", 0o020_600, (5, 1), b""),
                entry("init", 0o100_755, (0, 0), b"#!/bin/sh\n"),
            ]
        );
    }

    #[test]
    fn names_and_data_of_every_length_stay_aligned() {
        let mut cpio = Cpio::new();
        for len in 1..=9 {
            cpio.file(&"n".repeat(len), 0o644, &vec![len as u8; len]);
        }
        let entries = parse(&cpio.finish());
        assert_eq!(entries.len(), 9);
        for (i, entry) in entries.iter().enumerate() {
            assert_eq!(entry.name.len(), i + 1);
            assert_eq!(entry.data, vec![(i + 1) as u8; i + 1]);
        }
    }

    #[test]
    fn empty_archive_is_just_the_trailer() {
        let archive = Cpio::new().finish();
        assert_eq!(archive.len(), 124); // 110 + "TRAILER!!!\0" (11) padded to 4
        assert!(parse(&archive).is_empty());
    }
}
