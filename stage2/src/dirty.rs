//! Dirty log for live migration: one bit per 4 KiB page of the IPA range under dirty tracking.
//!
//! A [`DirtyLog`] is owned by the [`Stage2Table`](crate::Stage2Table) that tracks the range
//! (see [`Stage2Table::start_dirty_tracking`](crate::Stage2Table::start_dirty_tracking)); the
//! table sets bits as it resolves write faults and clears them in
//! [`Stage2Table::take_dirty`](crate::Stage2Table::take_dirty). Callers can read it through
//! [`Stage2Table::dirty_log`](crate::Stage2Table::dirty_log).

use alloc::vec::Vec;

use crate::{PAGE_SIZE, Stage2Error};

const WORD_BITS: u64 = u64::BITS as u64;

/// Bitmap of the 4 KiB pages written in a tracked IPA range since the dirty log was last taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirtyLog {
    start: u64,
    size: u64,
    words: Vec<u64>,
}

impl DirtyLog {
    /// An all-clean log for `[start, start + size)`; both page aligned (checked by the caller).
    /// The bitmap allocation is fallible: `OutOfMemory` rather than an allocation abort.
    pub(crate) fn new(start: u64, size: u64) -> Result<Self, Stage2Error> {
        let words = usize::try_from((size / PAGE_SIZE).div_ceil(WORD_BITS))
            .map_err(|_| Stage2Error::OutOfMemory)?;
        let mut bits = Vec::new();
        bits.try_reserve_exact(words)
            .map_err(|_| Stage2Error::OutOfMemory)?;
        bits.resize(words, 0);
        Ok(Self {
            start,
            size,
            words: bits,
        })
    }

    /// First IPA of the tracked range (page aligned).
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Size of the tracked range in bytes (a multiple of [`PAGE_SIZE`]).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether `ipa` lies in the tracked range.
    pub fn contains(&self, ipa: u64) -> bool {
        ipa.checked_sub(self.start)
            .is_some_and(|offset| offset < self.size)
    }

    /// Whether the page containing `ipa` is marked dirty; `false` outside the tracked range.
    pub fn is_dirty(&self, ipa: u64) -> bool {
        self.position(ipa)
            .is_some_and(|(word, bit)| self.words[word] & bit != 0)
    }

    /// Number of pages marked dirty.
    pub fn dirty_pages(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// The IPAs of the dirty pages, in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.words
            .iter()
            .enumerate()
            .filter(|&(_, &w)| w != 0)
            .flat_map(move |(i, &w)| {
                let base = self.start + i as u64 * WORD_BITS * PAGE_SIZE;
                let mut rest = w;
                core::iter::from_fn(move || {
                    (rest != 0).then(|| {
                        let bit = rest.trailing_zeros();
                        rest &= rest - 1;
                        base + u64::from(bit) * PAGE_SIZE
                    })
                })
            })
    }

    /// Marks the page containing `ipa` dirty; returns whether `ipa` is in the tracked range.
    pub(crate) fn mark(&mut self, ipa: u64) -> bool {
        match self.position(ipa) {
            Some((word, bit)) => {
                self.words[word] |= bit;
                true
            }
            None => false,
        }
    }

    /// Marks every page clean.
    pub(crate) fn clear(&mut self) {
        self.words.fill(0);
    }

    /// Word index and bit mask of the page containing `ipa`, if it is in the range.
    fn position(&self, ipa: u64) -> Option<(usize, u64)> {
        let page = ipa.checked_sub(self.start).filter(|&o| o < self.size)? / PAGE_SIZE;
        // `page < size / PAGE_SIZE`, so the word index is below `words.len()`, a `usize`.
        Some(((page / WORD_BITS) as usize, 1 << (page % WORD_BITS)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_reports_and_clears() {
        let start = 0x4000_0000;
        let mut log = DirtyLog::new(start, 130 * PAGE_SIZE).unwrap();
        assert_eq!(log.words.len(), 3);
        assert_eq!(log.iter().next(), None);
        for page in [0, 63, 64, 129, 5, 64] {
            assert!(log.mark(start + page * PAGE_SIZE + 7));
        }
        assert!(!log.mark(start + 130 * PAGE_SIZE));
        assert!(!log.mark(start - 1));
        assert!(!log.mark(u64::MAX));
        let pages: Vec<u64> = log.iter().map(|a| (a - start) / PAGE_SIZE).collect();
        assert_eq!(pages, [0, 5, 63, 64, 129]);
        assert_eq!(log.dirty_pages(), 5);
        assert!(log.is_dirty(start + 63 * PAGE_SIZE + 4095));
        assert!(!log.is_dirty(start + 62 * PAGE_SIZE));
        assert!(!log.is_dirty(u64::MAX));
        assert!(log.contains(start) && !log.contains(start + 130 * PAGE_SIZE));
        log.clear();
        assert_eq!(log.iter().next(), None);
        assert_eq!(log.dirty_pages(), 0);
    }

    #[test]
    fn empty_range() {
        let log = DirtyLog::new(0, 0).unwrap();
        assert!(!log.contains(0));
        assert_eq!(log.iter().count(), 0);
    }
}
