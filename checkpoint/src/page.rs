//! Page encoding and chunking.

use alloc::vec;
use alloc::vec::Vec;

use crate::error::Error;
use crate::types::{MemoryChunk, Page, PageData};
use crate::{MAX_BODY, MAX_PAGES_PER_CHUNK, PAGE_SIZE};

/// A compressed page must be smaller than this to be sent as LZ4; otherwise it goes raw.
const LZ4_LIMIT: usize = PAGE_SIZE - 64;

/// Upper bound of the postcard encoding of a page beyond its data: enum tag, length and index
/// varints.
const PAGE_OVERHEAD: usize = 1 + 5 + 10;

/// Upper bound of the postcard encoding of a chunk beyond its pages (the page count varint).
const CHUNK_OVERHEAD: usize = 5;

/// Encodes page `index` of an instance's RAM: all zero → [`PageData::Zero`]; otherwise LZ4 if
/// that saves at least 64 bytes, else [`PageData::Raw`].
pub fn encode_page(index: u64, data: &[u8; PAGE_SIZE]) -> Page {
    if data.iter().all(|&b| b == 0) {
        return Page {
            index,
            data: PageData::Zero,
        };
    }
    let mut compressed = vec![0u8; lz4_flex::block::get_maximum_output_size(PAGE_SIZE)];
    let data = match lz4_flex::block::compress_into(data, &mut compressed) {
        Ok(len) if len < LZ4_LIMIT => {
            compressed.truncate(len);
            PageData::Lz4(compressed)
        }
        _ => PageData::Raw(data.to_vec()),
    };
    Page { index, data }
}

/// Decodes a page's data into `out`. Raw data must be exactly [`PAGE_SIZE`] bytes and LZ4 data
/// must decompress to exactly [`PAGE_SIZE`] bytes; on an error `out` holds unspecified bytes.
pub fn decode_page(data: &PageData, out: &mut [u8; PAGE_SIZE]) -> Result<(), Error> {
    match data {
        PageData::Zero => {
            out.fill(0);
            Ok(())
        }
        PageData::Raw(raw) => {
            let raw: &[u8; PAGE_SIZE] = raw
                .as_slice()
                .try_into()
                .map_err(|_| Error::RawPageSize { len: raw.len() })?;
            out.copy_from_slice(raw);
            Ok(())
        }
        PageData::Lz4(compressed) => match lz4_flex::block::decompress_into(compressed, out) {
            Ok(PAGE_SIZE) => Ok(()),
            _ => Err(Error::Lz4Page),
        },
    }
}

/// Collects pages into [`MemoryChunk`]s that respect [`MAX_PAGES_PER_CHUNK`] and whose encoding
/// stays within [`MAX_BODY`].
///
/// ```
/// # use checkpoint::{MemoryChunkBuilder, encode_page, PAGE_SIZE};
/// let mut builder = MemoryChunkBuilder::new();
/// let mut chunks = Vec::new();
/// for index in 0..100 {
///     if let Some(chunk) = builder.push(encode_page(index, &[0; PAGE_SIZE])) {
///         chunks.push(chunk);
///     }
/// }
/// chunks.extend(builder.finish());
/// assert_eq!(chunks.iter().map(|c| c.pages.len()).collect::<Vec<_>>(), [64, 36]);
/// ```
#[derive(Debug, Default)]
pub struct MemoryChunkBuilder {
    pages: Vec<Page>,
    bytes: usize,
}

impl MemoryChunkBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a page. Returns a chunk when one is complete: this one, now holding
    /// [`MAX_PAGES_PER_CHUNK`] pages, or the previous one, when `page` would have taken its
    /// encoding over [`MAX_BODY`] (then `page` starts the next chunk).
    pub fn push(&mut self, page: Page) -> Option<MemoryChunk> {
        let size = encoded_bound(&page);
        let mut complete = None;
        if !self.pages.is_empty()
            && self
                .bytes
                .saturating_add(size)
                .saturating_add(CHUNK_OVERHEAD)
                > MAX_BODY
        {
            complete = self.take();
        }
        self.pages.push(page);
        self.bytes = self.bytes.saturating_add(size);
        if complete.is_none() && self.pages.len() >= MAX_PAGES_PER_CHUNK {
            complete = self.take();
        }
        complete
    }

    /// Number of pages waiting in the current chunk.
    pub fn len(&self) -> usize {
        self.pages.len()
    }

    /// Whether no page is waiting.
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    /// The pages waiting, as a chunk, or `None` if there are none; the builder is empty after.
    pub fn take(&mut self) -> Option<MemoryChunk> {
        self.bytes = 0;
        if self.pages.is_empty() {
            None
        } else {
            Some(MemoryChunk {
                pages: core::mem::take(&mut self.pages),
            })
        }
    }

    /// The last chunk, if any page is waiting.
    pub fn finish(mut self) -> Option<MemoryChunk> {
        self.take()
    }
}

/// An upper bound of a page's postcard encoding.
fn encoded_bound(page: &Page) -> usize {
    let data = match &page.data {
        PageData::Zero => 0,
        PageData::Raw(bytes) | PageData::Lz4(bytes) => bytes.len(),
    };
    data.saturating_add(PAGE_OVERHEAD)
}
